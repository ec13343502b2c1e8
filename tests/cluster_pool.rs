//! A real `sriov-dra run` with a cluster-wide pool, against the test API
//! over HTTP and a test kubelet on the real sockets: the node leases a
//! block in the background, a pool address comes out of it with no API
//! call, and a static address outside the node's blocks is leased as a
//! single-address `IPBlock` at Prepare and deleted at Unprepare. Devices
//! come from the fixture tree; nothing on the host is changed (the claims
//! ask for no PF-side settings), so this runs without root.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sriov::fixture::Fixture;
use sriov_dra::testing::claim_object::{Allocation, allocated_claim, vf_config};
use sriov_dra::testing::driver_home::DriverHome;
use sriov_dra::testing::driver_process::{self as driver, ClaimId, Driver};

const DRIVER: &str = "sriov.dra.dev";
const NODE: &str = "worker-1";

/// One cluster pool of /28 blocks; the leaser wants 4 free addresses.
const CONFIG: &str = "ipam:
  pools:
    - name: midhaul
      scope: cluster
      blockSize: {ipv4: 28}
      subnets:
        - subnet: 10.2.0.0/24
  blockLeasing:
    minFree: 4
    checkIntervalSeconds: 1
";

fn claim(n: u32, device: &str, ipam: Value) -> (ClaimId, Value) {
    let id = ClaimId {
        namespace: "core".into(),
        name: format!("upf-{n}-midhaul"),
        uid: format!("0000000{n}-0000-4000-8000-000000000000"),
    };
    let at = Allocation {
        driver: DRIVER,
        pool: NODE,
        pod_name: "upf-0",
        pod_uid: "pod-uid-upf-0",
    };
    let config = vf_config(DRIVER, "mid", json!({ "ipam": ipam }));
    // The class lets its claims pick static addresses of the pool.
    let policy = json!({"source": "FromClass", "requests": ["mid"],
        "opaque": {"driver": DRIVER, "parameters": {
            "apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfPolicy",
            "allowStaticAddresses": ["10.2.0.0/24"]}}});
    let object = allocated_claim(&id, at, &[("mid", device)], vec![policy, config]);
    (id, object)
}

/// Polls `what` every 50 ms until it holds, for at most 10 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_driver_leases_a_block_and_a_static_address_through_the_api() {
    let sysfs = tempfile::tempdir_in(sriov::fixture::scratch_base()).expect("tempdir");
    Fixture::ConnectX6Dx.build(sysfs.path()).expect("fixture");
    let home = DriverHome::new(DRIVER, NODE).await.expect("driver home");
    home.write_config(sysfs.path(), CONFIG).expect("config");
    let mut run = Driver::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_sriov-dra")),
        &home,
        None,
    )
    .expect("sriov-dra starts");
    if let Err(e) = driver::register(&home, &mut run).await {
        panic!("{e}\n{}", home.log_tail(40));
    }
    let blocks = home.api.ip_blocks();
    eventually("a block leased in the background", || {
        !blocks.all().is_empty()
    })
    .await;
    let block_name = blocks.all().into_keys().next().expect("one block");
    // The object comes first, the driver's record of it after (then the
    // block's addresses are handed out): a Prepare between the two would
    // be told to retry, as a kubelet does. Wait for the record.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ipam: Value = driver::debug_get(&home, "/ipam").await.expect("/ipam");
        if ipam["blocks"][0]["lease"] == block_name.as_str() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leased block recorded by the driver: not within 10 s: {ipam:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let block = &blocks.all()[&block_name];
    assert_eq!(block["spec"]["nodeName"], NODE);
    assert_eq!(
        block["metadata"]["ownerReferences"][0]["uid"],
        "worker-1-uid"
    );

    // A pool address: from the block, no API call beyond the claim read.
    let (pooled, object) = claim(1, "pci-0000-3b-00-2", json!({"pool": "midhaul"}));
    home.api.put_claim(&object);
    let leases_before = blocks.all().len();
    driver::prepare(&home, std::slice::from_ref(&pooled))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", home.log_tail(40)));
    assert_eq!(
        blocks.all().len(),
        leases_before,
        "no lease for a pool address"
    );

    // A static address outside the node's block: leased on its own.
    let cidr: ipnetwork::IpNetwork = block["spec"]["cidr"]
        .as_str()
        .expect("cidr")
        .parse()
        .expect("a CIDR");
    let outside = if cidr.contains("10.2.0.200".parse().expect("address")) {
        "10.2.0.20"
    } else {
        "10.2.0.200"
    };
    let (fixed, object) = claim(
        2,
        "pci-0000-3b-00-3",
        json!({"static": [format!("{outside}/24")]}),
    );
    home.api.put_claim(&object);
    driver::prepare(&home, std::slice::from_ref(&fixed))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", home.log_tail(40)));
    let single = format!("midhaul-{}-32", outside.replace('.', "-"));
    let objects = blocks.all();
    let lease = objects
        .get(&single)
        .unwrap_or_else(|| panic!("{objects:#?}"));
    assert_eq!(lease["spec"]["cidr"], format!("{outside}/32"));
    assert_eq!(lease["metadata"]["labels"]["sriov.dra.dev/static"], "true");

    // The debug API shows both kinds with their objects.
    let ipam: Value = driver::debug_get(&home, "/ipam").await.expect("/ipam");
    assert_eq!(ipam["blocks"][0]["lease"], block_name, "{ipam:#}");
    assert_eq!(ipam["singleLeases"][0]["lease"], single, "{ipam:#}");
    assert_eq!(ipam["singleLeases"][0]["holder"]["kind"], "thisNode");

    driver::unprepare(&home, &[fixed, pooled])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", home.log_tail(40)));
    assert!(
        !blocks.all().contains_key(&single),
        "the single-address lease is deleted at Unprepare"
    );
    assert!(blocks.all().contains_key(&block_name), "the block stays");
    let ipam: Value = driver::debug_get(&home, "/ipam").await.expect("/ipam");
    assert_eq!(ipam["singleLeases"], json!([]));
    assert_eq!(ipam["allocations"], json!([]));
    run.stop().await;
}
