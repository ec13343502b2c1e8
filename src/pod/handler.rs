//! The pod side of the data path: what the NRI plugin does when a pod
//! starts and stops.
//!
//! On `RunPodSandbox` the netdevice-mode VFs prepared for the pod's claims
//! are moved into its network namespace, the attachments are committed to
//! the state store, and only then is the runtime answered and the claims'
//! `status.devices` reported. On `StopPodSandbox` / `RemovePodSandbox`
//! they are moved back. Calls for one pod are serialised: the runtime may
//! send Stop while a slow Run is still finishing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ipam::Ipam;
use tracing::{info, warn};

use crate::apis::Mode;
use crate::attach::plan::{PreparedDevice, RouteSpec};
use crate::attach::{Attacher, Attachment};
use crate::blocking::blocking;
use crate::kube::claim_status;
use crate::nri::plugin::{PodHandler, PodSandbox};
use crate::state::attachments::{self, PodAttachments};
use crate::state::claims;
use crate::state::{ClaimRecord, Phase};

/// Where the handler finds the claims prepared for a pod.
pub trait PodClaims: Send + Sync + 'static {
    /// Claim records whose claim is reserved for the pod with this UID.
    fn claims_for_pod(&self, pod_uid: &str) -> Result<Vec<ClaimRecord>, String>;
}

/// Claims from the state store, matched on the pod UIDs the claim was
/// reserved for when it was prepared. Only claims prepared completely and
/// in this boot count: a half-prepared record is being rolled back, and one
/// from before a reboot describes VFs that no longer exist as recorded.
pub struct StoreClaims {
    store: Arc<Ipam>,
    boot_id: String,
}

impl StoreClaims {
    /// Reads records from the state store (which the IPAM handle owns).
    pub fn new(store: Arc<Ipam>, boot_id: &str) -> Self {
        StoreClaims {
            store,
            boot_id: boot_id.to_string(),
        }
    }
}

impl PodClaims for StoreClaims {
    fn claims_for_pod(&self, pod_uid: &str) -> Result<Vec<ClaimRecord>, String> {
        let records = claims::list(self.store.database()).map_err(|e| e.to_string())?;
        Ok(records
            .into_iter()
            .filter(|r| r.phase == Phase::Prepared && r.boot_id == self.boot_id)
            .filter(|r| r.reserved_for.iter().any(|uid| uid == pod_uid))
            .collect())
    }
}

/// The devices of `records` that go into the pod's namespace, in claim then
/// allocation order (which gives `net1`, `net2`, … their numbers).
pub fn netdevice_devices(records: &[ClaimRecord]) -> Vec<PreparedDevice> {
    let mut records: Vec<&ClaimRecord> = records.iter().collect();
    records.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut out = Vec::new();
    for r in records {
        for d in r
            .devices
            .iter()
            .filter(|d| d.config.mode == Mode::Netdevice)
        {
            let mut routes: Vec<RouteSpec> = Vec::new();
            let pool_routes = d.addresses.iter().flat_map(|a| a.routes.iter());
            for route in pool_routes.chain(d.config.routes.iter()) {
                let spec = RouteSpec {
                    destination: route.dst,
                    gateway: route.gw,
                };
                if !routes.contains(&spec) {
                    routes.push(spec);
                }
            }
            out.push(PreparedDevice {
                claim: format!("{}/{}", r.namespace, r.name),
                device: d.device.clone(),
                pci_address: d.pci_address,
                if_name: d.if_name.clone(),
                mtu: d.config.mtu,
                mac: d.config.settings.mac(),
                addresses: d
                    .addresses
                    .iter()
                    .flat_map(|a| a.addresses.iter().map(|x| x.address))
                    .collect(),
                routes,
                rdma_device: d.rdma_device.clone(),
                rdma_exclusive: d.config.rdma_exclusive,
            });
        }
    }
    out
}

/// How long a claim status report may take before it is given up (the
/// pod's network works whether or not the API heard about it).
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// Moves VFs in and out of pods for the NRI plugin.
pub struct PodNetworkHandler<C> {
    /// The state store (its database is shared with the IPAM tables).
    store: Arc<Ipam>,
    claims: Arc<C>,
    attacher: Attacher,
    /// `None` runs without an API server (status is then not reported).
    client: Option<kube::Client>,
    driver: String,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl<C: PodClaims> PodNetworkHandler<C> {
    /// A handler over the state store.
    pub fn new(
        store: Arc<Ipam>,
        claims: C,
        attacher: Attacher,
        client: Option<kube::Client>,
        driver: &str,
    ) -> Self {
        PodNetworkHandler {
            store,
            claims: Arc::new(claims),
            attacher,
            client,
            driver: driver.to_string(),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The pod's lock. Entries nobody holds are dropped on the way, so the
    /// map does not grow with every pod the node ever ran, and an entry is
    /// never dropped while a caller still holds it.
    fn lock_for(&self, pod_uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks.retain(|_, m| Arc::strong_count(m) > 1);
        locks.entry(pod_uid.to_string()).or_default().clone()
    }

    async fn record_of(&self, pod_uid: &str) -> Result<Option<PodAttachments>, String> {
        let (store, uid) = (self.store.clone(), pod_uid.to_string());
        blocking(move || attachments::get(store.database(), &uid).map_err(|e| e.to_string())).await
    }

    async fn save_record(&self, record: &PodAttachments) -> Result<(), String> {
        let (store, record) = (self.store.clone(), record.clone());
        blocking(move || attachments::put(store.database(), &record).map_err(|e| e.to_string()))
            .await
    }

    async fn drop_record(&self, pod_uid: &str) -> Result<(), String> {
        let (store, uid) = (self.store.clone(), pod_uid.to_string());
        blocking(move || attachments::remove(store.database(), &uid).map_err(|e| e.to_string()))
            .await
    }

    async fn claims_of(&self, pod_uid: &str) -> Result<Vec<ClaimRecord>, String> {
        let (claims, uid) = (self.claims.clone(), pod_uid.to_string());
        blocking(move || claims.claims_for_pod(&uid)).await
    }

    /// Attaches the pod's devices; the work behind `run_pod_sandbox`.
    pub async fn attach(&self, pod: &PodSandbox) -> Result<(), String> {
        let lock = self.lock_for(&pod.uid);
        let _guard = lock.lock().await;
        if let Some(existing) = self.record_of(&pod.uid).await? {
            if existing.sandbox_id == pod.id || existing.sandbox_id.is_empty() {
                return Ok(()); // already attached (a retried or replayed event)
            }
            // The pod got a new sandbox (node reboot, sandbox recreated):
            // its VFs must leave the old one first.
            self.detach_record(&existing).await?;
        }
        let records = self.claims_of(&pod.uid).await?;
        let devices = netdevice_devices(&records);
        if devices.is_empty() {
            return Ok(());
        }
        let Some(netns) = pod.netns.clone() else {
            let list: Vec<&str> = devices.iter().map(|d| d.device.as_str()).collect();
            return Err(format!(
                "pod uses the host network, so its netdevice-mode VFs ({}) cannot be moved into it; use mode dpdk or a pod network",
                list.join(", ")
            ));
        };
        // Write-ahead: what the VFs will look like in the pod, and how they
        // were in the host, is durable before the first one moves, so a
        // driver that dies mid-attach still finds them afterwards.
        let (attacher, devs, ns) = (self.attacher.clone(), devices.clone(), netns.clone());
        let provisional =
            blocking(move || attacher.provisional(&devs, &ns).map_err(|e| e.to_string())).await?;
        let mut record = PodAttachments {
            pod_uid: pod.uid.clone(),
            sandbox_id: pod.id.clone(),
            pod: format!("{}/{}", pod.namespace, pod.name),
            netns: netns.clone(),
            attachments: provisional,
        };
        self.save_record(&record).await.map_err(|e| {
            format!("recording the attachment plan failed ({e}); nothing was moved")
        })?;

        // The error is rendered on the blocking thread (the runtime only
        // needs its text, and the full error is large), with whether the
        // rollback put everything back.
        let (attacher, ns) = (self.attacher.clone(), netns.clone());
        let attached = blocking(move || {
            Ok(attacher
                .attach_pod(&devices, &ns)
                .map_err(|e| (e.to_string(), e.rollback.is_empty())))
        })
        .await?;
        let attached = match attached {
            Ok(a) => a,
            Err((e, rolled_back)) => {
                // Rolled back: the plan describes nothing any more. Not
                // rolled back: the plan is how Stop or a restart finds them.
                if rolled_back && let Err(drop_err) = self.drop_record(&pod.uid).await {
                    warn!(pod = %record.pod, error = %drop_err, "could not drop the attachment plan");
                }
                return Err(e);
            }
        };
        record.attachments = attached;
        if let Err(e) = self.save_record(&record).await {
            // The plan on disk still finds every VF (by PCI address).
            warn!(pod = %record.pod, error = %e, "could not record the final attachment; the plan stands in for it");
        }
        for a in &record.attachments {
            info!(pod = %record.pod, claim = %a.claim, device = %a.device, if_name = %a.if_name, "VF attached");
        }
        self.report(records, record.attachments);
        Ok(())
    }

    /// Detaches what is attached to the pod's sandbox `pod.id`; idempotent.
    /// An event for an older sandbox of the pod leaves the current one's
    /// VFs where they are.
    pub async fn detach(&self, pod: &PodSandbox) -> Result<(), String> {
        let lock = self.lock_for(&pod.uid);
        let _guard = lock.lock().await;
        match self.record_of(&pod.uid).await? {
            Some(record) if record.sandbox_id.is_empty() || record.sandbox_id == pod.id => {
                self.detach_record(&record).await
            }
            _ => Ok(()),
        }
    }

    /// Moves a record's VFs home and drops the record; keeps it (for a retry)
    /// when any VF could not be moved.
    async fn detach_record(&self, record: &PodAttachments) -> Result<(), String> {
        let errors = self.detach_all(&record.attachments).await;
        if !errors.is_empty() {
            return Err(format!(
                "detaching from pod {}: {}",
                record.pod,
                errors.join("; ")
            ));
        }
        self.drop_record(&record.pod_uid).await?;
        for a in &record.attachments {
            info!(pod = %record.pod, claim = %a.claim, device = %a.device, "VF detached");
        }
        let records = self.claims_of(&record.pod_uid).await.unwrap_or_default();
        self.report(records, Vec::new());
        Ok(())
    }

    /// Detaches every attachment, collecting every failure (keeps going).
    async fn detach_all(&self, list: &[Attachment]) -> Vec<String> {
        let attacher = self.attacher.clone();
        let list = list.to_vec();
        blocking(move || {
            Ok(list
                .iter()
                .filter_map(|a| attacher.detach(a).err().map(|e| e.to_string()))
                .collect())
        })
        .await
        .unwrap_or_else(|e| vec![e])
    }

    /// Reports (or, with no attachments, clears) our entries of each claim's
    /// status, in the background: the pod's network works whether or not the
    /// API heard about it, and a slow API server must not fail pod starts
    /// (the runtime gives the plugin seconds). Failures are logged.
    fn report(&self, records: Vec<ClaimRecord>, attached: Vec<Attachment>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let driver = self.driver.clone();
        tokio::spawn(async move {
            let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            );
            let mut by_claim: BTreeMap<(String, String), Vec<_>> = BTreeMap::new();
            for r in &records {
                let label = format!("{}/{}", r.namespace, r.name);
                let entry = by_claim
                    .entry((r.namespace.clone(), r.name.clone()))
                    .or_default();
                for a in attached.iter().filter(|a| a.claim == label) {
                    let pool = r
                        .devices
                        .iter()
                        .find(|d| d.device == a.device)
                        .map(|d| d.pool.clone())
                        .unwrap_or_default();
                    entry.push(claim_status::device_status(&driver, &pool, a, &now));
                }
            }
            for ((ns, name), devices) in by_claim {
                let apply = claim_status::apply(client.clone(), &ns, &name, devices);
                match tokio::time::timeout(REPORT_TIMEOUT, apply).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        warn!(claim = %format!("{ns}/{name}"), error = %e, "could not report device status in the claim")
                    }
                    Err(_) => {
                        warn!(claim = %format!("{ns}/{name}"), "reporting device status timed out")
                    }
                }
            }
        });
    }

    /// Reconciles after a (re)connect: detaches pods that are gone and
    /// attaches running pods that have prepared VFs but no attachment.
    pub async fn reconcile(&self, pods: &[PodSandbox]) -> Result<(), String> {
        let live: Vec<&str> = pods.iter().map(|p| p.uid.as_str()).collect();
        let mut errors = Vec::new();
        let store = self.store.clone();
        let records =
            blocking(move || attachments::list(store.database()).map_err(|e| e.to_string()))
                .await?;
        for record in records {
            if live.contains(&record.pod_uid.as_str()) {
                continue;
            }
            let lock = self.lock_for(&record.pod_uid);
            let _guard = lock.lock().await;
            if let Err(e) = self.detach_record(&record).await {
                errors.push(e);
            }
        }
        for pod in pods {
            if let Err(e) = self.attach(pod).await {
                errors.push(format!("pod {}: {e}", pod.display_name()));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

impl<C: PodClaims> PodHandler for PodNetworkHandler<C> {
    async fn run_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), String> {
        self.attach(pod).await
    }

    async fn stop_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), String> {
        self.detach(pod).await
    }

    async fn remove_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), String> {
        self.detach(pod).await
    }

    async fn synchronize(&self, pods: &[PodSandbox]) -> Result<(), String> {
        self.reconcile(pods).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    use ipam::{Allocation, AssignedAddress, Owner, RouteConfig};
    use kube::client::Body;
    use sriov::PciAddress;
    use sriov::netlink::RouteSocket;

    use crate::apis::ValidConfig;
    use crate::attach::netns::PinnedNetns;
    use crate::attach::test_support::{StandIn, facts, have_root, stand_in_tree};
    use crate::state::claims::CLAIM_SCHEMA_VERSION;
    use crate::state::{Phase, PreparedDevice as PreparedClaimDevice};

    const POD: &str = "0b7e4c1d-22a9-4c3e-8f05-6d1e2a3b4c5d";

    fn prepared(
        pci: PciAddress,
        mode: Mode,
        address: Option<&str>,
        if_name: Option<&str>,
    ) -> PreparedClaimDevice {
        let owner = Owner::new("claim-1", "nic", pci.device_name()).unwrap();
        PreparedClaimDevice {
            request: "nic".into(),
            pool: "node-a".into(),
            device: pci.device_name(),
            pci_address: pci,
            config: ValidConfig {
                mode,
                if_name: if_name.map(str::to_string),
                mtu: Some(1400),
                settings: Default::default(),
                addresses: None,
                routes: vec![RouteConfig {
                    dst: "10.99.0.0/16".parse().unwrap(),
                    gw: Some("10.1.0.1".parse().unwrap()),
                }],
                rdma_exclusive: false,
            },
            if_name: if_name.map(str::to_string),
            vf_settings: None,
            rdma_device: None,
            bind: None,
            addresses: address.map(|a| Allocation {
                owner,
                pool: Some("fronthaul".into()),
                addresses: vec![AssignedAddress {
                    address: a.parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                }],
                routes: vec![RouteConfig {
                    dst: "10.99.0.0/16".parse().unwrap(),
                    gw: Some("10.1.0.1".parse().unwrap()),
                }],
            }),
            cdi_device_id: None,
        }
    }

    fn record(name: &str, devices: Vec<PreparedClaimDevice>) -> ClaimRecord {
        ClaimRecord {
            schema: CLAIM_SCHEMA_VERSION,
            uid: format!("uid-{name}"),
            namespace: "ran".into(),
            name: name.into(),
            phase: Phase::Prepared,
            devices,
            cdi_spec: None,
            boot_id: "boot".into(),
            reserved_for: vec![POD.into()],
        }
    }

    fn pci(n: u8) -> PciAddress {
        PciAddress::new(0, 0x5b, 2, n).unwrap()
    }

    #[test]
    fn only_netdevice_vfs_go_to_the_pod_in_claim_order_with_routes_once() {
        let records = [
            record("z-dpdk", vec![prepared(pci(3), Mode::Dpdk, None, None)]),
            record(
                "a-fronthaul",
                vec![
                    prepared(pci(1), Mode::Netdevice, Some("10.1.0.5/24"), Some("fh0")),
                    prepared(pci(2), Mode::Netdevice, None, None),
                ],
            ),
        ];
        let devices = netdevice_devices(&records);
        let names: Vec<&str> = devices.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(names, ["pci-0000-5b-02-1", "pci-0000-5b-02-2"]);
        let d = &devices[0];
        assert_eq!(d.claim, "ran/a-fronthaul");
        assert_eq!(d.if_name.as_deref(), Some("fh0"));
        assert_eq!(d.mtu, Some(1400));
        assert_eq!(
            d.addresses,
            ["10.1.0.5/24".parse::<ipnetwork::IpNetwork>().unwrap()]
        );
        assert_eq!(
            d.routes.len(),
            1,
            "the pool's route and the config's same route count once"
        );
        assert!(devices[1].addresses.is_empty());
    }

    #[test]
    fn rdma_device_and_exclusive_flag_come_from_the_claim_record() {
        let mut exclusive = prepared(pci(1), Mode::Netdevice, None, None);
        exclusive.rdma_device = Some("mlx5_3".into());
        exclusive.config.rdma_exclusive = true;
        let mut shared = prepared(pci(2), Mode::Netdevice, None, None);
        shared.rdma_device = Some("mlx5_4".into());
        let plain = prepared(pci(3), Mode::Netdevice, None, None);
        let devices = netdevice_devices(&[record("rdma", vec![exclusive, shared, plain])]);
        let rdma: Vec<(Option<&str>, bool)> = devices
            .iter()
            .map(|d| (d.rdma_device.as_deref(), d.rdma_exclusive))
            .collect();
        assert_eq!(
            rdma,
            [
                (Some("mlx5_3"), true),
                (Some("mlx5_4"), false),
                (None, false)
            ]
        );
    }

    #[test]
    fn two_claims_of_one_pod_get_net1_and_net2() {
        // Each claim was prepared on its own; neither set ifName.
        let mut second = record(
            "b-midhaul",
            vec![prepared(pci(2), Mode::Netdevice, None, None)],
        );
        second.uid = "uid-b".into();
        let records = [
            record(
                "a-fronthaul",
                vec![prepared(pci(1), Mode::Netdevice, None, None)],
            ),
            second,
        ];
        let devices = netdevice_devices(&records);
        let names = crate::attach::plan::pod_interface_names(&devices).unwrap();
        assert_eq!(names, ["net1", "net2"]);
    }

    /// Requests the fake API received: path and JSON body.
    type Seen = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

    /// A fake API that records the claim status patches it receives.
    fn recording_client() -> (kube::Client, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let service = tower::service_fn(move |req: http::Request<Body>| {
            let log = log.clone();
            async move {
                let path = req.uri().path().to_string();
                let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
                let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                log.lock().unwrap().push((path, body.clone()));
                Ok::<_, Infallible>(http::Response::new(Body::from(
                    serde_json::to_vec(&body).unwrap(),
                )))
            }
        });
        (kube::Client::new(service, "default"), seen)
    }

    /// The `n`th status patch (1-based), once the background report sent it.
    async fn wait_for_patch(seen: &Seen, n: usize) -> (String, serde_json::Value) {
        for _ in 0..500 {
            if let Some(p) = seen.lock().unwrap().get(n - 1) {
                return p.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("status patch {n} never came");
    }

    fn pod(netns: Option<&Path>) -> PodSandbox {
        PodSandbox {
            id: "f".repeat(64),
            uid: POD.into(),
            namespace: "ran".into(),
            name: "du-0".into(),
            netns: netns.map(Path::to_path_buf),
            ips: Vec::new(),
        }
    }

    use std::path::Path;

    /// A stand-in VF prepared for a claim reserved for [`POD`], a pod
    /// namespace, and a handler over a real store.
    struct Rig {
        vf: StandIn,
        _tree: tempfile::TempDir,
        _state: tempfile::TempDir,
        _netns_dir: tempfile::TempDir,
        ns: PinnedNetns,
        store: Arc<Ipam>,
        handler: PodNetworkHandler<StoreClaims>,
    }

    fn rig(client: Option<kube::Client>) -> Rig {
        let mut host = RouteSocket::new().unwrap();
        let vf = StandIn::new(&mut host);
        let tree = stand_in_tree(&[(pci(1), Some(&vf.name))]);
        let state = tempfile::tempdir().unwrap();
        let store = Arc::new(Ipam::open(state.path(), &[]).unwrap());
        claims::init(store.database()).unwrap();
        claims::put(
            store.database(),
            &record(
                "fronthaul",
                vec![prepared(pci(1), Mode::Netdevice, Some("10.1.0.5/24"), None)],
            ),
        )
        .unwrap();
        let netns_dir = tempfile::tempdir().unwrap();
        let ns = PinnedNetns::create(&netns_dir.path().join("pod")).unwrap();
        let handler = PodNetworkHandler::new(
            store.clone(),
            StoreClaims::new(store.clone(), "boot"),
            Attacher::new(tree.path()),
            client,
            "sriov.dra.dev",
        );
        Rig {
            vf,
            _tree: tree,
            _state: state,
            _netns_dir: netns_dir,
            ns,
            store,
            handler,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pod_gets_its_vf_configured_and_gives_it_back() {
        if !have_root("a_pod_gets_its_vf_configured_and_gives_it_back") {
            return;
        }
        let (client, patches) = recording_client();
        let Rig {
            vf,
            ns,
            store,
            handler,
            ..
        } = &rig(Some(client));
        let mut host = RouteSocket::new().unwrap();
        let pod = pod(Some(ns.path()));

        handler.run_pod_sandbox(&pod).await.unwrap();
        assert!(facts(&mut host, &vf.name).is_none(), "the VF left the host");
        let stored = attachments::get(store.database(), POD).unwrap().unwrap();
        assert_eq!(stored.attachments[0].if_name, "net1");
        let inside = crate::attach::netns::run_in_netns(ns.path(), || {
            let mut s = RouteSocket::new().unwrap();
            facts(&mut s, "net1")
        })
        .unwrap()
        .expect("net1 in the pod");
        assert_eq!(inside.mtu, 1400);
        {
            let (path, body) = wait_for_patch(&patches, 1).await;
            assert_eq!(
                path,
                "/apis/resource.k8s.io/v1/namespaces/ran/resourceclaims/fronthaul/status"
            );
            let d = &body["status"]["devices"][0];
            assert_eq!(d["networkData"]["interfaceName"], "net1");
            assert_eq!(d["networkData"]["ips"][0], "10.1.0.5/24");
            assert_eq!(d["pool"], "node-a");
        }

        // A replayed RunPodSandbox changes nothing.
        handler.run_pod_sandbox(&pod).await.unwrap();

        handler.stop_pod_sandbox(&pod).await.unwrap();
        let back = facts(&mut host, &vf.name).expect("the VF is back under its own name");
        assert!(back.mtu >= 1400);
        assert!(attachments::get(store.database(), POD).unwrap().is_none());
        let (_, cleared) = wait_for_patch(&patches, 2).await;
        assert_eq!(cleared["status"]["devices"], serde_json::json!([]));
        handler.remove_pod_sandbox(&pod).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn synchronize_detaches_pods_that_went_away_and_attaches_running_ones() {
        if !have_root("synchronize_detaches_pods_that_went_away_and_attaches_running_ones") {
            return;
        }
        let Rig {
            vf,
            ns,
            store,
            handler,
            ..
        } = &rig(None);
        let mut host = RouteSocket::new().unwrap();
        // The plugin was down when the pod started: Synchronize attaches it.
        handler.synchronize(&[pod(Some(ns.path()))]).await.unwrap();
        assert!(
            facts(&mut host, &vf.name).is_none(),
            "attached on synchronize"
        );
        // The pod went away while the plugin was down again.
        handler.synchronize(&[]).await.unwrap();
        assert!(
            facts(&mut host, &vf.name).is_some(),
            "detached on synchronize"
        );
        assert!(attachments::list(store.database()).unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_recreated_sandbox_takes_the_vfs_and_the_old_ones_events_leave_them() {
        if !have_root("a_recreated_sandbox_takes_the_vfs_and_the_old_ones_events_leave_them") {
            return;
        }
        let Rig {
            ns, store, handler, ..
        } = &rig(None);
        let old = pod(Some(ns.path()));
        handler.run_pod_sandbox(&old).await.unwrap();

        // The pod's sandbox is recreated (same UID, new id and netns).
        let dir = tempfile::tempdir().unwrap();
        let new_ns = PinnedNetns::create(&dir.path().join("pod-2")).unwrap();
        let mut new = pod(Some(new_ns.path()));
        new.id = "e".repeat(64);
        handler.run_pod_sandbox(&new).await.unwrap();
        let in_ns = |path: &Path| {
            crate::attach::netns::run_in_netns(path, || {
                facts(&mut RouteSocket::new().unwrap(), "net1")
            })
            .unwrap()
            .is_some()
        };
        assert!(
            in_ns(new_ns.path()) && !in_ns(ns.path()),
            "the VF moved to the new sandbox"
        );

        // The kubelet removes the old sandbox: the new one keeps its VF.
        handler.remove_pod_sandbox(&old).await.unwrap();
        assert!(in_ns(new_ns.path()));
        let record = attachments::get(store.database(), POD).unwrap().unwrap();
        assert_eq!(record.sandbox_id, new.id);
        handler.stop_pod_sandbox(&new).await.unwrap();
        assert!(attachments::get(store.database(), POD).unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_driver_that_dies_mid_attach_still_gets_the_vfs_back() {
        if !have_root("a_driver_that_dies_mid_attach_still_gets_the_vfs_back") {
            return;
        }
        let Rig {
            vf,
            ns,
            store,
            handler,
            ..
        } = &rig(None);
        let original = facts(&mut RouteSocket::new().unwrap(), &vf.name).unwrap();
        // What attach does up to the crash: the plan is written, the VF
        // moved, and the driver dies before the final record.
        let records = StoreClaims::new(store.clone(), "boot")
            .claims_for_pod(POD)
            .unwrap();
        let devices = netdevice_devices(&records);
        let plan = handler.attacher.provisional(&devices, ns.path()).unwrap();
        attachments::put(
            store.database(),
            &PodAttachments {
                pod_uid: POD.into(),
                sandbox_id: pod(Some(ns.path())).id,
                pod: "ran/du-0".into(),
                netns: ns.path().to_path_buf(),
                attachments: plan,
            },
        )
        .unwrap();
        handler.attacher.attach_pod(&devices, ns.path()).unwrap();
        assert!(
            facts(&mut RouteSocket::new().unwrap(), &vf.name).is_none(),
            "in the pod"
        );

        // The restarted driver learns the pod is gone.
        handler.synchronize(&[]).await.unwrap();
        let back =
            facts(&mut RouteSocket::new().unwrap(), &vf.name).expect("back under its host name");
        assert_eq!(
            (back.mtu, back.mac.clone()),
            (original.mtu, original.mac.clone())
        );
        assert!(attachments::list(store.database()).unwrap().is_empty());
    }

    #[tokio::test]
    async fn host_network_pods_cannot_take_netdevice_vfs_and_pods_without_claims_pass() {
        let state = tempfile::tempdir().unwrap();
        let store = Arc::new(Ipam::open(state.path(), &[]).unwrap());
        claims::init(store.database()).unwrap();
        let handler = PodNetworkHandler::new(
            store.clone(),
            StoreClaims::new(store.clone(), "boot"),
            Attacher::new("/nonexistent"),
            None,
            "sriov.dra.dev",
        );
        handler.run_pod_sandbox(&pod(None)).await.unwrap();
        claims::put(
            store.database(),
            &record(
                "fronthaul",
                vec![prepared(pci(1), Mode::Netdevice, None, None)],
            ),
        )
        .unwrap();
        let err = handler.run_pod_sandbox(&pod(None)).await.unwrap_err();
        assert!(
            err.contains("host network") && err.contains("pci-0000-5b-02-1"),
            "{err}"
        );
        // Nothing attached, so stopping is a no-op.
        handler.stop_pod_sandbox(&pod(None)).await.unwrap();
    }
}

#[cfg(test)]
#[path = "pod_network_e2e_tests.rs"]
mod e2e_tests;
