//! Prepare with an address from a cluster-wide pool: no API call, a fast
//! clear error when the node's blocks are dry or the pool is full, and the
//! address once a block is leased.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ipam::PoolConfig;
use k8s_openapi::api::resource::v1::ResourceClaim;
use sriov::fixture::Fixture;

use crate::claim::single_leases::SingleLeases;
use crate::kube::claims::{AllocatedClaim, allocation_for_driver};
use crate::kube::leaser::{BlockSignal, Leaser, LeaserConfig};
use crate::testing::device_ops::RecordingDeviceOps;
use crate::testing::fake_api::FakeApi;
use crate::testing::node::{DRIVER, NodeParts};

const FRONTHAUL: &str = include_str!("../kube/testdata/claim-fronthaul-rdma.json");

/// `fronthaul` as a cluster pool of a single /29 block.
fn cluster_pool() -> Vec<PoolConfig> {
    serde_json::from_str(
        r#"[{"name":"fronthaul","scope":"cluster","blockSize":{"ipv4":29},
             "subnets":[{"subnet":"10.1.0.0/29"}]}]"#,
    )
    .expect("pool")
}

#[tokio::test]
async fn prepare_fails_fast_naming_the_device_until_a_block_is_leased_and_never_calls_the_api() {
    let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).expect("tempdir");
    let sys = dir.path().join("sys");
    Fixture::ConnectX6Dx.build(&sys).expect("fixture");
    let pools = cluster_pool();
    let (ipam, preparer) = NodeParts {
        sysfs: &sys,
        state_dir: &dir.path().join("state"),
        cdi_dir: &dir.path().join("cdi"),
        pools: &pools,
        pool: "worker-1",
        boot_id: "boot-1",
    }
    .preparer(Arc::new(RecordingDeviceOps::new()));
    let api = FakeApi::new();
    api.put_node("worker-1", "uid-worker-1");
    let signal = Arc::new(BlockSignal::default());
    ipam.set_block_demand(signal.clone());
    let config = LeaserConfig {
        node: "worker-1".into(),
        min_free: 1,
        return_after: Duration::from_secs(600),
        interval: Duration::from_secs(1),
    };
    let mut leaser = Leaser::new(api.client(), ipam.clone(), config, signal.clone());

    let claim: ResourceClaim = serde_json::from_str(FRONTHAUL).expect("testdata");
    let uid = claim.metadata.uid.clone().expect("uid");
    let claim = allocation_for_driver(claim, &uid, DRIVER).expect("allocated");

    let err = preparer.prepare(&claim).expect_err("no block yet");
    assert_eq!(err.kind(), "ipam", "counted as an IPAM failure: {err}");
    let err = err.to_string();
    assert!(
        err.contains(&claim.label())
            && err.contains("allocating addresses")
            && err.contains(r#"IPAM pool "fronthaul" has no free IPv4 address in the 0 block(s)"#),
        "{err}"
    );
    assert_eq!(api.requests(), 0, "Prepare made no API call");
    // The failed Prepare woke the leaser.
    tokio::time::timeout(Duration::from_secs(1), signal.wanted())
        .await
        .expect("a wake-up for the leaser");

    leaser.step(Instant::now()).await.expect("leased");
    let devices = preparer
        .prepare(&claim)
        .expect("prepared once the block is leased");
    assert!(!devices.is_empty());
    let ips: Vec<String> = ipam
        .list()
        .expect("list")
        .iter()
        .flat_map(|a| a.ips())
        .map(|ip| ip.to_string())
        .collect();
    assert!(ips.iter().all(|ip| ip.starts_with("10.1.0.")), "{ips:?}");
}

/// `fronthaul` as a cluster pool of /29 blocks over 10.1.0.0/24.
const BLOCKS_OF_29: &str = r#"[{"name":"fronthaul","scope":"cluster","blockSize":{"ipv4":29},
    "subnets":[{"subnet":"10.1.0.0/24"}]}]"#;

/// A node with a cluster pool, its leaser and a preparer that leases
/// static addresses through the fake API.
struct StaticNode {
    api: FakeApi,
    ipam: Arc<ipam::Ipam>,
    preparer: Arc<crate::claim::prepare::Preparer>,
    leaser: tokio::sync::Mutex<Leaser>,
    ops: Arc<RecordingDeviceOps>,
    _dir: tempfile::TempDir,
}

fn static_node(with_leases: bool) -> StaticNode {
    let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).expect("tempdir");
    let sys = dir.path().join("sys");
    Fixture::ConnectX6Dx.build(&sys).expect("fixture");
    let pools: Vec<PoolConfig> = serde_json::from_str(BLOCKS_OF_29).expect("pool");
    let ops = Arc::new(RecordingDeviceOps::new());
    let (ipam, preparer) = NodeParts {
        sysfs: &sys,
        state_dir: &dir.path().join("state"),
        cdi_dir: &dir.path().join("cdi"),
        pools: &pools,
        pool: "worker-1",
        boot_id: "boot-1",
    }
    .preparer(ops.clone());
    let api = FakeApi::new();
    api.put_node("worker-1", "uid-worker-1");
    api.put_node("worker-2", "uid-worker-2");
    let signal = Arc::new(BlockSignal::default());
    ipam.set_block_demand(signal.clone());
    let config = LeaserConfig {
        node: "worker-1".into(),
        min_free: 1,
        return_after: Duration::from_secs(600),
        interval: Duration::from_secs(1),
    };
    let leaser = Leaser::new(api.client(), ipam.clone(), config, signal);
    let preparer = if with_leases {
        preparer.with_single_leases(SingleLeases::new(
            leaser.static_leases(),
            api.client(),
            "worker-1",
            tokio::runtime::Handle::current(),
        ))
    } else {
        preparer
    };
    StaticNode {
        api,
        ipam,
        preparer: Arc::new(preparer),
        leaser: tokio::sync::Mutex::new(leaser),
        ops,
        _dir: dir,
    }
}

/// The fronthaul claim with a static address instead of a pool.
fn static_claim(address: &str) -> AllocatedClaim {
    let text = FRONTHAUL.replace(
        r#""ipam": {"pool": "fronthaul"}"#,
        &format!(r#""ipam": {{"static": ["{address}"]}}"#),
    );
    let claim: ResourceClaim = serde_json::from_str(&text).expect("testdata");
    let uid = claim.metadata.uid.clone().expect("uid");
    allocation_for_driver(claim, &uid, DRIVER).expect("allocated")
}

impl StaticNode {
    /// Prepare as the kubelet service runs it: on the blocking pool.
    async fn prepare(&self, claim: &AllocatedClaim) -> Result<(), String> {
        let (p, c) = (self.preparer.clone(), claim.clone());
        tokio::task::spawn_blocking(move || p.prepare(&c).map(|_| ()).map_err(|e| e.to_string()))
            .await
            .expect("prepare ran")
    }

    async fn unprepare(&self, uid: &str) {
        let (p, uid) = (self.preparer.clone(), uid.to_string());
        tokio::task::spawn_blocking(move || p.unprepare(&uid))
            .await
            .expect("unprepare ran")
            .expect("unprepared");
    }

    fn leases(&self) -> Vec<String> {
        self.api.ip_blocks().all().into_keys().collect()
    }

    /// Another node's lease object, as its driver would have created it.
    fn foreign(&self, name: &str, cidr: &str, labels: serde_json::Value) {
        self.api.ip_blocks().put(&serde_json::json!({
            "apiVersion": "sriov.dra.dev/v1alpha1",
            "kind": "IPBlock",
            "metadata": {"name": name, "labels": labels,
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                    "name": "worker-2", "uid": "uid-worker-2"}]},
            "spec": {"pool": "fronthaul", "cidr": cidr, "nodeName": "worker-2"}
        }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_address_outside_the_nodes_blocks_is_leased_on_its_own_and_returned_on_unprepare()
{
    let node = static_node(true);
    let claim = static_claim("10.1.0.12/24");
    node.prepare(&claim).await.expect("prepared");

    let objects = node.api.ip_blocks().all();
    let lease = &objects["fronthaul-10-1-0-12-32"];
    assert_eq!(lease["spec"]["cidr"], "10.1.0.12/32");
    assert_eq!(lease["spec"]["nodeName"], "worker-1");
    assert_eq!(
        lease["metadata"]["labels"]["sriov.dra.dev/block"], "fronthaul-10-1-0-8-29",
        "names the block a leasing node lists"
    );
    assert_eq!(
        lease["metadata"]["ownerReferences"][0]["uid"],
        "uid-worker-1"
    );
    // Recorded as this node's in the commit that handed the address out.
    let own = node.ipam.static_leases().expect("store");
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].lease, "fronthaul-10-1-0-12-32");
    assert_eq!(own[0].holder, ipam::Holder::ThisNode);
    assert_eq!(
        node.ipam.list().expect("list")[0].ips(),
        vec!["10.1.0.12".parse::<std::net::IpAddr>().unwrap()]
    );
    // The leaser's reconcile keeps a lease the store records.
    let reconciled = node
        .leaser
        .lock()
        .await
        .reconcile()
        .await
        .expect("reconcile");
    assert!(reconciled.statics_returned.is_empty(), "{reconciled:?}");

    let requests = node.api.requests();
    node.prepare(&claim).await.expect("a repeated Prepare");
    assert_eq!(
        node.api.requests(),
        requests,
        "a prepared claim is answered from its record"
    );

    node.unprepare(&claim.uid).await;
    assert!(node.api.ip_blocks().all().is_empty(), "lease deleted");
    assert!(node.ipam.static_leases().expect("store").is_empty());
    assert!(node.ipam.list().expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_address_in_a_block_leased_by_this_node_needs_no_api_call() {
    let node = static_node(true);
    node.leaser
        .lock()
        .await
        .step(Instant::now())
        .await
        .expect("leased a block");
    let block = node.ipam.blocks().expect("blocks")[0].block.cidr;
    let inside = std::net::IpAddr::from(match block.network() {
        std::net::IpAddr::V4(v4) => std::net::Ipv4Addr::from(u32::from(v4) + 3),
        std::net::IpAddr::V6(_) => unreachable!("an IPv4 pool"),
    });
    let claim = static_claim(&format!("{inside}/24"));
    let requests = node.api.requests();
    node.prepare(&claim).await.expect("prepared");
    assert_eq!(node.api.requests(), requests, "no API call");
    assert!(node.ipam.static_leases().expect("store").is_empty());
    node.unprepare(&claim.uid).await;
    assert_eq!(node.api.requests(), requests, "none on unprepare either");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_address_another_node_holds_refuses_the_claim_before_any_device_changes() {
    let node = static_node(true);
    // worker-2 leases the block containing .12 …
    node.foreign(
        "fronthaul-10-1-0-8-29",
        "10.1.0.8/29",
        serde_json::json!({"sriov.dra.dev/pool": "fronthaul", "sriov.dra.dev/node": "worker-2"}),
    );
    let err = node
        .prepare(&static_claim("10.1.0.12/24"))
        .await
        .expect_err("in another node's block");
    assert!(
        err.contains("du-0-fronthaul-x7k2p")
            && err.contains("pci-0000-3b-00-2")
            && err.contains("field addresses")
            && err.contains("lies in block 10.1.0.8/29, leased by node worker-2"),
        "{err}"
    );
    assert_eq!(
        node.leases(),
        vec!["fronthaul-10-1-0-8-29".to_string()],
        "the single-address lease it created is deleted again"
    );
    // … and .40 on its own.
    node.foreign(
        "fronthaul-10-1-0-40-32",
        "10.1.0.40/32",
        serde_json::json!({"sriov.dra.dev/pool": "fronthaul", "sriov.dra.dev/node": "worker-2",
            "sriov.dra.dev/static": "true", "sriov.dra.dev/block": "fronthaul-10-1-0-40-29"}),
    );
    let err = node
        .prepare(&static_claim("10.1.0.40/24"))
        .await
        .expect_err("held by another node");
    assert!(
        err.contains(
            "static address 10.1.0.40 of cluster-wide pool \"fronthaul\" is held by node worker-2"
        ),
        "{err}"
    );
    assert!(node.ops.calls().is_empty(), "no VF was touched");
    assert!(node.ipam.list().expect("list").is_empty());
    assert!(node.ipam.static_leases().expect("store").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepare_failing_after_the_lease_deletes_the_lease_it_created() {
    let node = static_node(true);
    // The rdma request asks for a pool address too; this node has no block,
    // so that allocation fails after the fronthaul address was leased.
    let text = FRONTHAUL
        .replace(
            r#""ipam": {"pool": "fronthaul"}"#,
            r#""ipam": {"static": ["10.1.0.12/24"]}"#,
        )
        .replace(
            r#""rdma": {"exclusive": true}"#,
            r#""rdma": {"exclusive": true}, "ipam": {"pool": "fronthaul"}"#,
        );
    let claim: ResourceClaim = serde_json::from_str(&text).expect("testdata");
    let uid = claim.metadata.uid.clone().expect("uid");
    let claim = allocation_for_driver(claim, &uid, DRIVER).expect("allocated");
    let err = node
        .prepare(&claim)
        .await
        .expect_err("no block for the pool address");
    assert!(err.contains("has no free IPv4 address"), "{err}");
    assert!(!err.contains("ROLLBACK FAILED"), "{err}");
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(node.ipam.static_leases().expect("store").is_empty());
    assert!(node.ipam.list().expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_api_client_a_static_address_outside_the_blocks_is_a_clear_error() {
    let node = static_node(false);
    let err = node
        .prepare(&static_claim("10.1.0.12/24"))
        .await
        .expect_err("cannot lease");
    assert!(
        err.contains("static address 10.1.0.12 of cluster-wide pool \"fronthaul\" lies outside this node's blocks"),
        "{err}"
    );
    assert_eq!(node.api.requests(), 0);
}
