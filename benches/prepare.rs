//! NodePrepareResources of a one-VF claim through the real DRA socket, as
//! the kubelet calls it: fake API server with real claim JSON, ConnectX-6 Dx
//! fixture sysfs, recording PF-side device calls, and the real state file
//! (durable redb commits) and CDI directory.
//!
//! Each iteration prepares a new claim (VLAN + an address from a pool) and
//! then unprepares it; both are timed. Target: prepare p99 < 5 ms.
//!
//! As on a node, the state file is on disk and the CDI directory on tmpfs
//! (`/var/run/cdi` is under `/run`): the state directory lives in
//! `$SRIOV_DRA_BENCH_DIR` (default: the system temp dir) and the CDI
//! directory in `/dev/shm` when it exists. fsync cost depends on the file
//! system, so both are printed. Run with
//! `cargo bench --features test-support --bench prepare`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::dra::v1;
use sriov::fixture::Fixture;
use sriov_dra::kube::claims::ClaimReader;
use sriov_dra::kubelet::node_service::{NodeService, serve_node_service};
use sriov_dra::kubelet::socket::connect_unix;
use sriov_dra::testing::device_ops::RecordingDeviceOps;
use sriov_dra::testing::fake_api::FakeApi;
use sriov_dra::testing::node::{NodeParts, pool};

const ITERATIONS: usize = 2000;
const WARMUP: usize = 50;

fn claim(i: usize) -> serde_json::Value {
    let vf = 2 + i % 8; // VFs 3b:00.2 .. 3b:01.1 of ens1f0np0
    let device = format!("pci-0000-3b-{:02x}-{}", vf / 8, vf % 8);
    serde_json::json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": format!("bench-{i}"), "namespace": "bench",
                     "uid": format!("00000000-0000-4000-8000-{i:012}"), "resourceVersion": "1"},
        "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "sriov-vf.sriov.dra.dev"}}]}},
        "status": {"allocation": {"devices": {
            "results": [{"request": "nic", "driver": "sriov.dra.dev", "pool": "bench-node", "device": device}],
            "config": [
                {"source": "FromClass", "requests": ["nic"], "opaque": {"driver": "sriov.dra.dev", "parameters": {
                    "apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfPolicy", "allowedVlans": ["100-199"]}}},
                {"source": "FromClaim", "opaque": {"driver": "sriov.dra.dev", "parameters": {
                    "apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfConfig",
                    "vlan": 100, "ipam": {"pool": "bench"}}}}]
        }}}
    })
}

fn kubelet_claim(i: usize) -> v1::Claim {
    v1::Claim {
        namespace: "bench".into(),
        uid: format!("00000000-0000-4000-8000-{i:012}"),
        name: format!("bench-{i}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name:<10} n={} p50={:.3} ms p99={:.3} ms max={:.3} ms",
        v.len(),
        percentile(&v, 0.50),
        percentile(&v, 0.99),
        percentile(&v, 1.0)
    );
}

fn main() {
    let base: PathBuf = std::env::var_os("SRIOV_DRA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&base).expect("bench dir");
    let cdi = tempfile::tempdir_in(sriov::fixture::scratch_base()).expect("CDI dir");
    let sysfs = dir.path().join("sys");
    Fixture::ConnectX6Dx.build(&sysfs).expect("fixture");
    let (_, preparer) = NodeParts {
        sysfs: &sysfs,
        state_dir: &dir.path().join("state"),
        cdi_dir: cdi.path(),
        pools: &[pool("bench", "10.8.0.0/16")],
        pool: "bench-node",
        boot_id: "bench-boot",
    }
    .preparer(Arc::new(RecordingDeviceOps::new()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // kube::Client spawns its buffer task: it must be built inside tokio.
    let _enter = rt.enter();
    let api = FakeApi::new();
    let service = NodeService::new(preparer, ClaimReader::new(api.client()));
    let socket = dir.path().join("kubelet/plugins/sriov.dra.dev/dra.sock");

    rt.block_on(async {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = serve_node_service(&socket, service, async {
            let _ = stopped.await;
        })
        .expect("serve");
        let mut kubelet =
            v1::dra_plugin_client::DraPluginClient::new(connect_unix(&socket).await.expect("dial"));
        let mut prepare = Vec::with_capacity(ITERATIONS);
        let mut unprepare = Vec::with_capacity(ITERATIONS);
        for i in 0..WARMUP + ITERATIONS {
            api.put_claim(&claim(i));
            let t = Instant::now();
            let resp = kubelet
                .node_prepare_resources(v1::NodePrepareResourcesRequest {
                    claims: vec![kubelet_claim(i)],
                })
                .await
                .expect("prepare")
                .into_inner();
            let took = t.elapsed();
            let one = &resp.claims[&kubelet_claim(i).uid];
            assert!(one.error.is_empty(), "{}", one.error);
            let t = Instant::now();
            let resp = kubelet
                .node_unprepare_resources(v1::NodeUnprepareResourcesRequest {
                    claims: vec![kubelet_claim(i)],
                })
                .await
                .expect("unprepare")
                .into_inner();
            let took_un = t.elapsed();
            assert!(resp.claims[&kubelet_claim(i).uid].error.is_empty());
            if i >= WARMUP {
                prepare.push(took);
                unprepare.push(took_un);
            }
        }
        println!(
            "state dir: {}, CDI dir: {}",
            dir.path().display(),
            cdi.path().display()
        );
        report("prepare", prepare);
        report("unprepare", unprepare);
        drop(stop);
        let _ = server.await;
    });
}
