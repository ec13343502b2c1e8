//! The publish loop end to end on a fixture sysfs tree, against the fake
//! API server (with its slice watch) and the kubelet's health stream on a
//! real unix socket. A test plays the kernel by changing the tree and
//! sending the nudge the kernel's event would have caused.

use super::*;
use std::path::Path;
use std::time::Instant as StdInstant;

use proto::dra_health::v1alpha1::dra_resource_health_client::DraResourceHealthClient;
use proto::dra_health::v1alpha1::{HealthStatus, NodeWatchResourcesRequest};
use sriov::fixture::{DeviceSpec, Fixture, NetdevSpec, TreeBuilder};
use tempfile::TempDir;

use crate::events::{self, NudgeSender, nudge};
use crate::kube::claims::ClaimReader;
use crate::kube::slice_watch::watch_slices;
use crate::kubelet::health_service::HealthService;
use crate::kubelet::node_service::{NodeService, serve_node_service_with_health};
use crate::kubelet::socket::connect_unix;
use crate::testing::device_ops::RecordingDeviceOps;
use crate::testing::fake_api::FakeApi;
use crate::testing::node::NodeParts;

/// The 2 s the issue promises, from the change to the API and the kubelet.
const PROMISE: Duration = Duration::from_secs(2);
const PF: &str = "0000:af:00.0";

/// A driver's publishing side on the E810 fixture (PF `ens3f0`, 4 VFs).
struct Node {
    api: FakeApi,
    sysfs: TempDir,
    _state: TempDir,
    nudges: NudgeSender,
    health: Arc<HealthBook>,
    registration: watch::Sender<RegistrationState>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn stopped(rx: &watch::Receiver<bool>) -> impl Future<Output = ()> + use<> {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

impl Node {
    /// A node whose safety net is far off: only nudges make rounds.
    async fn start() -> Node {
        Node::start_with_period(Duration::from_secs(3600)).await
    }

    async fn start_with_period(period: Duration) -> Node {
        let api = FakeApi::new();
        api.put_node("node-a", "uid-1");
        let sysfs = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
        Fixture::E810.build(sysfs.path()).unwrap();
        let state = tempfile::tempdir().unwrap();
        let parts = NodeParts {
            sysfs: sysfs.path(),
            state_dir: state.path(),
            cdi_dir: state.path(),
            pools: &[],
            pool: "node-a",
            boot_id: "boot-1",
        };
        let (_ipam, preparer) = parts.preparer(Arc::new(RecordingDeviceOps::new()));
        let config = NodeConfig {
            sysfs_root: sysfs.path().to_path_buf(),
            ..Default::default()
        };
        let publisher = SlicePublisher::new(api.client(), &config, "node-a", None);
        let selector = publisher.selector();
        let (tx, rx) = events::channel();
        let health = Arc::new(HealthBook::new("node-a"));
        let (registration, registration_rx) = watch::channel(RegistrationState::Registered);
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(watch_slices(
            api.client(),
            selector,
            tx.clone(),
            stopped(&stop_rx),
        ));
        let task = tokio::spawn(
            PublishLoop {
                publisher,
                client: api.client(),
                node: "node-a".into(),
                preparer: Arc::new(preparer),
                config,
                registration: registration_rx,
                readiness: Readiness::new(),
                nudges: rx,
                health: health.clone(),
                period,
            }
            .run(stopped(&stop_rx)),
        );
        let node = Node {
            api,
            sysfs,
            _state: state,
            nudges: tx,
            health,
            registration,
            stop,
            task,
        };
        node.until("the first publish", |n| !n.devices().is_empty())
            .await;
        node
    }

    /// Every published device, by name, as JSON.
    fn devices(&self) -> BTreeMap<String, serde_json::Value> {
        self.api
            .slices()
            .values()
            .flat_map(|s| s["spec"]["devices"].as_array().cloned().unwrap_or_default())
            .filter_map(|d| Some((d["name"].as_str()?.to_string(), d)))
            .collect()
    }

    fn taint_keys(&self, device: &str) -> Vec<String> {
        self.devices()
            .get(device)
            .and_then(|d| d["taints"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t["key"].as_str().map(str::to_string))
            .collect()
    }

    fn device_dir(&self, address: &str) -> std::path::PathBuf {
        self.sysfs.path().join("bus/pci/devices").join(address)
    }

    fn set_pf_link(&self, operstate: &str) {
        std::fs::write(
            self.device_dir(PF).join("net/ens3f0/operstate"),
            format!("{operstate}\n"),
        )
        .unwrap();
        nudge(
            &self.nudges,
            Nudge::Link {
                name: "ens3f0".into(),
            },
        );
    }

    fn writes(&self) -> usize {
        self.api
            .calls()
            .iter()
            .filter(|c| c.method == "PATCH" || c.method == "DELETE")
            .count()
    }

    /// Waits until `done` holds; panics after the promise. Returns how long.
    async fn until(&self, what: &str, done: impl Fn(&Node) -> bool) -> Duration {
        let started = StdInstant::now();
        while !done(self) {
            assert!(
                started.elapsed() < PROMISE,
                "{what}: not within {PROMISE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

const VFS: [&str; 4] = [
    "pci-0000-af-01-0",
    "pci-0000-af-01-1",
    "pci-0000-af-01-2",
    "pci-0000-af-01-3",
];

/// The kubelet's side of the health stream, over a real socket.
async fn subscribe(
    dir: &Path,
    node: &Node,
) -> tonic::Streaming<proto::dra_health::v1alpha1::NodeWatchResourcesResponse> {
    let socket = dir.join("dra.sock");
    let service = NodeService::new(
        Arc::new(
            NodeParts {
                sysfs: node.sysfs.path(),
                state_dir: dir,
                cdi_dir: dir,
                pools: &[],
                pool: "node-a",
                boot_id: "boot-1",
            }
            .preparer(Arc::new(RecordingDeviceOps::new()))
            .1,
        ),
        ClaimReader::new(node.api.client()),
    );
    let (_stop, stop_rx) = watch::channel(false);
    serve_node_service_with_health(
        &socket,
        service,
        Some(HealthService::new(node.health.subscribe())),
        std::future::pending(),
    )
    .unwrap();
    drop(stop_rx);
    let mut kubelet = DraResourceHealthClient::new(connect_unix(&socket).await.unwrap());
    kubelet
        .node_watch_resources(NodeWatchResourcesRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// The first message in which every VF has `status`, within the promise
/// counted from `since` (the change); returns how long after it.
async fn until_all(
    stream: &mut tonic::Streaming<proto::dra_health::v1alpha1::NodeWatchResourcesResponse>,
    status: HealthStatus,
    since: StdInstant,
) -> Duration {
    let started = since;
    loop {
        let left = PROMISE.saturating_sub(started.elapsed());
        let message = tokio::time::timeout(left, stream.message())
            .await
            .unwrap_or_else(|_| panic!("health stream: no {status:?} within {PROMISE:?}"))
            .unwrap()
            .unwrap();
        let all = VFS.iter().all(|vf| {
            message.devices.iter().any(|d| {
                d.device.as_ref().is_some_and(|id| id.device_name == *vf)
                    && d.health == status as i32
            })
        });
        if all {
            return started.elapsed();
        }
    }
}

#[tokio::test]
async fn a_pf_link_going_down_taints_its_vfs_and_the_kubelet_hears_within_2s_and_recovery_clears_both()
 {
    let node = Node::start().await;
    let sockets = tempfile::tempdir().unwrap();
    let mut kubelet = subscribe(sockets.path(), &node).await;
    until_all(&mut kubelet, HealthStatus::Healthy, StdInstant::now()).await;
    assert!(VFS.iter().all(|vf| node.taint_keys(vf).is_empty()));

    let changed = StdInstant::now();
    node.set_pf_link("down");
    let tainted = node
        .until("taints", |n| {
            VFS.iter()
                .all(|vf| n.taint_keys(vf) == ["sriov.dra.dev/pf-link-down"])
        })
        .await;
    // The kubelet's 2 s count from the change, not from the taint.
    let reported = until_all(&mut kubelet, HealthStatus::Unhealthy, changed).await;
    eprintln!("PF link down: tainted after {tainted:?}, kubelet told after {reported:?}");
    let taint = &node.devices()["pci-0000-af-01-0"]["taints"][0];
    assert_eq!(taint["effect"], "NoSchedule");
    assert!(taint["timeAdded"].is_string(), "{taint}");

    let changed = StdInstant::now();
    node.set_pf_link("up");
    node.until("taints cleared", |n| {
        VFS.iter().all(|vf| n.taint_keys(vf).is_empty())
    })
    .await;
    until_all(&mut kubelet, HealthStatus::Healthy, changed).await;
    node.stop().await;
}

#[tokio::test]
async fn a_link_event_re_reads_only_its_function_and_lost_events_read_everything() {
    let node = Node::start().await;
    // A change no event announced, then the PF's link event.
    let mtu = change_unannounced(&node);
    assert_eq!(mtu(&node), Some(1500));
    node.set_pf_link("down");
    node.until("taints", |n| {
        VFS.iter()
            .all(|vf| n.taint_keys(vf) == ["sriov.dra.dev/pf-link-down"])
    })
    .await;
    assert_eq!(mtu(&node), Some(1500), "only the PF was re-read");

    nudge(&node.nudges, Nudge::Overrun);
    node.until("the unannounced MTU", |n| mtu(n) == Some(9000))
        .await;
    node.stop().await;
}

#[tokio::test]
async fn a_new_vf_is_published_within_2s() {
    let node = Node::start().await;
    let mut tree = TreeBuilder::new(node.sysfs.path()).unwrap();
    let vf: sriov::PciAddress = "0000:af:01.4".parse().unwrap();
    tree.device(&DeviceSpec {
        address: vf,
        parent: "pci0000:ae/0000:ae:00.0".into(),
        ids: (0x8086, 0x1889),
        subsystem: (0x8086, 0x0000),
        class: 0x020000,
        driver: Some("iavf".into()),
        numa_node: 1,
        iommu_group: Some(65),
        total_vfs: None,
        netdev: Some(NetdevSpec {
            name: "ens3f0v4".into(),
            mac: "02:00:af:01:00:04".into(),
            mtu: 1500,
            speed: None,
            operstate: "up",
            arp_type: 1,
            phys_port_name: None,
            eswitch_mode: None,
        }),
        virtio_index: None,
        rdma: None,
    })
    .unwrap();
    tree.link_vf(PF.parse().unwrap(), 4, vf).unwrap();
    nudge(
        &node.nudges,
        Nudge::Pci {
            action: "add".into(),
            device: vf.to_string(),
        },
    );
    let took = node
        .until("the new VF", |n| {
            n.devices().contains_key("pci-0000-af-01-4")
        })
        .await;
    eprintln!("new VF published after {took:?}");
    node.stop().await;
}

#[tokio::test]
async fn a_slice_deleted_from_outside_is_back_within_2s_and_nudges_alone_write_nothing() {
    let node = Node::start().await;
    // Let the watch deliver our own first apply, then count writes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = node.writes();
    for _ in 0..5 {
        nudge(&node.nudges, Nudge::Overrun);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        node.writes(),
        writes,
        "an unchanged inventory writes nothing"
    );

    let name = "node-a-sriov-dra-dev-0";
    node.api.delete_slice(name).unwrap();
    let took = node
        .until("the deleted slice", |n| n.api.slices().contains_key(name))
        .await;
    eprintln!("deleted slice re-applied after {took:?}");

    // Changed from outside: a device dropped from the slice.
    let mut edited = node.api.slices()[name].clone();
    edited["spec"]["devices"].as_array_mut().unwrap().pop();
    node.api.put_slice(&edited);
    node.until("the edited slice restored", |n| n.devices().len() == 4)
        .await;
    node.stop().await;
}

#[tokio::test]
async fn a_recreated_node_owns_the_slices_again() {
    let node = Node::start().await;
    let owner = |n: &Node| {
        n.api.slices()["node-a-sriov-dra-dev-0"]["metadata"]["ownerReferences"][0]["uid"]
            .as_str()
            .map(str::to_string)
    };
    assert_eq!(owner(&node).as_deref(), Some("uid-1"));
    // The Node is deleted and re-created; the garbage collector deletes
    // the slices the old UID owned.
    node.api.delete_node("node-a");
    node.api.put_node("node-a", "uid-2");
    node.api.delete_slice("node-a-sriov-dra-dev-0").unwrap();
    node.until("slices owned by the new Node", |n| {
        n.api.slices().contains_key("node-a-sriov-dra-dev-0")
            && owner(n).as_deref() == Some("uid-2")
    })
    .await;
    node.stop().await;
}

#[tokio::test]
async fn while_the_node_is_gone_nothing_is_written_and_its_return_brings_the_slices_back() {
    let node = Node::start().await;
    let name = "node-a-sriov-dra-dev-0";
    // Deleted; the garbage collector takes the slices the old UID owned.
    node.api.delete_node("node-a");
    node.api.delete_slice(name).unwrap();
    // The watch nudges a round, which finds no Node: re-applying now would
    // only feed the collector. (A round that read the Node just before
    // the delete may still write: counted from after it.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = node.writes();
    tokio::time::sleep(NODE_POLL * 3).await;
    assert_eq!(node.writes(), writes, "nothing written without a Node");
    assert!(!node.api.slices().contains_key(name));
    // Only the Node is read meanwhile.
    let reads = |n: &Node| {
        n.api
            .calls()
            .iter()
            .filter(|c| c.method == "GET" && c.path.ends_with("/nodes/node-a"))
            .count()
    };
    let looked = reads(&node);

    // The kubelet registers the node again, with a new UID; the next look
    // (at most NODE_POLL_MAX away) finds it.
    node.api.put_node("node-a", "uid-2");
    let started = StdInstant::now();
    let owner = |n: &Node| {
        n.api.slices().get(name).and_then(|s| {
            s["metadata"]["ownerReferences"][0]["uid"]
                .as_str()
                .map(str::to_string)
        })
    };
    while owner(&node).as_deref() != Some("uid-2") {
        assert!(
            started.elapsed() < NODE_POLL_MAX + PROMISE,
            "slices owned by the new Node: not within the longest poll"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reads(&node) > looked,
        "the Node was looked for until it was back"
    );
    node.stop().await;
}

#[tokio::test]
async fn a_closed_registration_channel_ends_the_loop_instead_of_a_burst() {
    let node = Node::start().await;
    let writes = node.api.requests();
    drop(node.registration);
    tokio::time::timeout(Duration::from_secs(5), node.task)
        .await
        .expect("the loop ends without waiting for the period")
        .unwrap();
    assert!(
        node.api.requests() <= writes + 1,
        "no burst of rounds at shutdown"
    );
    let _ = node.stop.send(true);
}

#[tokio::test]
async fn a_numa_node_read_after_an_event_is_not_undone_by_the_full_scans_after_it() {
    let node = Node::start().await;
    let attr = |n: &Node, device: &str, key: &str| {
        n.devices()[device]["attributes"][format!("sriov.dra.dev/{key}")]["int"].as_i64()
    };
    let numa = |n: &Node| attr(n, "pci-0000-af-01-2", "numaNode");
    assert_ne!(numa(&node), Some(3));
    // An admin's NUMA override, which no event announces, then an event
    // about the same VF: the partial read publishes the new node.
    std::fs::write(node.device_dir("0000:af:01.2").join("numa_node"), "3\n").unwrap();
    nudge(
        &node.nudges,
        Nudge::Pci {
            action: "bind".into(),
            device: "0000:af:01.2".into(),
        },
    );
    node.until("the new node", |n| numa(n) == Some(3)).await;
    // Full scans (each known done by an unannounced MTU it publishes)
    // through a whole re-read period of the memo: none goes back.
    let mtu_file = node.device_dir("0000:af:01.0").join("net/ens3f0v0/mtu");
    for mtu in (9001..).take(sriov::memo::NUMA_REREAD_EVERY as usize) {
        std::fs::write(&mtu_file, format!("{mtu}\n")).unwrap();
        nudge(&node.nudges, Nudge::Overrun);
        node.until("a full scan", |n| {
            attr(n, "pci-0000-af-01-0", "mtu") == Some(mtu)
        })
        .await;
        assert_eq!(
            numa(&node),
            Some(3),
            "the full scan that published MTU {mtu}"
        );
    }
    node.stop().await;
}

/// Writes VF `ens3f0v1`'s MTU with no event to announce it: only a round
/// that reads everything publishes it.
fn change_unannounced(node: &Node) -> impl Fn(&Node) -> Option<i64> + use<> {
    std::fs::write(
        node.device_dir("0000:af:01.1").join("net/ens3f0v1/mtu"),
        "9000\n",
    )
    .unwrap();
    // `None` while no slice lists the VF.
    |n: &Node| {
        n.devices()
            .get("pci-0000-af-01-1")
            .and_then(|d| d["attributes"]["sriov.dra.dev/mtu"]["int"].as_i64())
    }
}

#[tokio::test]
async fn the_safety_net_runs_on_time_while_events_keep_coming() {
    let period = Duration::from_millis(1200);
    let node = Node::start_with_period(period).await;
    let mtu = change_unannounced(&node);
    // A PF link event every 50 ms: the debouncer makes a partial round of
    // them every 600 ms, each re-reading only the PF.
    let started = StdInstant::now();
    while mtu(&node) != Some(9000) {
        assert!(
            started.elapsed() < period + PROMISE,
            "no full read within the period while events kept coming"
        );
        nudge(
            &node.nudges,
            Nudge::Link {
                name: "ens3f0".into(),
            },
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("full read after {:?} of steady events", started.elapsed());
    node.stop().await;
}

#[tokio::test]
async fn a_publish_the_api_server_fails_is_tried_again_without_waiting_for_the_period() {
    let node = Node::start().await;
    let name = node.api.slices().into_keys().next().unwrap();
    node.api.fail_slice_writes(1);
    node.api.delete_slice(&name);
    let took = node
        .until("the slice applied again after a failed write", |n| {
            n.api.slices().contains_key(&name)
        })
        .await;
    eprintln!("slice back after {took:?}, one failed write");
    // Tried until it went through, then quiet.
    let writes = node.writes();
    tokio::time::sleep(RETRY_FIRST * 3).await;
    assert_eq!(node.writes(), writes, "nothing more to write");
    node.stop().await;
}

#[tokio::test]
async fn the_round_after_a_failed_one_reads_everything_whatever_woke_it() {
    let node = Node::start().await;
    let mtu = change_unannounced(&node);
    let name = node.api.slices().into_keys().next().unwrap();
    node.api.fail_slice_writes(1);
    node.api.delete_slice(&name);
    node.until("the failed write", |n| n.api.slice_writes_to_fail() == 0)
        .await;
    // A link event before the retry is due: a partial round of it alone
    // would publish and end the retries, and the unannounced change the
    // failed round's retry was to read everything for would wait a period.
    node.set_pf_link("up");
    node.until("the unannounced MTU", |n| mtu(n) == Some(9000))
        .await;
    assert!(node.api.slices().contains_key(&name));
    node.stop().await;
}

#[test]
fn the_wait_after_failed_rounds_doubles_up_to_the_cap_and_success_ends_it() {
    let mut rounds = Rounds::new();
    let now = Instant::now();
    let period = Duration::from_secs(60);
    let failed = |read_all| RoundEnd {
        read_all,
        ok: false,
        node_gone: false,
    };
    rounds.ended(failed(true), now, period);
    assert_eq!(rounds.retry, Some(now + RETRY_FIRST));
    assert_eq!(rounds.full_due, Some(now + period));
    let mut waits = vec![];
    for _ in 0..10 {
        rounds.ended(failed(false), now, period);
        waits.push(rounds.retry.unwrap() - now);
    }
    assert_eq!(waits[0], RETRY_FIRST * 2);
    assert_eq!(*waits.last().unwrap(), RETRY_MAX);
    // An event round does not move the safety net.
    assert_eq!(rounds.full_due, Some(now + period));
    rounds.ended(
        RoundEnd {
            read_all: false,
            ok: true,
            node_gone: false,
        },
        now + Duration::from_secs(5),
        period,
    );
    assert_eq!(rounds.retry, None);
    assert_eq!(rounds.full_due, Some(now + period));
    assert!(!rounds.failed());
    // A failed round makes the next one read everything, and its retry
    // waits the least again.
    rounds.ended(failed(false), now, period);
    assert!(rounds.failed());
    assert_eq!(rounds.retry, Some(now + RETRY_FIRST));

    // No Node: no retry, but looks for it, backing off to their cap; a
    // round meanwhile (an event, the period) does not restart them.
    let gone = || RoundEnd {
        read_all: true,
        ok: false,
        node_gone: true,
    };
    rounds.ended(gone(), now, period);
    assert_eq!(rounds.retry, None);
    assert_eq!(rounds.node_poll, Some(now + NODE_POLL));
    assert!(rounds.failed());
    let mut waits = vec![];
    for _ in 0..6 {
        rounds.node_still_gone(now);
        waits.push(rounds.node_poll.unwrap() - now);
    }
    assert_eq!(waits[0], NODE_POLL * 2);
    assert_eq!(*waits.last().unwrap(), NODE_POLL_MAX);
    let polling = rounds.node_poll;
    rounds.ended(gone(), now, period);
    assert_eq!(rounds.node_poll, polling);
    // Published again: all done.
    rounds.ended(
        RoundEnd {
            read_all: true,
            ok: true,
            node_gone: false,
        },
        now,
        period,
    );
    assert_eq!((rounds.retry, rounds.node_poll), (None, None));
    assert!(!rounds.failed());
}
