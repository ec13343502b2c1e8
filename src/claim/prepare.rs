//! Prepare and unprepare of one claim, synchronous (run on tokio's blocking
//! pool): plan from the claim and the inventory, write the record ahead,
//! change the devices, then allocate addresses, write the CDI spec and
//! complete the record in one durable transaction. A failure undoes what
//! was done, in reverse.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use ipam::{Ipam, Owner};
use proto::dra::v1;
use sriov::PciAddress;
use sriov::vf_config::{VfConfigRecord, VfTarget};

use crate::apis::validate::AddressSource;
use crate::apis::{ConfigError, Mode, RequestConfig, configs_for_request};
use crate::claim::cdi::{CdiDevice, CdiWriter, device_edits, env_request};
use crate::claim::device_ops::DeviceOps;
use crate::claim::locks::ClaimLocks;
use crate::claim::single_leases::{HeldSingle, SingleLeases};
use crate::failpoints::failpoint;
use crate::inventory::{NodeDevice, NodeInventory};
use crate::kube::claims::{AllocatedClaim, ClaimError};
use crate::state::claims::{self as store, CLAIM_SCHEMA_VERSION};
use crate::state::{ClaimRecord, Phase, PreparedDevice, StateError};
use crate::state::{attachments, boot};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a claim could not be prepared or unprepared; every variant names
/// the claim, and where it applies the request, device and field.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The claim could not be read or is not the one the kubelet means.
    #[error(transparent)]
    Claim(#[from] ClaimError),
    /// A config entry or the merged config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The device cannot serve the request as configured.
    #[error("claim {claim}, request {request:?}, device {device}: {reason}")]
    Device {
        /// `namespace/name`.
        claim: String,
        /// Request name.
        request: String,
        /// Device name.
        device: String,
        /// What is wrong, naming the field when a field is at fault.
        reason: String,
    },
    /// A step failed; what was applied before it has been undone (or the
    /// undo failures are listed).
    #[error("claim {claim}: {step}: {source}{}", rollback_note(.rollback))]
    Step {
        /// `namespace/name` (or UID when the name is unknown).
        claim: String,
        /// What was being done.
        step: String,
        /// What kind of work that was, for counting failures by kind.
        kind: StepKind,
        /// The underlying failure.
        #[source]
        source: BoxError,
        /// Failures while undoing; empty when the undo was clean.
        rollback: Vec<String>,
    },
}

fn rollback_note(failures: &[String]) -> String {
    if failures.is_empty() {
        String::new()
    } else {
        format!("; ROLLBACK FAILED: {}", failures.join("; "))
    }
}

/// What a failed [`PrepareError::Step`] was working on, for the `kind`
/// label of `sriov_dra_errors_total`; the error's text says it in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Reading, writing or committing the claim's record in the state
    /// store.
    State,
    /// Allocating, leasing or releasing the claim's addresses.
    Ipam,
    /// Setting the VF's MAC, VLAN, trust, rates and the like.
    VfConfig,
    /// Binding the VF to vfio-pci.
    Vfio,
    /// Writing or deleting the claim's CDI spec.
    Cdi,
    /// Reading the VF's RDMA char devices.
    Rdma,
    /// Bringing the claim's VFs home from pods and restoring their
    /// settings and drivers, on unprepare.
    Restore,
}

impl StepKind {
    /// The label value: stable, snake_case.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::State => "state",
            StepKind::Ipam => "ipam",
            StepKind::VfConfig => "vf_config",
            StepKind::Vfio => "vfio",
            StepKind::Cdi => "cdi",
            StepKind::Rdma => "rdma",
            StepKind::Restore => "restore",
        }
    }
}

impl PrepareError {
    /// What failed, as the `kind` label of `sriov_dra_errors_total` names
    /// it (see [`crate::metrics::Failure`]).
    pub fn kind(&self) -> &'static str {
        match self {
            PrepareError::Claim(e) => e.kind(),
            PrepareError::Config(_) => "config",
            PrepareError::Device { .. } => "device",
            PrepareError::Step { kind, .. } => kind.as_str(),
        }
    }
}

fn step(
    claim: &str,
    kind: StepKind,
    step: impl Into<String>,
) -> impl FnOnce(BoxError) -> PrepareError {
    let claim = claim.to_string();
    let step = step.into();
    move |source| PrepareError::Step {
        claim,
        step,
        kind,
        source,
        rollback: Vec::new(),
    }
}

/// Where this node's prepare writes and what it calls itself.
#[derive(Debug, Clone)]
pub struct PrepareConfig {
    /// DRA driver name.
    pub driver: String,
    /// Pool name of our ResourceSlices (the node name).
    pub pool: String,
    /// CDI spec directory.
    pub cdi_dir: PathBuf,
    /// This boot's kernel boot ID ([`boot::current_boot_id`]); records of another
    /// boot describe device state that no longer exists.
    pub boot_id: String,
}

impl PrepareConfig {
    /// The settings a node config gives, for `node` (its pool name) and
    /// this boot.
    pub fn from_node_config(
        config: &crate::config::NodeConfig,
        node: &str,
        boot_id: String,
    ) -> Self {
        PrepareConfig {
            driver: config.driver_name.clone(),
            pool: node.to_string(),
            cdi_dir: config.cdi_dir.clone(),
            boot_id,
        }
    }
}

/// What prepare knows of the node's devices: one inventory snapshot,
/// replaced whole when the driver re-reads sysfs (VFs created or destroyed
/// since start must be preparable without a driver restart).
struct Devices {
    by_name: HashMap<String, NodeDevice>,
    offered: HashSet<String>,
    pf_mtu: HashMap<PciAddress, u32>,
    /// Where a prepared device's RDMA char devices are read.
    sysfs_root: PathBuf,
}

impl Devices {
    fn new(inventory: &NodeInventory, offered: impl IntoIterator<Item = String>) -> Self {
        Devices {
            by_name: inventory
                .devices
                .iter()
                .map(|d| (d.name(), d.clone()))
                .collect(),
            offered: offered.into_iter().collect(),
            pf_mtu: inventory
                .devices
                .iter()
                .filter_map(|d| Some((d.function.address, d.function.netdev.as_ref()?.mtu?)))
                .collect(),
            sysfs_root: inventory.sysfs_root.clone(),
        }
    }
}

/// Prepares and unprepares claims on this node.
pub struct Preparer {
    driver: String,
    pool: String,
    ipam: Arc<Ipam>,
    devices: RwLock<Arc<Devices>>,
    ops: Arc<dyn DeviceOps>,
    cdi: CdiWriter,
    boot_id: String,
    locks: ClaimLocks,
    /// Leases static addresses of cluster pools outside this node's
    /// blocks; `None` without an API client (then such a Prepare fails).
    singles: Option<SingleLeases>,
}

impl Preparer {
    /// A preparer for the `offered` device names of `inventory`. Creates the
    /// claim tables in the IPAM store's database if needed.
    pub fn new(
        config: PrepareConfig,
        ipam: Arc<Ipam>,
        inventory: &NodeInventory,
        offered: impl IntoIterator<Item = String>,
        ops: Arc<dyn DeviceOps>,
    ) -> Result<Self, StateError> {
        store::init(ipam.database())?;
        Ok(Preparer {
            cdi: CdiWriter::new(&config.cdi_dir, &config.driver),
            driver: config.driver,
            pool: config.pool,
            ipam,
            devices: RwLock::new(Arc::new(Devices::new(inventory, offered))),
            ops,
            boot_id: config.boot_id,
            locks: ClaimLocks::default(),
            singles: None,
        })
    }

    /// Leases static addresses of cluster pools through `singles`.
    pub fn with_single_leases(mut self, singles: SingleLeases) -> Self {
        self.singles = Some(singles);
        self
    }

    /// Takes a fresh inventory (and what it offers) for the claims prepared
    /// from now on; claims already prepared keep their records.
    pub fn refresh(&self, inventory: &NodeInventory, offered: impl IntoIterator<Item = String>) {
        let fresh = Arc::new(Devices::new(inventory, offered));
        *self.devices.write().unwrap_or_else(PoisonError::into_inner) = fresh;
    }

    fn devices(&self) -> Arc<Devices> {
        self.devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether `record` can answer a Prepare as it is: fully prepared, in
    /// this boot.
    pub fn is_current(&self, record: &ClaimRecord) -> bool {
        boot::prepared_in_this_boot(record, &self.boot_id)
    }

    /// Claim `uid`'s lock: every change to one claim happens under it.
    pub async fn lock_claim(&self, uid: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.locks.lock(uid).await
    }

    /// The DRA driver name.
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// The record of a claim, if prepared (or being prepared).
    pub fn record(&self, uid: &str) -> Result<Option<ClaimRecord>, StateError> {
        store::get(self.ipam.database(), uid)
    }

    /// Names of the devices prepared for a claim in this boot: the slice
    /// publisher keeps their attributes as they were while they are in use.
    pub fn held_devices(&self) -> Result<std::collections::BTreeSet<String>, StateError> {
        Ok(
            boot::claims_of_this_boot(self.ipam.database(), &self.boot_id)?
                .into_iter()
                .flat_map(|r| r.devices.into_iter().map(|d| d.device))
                .collect(),
        )
    }

    /// Records the pods a prepared claim is now reserved for (durably).
    pub fn set_reserved_for(&self, uid: &str, pods: Vec<String>) -> Result<(), StateError> {
        if let Some(mut record) = self.record(uid)? {
            record.reserved_for = pods;
            store::put(self.ipam.database(), &record)?;
        }
        Ok(())
    }

    /// The kubelet's answer for a prepared claim.
    pub fn answer(record: &ClaimRecord) -> Vec<v1::Device> {
        record
            .devices
            .iter()
            .map(|d| v1::Device {
                request_names: vec![d.request.clone()],
                pool_name: d.pool.clone(),
                device_name: d.device.clone(),
                cdi_device_ids: d.cdi_device_id.iter().cloned().collect(),
                share_id: None,
            })
            .collect()
    }

    /// Prepares `claim`; a prepared claim is answered from its record
    /// without touching anything, a half-prepared one (crash) is undone
    /// first.
    pub fn prepare(&self, claim: &AllocatedClaim) -> Result<Vec<v1::Device>, PrepareError> {
        let label = claim.label();
        let existing = self
            .record(&claim.uid)
            .map_err(|e| step(&label, StepKind::State, "reading the claim record")(e.into()))?;
        match existing {
            Some(rec) if self.is_current(&rec) => return Ok(Self::answer(&rec)),
            Some(rec) => self.unprepare_record(&rec)?,
            None => {}
        }
        let mut record = self.plan(claim)?;
        // Before any device is changed: a static address another node holds
        // refuses the claim with nothing to undo.
        let singles = self.lease_singles(&record)?;
        // Write-ahead: the record reserves the VFs and says what to undo
        // after a crash. When the first change is a VF configuration, its
        // first save (the VF's state before any change) is that record, so
        // a separate commit is only needed when a binding comes first.
        let binding_first = record
            .devices
            .iter()
            .find(|d| !d.config.settings.is_empty() || d.config.mode == Mode::Dpdk)
            .is_some_and(|d| d.config.settings.is_empty());
        let done = if binding_first {
            failpoint!("prepare::record_plan");
            store::put(self.ipam.database(), &record).map_err(|e| {
                step(
                    &label,
                    StepKind::State,
                    "recording the claim before changing devices",
                )(e.into())
            })
        } else {
            Ok(())
        }
        .and_then(|()| self.apply_and_commit(&mut record, &singles));
        match done {
            Ok(()) => {
                failpoint!("prepare::answer");
                // The leases' marks lift here, after the commit that
                // records them.
                drop(singles);
                Ok(Self::answer(&record))
            }
            Err(mut err) => {
                let mut failures = self.restore_devices(&record);
                if failures.is_empty()
                    && let Err(e) = self.forget(&record)
                {
                    failures.push(e.to_string());
                }
                // Only once the store holds none of them: a lease deleted
                // while a record still names it would be re-created by the
                // leaser's reconcile.
                if failures.is_empty() {
                    failures.extend(self.return_singles(&singles));
                }
                if let PrepareError::Step { rollback, .. } = &mut err {
                    *rollback = failures;
                }
                Err(err)
            }
        }
    }

    /// Leases every static address of the record that a cluster pool
    /// hands out and no block of this node contains. On failure the leases
    /// this call created are deleted again.
    fn lease_singles(&self, record: &ClaimRecord) -> Result<Vec<HeldSingle>, PrepareError> {
        let label = format!("{}/{}", record.namespace, record.name);
        let mut held: Vec<HeldSingle> = Vec::new();
        for dev in &record.devices {
            let Some(AddressSource::Static(list)) = &dev.config.addresses else {
                continue;
            };
            for net in list {
                let address = net.ip();
                let fail = |reason: String| PrepareError::Device {
                    claim: label.clone(),
                    request: dev.request.clone(),
                    device: dev.device.clone(),
                    reason,
                };
                let pool = match self.ipam.needs_single_lease(address) {
                    Ok(Some(pool)) => pool,
                    Ok(None) => continue,
                    Err(e) => {
                        self.return_singles(&held);
                        return Err(step(&label, StepKind::Ipam, "reading the IPAM blocks")(
                            e.into(),
                        ));
                    }
                };
                let leased = match &self.singles {
                    Some(singles) => singles.acquire(pool, address).map_err(|e| {
                        fail(format!(
                            "field addresses: leasing static address {address}: {e}"
                        ))
                    }),
                    None => Err(fail(format!(
                        "field addresses: static address {address} of cluster-wide pool {:?} \
                         lies outside this node's blocks, and leasing it needs the API server",
                        pool.name()
                    ))),
                };
                match leased {
                    Ok(h) => held.push(h),
                    Err(e) => {
                        self.return_singles(&held);
                        return Err(e);
                    }
                }
            }
        }
        if !held.is_empty() {
            tracing::info!(claim = %label, leases = ?held.iter().map(|h| &h.lease).collect::<Vec<_>>(),
                "leased static addresses of cluster-wide pools");
        }
        Ok(held)
    }

    /// Deletes the single-address leases a failed Prepare created; returns
    /// what could not be deleted (the leaser's reconcile retries those).
    fn return_singles(&self, held: &[HeldSingle]) -> Vec<String> {
        let Some(singles) = &self.singles else {
            return Vec::new();
        };
        held.iter()
            .filter(|h| h.created)
            .filter_map(|h| {
                singles
                    .release(&h.pool, h.address)
                    .err()
                    .map(|e| format!("deleting IPBlock {}: {e}", h.lease))
            })
            .collect()
    }

    /// Checks every result against the inventory and its config; nothing
    /// is changed. Returns the record to be written.
    fn plan(&self, claim: &AllocatedClaim) -> Result<ClaimRecord, PrepareError> {
        let node = self.devices();
        let label = claim.label();
        let mut seen = HashSet::new();
        let mut devices = Vec::with_capacity(claim.results.len());
        for result in &claim.results {
            let fail = |reason: String| PrepareError::Device {
                claim: label.clone(),
                request: result.request.clone(),
                device: result.device.clone(),
                reason,
            };
            if result.pool != self.pool {
                return Err(fail(format!(
                    "is allocated from pool {:?}; this node publishes pool {:?}",
                    result.pool, self.pool
                )));
            }
            let Some(dev) = node.by_name.get(&result.device) else {
                return Err(fail("is not in this node's inventory".into()));
            };
            if !node.offered.contains(&result.device) {
                return Err(fail(
                    "is not offered by this node (excluded or not selected by the node config)"
                        .into(),
                ));
            }
            if !seen.insert(result.device.as_str()) {
                return Err(fail("is allocated twice in this claim".into()));
            }
            // The claim's own values are checked against its class's
            // VfPolicy here, before anything is changed.
            let RequestConfig { config, policy } = configs_for_request(
                &label,
                &self.driver,
                &claim.configs,
                &result.request,
                claim.device_class(&result.request),
            )?;
            if config.mode == Mode::Dpdk && dev.function.iommu_group.is_none() {
                return Err(fail(
                    "field mode: dpdk needs an IOMMU group and the device has none; enable the IOMMU (intel_iommu=on / amd_iommu=on) or use mode netdevice".into(),
                ));
            }
            if !config.settings.is_empty()
                && (dev.function.vf_of().is_none() || dev.pf_name.is_none())
            {
                return Err(fail(
                    "VF settings (mac, vlan, trust, rates, ...) need a VF whose PF has a netdev; this device is not one".into(),
                ));
            }
            if let (Some(mtu), Some((pf, _))) = (config.mtu, dev.function.vf_of())
                && let Some(pf_mtu) = node.pf_mtu.get(&pf)
                && mtu > *pf_mtu
            {
                return Err(fail(format!(
                    "field mtu: {mtu} is above the PF's MTU {pf_mtu}; expected at most {pf_mtu}"
                )));
            }
            if config.rdma_exclusive && dev.rdma.is_none() {
                return Err(fail(
                    "field rdma.exclusive: the device has no RDMA device; expected an RDMA-capable VF".into(),
                ));
            }
            devices.push(PreparedDevice {
                request: result.request.clone(),
                pool: result.pool.clone(),
                device: result.device.clone(),
                pci_address: dev.function.address,
                if_name: config.if_name.clone(),
                rdma_device: dev.rdma.as_ref().map(|r| r.name.clone()),
                config,
                vf_settings: None,
                bind: None,
                addresses: None,
                cdi_device_id: None,
                policy: Some(policy),
            });
        }
        let mut names = HashSet::new();
        for dev in &devices {
            if let Some(name) = &dev.if_name
                && !names.insert(name.as_str())
            {
                return Err(PrepareError::Device {
                    claim: label.clone(),
                    request: dev.request.clone(),
                    device: dev.device.clone(),
                    reason: format!(
                        "field ifName: {name:?} is used by another device of this claim; expected a unique name"
                    ),
                });
            }
        }
        // Interfaces without an `ifName` are numbered net1, net2, … per pod
        // when attached (a pod may hold several claims), not per claim here.
        Ok(ClaimRecord {
            schema: CLAIM_SCHEMA_VERSION,
            uid: claim.uid.clone(),
            namespace: claim.namespace.clone(),
            name: claim.name.clone(),
            phase: Phase::Preparing,
            devices,
            cdi_spec: None,
            boot_id: self.boot_id.clone(),
            reserved_for: claim.reserved_for.clone(),
        })
    }

    /// Changes the devices (recording each step), then commits addresses,
    /// CDI IDs and the completed record together.
    fn apply_and_commit(
        &self,
        record: &mut ClaimRecord,
        singles: &[HeldSingle],
    ) -> Result<(), PrepareError> {
        let node = self.devices();
        let label = format!("{}/{}", record.namespace, record.name);
        let db = self.ipam.database();
        for i in 0..record.devices.len() {
            let dev_name = record.devices[i].device.clone();
            let request = record.devices[i].request.clone();
            let where_ = format!("request {request:?}, device {dev_name}");
            let Some(node_dev) = node.by_name.get(&dev_name) else {
                continue;
            };
            let settings = record.devices[i].config.settings.clone();
            if !settings.is_empty() {
                let (Some(pf), Some((_, vf))) =
                    (node_dev.pf_name.clone(), node_dev.function.vf_of())
                else {
                    continue;
                };
                let target = VfTarget { pf, vf };
                let mut persist = |r: &VfConfigRecord| {
                    record.devices[i].vf_settings = Some(r.clone());
                    // Durable before a change is sent; the state saved before
                    // any change need not be (a crash then leaves nothing to undo).
                    let saved = if r.applied.is_empty() {
                        store::put_unsynced(db, record)
                    } else {
                        store::put(db, record)
                    };
                    if saved.is_err() && r.applied.is_empty() {
                        // Nothing was changed on this VF (it may even be
                        // another claim's): nothing to restore.
                        record.devices[i].vf_settings = None;
                    }
                    if saved.is_ok() && !r.applied.is_empty() {
                        failpoint!("prepare::vf_setting");
                    }
                    saved
                };
                let applied = self
                    .ops
                    .configure_vf(&target, &settings, &mut persist)
                    .map_err(|e| {
                        step(
                            &label,
                            StepKind::VfConfig,
                            format!("{where_}: configuring the VF"),
                        )(e.into())
                    })?;
                record.devices[i].vf_settings = Some(applied);
            }
            if record.devices[i].config.mode == Mode::Dpdk {
                let mut persist = |planned: &sriov::bind::BindRecord| {
                    record.devices[i].bind = Some(planned.clone());
                    let saved = store::put(db, record);
                    if saved.is_err() {
                        // Nothing was switched: nothing to restore.
                        record.devices[i].bind = None;
                    } else {
                        failpoint!("prepare::vfio_bind");
                    }
                    saved
                };
                let bound = self.ops.bind_vfio(node_dev, &mut persist).map_err(|e| {
                    step(
                        &label,
                        StepKind::Vfio,
                        format!("{where_}: binding to vfio-pci"),
                    )(e.into())
                })?;
                record.devices[i].bind = Some(bound);
                store::put(db, record).map_err(|e| {
                    step(
                        &label,
                        StepKind::State,
                        format!("{where_}: recording the binding"),
                    )(e.into())
                })?;
            }
        }

        let txn = db.begin_write().map_err(|e| {
            step(&label, StepKind::State, "opening the state transaction")(e.into())
        })?;
        for dev in &mut record.devices {
            let Some(source) = &dev.config.addresses else {
                continue;
            };
            let where_ = format!(
                "request {:?}, device {}: allocating addresses",
                dev.request, dev.device
            );
            let owner = Owner::new(&record.uid, &dev.request, &dev.device)
                .map_err(|e| step(&label, StepKind::Ipam, where_.clone())(e.into()))?;
            // A leased static address is recorded as this node's in the
            // transaction that hands it out.
            if let AddressSource::Static(list) = source {
                for h in singles
                    .iter()
                    .filter(|h| list.iter().any(|n| n.ip() == h.address))
                {
                    self.ipam
                        .record_static_lease_in(&txn, &h.pool, h.address, &h.lease)
                        .map_err(|e| step(&label, StepKind::Ipam, where_.clone())(e.into()))?;
                }
            }
            let alloc = match source {
                AddressSource::Pool(pool) => self.ipam.allocate_in(&txn, &owner, pool),
                AddressSource::Static(list) => self.ipam.allocate_static_in(&txn, &owner, list),
            }
            .map_err(|e| step(&label, StepKind::Ipam, where_)(e.into()))?;
            dev.addresses = Some(alloc);
        }
        let specs = self.cdi_devices(record)?;
        // The addresses are durable (still phase Preparing, so a crash from
        // here on rolls the claim back) before the CDI spec is written, and
        // the store's single writer lock is not held across the spec's two
        // fsyncs: other claims and pod events commit meanwhile.
        failpoint!("prepare::address_commit");
        store::put_in(&txn, record)
            .and_then(|()| store::commit(txn))
            .map_err(|e| {
                step(&label, StepKind::State, "committing the claim's addresses")(e.into())
            })?;
        // A spec must list at least one device; a claim with none of ours
        // (the kubelet should not send one) gets no spec.
        if !specs.is_empty() {
            failpoint!("prepare::cdi_write");
            let path = self
                .cdi
                .write(&record.uid, &specs)
                .map_err(|e| step(&label, StepKind::Cdi, "writing the CDI spec")(e.into()))?;
            record.cdi_spec = Some(path);
        }
        record.phase = Phase::Prepared;
        failpoint!("prepare::record_commit");
        if let Err(e) = store::put(db, record) {
            let _ = self.cdi.remove(&record.uid);
            return Err(step(&label, StepKind::State, "committing the claim record")(e.into()));
        }
        Ok(())
    }

    /// The CDI devices of a record; sets each device's CDI ID.
    ///
    /// A netdevice-mode device's RDMA char devices are read here, for this
    /// device only: a scan reads RDMA devices by name.
    fn cdi_devices(&self, record: &mut ClaimRecord) -> Result<Vec<CdiDevice>, PrepareError> {
        let node = self.devices();
        let label = format!("{}/{}", record.namespace, record.name);
        let mut per_request: HashMap<String, usize> = HashMap::new();
        for dev in &record.devices {
            *per_request
                .entry(env_request(&dev.request).to_string())
                .or_default() += 1;
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::with_capacity(record.devices.len());
        for dev in &mut record.devices {
            let base = env_request(&dev.request).to_string();
            let many = per_request.get(&base).is_some_and(|n| *n > 1);
            let n = seen.entry(base).or_default();
            let index = many.then_some(*n);
            *n += 1;
            let rdma = match dev.config.mode {
                Mode::Netdevice => node.by_name.get(&dev.device).and_then(|d| d.rdma.as_ref()),
                _ => None,
            };
            let rdma_nodes = match rdma {
                Some(r) => {
                    rdma::details_of(&node.sysfs_root, r)
                        .map_err(|e| {
                            step(
                                &label,
                                StepKind::Rdma,
                                format!(
                                    "request {:?}, device {}: reading its RDMA char devices",
                                    dev.request, dev.device
                                ),
                            )(e.into())
                        })?
                        .char_devices
                }
                None => Vec::new(),
            };
            dev.cdi_device_id = Some(self.cdi.device_id(&record.uid, &dev.device));
            out.push(CdiDevice {
                name: CdiWriter::device_name(&record.uid, &dev.device),
                edits: device_edits(dev, index, &rdma_nodes),
            });
        }
        Ok(out)
    }

    /// Moves the claim's VFs that a pod record still holds back to the host
    /// and updates those records, so a VF is never released (and handed to
    /// another claim) while a pod holds it. Returns what failed; the pod
    /// records of VFs that did not come home are kept for a retry.
    fn bring_home(&self, record: &ClaimRecord) -> Vec<String> {
        let label = format!("{}/{}", record.namespace, record.name);
        let db = self.ipam.database();
        let pods = match attachments::list(db) {
            Ok(pods) => pods,
            Err(e) => return vec![format!("reading pod attachments: {e}")],
        };
        let mut failures = Vec::new();
        for mut pod in pods {
            let before = pod.attachments.len();
            pod.attachments.retain(|a| {
                let ours = a.claim == label
                    && record.devices.iter().any(|d| d.pci_address == a.pci_address);
                if !ours {
                    return true;
                }
                tracing::warn!(claim = %label, pod = %pod.pod, device = %a.device, "unprepare found the VF still in a pod; moving it home first");
                failpoint!("unprepare::detach_from_pod");
                match self.ops.detach_from_pod(a) {
                    Ok(()) => false,
                    Err(e) => {
                        failures.push(format!(
                            "device {} is still in pod {} and could not be moved home: {e}",
                            a.device, pod.pod
                        ));
                        true
                    }
                }
            });
            if pod.attachments.len() == before {
                continue;
            }
            failpoint!("unprepare::pod_record_commit");
            let saved = if pod.attachments.is_empty() {
                attachments::remove(db, &pod.pod_uid)
            } else {
                attachments::put(db, &pod)
            };
            if let Err(e) = saved {
                failures.push(format!("updating the attachments of pod {}: {e}", pod.pod));
            }
        }
        failures
    }

    /// Undoes device changes in reverse order; returns what failed.
    fn restore_devices(&self, record: &ClaimRecord) -> Vec<String> {
        let mut failures = Vec::new();
        for dev in record.devices.iter().rev() {
            if !self.ops.device_present(dev.pci_address) {
                tracing::warn!(
                    claim = %format!("{}/{}", record.namespace, record.name),
                    device = %dev.device,
                    pci = %dev.pci_address,
                    "the VF no longer exists; nothing to restore"
                );
                continue;
            }
            if dev.bind.is_some() {
                failpoint!("unprepare::driver_restore");
            }
            if let Some(bind) = &dev.bind
                && let Err(e) = self.ops.restore_driver(bind)
            {
                failures.push(format!("device {}: {e}", dev.device));
            }
            if dev.vf_settings.is_some() {
                failpoint!("unprepare::vf_restore");
            }
            if let Some(vf) = &dev.vf_settings
                && let Err(e) = self.ops.restore_vf(vf)
            {
                failures.push(format!("device {}: {e}", dev.device));
            }
        }
        failures
    }

    /// Unprepares claim `uid`: restores its devices, deletes its CDI spec,
    /// releases its addresses and drops its record. An unknown claim is
    /// already unprepared. Safe to repeat after a partial failure.
    pub fn unprepare(&self, uid: &str) -> Result<(), PrepareError> {
        let record = self
            .record(uid)
            .map_err(|e| step(uid, StepKind::State, "reading the claim record")(e.into()))?;
        match record {
            None => Ok(()),
            Some(rec) => self.unprepare_record(&rec),
        }
    }

    fn unprepare_record(&self, record: &ClaimRecord) -> Result<(), PrepareError> {
        let label = format!("{}/{}", record.namespace, record.name);
        // A reboot already reset what an earlier boot's record changed.
        let failures = if boot::of_this_boot(record, &self.boot_id) {
            let mut failures = self.bring_home(record);
            if failures.is_empty() {
                failures = self.restore_devices(record);
            }
            failures
        } else {
            Vec::new()
        };
        if !failures.is_empty() {
            return Err(step(
                &label,
                StepKind::Restore,
                "restoring the devices (the record is kept; retry)",
            )(failures.join("; ").into()));
        }
        self.forget(record)
    }

    /// Deletes a claim's CDI spec, then releases its addresses and drops its
    /// record in one transaction; each step is a no-op when already done.
    /// Single-address leases the claim's addresses held are deleted after
    /// that commit.
    fn forget(&self, record: &ClaimRecord) -> Result<(), PrepareError> {
        let label = format!("{}/{}", record.namespace, record.name);
        failpoint!("unprepare::cdi_remove");
        self.cdi
            .remove(&record.uid)
            .map_err(|e| step(&label, StepKind::Cdi, "deleting the CDI spec")(e.into()))?;
        let leased = self.own_singles_of(record);
        let dropped = (|| -> Result<(), BoxError> {
            let txn = self
                .ipam
                .database()
                .begin_write()
                .map_err(redb::Error::from)?;
            self.ipam.release_claim_in(&txn, &record.uid)?;
            store::remove_in(&txn, &record.uid)?;
            failpoint!("unprepare::release_commit");
            store::commit(txn)?;
            Ok(())
        })();
        dropped.map_err(step(
            &label,
            StepKind::Ipam,
            "releasing addresses and dropping the record",
        ))?;
        if let Some(singles) = &self.singles {
            for l in leased {
                // The store no longer holds the address: a lease left behind
                // is returned by the leaser's next reconcile.
                if let Err(e) = singles.release(&l.pool, l.address) {
                    tracing::warn!(claim = %label, lease = %l.lease, error = %e,
                        "could not delete a single-address lease; the leaser's reconcile will");
                }
            }
        }
        Ok(())
    }

    /// This node's single-address leases the store records for the
    /// claim's addresses (empty when it cannot tell: the reconcile returns
    /// what Unprepare leaves).
    fn own_singles_of(&self, record: &ClaimRecord) -> Vec<ipam::StaticLease> {
        if self.singles.is_none() {
            return Vec::new();
        }
        let addresses: HashSet<std::net::IpAddr> = record
            .devices
            .iter()
            .filter_map(|d| d.addresses.as_ref())
            .flat_map(|a| a.ips())
            .collect();
        if addresses.is_empty() {
            return Vec::new();
        }
        match self.ipam.static_leases() {
            Ok(all) => all
                .into_iter()
                .filter(|l| l.holder == ipam::Holder::ThisNode && addresses.contains(&l.address))
                .collect(),
            Err(e) => {
                tracing::warn!(claim = %record.uid, error = %e, "could not read single-address leases");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_config_and_device_failures_have_kinds_of_their_own() {
        let gone = PrepareError::from(ClaimError::NotFound {
            claim: "ran/fronthaul".into(),
        });
        assert_eq!(gone.kind(), "claim");
        let refused = PrepareError::Device {
            claim: "ran/fronthaul".into(),
            request: "nic".into(),
            device: "pci-0000-3b-00-2".into(),
            reason: "is not in this node's inventory".into(),
        };
        assert_eq!(refused.kind(), "device");
    }

    #[test]
    fn step_kinds_are_distinct_snake_case_labels() {
        let all = [
            StepKind::State,
            StepKind::Ipam,
            StepKind::VfConfig,
            StepKind::Vfio,
            StepKind::Cdi,
            StepKind::Rdma,
            StepKind::Restore,
        ];
        let labels: HashSet<&str> = all.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels.len(), all.len());
        assert!(
            labels
                .iter()
                .all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '_')),
            "{labels:?}"
        );
    }
}
