//! A burst of Prepares must not delay pod starts: 1000 concurrent
//! `NodePrepareResources` calls for different claims (one VF and one pool
//! address each, on the 2048-VF fixture node) while the runtime sends a
//! `RunPodSandbox` every 10 ms over real NRI. Prints the burst's wall time,
//! the pod events' latency (target: every one answered within 1 s, well
//! inside the runtime's 2 s deadline), and checks that no VF and no address
//! was handed out twice.
//!
//! Run with `cargo bench --features test-support --bench prepare_burst`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::dra::v1;
use proto::nri;
use proto::nri::plugin_methods;
use sriov::fixture::Fixture;
use sriov_dra::attach::Attacher;
use sriov_dra::inventory::NodeInventory;
use sriov_dra::kube::claims::ClaimReader;
use sriov_dra::kubelet::node_service::{NodeService, serve_node_service};
use sriov_dra::kubelet::socket::connect_unix;
use sriov_dra::nri::plugin::{NriPlugin, NriPluginConfig};
use sriov_dra::pod::claims::StoreClaims;
use sriov_dra::pod::handler::PodNetworkHandler;
use sriov_dra::testing::device_ops::RecordingDeviceOps;
use sriov_dra::testing::fake_api::FakeApi;
use sriov_dra::testing::node::{NodeParts, offered_vfs, pool};
use sriov_dra::testing::nri_runtime::{FakeRuntime, pod};

const CLAIMS: usize = 1000;
const POD_EVERY: Duration = Duration::from_millis(10);
const POD_TARGET: Duration = Duration::from_secs(1);

fn uid(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

fn claim(i: usize, device: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": format!("burst-{i}"), "namespace": "bench", "uid": uid(i),
                     "resourceVersion": "1"},
        "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "sriov-vf"}}]}},
        "status": {"allocation": {"devices": {
            "results": [{"request": "nic", "driver": "sriov.dra.dev", "pool": "bench-node", "device": device}],
            "config": [{"source": "FromClaim", "opaque": {"driver": "sriov.dra.dev", "parameters": {
                "apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfConfig", "ipam": {"pool": "bench"}}}}]
        }}}
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let base: PathBuf = std::env::var_os("SRIOV_DRA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&base).expect("bench dir");
    let cdi = tempfile::tempdir_in(sriov::fixture::scratch_base()).expect("CDI dir");
    let sysfs = dir.path().join("sys");
    Fixture::Scale2048.build(&sysfs).expect("fixture");
    let (ipam, preparer) = NodeParts {
        sysfs: &sysfs,
        state_dir: &dir.path().join("state"),
        cdi_dir: cdi.path(),
        pools: &[pool("bench", "10.8.0.0/21")],
        pool: "bench-node",
        boot_id: "bench-boot",
    }
    .preparer(Arc::new(RecordingDeviceOps::new()));
    let offered = offered_vfs(&NodeInventory::discover(&sysfs).expect("inventory"));
    assert!(
        offered.len() >= CLAIMS,
        "the fixture has {} VFs",
        offered.len()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _enter = rt.enter();
    let api = FakeApi::new();
    for (i, device) in offered.iter().take(CLAIMS).enumerate() {
        api.put_claim(&claim(i, device));
    }
    let service = NodeService::new(preparer, ClaimReader::new(api.client()));
    let dra_socket = dir.path().join("kubelet/plugins/sriov.dra.dev/dra.sock");
    let nri_socket = dir.path().join("nri.sock");

    rt.block_on(async {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = serve_node_service(&dra_socket, service, async {
            let _ = stopped.await;
        })
        .expect("serve");

        let runtime = FakeRuntime::listen(&nri_socket);
        let handler = PodNetworkHandler::new(
            ipam.clone(),
            StoreClaims::new(ipam.clone(), "bench-boot"),
            Attacher::new(&sysfs),
            None,
            "sriov.dra.dev",
        );
        let (stop_nri, nri_stopped) = tokio::sync::oneshot::channel::<()>();
        let plugin = tokio::spawn(NriPlugin::run(
            NriPluginConfig {
                socket: nri_socket.clone(),
                ..Default::default()
            },
            Arc::new(handler),
            async {
                let _ = nri_stopped.await;
            },
        ));
        let mut conn = runtime.accept().await;
        conn.handshake(vec![]).await;
        let conn = Arc::new(conn);

        let channel = connect_unix(&dra_socket).await.expect("dial");
        let burst_start = Instant::now();
        let mut prepares = tokio::task::JoinSet::new();
        for i in 0..CLAIMS {
            let mut kubelet = v1::dra_plugin_client::DraPluginClient::new(channel.clone());
            prepares.spawn(async move {
                let claim = v1::Claim {
                    namespace: "bench".into(),
                    uid: uid(i),
                    name: format!("burst-{i}"),
                };
                let resp = kubelet
                    .node_prepare_resources(v1::NodePrepareResourcesRequest {
                        claims: vec![claim],
                    })
                    .await
                    .map(|r| r.into_inner());
                match resp {
                    Ok(r) => r.claims.get(&uid(i)).map(|c| c.error.clone()).unwrap_or_default(),
                    Err(e) => e.to_string(),
                }
            });
        }

        // Pod starts every 10 ms while the burst runs.
        let pods = {
            let conn = conn.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0usize;
                let mut tick = tokio::time::interval(POD_EVERY);
                let mut n = 0usize;
                loop {
                    tick.tick().await;
                    let mut p = pod("bench", &format!("pod-{n}"), None);
                    p.uid = format!("pod-uid-{n}");
                    n += 1;
                    let t = Instant::now();
                    let answered = conn
                        .call::<nri::RunPodSandboxResponse>(
                            plugin_methods::RUN_POD_SANDBOX,
                            &nri::RunPodSandboxRequest { pod: Some(p) },
                        )
                        .await;
                    latencies.push(t.elapsed());
                    failures += usize::from(answered.is_err());
                    if latencies.len() >= 10 && PODS_DONE.load(std::sync::atomic::Ordering::Relaxed) {
                        return (latencies, failures);
                    }
                }
            })
        };

        let mut errors = Vec::new();
        while let Some(done) = prepares.join_next().await {
            let error = done.expect("prepare task");
            if !error.is_empty() {
                errors.push(error);
            }
        }
        let burst = burst_start.elapsed();
        PODS_DONE.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut latencies, pod_failures) = pods.await.expect("pod task");

        // No VF and no address twice.
        let mut vfs = HashSet::new();
        let mut doubled_vfs = 0;
        let mut prepared = 0;
        for i in 0..CLAIMS {
            if let Some(record) = sriov_dra::state::claims::get(ipam.database(), &uid(i)).expect("read") {
                prepared += 1;
                for d in record.devices {
                    doubled_vfs += usize::from(!vfs.insert(d.pci_address));
                }
            }
        }
        let allocations = ipam.list().expect("allocations");
        let mut addresses = HashSet::new();
        let mut doubled_addresses = 0;
        for a in &allocations {
            for x in &a.addresses {
                doubled_addresses += usize::from(!addresses.insert(x.address.ip()));
            }
        }

        latencies.sort();
        let over = latencies.iter().filter(|d| **d > POD_TARGET).count();
        let at = |q: f64| ms(latencies[((latencies.len() - 1) as f64 * q) as usize]);
        println!(
            "prepare burst: {CLAIMS} concurrent claims in {:.0} ms ({:.0} claims/s), {} failed{}",
            ms(burst),
            CLAIMS as f64 / burst.as_secs_f64(),
            errors.len(),
            errors.first().map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
        println!(
            "pod events during the burst: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms; over {} ms: {over}; failed: {pod_failures}",
            latencies.len(),
            at(0.5),
            at(0.99),
            at(1.0),
            POD_TARGET.as_millis()
        );
        println!(
            "prepared {prepared}/{CLAIMS}; doubled VFs: {doubled_vfs}; addresses: {} held, doubled: {doubled_addresses}",
            addresses.len()
        );
        assert_eq!((doubled_vfs, doubled_addresses), (0, 0), "a VF or an address was handed out twice");

        let _ = stop_nri.send(());
        let _ = plugin.await;
        let _ = stop.send(());
        let _ = server.await;
    });
}

static PODS_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
