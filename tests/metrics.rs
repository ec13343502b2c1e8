//! A real `sriov-dra run`, scraped as Prometheus would: claims prepared
//! (one refused for its config) and unprepared through the kubelet's real
//! socket, and a runtime connecting over NRI with a pod that holds no VF
//! of ours, move exactly the counters and gauges they should. A process of
//! its own, so no other test's operations are in the figures. Devices come
//! from the fixture tree, the claims ask for no PF-side settings and no VF
//! moves, so this runs without root.

use std::collections::HashMap;

use proto::nri::{self, plugin_methods};
use serde_json::{Value, json};
use sriov::fixture::Fixture;
use sriov_dra::testing::claim_object::{Allocation, allocated_claim, vf_config};
use sriov_dra::testing::driver_home::DriverHome;
use sriov_dra::testing::driver_process::{self as driver, ClaimId, Driver};
use sriov_dra::testing::exposition;
use sriov_dra::testing::nri_runtime::{FakeRuntime, pod};

const DRIVER: &str = "sriov.dra.dev";
const NODE: &str = "worker-1";

/// A node pool of 14 usable IPv4 addresses.
const CONFIG: &str = "ipam:
  pools:
    - name: oam
      scope: node
      subnets:
        - subnet: 10.3.0.0/28
";

fn claim(n: u32, device: &str, parameters: Value) -> (ClaimId, Value) {
    let id = ClaimId {
        namespace: "core".into(),
        name: format!("smf-{n}-oam"),
        uid: format!("0000000{n}-0000-4000-8000-00000000000a"),
    };
    let at = Allocation {
        driver: DRIVER,
        pool: NODE,
        pod_name: "smf-0",
        pod_uid: "pod-uid-smf-0",
    };
    let object = allocated_claim(
        &id,
        at,
        &[("oam", device)],
        vec![vf_config(DRIVER, "oam", parameters)],
    );
    (id, object)
}

/// The pool's addresses in use.
fn used(samples: &HashMap<String, f64>) -> f64 {
    value(
        samples,
        r#"sriov_dra_ipam_addresses{pool="oam",family="ipv4",kind="used"}"#,
    )
}

/// One scrape of `/metrics`, parsed.
async fn scrape(home: &DriverHome) -> HashMap<String, f64> {
    let body = driver::debug_text(home, "/metrics")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", home.log_tail(40)));
    exposition::parse(&body)
}

/// The value of `series`, 0 when the driver has not printed it (a counter
/// family prints only the label sets it has counted).
fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_a_refused_config_and_a_runtime_with_a_pod_of_no_vfs_are_counted_exactly() {
    let sysfs = tempfile::tempdir_in(sriov::fixture::scratch_base()).expect("tempdir");
    Fixture::ConnectX6Dx.build(sysfs.path()).expect("fixture");
    let home = DriverHome::new(DRIVER, NODE).await.expect("driver home");
    home.write_config(sysfs.path(), CONFIG).expect("config");
    let runtime = FakeRuntime::listen(&home.nri_socket());
    let mut run = Driver::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_sriov-dra")),
        &home,
        None,
    )
    .expect("sriov-dra starts");
    if let Err(e) = driver::register(&home, &mut run).await {
        panic!("{e}\n{}", home.log_tail(40));
    }
    // The runtime's handshake ends with a Synchronize: one reconcile.
    let mut conn = runtime.accept().await;
    conn.handshake(Vec::new()).await;

    let before = scrape(&home).await;
    assert!(
        !before
            .keys()
            .any(|k| k.starts_with(r#"sriov_dra_operations_total{operation="prepare""#)),
        "no prepare counted before the first claim: {before:#?}"
    );
    assert_eq!(
        value(
            &before,
            r#"sriov_dra_ipam_addresses{pool="oam",family="ipv4",kind="size"}"#
        ),
        14.0
    );

    // One claim prepared with a pool address, one refused for its VLAN.
    let (good, object) = claim(1, "pci-0000-3b-00-2", json!({"ipam": {"pool": "oam"}}));
    home.api.put_claim(&object);
    driver::prepare(&home, std::slice::from_ref(&good))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", home.log_tail(40)));
    let (bad, object) = claim(2, "pci-0000-3b-00-3", json!({"vlan": 5000}));
    home.api.put_claim(&object);
    let refused = driver::prepare(&home, std::slice::from_ref(&bad))
        .await
        .expect_err("VLAN 5000 is refused");
    assert!(refused.contains("vlan"), "{refused}");

    let prepared = scrape(&home).await;
    let ops = |s: &HashMap<String, f64>, op: &str, outcome: &str| {
        value(
            s,
            &format!(r#"sriov_dra_operations_total{{operation="{op}",outcome="{outcome}"}}"#),
        )
    };
    assert_eq!(ops(&prepared, "prepare", "ok"), 1.0);
    assert_eq!(ops(&prepared, "prepare", "error"), 1.0);
    assert_eq!(
        value(
            &prepared,
            r#"sriov_dra_errors_total{operation="prepare",kind="config"}"#
        ),
        1.0,
        "{prepared:#?}"
    );
    let errors: f64 = prepared
        .iter()
        .filter(|(k, _)| k.starts_with("sriov_dra_errors_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(errors, 1.0, "one failure, counted once: {prepared:#?}");
    assert_eq!(
        value(
            &prepared,
            r#"sriov_dra_operation_seconds_count{operation="prepare"}"#
        ),
        2.0
    );
    assert!(
        value(
            &prepared,
            r#"sriov_dra_operation_seconds_bucket{le="+Inf",operation="prepare"}"#
        ) == 2.0,
        "the histogram's buckets hold both: {prepared:#?}"
    );
    // The fixture's 16 VFs are offered; one is held.
    assert_eq!(
        value(&prepared, r#"sriov_dra_devices{state="prepared"}"#),
        1.0
    );
    assert_eq!(value(&prepared, r#"sriov_dra_devices{state="free"}"#), 15.0);
    assert_eq!(used(&prepared), 1.0);
    // The claim record and its address were committed durably.
    assert!(value(&prepared, "sriov_dra_store_commit_seconds_count") >= 1.0);
    assert_eq!(value(&prepared, "sriov_dra_nri_connections_total"), 1.0);
    assert_eq!(ops(&prepared, "reconcile", "ok"), 1.0);

    // A pod with no VF of ours starts and stops: nothing moved, so
    // neither is counted as an attach or a detach.
    let web = pod("shop", "web-0", Some("/var/run/netns/cni-web"));
    conn.call::<nri::RunPodSandboxResponse>(
        plugin_methods::RUN_POD_SANDBOX,
        &nri::RunPodSandboxRequest {
            pod: Some(web.clone()),
        },
    )
    .await
    .expect("RunPodSandbox answered");
    conn.call::<nri::StopPodSandboxResponse>(
        plugin_methods::STOP_POD_SANDBOX,
        &nri::StopPodSandboxRequest { pod: Some(web) },
    )
    .await
    .expect("StopPodSandbox answered");

    driver::unprepare(&home, &[good, bad])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", home.log_tail(40)));
    let after = scrape(&home).await;
    assert_eq!(ops(&after, "unprepare", "ok"), 2.0);
    for op in ["attach", "detach"] {
        for outcome in ["ok", "error"] {
            assert_eq!(ops(&after, op, outcome), 0.0, "{op} {outcome}");
        }
    }
    assert_eq!(value(&after, r#"sriov_dra_devices{state="attached"}"#), 0.0);
    assert_eq!(value(&after, r#"sriov_dra_devices{state="prepared"}"#), 0.0);
    assert_eq!(value(&after, r#"sriov_dra_devices{state="free"}"#), 16.0);
    assert_eq!(used(&after), 0.0);
    run.stop().await;
}
