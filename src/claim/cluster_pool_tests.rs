//! Prepare with an address from a cluster-wide pool: no API call, a fast
//! clear error when the node's blocks are dry or the pool is full, and the
//! address once a block is leased.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ipam::PoolConfig;
use k8s_openapi::api::resource::v1::ResourceClaim;
use sriov::fixture::Fixture;

use crate::kube::claims::allocation_for_driver;
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

    let err = preparer
        .prepare(&claim)
        .expect_err("no block yet")
        .to_string();
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
