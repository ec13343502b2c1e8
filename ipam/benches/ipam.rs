//! IPAM benchmark (prints figures; no timed assertions):
//! durable allocate+commit and release latency, throughput, opening a store
//! of 100,000 allocations, and the reference CNI `host-local` plugin on the
//! same subnet for comparison.
//!
//! `cargo bench -p ipam`; `IPAM_BENCH_N` sets the number of timed
//! allocations (default 2000), `IPAM_BENCH_DIR` where the store lives
//! (default: a temp dir; use a real disk, tmpfs makes fsync free).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipam::{Ipam, IpamReader, Owner, PoolConfig};

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";
const SUBNET: &str = "10.20.0.0/16";

fn pools(subnet: &str) -> Vec<PoolConfig> {
    serde_json::from_str(&format!(
        r#"[{{"name":"bench","scope":"node","subnets":[{{"subnet":"{subnet}","gateway":"10.20.0.1"}}]}}]"#
    ))
    .expect("bench pool")
}

fn big_pools() -> Vec<PoolConfig> {
    serde_json::from_str(
        r#"[{"name":"big","scope":"node","subnets":[{"subnet":"10.64.0.0/12"},{"subnet":"fd00:64::/64"}]}]"#,
    )
    .expect("big pool")
}

fn owner(prefix: &str, n: usize) -> Owner {
    Owner::new(format!("{prefix}-{n:08}"), "nic", "pci-0000-3b-02-1").expect("owner")
}

/// Latency summary of a set of samples.
struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let total: Duration = samples.iter().sum();
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        mean: total / samples.len() as u32,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn line(what: &str, s: &Stats) {
    println!(
        "  {what:<34} p50 {:>10}  p99 {:>10}  mean {:>10}",
        ms(s.p50),
        ms(s.p99),
        ms(s.mean)
    );
}

fn temp_dir() -> tempfile::TempDir {
    match std::env::var_os("IPAM_BENCH_DIR") {
        Some(base) => {
            std::fs::create_dir_all(&base).expect("IPAM_BENCH_DIR");
            tempfile::tempdir_in(base).expect("temp dir")
        }
        None => tempfile::tempdir().expect("temp dir"),
    }
}

/// What the disk itself costs: one 4 KiB overwrite + fdatasync, the floor
/// under any durable commit.
fn disk_floor(n: usize) -> Stats {
    let dir = temp_dir();
    let path = dir.path().join("fsync-probe");
    let mut file = std::fs::File::create(&path).expect("probe file");
    let page = [0x5au8; 4096];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        use std::io::{Seek, SeekFrom};
        let t = Instant::now();
        file.seek(SeekFrom::Start(0)).expect("seek");
        file.write_all(&page).expect("write");
        file.sync_data().expect("fdatasync");
        samples.push(t.elapsed());
    }
    let s = stats(samples);
    println!("disk floor (this machine, same directory; fsync latency moves with other I/O):");
    line(&format!("4 KiB write + fdatasync (n={n})"), &s);
    s
}

/// Durable allocate and release, one at a time, then with 4 threads.
fn ours(n: usize) -> (Stats, Stats) {
    let dir = temp_dir();
    println!("store: {}", dir.path().display());
    let ipam = Ipam::open(dir.path(), &pools(SUBNET)).expect("open");
    let mut alloc = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        ipam.allocate(&owner("a", i), "bench").expect("allocate");
        alloc.push(t.elapsed());
    }
    let alloc_wall = started.elapsed();
    let mut release = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        ipam.release(&owner("a", i)).expect("release");
        release.push(t.elapsed());
    }
    let a = stats(alloc);
    let r = stats(release);
    println!("sriov-dra ipam (redb, every call committed with Durability::Immediate):");
    line(&format!("allocate+commit (n={n})"), &a);
    line(&format!("release+commit (n={n})"), &r);
    println!(
        "  throughput, 1 thread                {:>8.0} allocations/s",
        n as f64 / alloc_wall.as_secs_f64()
    );
    let ipam = Arc::new(ipam);
    let threads = 4;
    let per = n / threads;
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let ipam = Arc::clone(&ipam);
            std::thread::spawn(move || {
                for i in 0..per {
                    ipam.allocate(&owner(&format!("t{t}"), i), "bench")
                        .expect("allocate");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    println!(
        "  throughput, {threads} threads               {:>8.0} allocations/s",
        (per * threads) as f64 / started.elapsed().as_secs_f64()
    );
    (a, r)
}

/// Builds a store of `count` allocations (in large transactions, the way a
/// long-running node accumulates them) and times reopening it.
fn open_large(count: usize) {
    let dir = temp_dir();
    let build = Instant::now();
    {
        let ipam = Ipam::open(dir.path(), &big_pools()).expect("open");
        let batch = 10_000;
        for start in (0..count).step_by(batch) {
            let txn = ipam.database().begin_write().expect("begin");
            for i in start..(start + batch).min(count) {
                ipam.allocate_in(&txn, &owner("big", i), "big")
                    .expect("allocate");
            }
            txn.commit().expect("commit");
        }
    }
    let size = std::fs::metadata(ipam::state_file(dir.path()))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "store of {count} dual-stack allocations: built in {:.1} s, file {:.1} MiB",
        build.elapsed().as_secs_f64(),
        size as f64 / (1 << 20) as f64
    );
    let mut open = Vec::new();
    let mut read_only = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let ipam = Ipam::open(dir.path(), &big_pools()).expect("reopen");
        open.push(t.elapsed());
        drop(ipam);
        let t = Instant::now();
        let reader = IpamReader::open(dir.path()).expect("read-only open");
        read_only.push(t.elapsed());
        drop(reader);
    }
    line("open (read-write, as the driver)", &stats(open));
    line("open (read-only, as the CLI)", &stats(read_only));
    let ipam = Ipam::open(dir.path(), &big_pools()).expect("reopen");
    let mut alloc = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        ipam.allocate(&owner("more", i), "big").expect("allocate");
        alloc.push(t.elapsed());
    }
    line("allocate+commit at 100k held (n=200)", &stats(alloc));
}

/// One host-local invocation per CNI spec; `None` if it failed.
fn host_local_call(command: &str, id: usize, data_dir: &Path) -> Result<Duration, String> {
    let config = format!(
        r#"{{"cniVersion":"1.0.0","name":"bench","type":"host-local-bench",
            "ipam":{{"type":"host-local","subnet":"{SUBNET}","gateway":"10.20.0.1","dataDir":"{}"}}}}"#,
        data_dir.display()
    );
    let t = Instant::now();
    let mut child = Command::new(HOST_LOCAL)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", format!("bench-{id:08}"))
        .env("CNI_NETNS", "/var/run/netns/bench")
        .env("CNI_IFNAME", "net1")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(config.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let elapsed = t.elapsed();
    if out.status.success() {
        Ok(elapsed)
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn host_local(n: usize, ours_alloc: &Stats, ours_release: &Stats) {
    if !Path::new(HOST_LOCAL).exists() {
        println!(
            "host-local: NOT FOUND at {HOST_LOCAL}; no comparison \
             (apt-get install containernetworking-plugins)"
        );
        return;
    }
    let dir = temp_dir();
    let mut add = Vec::with_capacity(n);
    for i in 0..n {
        match host_local_call("ADD", i, dir.path()) {
            Ok(d) => add.push(d),
            Err(e) => {
                println!("host-local: ADD failed, no comparison: {e}");
                return;
            }
        }
    }
    let mut del = Vec::with_capacity(n);
    for i in 0..n {
        match host_local_call("DEL", i, dir.path()) {
            Ok(d) => del.push(d),
            Err(e) => {
                println!("host-local: DEL failed: {e}");
                return;
            }
        }
    }
    let a = stats(add);
    let d = stats(del);
    println!(
        "reference CNI host-local ({HOST_LOCAL}, one exec per call as a runtime does, same subnet):"
    );
    line(&format!("ADD (n={n})"), &a);
    line(&format!("DEL (n={n})"), &d);
    println!(
        "ratio host-local / sriov-dra: allocate p50 {:.1}x, p99 {:.1}x; release p50 {:.1}x",
        a.p50.as_secs_f64() / ours_alloc.p50.as_secs_f64(),
        a.p99.as_secs_f64() / ours_alloc.p99.as_secs_f64(),
        d.p50.as_secs_f64() / ours_release.p50.as_secs_f64(),
    );
}

fn main() {
    // `cargo test --benches` runs this with `--test`-style arguments; keep
    // that quick.
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("IPAM_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 50 } else { 2000 });
    disk_floor(n.min(500));
    let (a, r) = ours(n);
    let large = if quick { 2_000 } else { 100_000 };
    open_large(large);
    host_local((n / 4).max(20), &a, &r);
    disk_floor(n.min(500));
    println!("targets: allocate+commit p50 <= 0.3 ms; open of 100k <= 200 ms");
}
