//! The driver's real parts, started in-process on the demo node as
//! `driver::run` wires them on a real one: state store, preparer, the DRA
//! node service (with the health stream) and plugin registration on the
//! kubelet sockets and the NRI plugin with the pod network handler (both
//! through `driver::serve_kubelet`/`serve_runtime`, as `run` starts them),
//! one round of slice publishing, and the debug API. What is not
//! real: the API server (`FakeApi`) and the PF side of the NIC
//! (`SimulatedNicOps`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ipam::Ipam;
use sriov::testing::sim_pf::{DriverProfile, SimulatedPf};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::claim::{NODE, pools};
use super::node::{DemoNode, PF_NAME, VF_COUNT};
use crate::attach::Attacher;
use crate::claim::prepare::{PrepareConfig, Preparer};
use crate::config::NodeConfig;
use crate::debug_api::{DebugState, Limits, router, with_limits};
use crate::driver::{serve_kubelet, serve_runtime};
use crate::health::HealthBook;
use crate::inventory::NodeInventory;
use crate::kube::claims::ClaimReader;
use crate::kube::node::node_owner;
use crate::kube::publish::SlicePublisher;
use crate::kubelet::node_service::NodeService;
use crate::kubelet::registration::PluginPaths;
use crate::nri::plugin::NriPluginConfig;
use crate::pod::claims::StoreClaims;
use crate::pod::handler::PodNetworkHandler;
use crate::readiness::Readiness;
use crate::state::boot::current_boot_id;
use crate::state::claims;
use crate::testing::fake_api::FakeApi;
use crate::testing::node::{DRIVER, offered_vfs};
use crate::testing::sim_nic::SimulatedNicOps;

/// How long each part may take to stop before the demo goes on without it.
const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// The running driver parts.
pub struct DemoDriver {
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    /// The API server stand-in: the claim lives here.
    pub api: FakeApi,
    /// The NIC: the simulated PF records VF settings.
    pub ops: Arc<SimulatedNicOps>,
    /// `http://127.0.0.1:<port>`.
    pub debug_url: String,
    /// The kubelet's sockets.
    pub paths: PluginPaths,
    /// The runtime's NRI socket (the runtime listens, the plugin dials).
    pub nri_socket: PathBuf,
}

impl DemoDriver {
    /// Starts every part on `node`; the NRI plugin dials `nri_socket`.
    pub async fn start(node: &DemoNode, nri_socket: PathBuf) -> anyhow::Result<DemoDriver> {
        let dir = node.dir()?.to_path_buf();
        let sysfs = node.sysfs()?;
        let readiness = Readiness::new();
        let store = Arc::new(
            Ipam::open(&dir.join("state"), &pools()).context("cannot open the state store")?,
        );
        claims::init(store.database()).context("cannot initialise the claim tables")?;
        readiness.set_store_open(true);
        let boot_id = current_boot_id().context("cannot read the kernel boot ID")?;
        let inventory = NodeInventory::discover(&sysfs)?;
        let ops = Arc::new(SimulatedNicOps::new(
            &sysfs,
            SimulatedPf::new(PF_NAME, VF_COUNT, DriverProfile::mlx5_legacy()),
        ));
        let preparer = Arc::new(Preparer::new(
            PrepareConfig {
                driver: DRIVER.into(),
                pool: NODE.into(),
                cdi_dir: dir.join("cdi"),
                boot_id: boot_id.clone(),
            },
            store.clone(),
            &inventory,
            offered_vfs(&inventory),
            ops.clone(),
        )?);
        let api = FakeApi::new();
        api.put_node(NODE, "d3m0n0de-0000-4000-8000-000000000017");
        let client = api.client();

        let (stop, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let mut tasks = Vec::new();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("debug API: cannot listen on 127.0.0.1")?;
        let debug_url = format!("http://{}", listener.local_addr()?);
        let app = with_limits(
            router(DebugState {
                store: store.clone(),
                sysfs_root: sysfs.clone(),
                readiness: readiness.clone(),
            }),
            Limits::default(),
        );
        let shutdown = stopped();
        tasks.push((
            "debug API",
            tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await;
            }),
        ));

        let paths = PluginPaths::new(&dir.join("kubelet"), DRIVER);
        let service = NodeService::new(preparer, ClaimReader::new(client.clone()));
        let health = HealthBook::new(NODE);
        let kubelet = serve_kubelet(&paths, service, &health, &readiness, &stopped)?;
        tasks.push((
            "DRA service",
            tokio::spawn(async move {
                let _ = kubelet.dra.await;
            }),
        ));
        let registration_task = kubelet.registration.task;
        tasks.push((
            "registration",
            tokio::spawn(async move {
                let _ = registration_task.await;
            }),
        ));

        let handler = PodNetworkHandler::new(
            store.clone(),
            StoreClaims::new(store.clone(), &boot_id),
            Attacher::new(&sysfs),
            Some(client),
            DRIVER,
        );
        let config = NriPluginConfig {
            socket: nri_socket.clone(),
            reconnect_min: Duration::from_millis(20),
            reconnect_max: Duration::from_millis(500),
            ..Default::default()
        };
        let nri = serve_runtime(config, handler, &readiness, stopped());
        tasks.push((
            "NRI plugin",
            tokio::spawn(async move {
                let _ = nri.await;
            }),
        ));
        // One publish round, as the driver's loop starts with: the slices
        // the scheduler would allocate the claim's device from.
        let config = NodeConfig {
            sysfs_root: sysfs.clone(),
            ..NodeConfig::default()
        };
        let owner = node_owner(&api.client(), NODE).await;
        SlicePublisher::new(api.client(), &config, NODE, owner)
            .publish(&inventory, &config, &BTreeSet::new())
            .await
            .context("publishing the ResourceSlices")?;
        readiness.set_slices_published();
        Ok(DemoDriver {
            stop,
            tasks,
            api,
            ops,
            debug_url,
            paths,
            nri_socket,
        })
    }

    /// Stops every part and waits for it (each within [`STOP_PATIENCE`]);
    /// returns the parts that did not stop in time.
    pub async fn stop(self) -> Vec<&'static str> {
        let _ = self.stop.send(true);
        let mut late = Vec::new();
        for (name, task) in self.tasks {
            if tokio::time::timeout(STOP_PATIENCE, task).await.is_err() {
                late.push(name);
            }
        }
        late
    }
}
