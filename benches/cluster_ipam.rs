//! Cluster-wide pools at scale: 1000 simulated nodes, each with its own
//! store (redb in memory: the real tables and code paths, no fsync) and its
//! own leaser, all leasing blocks of one pool through one fake API server
//! (real JSON, create = arbitration) at the same time, 100 pod allocations
//! each. Nodes start at spread blocks, so some first choices collide and
//! are refused with 409 (the conflicts printed).
//!
//! Prints: duplicate addresses cluster-wide (must be 0; the bench fails
//! otherwise), API writes per pod allocation (target ≤ 0.05, one block per
//! ≥ 20 pods), and allocation latency p50/p99 against the same allocations
//! from node-local pools. The leaser runs between a node's pods when the
//! watermark is crossed, as the background task would; it is not in the
//! timed allocation.
//!
//! Run with `cargo bench --features test-support --bench cluster_ipam`
//! (release build; the figures to quote). CI runs the same simulation on
//! the debug build the tests already made (`cargo test --features
//! test-support --bench cluster_ipam`, about 75 s on 2 cores): duplicates
//! and writes per allocation are counts and do not depend on the build.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipam::{Family, Ipam, IpamError, Owner, PoolConfig};
use sriov_dra::kube::leaser::{BlockSignal, Leaser, LeaserConfig};
use sriov_dra::testing::fake_api::FakeApi;

const NODES: usize = 1000;
const PODS: usize = 100;
const MIN_FREE: u32 = 16;

/// 10.64.0.0/14 in /26 blocks: 4096 blocks of 64 addresses.
const CLUSTER: &str = r#"[{"name":"fabric","scope":"cluster","blockSize":{"ipv4":26},
    "subnets":[{"subnet":"10.64.0.0/14"}]}]"#;
const LOCAL: &str = r#"[{"name":"fabric","scope":"node","subnets":[{"subnet":"10.64.0.0/14"}]}]"#;

fn pools(json: &str) -> Vec<PoolConfig> {
    serde_json::from_str(json).expect("bench pools")
}

fn owner(node: usize, pod: usize) -> Owner {
    Owner::new(format!("claim-{node}-{pod}"), "nic", "pci-0000-3b-02-1").expect("owner")
}

/// What one node did.
struct NodeRun {
    ips: Vec<IpAddr>,
    latencies: Vec<Duration>,
    retries: usize,
}

async fn run_node(api: FakeApi, n: usize) -> Result<NodeRun, String> {
    let name = format!("node-{n:04}");
    let ipam = Arc::new(Ipam::open_in_memory(&pools(CLUSTER)).map_err(|e| e.to_string())?);
    let signal = Arc::new(BlockSignal::default());
    ipam.set_block_demand(signal.clone());
    let config = LeaserConfig {
        node: name.clone(),
        min_free: u128::from(MIN_FREE),
        return_after: Duration::from_secs(600),
        interval: Duration::from_secs(1),
    };
    let mut leaser = Leaser::new(api.client(), ipam.clone(), config, signal);
    leaser.reconcile().await.map_err(|e| format!("{e:#}"))?;
    let mut run = NodeRun {
        ips: Vec::with_capacity(PODS),
        latencies: Vec::with_capacity(PODS),
        retries: 0,
    };
    for pod in 0..PODS {
        let free = ipam
            .free_count("fabric", Family::V4)
            .map_err(|e| e.to_string())?;
        if ipam::wants_block(free, u128::from(MIN_FREE)) {
            leaser
                .step(Instant::now())
                .await
                .map_err(|e| format!("{e:#}"))?;
        }
        loop {
            let t = Instant::now();
            match ipam.allocate(&owner(n, pod), "fabric") {
                Ok(a) => {
                    run.latencies.push(t.elapsed());
                    run.ips.extend(a.ips());
                    break;
                }
                Err(IpamError::BlocksExhausted { .. }) => {
                    run.retries += 1;
                    leaser
                        .step(Instant::now())
                        .await
                        .map_err(|e| format!("{e:#}"))?;
                }
                Err(e) => return Err(format!("{name}: {e}")),
            }
        }
        // Let other nodes' leasers interleave with this one.
        tokio::task::yield_now().await;
    }
    Ok(run)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied().unwrap_or_default()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The same allocations from a node-local pool, run the same way (1000
/// concurrent node tasks on the same runtime), so the two distributions
/// differ only by the pool's scope.
async fn node_local_latencies() -> Vec<Duration> {
    let tasks: Vec<_> = (0..NODES)
        .map(|n| {
            tokio::spawn(async move {
                let ipam = Ipam::open_in_memory(&pools(LOCAL)).expect("node-local store");
                let mut out = Vec::with_capacity(PODS);
                for pod in 0..PODS {
                    let t = Instant::now();
                    ipam.allocate(&owner(n, pod), "fabric")
                        .expect("node-local allocation");
                    out.push(t.elapsed());
                    tokio::task::yield_now().await;
                }
                out
            })
        })
        .collect();
    let mut out = Vec::with_capacity(NODES * PODS);
    for t in tasks {
        out.extend(t.await.expect("node-local task"));
    }
    out
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let api = FakeApi::new();
    for n in 0..NODES {
        api.put_node(&format!("node-{n:04}"), &format!("uid-{n:04}"));
    }
    let started = Instant::now();
    let runs: Vec<NodeRun> = runtime.block_on(async {
        let tasks: Vec<_> = (0..NODES)
            .map(|n| tokio::spawn(run_node(api.clone(), n)))
            .collect();
        let mut runs = Vec::with_capacity(NODES);
        for t in tasks {
            match t.await {
                Ok(Ok(run)) => runs.push(run),
                Ok(Err(e)) => panic!("simulated node failed: {e}"),
                Err(e) => panic!("simulated node panicked: {e}"),
            }
        }
        runs
    });
    let wall = started.elapsed();

    let mut seen: HashMap<IpAddr, usize> = HashMap::new();
    for ip in runs.iter().flat_map(|r| &r.ips) {
        *seen.entry(*ip).or_default() += 1;
    }
    let allocations: usize = runs.iter().map(|r| r.ips.len()).sum();
    let duplicates = allocations - seen.len();
    let calls = api.calls();
    let is_write = |m: &str| matches!(m, "POST" | "PUT" | "PATCH" | "DELETE");
    let writes = calls.iter().filter(|c| is_write(&c.method)).count();
    let posts = calls.iter().filter(|c| c.method == "POST").count();
    let deletes = calls.iter().filter(|c| c.method == "DELETE").count();
    // Every create either made a lease (still there, or deleted since) or
    // was refused.
    let leases = api.ip_blocks().all().len();
    let conflicts = posts.saturating_sub(leases + deletes);
    let retries: usize = runs.iter().map(|r| r.retries).sum();
    let mut cluster: Vec<Duration> = runs.iter().flat_map(|r| r.latencies.clone()).collect();
    cluster.sort();
    let mut local = runtime.block_on(node_local_latencies());
    local.sort();

    println!(
        "cluster-wide pool, {NODES} nodes x {PODS} pods, one fake API (real JSON), stores in memory:"
    );
    println!("  wall time                   {:.1} s", wall.as_secs_f64());
    println!("  allocations                 {allocations}");
    println!("  duplicate addresses         {duplicates}");
    println!(
        "  API writes                  {writes} ({leases} leases + {conflicts} refused creates, 409)"
    );
    println!(
        "  API writes per allocation   {:.4} (target <= 0.05)",
        writes as f64 / allocations as f64
    );
    println!(
        "  API requests in all         {} (reads: lists at start and after conflicts, gets)",
        calls.len()
    );
    println!("  allocations that found the node dry and waited for the leaser: {retries}");
    println!(
        "  allocation p50 / p99        {:.1} / {:.1} us  (cluster pool)",
        us(percentile(&cluster, 0.5)),
        us(percentile(&cluster, 0.99))
    );
    println!(
        "  allocation p50 / p99        {:.1} / {:.1} us  (node-local pool, same stores, same concurrency)",
        us(percentile(&local, 0.5)),
        us(percentile(&local, 0.99))
    );
    assert_eq!(duplicates, 0, "an address was handed out twice");
    assert_eq!(allocations, NODES * PODS);
    // A count, not a timing: the leasing protocol's cost per pod.
    assert!(
        writes * 20 <= allocations,
        "{writes} API writes for {allocations} allocations: more than one per 20 pods"
    );
}
