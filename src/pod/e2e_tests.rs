//! The data path end to end, as the container runtime drives it: a fake
//! runtime speaking real NRI over a unix socket, the plugin, the pod
//! network handler, a real state store, and macvlan stand-ins moved into
//! real network namespaces. Needs root.
//!
//! Both ends' muxes start blocked and are unblocked once their conns are
//! open, so no early frame is dropped as one for a conn not yet open.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ipam::{Allocation, AssignedAddress, Ipam, Owner, RouteConfig};
use proto::nri;
use proto::nri::plugin_methods;
use sriov::PciAddress;
use sriov::netlink::RouteSocket;
use sriov::netlink::address::dump_addresses;
use sriov::netlink::route::dump_routes;
use tokio::sync::oneshot;

use super::claims::StoreClaims;
use super::handler::*;
use crate::apis::Mode;
use crate::apis::ValidConfig;
use crate::attach::Attacher;
use crate::attach::netns::{PinnedNetns, run_in_netns};
use crate::nri::plugin::{NriPlugin, NriPluginConfig};
use crate::state::PreparedDevice as ClaimDevice;
use crate::state::{ClaimRecord, attachments, claims};
use crate::testing::netns::{StandIn, facts, have_root, stand_in_tree};
use crate::testing::nri_runtime::{FakeRuntime, RuntimeConn, pod};
use crate::testing::records::record;

fn pci(n: usize) -> PciAddress {
    PciAddress::new(0, 0x6b, (n / 8) as u8, (n % 8) as u8).unwrap()
}

/// A prepared netdevice VF with addresses (and the pool's route).
fn vf(claim_uid: &str, n: usize, addresses: &[&str], route: Option<(&str, &str)>) -> ClaimDevice {
    let device = pci(n).device_name();
    let routes: Vec<RouteConfig> = route
        .map(|(dst, gw)| RouteConfig {
            dst: dst.parse().unwrap(),
            gw: Some(gw.parse().unwrap()),
        })
        .into_iter()
        .collect();
    ClaimDevice {
        request: format!("nic{n}"),
        pool: "node-a".into(),
        device: device.clone(),
        pci_address: pci(n),
        config: ValidConfig {
            mode: Mode::Netdevice,
            if_name: None,
            mtu: None,
            settings: Default::default(),
            addresses: None,
            routes: Vec::new(),
            rdma_exclusive: false,
        },
        if_name: None,
        vf_settings: None,
        rdma_device: None,
        bind: None,
        addresses: Some(Allocation {
            owner: Owner::new(claim_uid, format!("nic{n}"), device).unwrap(),
            pool: Some("fronthaul".into()),
            addresses: addresses
                .iter()
                .map(|a| AssignedAddress {
                    address: a.parse().unwrap(),
                    gateway: None,
                })
                .collect(),
            routes,
        }),
        cdi_device_id: None,
        policy: None,
    }
}

fn claim(name: &str, pod_uid: &str, devices: Vec<ClaimDevice>) -> ClaimRecord {
    let mut claim = record(name, devices);
    claim.reserved_for = vec![pod_uid.into()];
    claim
}

/// A node: stand-in VFs 0..n in a fixture sysfs, the store, the runtime's
/// socket directory and the pods' namespaces.
struct Node {
    vfs: Vec<StandIn>,
    tree: tempfile::TempDir,
    _state: tempfile::TempDir,
    dir: tempfile::TempDir,
    store: Arc<Ipam>,
}

impl Node {
    fn new(count: usize) -> Node {
        let mut host = RouteSocket::new().unwrap();
        let vfs: Vec<StandIn> = (0..count).map(|_| StandIn::new(&mut host)).collect();
        let entries: Vec<(PciAddress, Option<&str>)> = vfs
            .iter()
            .enumerate()
            .map(|(i, v)| (pci(i), Some(v.name.as_str())))
            .collect();
        let tree = stand_in_tree(&entries);
        let state = tempfile::tempdir().unwrap();
        let store = Arc::new(Ipam::open(state.path(), &[]).unwrap());
        claims::init(store.database()).unwrap();
        Node {
            vfs,
            tree,
            _state: state,
            dir: tempfile::tempdir().unwrap(),
            store,
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("nri.sock")
    }

    fn netns(&self, name: &str) -> PinnedNetns {
        PinnedNetns::create(&self.dir.path().join(name)).unwrap()
    }

    /// Starts the plugin (as the driver does) against this node's store.
    fn start_plugin(&self) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let handler = PodNetworkHandler::new(
            self.store.clone(),
            StoreClaims::new(self.store.clone(), "boot"),
            Attacher::new(self.tree.path()),
            None,
            "sriov.dra.dev",
        );
        let config = NriPluginConfig {
            socket: self.socket(),
            reconnect_min: std::time::Duration::from_millis(20),
            reconnect_max: std::time::Duration::from_millis(200),
            ..Default::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = NriPlugin::run(config, Arc::new(handler), async move {
                let _ = stopped.await;
            })
            .await;
        });
        (stop, task)
    }

    fn in_host(&self, i: usize) -> bool {
        facts(&mut RouteSocket::new().unwrap(), &self.vfs[i].name).is_some()
    }
}

fn wire_pod(name: &str, uid: &str, netns: &PinnedNetns) -> nri::PodSandbox {
    let mut p = pod("ran", name, Some(&netns.path().display().to_string()));
    p.uid = uid.into();
    p
}

async fn run(conn: &RuntimeConn, pod: &nri::PodSandbox) -> Result<(), String> {
    conn.call::<nri::RunPodSandboxResponse>(
        plugin_methods::RUN_POD_SANDBOX,
        &nri::RunPodSandboxRequest {
            pod: Some(pod.clone()),
        },
    )
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

async fn stop(conn: &RuntimeConn, pod: &nri::PodSandbox) {
    conn.call::<nri::StopPodSandboxResponse>(
        plugin_methods::STOP_POD_SANDBOX,
        &nri::StopPodSandboxRequest {
            pod: Some(pod.clone()),
        },
    )
    .await
    .expect("StopPodSandbox answered OK");
}

#[tokio::test]
async fn two_vfs_with_v4_v6_and_a_route_reach_the_pod_and_survive_a_plugin_restart() {
    if !have_root("two_vfs_with_v4_v6_and_a_route_reach_the_pod_and_survive_a_plugin_restart") {
        return;
    }
    let node = Node::new(2);
    let ns = node.netns("du-0");
    let uid = "pod-du-0";
    claims::put(
        node.store.database(),
        &claim(
            "fronthaul",
            uid,
            vec![
                vf(
                    "uid-fronthaul",
                    0,
                    &["10.1.0.5/24", "fd00:1::5/64"],
                    Some(("10.99.0.0/16", "10.1.0.1")),
                ),
                vf("uid-fronthaul", 1, &["10.2.0.5/24"], None),
            ],
        ),
    )
    .unwrap();
    let runtime = FakeRuntime::listen(&node.socket());
    let (stop_plugin, plugin) = node.start_plugin();
    let mut conn = runtime.accept().await;
    conn.handshake(vec![]).await;

    let du = wire_pod("du-0", uid, &ns);
    run(&conn, &du).await.expect("RunPodSandbox succeeds");
    assert!(
        !node.in_host(0) && !node.in_host(1),
        "both VFs left the host"
    );
    let (net1, net2, v4, v6, v4b, route) = run_in_netns(ns.path(), || {
        let mut s = RouteSocket::new().unwrap();
        let net1 = facts(&mut s, "net1").expect("net1 in the pod");
        let net2 = facts(&mut s, "net2").expect("net2 in the pod");
        let a1 = dump_addresses(&mut s, "pod addresses", net1.index).unwrap();
        let a2 = dump_addresses(&mut s, "pod addresses", net2.index).unwrap();
        let has = |list: &[sriov::netlink::address::AddressFacts], ip: &str, len: u8| {
            let ip: IpAddr = ip.parse().unwrap();
            list.iter().any(|a| a.address == ip && a.prefix_len == len)
        };
        let routes = dump_routes(&mut s, "pod routes").unwrap();
        let route = routes.iter().any(|r| {
            r.destination.to_string() == "10.99.0.0"
                && r.prefix_len == 16
                && r.gateway == Some("10.1.0.1".parse().unwrap())
                && r.oif == Some(net1.index)
        });
        (
            net1.up,
            net2.up,
            has(&a1, "10.1.0.5", 24),
            has(&a1, "fd00:1::5", 64),
            has(&a2, "10.2.0.5", 24),
            route,
        )
    })
    .unwrap();
    assert!(net1 && net2, "both up");
    assert!(v4 && v6 && v4b, "addresses in place");
    assert!(route, "the pool's route via 10.1.0.1");

    // The plugin restarts between RunPodSandbox and StopPodSandbox; the
    // runtime reconnects it and lists the pod as running.
    let _ = stop_plugin.send(());
    plugin.await.unwrap();
    conn.close().await;
    let (stop_plugin, plugin) = node.start_plugin();
    let mut conn = runtime.accept().await;
    conn.handshake(vec![du.clone()]).await;
    assert!(
        !node.in_host(0),
        "synchronize leaves a running pod's VFs alone"
    );

    stop(&conn, &du).await;
    assert!(
        node.in_host(0) && node.in_host(1),
        "both VFs back in the host"
    );
    assert!(attachments::list(node.store.database()).unwrap().is_empty());
    let _ = stop_plugin.send(());
    plugin.await.unwrap();
}

#[tokio::test]
async fn a_pod_whose_netns_is_gone_is_detached_by_the_next_synchronize() {
    if !have_root("a_pod_whose_netns_is_gone_is_detached_by_the_next_synchronize") {
        return;
    }
    let node = Node::new(1);
    let ns = node.netns("cu-0");
    claims::put(
        node.store.database(),
        &claim(
            "f1",
            "pod-cu-0",
            vec![vf("uid-f1", 0, &["10.1.0.9/24"], None)],
        ),
    )
    .unwrap();
    let runtime = FakeRuntime::listen(&node.socket());
    let (stop_plugin, plugin) = node.start_plugin();
    let mut conn = runtime.accept().await;
    conn.handshake(vec![]).await;
    run(&conn, &wire_pod("cu-0", "pod-cu-0", &ns))
        .await
        .unwrap();

    // The runtime restarts; the pod is gone from its list.
    conn.close().await;
    let mut conn = runtime.accept().await;
    conn.handshake(vec![]).await;
    // The reconcile may outlast the runtime's deadline for Synchronize
    // (2 cores, other tests moving VFs) and finish in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !attachments::list(node.store.database()).unwrap().is_empty()
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(node.in_host(0), "the gone pod's VF is back");
    assert!(attachments::list(node.store.database()).unwrap().is_empty());
    let _ = stop_plugin.send(());
    plugin.await.unwrap();
}

#[tokio::test]
async fn fifty_pods_start_at_once_and_all_give_their_vfs_back() {
    if !have_root("fifty_pods_start_at_once_and_all_give_their_vfs_back") {
        return;
    }
    const PODS: usize = 50;
    let node = Node::new(PODS);
    let namespaces: Vec<PinnedNetns> = (0..PODS).map(|i| node.netns(&format!("p{i}"))).collect();
    for i in 0..PODS {
        let name = format!("c{i}");
        let addr = format!("10.3.{}.{}/16", i / 200, 10 + i % 200);
        claims::put(
            node.store.database(),
            &claim(
                &name,
                &format!("pod-{i}"),
                vec![vf(&format!("uid-{name}"), i, &[&addr], None)],
            ),
        )
        .unwrap();
    }
    let runtime = FakeRuntime::listen(&node.socket());
    let (stop_plugin, plugin) = node.start_plugin();
    let mut conn = runtime.accept().await;
    // The kernel serialises namespace moves; give the burst the time a
    // node with 50 starting pods would configure (plugin_request_timeout).
    conn.handshake_with(vec![], 20_000).await;
    let conn = Arc::new(conn);
    let pods: Vec<nri::PodSandbox> = (0..PODS)
        .map(|i| wire_pod(&format!("p{i}"), &format!("pod-{i}"), &namespaces[i]))
        .collect();
    let starts = pods.iter().cloned().map(|p| {
        let conn = conn.clone();
        tokio::spawn(async move { run(&conn, &p).await })
    });
    for (i, r) in futures_join(starts).await.into_iter().enumerate() {
        r.unwrap_or_else(|e| panic!("pod {i}: {e}"));
    }
    for i in 0..PODS {
        assert!(!node.in_host(i), "VF {i} in its pod");
    }
    assert_eq!(
        attachments::list(node.store.database()).unwrap().len(),
        PODS
    );
    for p in &pods {
        stop(&conn, p).await;
    }
    for i in 0..PODS {
        assert!(node.in_host(i), "VF {i} back");
    }
    let _ = stop_plugin.send(());
    plugin.await.unwrap();
}

/// Awaits every task, in order.
async fn futures_join<T>(tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        out.push(t.await.unwrap());
    }
    out
}
