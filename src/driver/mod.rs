//! `sriov-dra run`: the node driver, wired together.
//!
//! Start-up order matters: the state store first (it says which VFs are in
//! use), then the PF policies (which may recreate VFs, so never while one is
//! prepared), then the inventory, the sockets the kubelet and the runtime
//! talk to, and recovery against the API in the background (periodic; a
//! node whose API is down still serves its pods).

use std::sync::Arc;

use anyhow::Context;
use ipam::Ipam;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::attach::Attacher;
use crate::claim::device_ops::SystemDeviceOps;
use crate::claim::prepare::{PrepareConfig, Preparer};
use crate::claim::recover::{self, RecoverySchedule};
use crate::claim::single_leases::SingleLeases;
use crate::config::NodeConfig;
use crate::debug_api::{self, DebugState};
use crate::inventory::NodeInventory;
use crate::kube::claims::ClaimReader;
use crate::kube::leaser::{BlockSignal, Leaser, LeaserConfig};
use crate::kube::publish::SlicePublisher;
use crate::kube::republish::{PublishLoop, REPUBLISH_INTERVAL};
use crate::kube::slice_watch::watch_slices;
use crate::kubelet::node_service::NodeService;
use crate::kubelet::registration::PluginPaths;
use crate::nri::plugin::NriPluginConfig;
use crate::pf_policies::apply_pf_policies;
use crate::pod::claims::StoreClaims;
use crate::pod::handler::PodNetworkHandler;
use crate::readiness::Readiness;
use crate::state::boot::current_boot_id;
use crate::state::claims;

mod sides;
pub use sides::{KubeletSide, serve_kubelet, serve_runtime};

/// Runs the driver until SIGTERM or SIGINT.
///
/// The debug API starts before the kubelet and runtime sockets, so an
/// operator can look at the state while they come up.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    raise_open_file_limit();
    let node = config.resolve_node_name()?;
    let readiness = Readiness::new();
    let ipam = Arc::new(
        Ipam::open(&config.state_dir, &config.ipam.pools).with_context(|| {
            format!(
                "cannot open the state store in {}",
                config.state_dir.display()
            )
        })?,
    );
    claims::init(ipam.database()).context("cannot initialise the claim tables")?;
    ipam.observe_commits(|took| crate::metrics::metrics().store_commit(took));
    readiness.set_store_open(true);
    let boot_id = current_boot_id().context("cannot read the kernel boot ID")?;
    apply_pf_policies(&config, &ipam, &boot_id);
    let inventory = NodeInventory::discover(&config.sysfs_root)?;
    info!(node = %node, functions = inventory.devices.len(), "inventory read");

    let client = crate::kube::client::client().await?;

    // Cluster-wide pools: Prepare allocates from the store alone and wakes
    // the leaser when this node's blocks run dry.
    let leaser = ipam_leaser_needed(&ipam).then(|| {
        let signal = Arc::new(BlockSignal::default());
        ipam.set_block_demand(signal.clone());
        Leaser::new(
            client.clone(),
            ipam.clone(),
            LeaserConfig::from_node_config(&config, &node),
            signal,
        )
    });

    let offered: Vec<String> = inventory.offered(&config).map(|d| d.name()).collect();
    let preparer = Preparer::new(
        PrepareConfig::from_node_config(&config, &node, boot_id.clone()),
        ipam.clone(),
        &inventory,
        offered,
        Arc::new(SystemDeviceOps::new(&config.sysfs_root, "/dev")),
    )?;
    // Static addresses of cluster pools outside this node's blocks are
    // leased one by one, sharing the leaser's marks.
    let preparer = match &leaser {
        Some(l) => preparer.with_single_leases(SingleLeases::new(
            l.static_leases(),
            client.clone(),
            &node,
            tokio::runtime::Handle::current(),
        )),
        None => preparer,
    };
    let preparer = Arc::new(preparer);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let debug = debug_api::serve(
        config.debug_address,
        config.debug_allow_remote,
        DebugState {
            store: ipam.clone(),
            sysfs_root: config.sysfs_root.clone(),
            readiness: readiness.clone(),
        },
        stopped(),
    )
    .await?;

    let paths = PluginPaths::new(&config.kubelet_dir, &config.driver_name);
    let service = NodeService::new(preparer.clone(), ClaimReader::new(client.clone()));
    let health = Arc::new(crate::health::HealthBook::new(&node));
    let kubelet = serve_kubelet(&paths, service, &health, &readiness, &stopped)?;

    let handler = PodNetworkHandler::new(
        ipam.clone(),
        StoreClaims::new(ipam.clone(), &boot_id),
        Attacher::new(&config.sysfs_root),
        Some(client.clone()),
        &config.driver_name,
    );
    let nri = serve_runtime(
        NriPluginConfig {
            socket: config.nri_socket.clone(),
            ..Default::default()
        },
        handler,
        &readiness,
        stopped(),
    );
    // Recovery asks the API about every claim: after the sockets are up,
    // so a node whose API is unreachable still serves its pods.
    let recovery = tokio::spawn(recover::run(
        preparer.clone(),
        ipam.clone(),
        ClaimReader::new(client.clone()),
        RecoverySchedule::default(),
        stopped(),
    ));
    let leaser = leaser.map(|l| tokio::spawn(l.run(stopped())));
    // Kernel link and PCI events, and changes to our slices in the API,
    // bring the next publish round forward.
    let (nudges, nudged) = crate::events::channel();
    crate::events::kernel::spawn(nudges.clone());
    // The loop reads the Node (the slices' owner) before each publish.
    let slices = SlicePublisher::new(client.clone(), &config, &node, None);
    tokio::spawn(watch_slices(
        client.clone(),
        slices.selector(),
        nudges,
        stopped(),
    ));
    let publisher = tokio::spawn(
        PublishLoop {
            publisher: slices,
            client,
            node: node.clone(),
            preparer,
            config: config.clone(),
            registration: kubelet.registration.state.clone(),
            readiness,
            nudges: nudged,
            health,
            period: REPUBLISH_INTERVAL,
        }
        .run(stopped()),
    );

    shutdown_signal().await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = kubelet.dra.await;
    let _ = kubelet.registration.task.await;
    let _ = nri.await;
    let _ = publisher.await;
    let _ = recovery.await;
    if let Some(leaser) = leaser {
        let _ = leaser.await;
    }
    let _ = debug.await;
    Ok(())
}

/// Whether this node has cluster-wide pools, or blocks of one it no longer
/// defines (their leases are reconciled and given back).
fn ipam_leaser_needed(ipam: &Ipam) -> bool {
    ipam.pools().any(|p| p.is_cluster()) || ipam.blocks().map(|b| !b.is_empty()).unwrap_or(true)
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

/// Raises the soft open-file limit to the hard one, as Go programs do at
/// start: container runtimes often hand out a soft limit of 1024, and the
/// publish loop keeps each network function's sysfs directory open between
/// scans (a few thousand on a large node; see `sriov::memo`). A failure
/// only costs speed, so it is logged, not fatal.
pub fn raise_open_file_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: RLIMIT_NOFILE with a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return warn!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit");
    }
    if limit.rlim_cur >= limit.rlim_max {
        return;
    }
    let before = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return warn!(error = %std::io::Error::last_os_error(), "cannot raise the open-file limit");
    }
    debug!(
        from = before,
        to = limit.rlim_max,
        "raised the open-file limit"
    );
}
