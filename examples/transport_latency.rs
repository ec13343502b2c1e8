//! Round-trip latency of the node-local transports, printed as p50/p99:
//! kubelet `GetInfo` over the registration socket (tonic on a unix socket)
//! and NRI calls over the mux + ttrpc (small and 64 KiB payloads).
//!
//! Run: `cargo run --release --example transport_latency`

use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::pluginregistration::InfoRequest;
use proto::pluginregistration::registration_client::RegistrationClient;
use sriov_dra::kubelet::registration::{PluginPaths, serve_registration};
use sriov_dra::kubelet::socket::connect_unix;
use sriov_dra::nri::mux::{Mux, PLUGIN_SERVICE_CONN};
use sriov_dra::nri::ttrpc::{TtrpcClient, TtrpcServer};

const ROUNDS: usize = 5000;

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{name:<34} n={:<5} p50={:>8.1?} p99={:>8.1?} max={:>8.1?}",
        samples.len(),
        at(0.50),
        at(0.99),
        at(1.0)
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let paths = PluginPaths::new(dir.path(), "sriov.dra.dev");
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let _server = serve_registration(&paths, async {
        let _ = stopped.await;
    })?;
    let mut kubelet = RegistrationClient::new(connect_unix(&paths.registration_socket).await?);
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        kubelet.get_info(InfoRequest {}).await?;
        samples.push(start.elapsed());
    }
    report("kubelet GetInfo (gRPC, unix)", samples);

    let (a, b) = tokio::net::UnixStream::pair()?;
    let (plugin_mux, runtime_mux) = (Mux::new(a), Mux::new(b));
    let server = TtrpcServer::new(
        "bench.Plugin",
        |_method: String, payload: Bytes| async move { Ok(payload) },
    );
    tokio::spawn(server.serve(plugin_mux.open(PLUGIN_SERVICE_CONN)?));
    let runtime = TtrpcClient::new(runtime_mux.open(PLUGIN_SERVICE_CONN)?);
    plugin_mux.unblock();
    runtime_mux.unblock();
    for (name, size) in [
        ("NRI ttrpc echo 100 B (mux)", 100),
        ("NRI ttrpc echo 64 KiB (mux)", 64 << 10),
    ] {
        let payload = Bytes::from(vec![0x5a; size]);
        let mut samples = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let start = Instant::now();
            runtime
                .call("bench.Plugin", "Echo", payload.clone())
                .await?;
            samples.push(start.elapsed());
        }
        report(name, samples);
    }
    Ok(())
}
