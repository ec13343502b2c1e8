//! `sriov-dra run`: the node driver, wired together.
//!
//! Start-up order matters: the state store first (it says which VFs are in
//! use), then the PF policies (which may recreate VFs, so never while one is
//! prepared), then the inventory, recovery against the API, and only then
//! the sockets the kubelet and the runtime talk to.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ipam::Ipam;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use sriov::PciAddress;
use sriov::bind::FsSysfsWriter;
use sriov::inventory::Role;
use sriov::policy::{self, NumVfsPlan, PfStatus};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::attach::Attacher;
use crate::config::NodeConfig;
use crate::debug_api::{self, DebugState};
use crate::inventory::NodeInventory;
use crate::kube::claims::ClaimReader;
use crate::kube::publish::SlicePublisher;
use crate::nri::plugin::{NriPlugin, NriPluginConfig};
use crate::plugin::device_ops::SystemDeviceOps;
use crate::plugin::node_service::{NodeService, serve_node_service};
use crate::plugin::prepare::{PrepareConfig, Preparer, current_boot_id};
use crate::plugin::registration::{PluginPaths, RegistrationState, serve_registration};
use crate::pod_network::{PodNetworkHandler, StoreClaims};
use crate::recover;
use crate::state::claims;

/// How often the inventory is re-read and the slices republished when
/// nothing else triggers it.
pub const REPUBLISH_INTERVAL: Duration = Duration::from_secs(60);

/// Runs the driver until SIGTERM or SIGINT.
///
/// The debug API starts before the kubelet and runtime sockets, so an
/// operator can look at the state while they come up.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    let node = config.resolve_node_name()?;
    let ipam = Arc::new(
        Ipam::open(&config.state_dir, &config.ipam.pools).with_context(|| {
            format!(
                "cannot open the state store in {}",
                config.state_dir.display()
            )
        })?,
    );
    claims::init(ipam.database()).context("cannot initialise the claim tables")?;
    let boot_id = current_boot_id().context("cannot read the kernel boot ID")?;
    apply_pf_policies(&config, &ipam, &boot_id);
    let inventory = NodeInventory::discover(&config.sysfs_root)?;
    info!(node = %node, functions = inventory.devices.len(), "inventory read");

    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client (in-cluster config or KUBECONFIG)")?;
    let owner = node_owner(&client, &node).await;

    let offered: Vec<String> = inventory.offered(&config).map(|d| d.name()).collect();
    let preparer = Preparer::new(
        PrepareConfig::from_node_config(&config, &node, boot_id.clone()),
        ipam.clone(),
        &inventory,
        offered,
        Arc::new(SystemDeviceOps::new(&config.sysfs_root, "/dev")),
    )?;
    let preparer = Arc::new(preparer);
    let recovered = recover::on_start(&preparer, &ipam, &ClaimReader::new(client.clone())).await;
    info!(?recovered, "recovery done");

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let debug = debug_api::serve(
        config.debug_address,
        DebugState {
            store: ipam.clone(),
            sysfs_root: config.sysfs_root.clone(),
        },
        stopped(),
    )
    .await?;

    let paths = PluginPaths::new(&config.kubelet_dir, &config.driver_name);
    let service = NodeService::new(preparer.clone(), ClaimReader::new(client.clone()));
    let dra = serve_node_service(&paths.dra_socket, service, stopped())?;
    let registration = serve_registration(&paths, stopped())?;

    let handler = PodNetworkHandler::new(
        ipam.clone(),
        StoreClaims::new(ipam.clone(), &boot_id),
        Attacher::new(&config.sysfs_root),
        Some(client.clone()),
        &config.driver_name,
    );
    let nri = tokio::spawn(NriPlugin::run(
        NriPluginConfig {
            socket: config.nri_socket.clone(),
            ..Default::default()
        },
        Arc::new(handler),
        stopped(),
    ));
    let publisher = tokio::spawn(publish_loop(
        SlicePublisher::new(client.clone(), &config, &node, owner),
        client,
        node.clone(),
        preparer,
        config.clone(),
        registration.state.clone(),
        stopped(),
    ));

    shutdown_signal().await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = dra.await;
    let _ = registration.task.await;
    let _ = nri.await;
    let _ = publisher.await;
    let _ = debug.await;
    Ok(())
}

/// Re-reads the inventory (handing it to the preparer) and republishes at
/// start, every [`REPUBLISH_INTERVAL`], and whenever the
/// kubelet's registration verdict changes (it wipes our slices while we are
/// not registered); unchanged inventories write nothing.
async fn publish_loop(
    mut publisher: SlicePublisher,
    client: kube::Client,
    node: String,
    preparer: Arc<Preparer>,
    config: NodeConfig,
    mut registration: watch::Receiver<RegistrationState>,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    loop {
        let (root, held_by) = (config.sysfs_root.clone(), preparer.clone());
        let scanned = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let inventory = NodeInventory::discover(&root)?;
            let held = held_by.held_devices()?;
            Ok((inventory, held))
        });
        match scanned.await {
            Ok(Ok((inventory, held))) => {
                if !publisher.has_owner()
                    && let Some(owner) = node_owner(&client, &node).await
                {
                    publisher.set_owner(owner);
                }
                // What is published is what can be prepared.
                preparer.refresh(&inventory, inventory.offered(&config).map(|d| d.name()));
                match publisher.publish(&inventory, &config, &held).await {
                    Ok(outcome) => info!(?outcome, "ResourceSlices published"),
                    Err(e) => {
                        warn!(error = %format!("{e:#}"), "publishing ResourceSlices failed; retrying")
                    }
                }
            }
            Ok(Err(e)) => error!(error = %format!("{e:#}"), "inventory failed"),
            Err(e) => error!(error = %e, "inventory task failed"),
        }
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(REPUBLISH_INTERVAL) => {}
            changed = registration.changed() => {
                if changed.is_ok() {
                    info!(state = ?*registration.borrow(), "kubelet registration changed; republishing");
                }
            }
        }
    }
}

/// The Node object as the slices' owner, so they go when the node goes.
async fn node_owner(client: &kube::Client, node: &str) -> Option<OwnerReference> {
    let api: Api<Node> = Api::all(client.clone());
    match api.get(node).await {
        // The API refuses an owner reference without a UID.
        Ok(n) => n
            .metadata
            .uid
            .filter(|uid| !uid.is_empty())
            .map(|uid| OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.to_string(),
                uid,
                ..Default::default()
            }),
        Err(e) => {
            warn!(node, error = %e, "cannot read the Node object; slices will have no owner");
            None
        }
    }
}

/// Sets `sriov_numvfs` where a policy asks for a different count, never on
/// a PF with a VF prepared for a claim in this boot (that is logged as an
/// error and the PF left alone; a record from before a reboot holds no VF).
pub fn apply_pf_policies(config: &NodeConfig, ipam: &Ipam, boot_id: &str) {
    if config.pf_policies.is_empty() {
        return;
    }
    let prepared: BTreeMap<PciAddress, String> = match claims::list(ipam.database()) {
        Ok(records) => records
            .into_iter()
            .filter(|r| r.boot_id == boot_id)
            .flat_map(|r| {
                let label = format!("{}/{}", r.namespace, r.name);
                r.devices
                    .into_iter()
                    .map(move |d| (d.pci_address, label.clone()))
            })
            .collect(),
        Err(e) => {
            error!(error = %e, "cannot read prepared claims; not applying pfPolicies");
            return;
        }
    };
    let inventory = match sriov::scan(&config.sysfs_root) {
        Ok(i) => i,
        Err(e) => {
            error!(error = %e, "cannot read PFs; not applying pfPolicies");
            return;
        }
    };
    let mut writer = FsSysfsWriter::new(&config.sysfs_root);
    let pfs: BTreeSet<PciAddress> = inventory
        .functions
        .iter()
        .filter(|f| matches!(f.role, Role::Pf { .. }))
        .map(|f| f.address)
        .collect();
    for pf in pfs {
        let result = (|| {
            let status = PfStatus::read(&config.sysfs_root, pf)?;
            let Some(policy) = policy::policy_for(&config.pf_policies, &status)? else {
                return Ok(None);
            };
            let plan = policy::plan_num_vfs(policy, &status, &prepared)?;
            policy::apply_num_vfs(&mut writer, &status, &plan)?;
            Ok::<_, policy::PolicyError>(Some(plan))
        })();
        match result {
            Ok(Some(NumVfsPlan::Resize { from, to, .. })) => {
                info!(%pf, from, to, "sriov_numvfs changed")
            }
            Ok(_) => {}
            Err(e) => error!(%pf, error = %e, "pfPolicies not applied"),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
