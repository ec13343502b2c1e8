//! Full scan + slice build of the 2048-VF fixture node.
//!
//! Prints the median and best of repeated runs; target ≤ 30 ms on a 2-core
//! machine. Run with `cargo bench --bench discover`.
//!
//! Wall time swings with whatever else the machine runs, so the CPU time
//! the process spent (all threads, user + system) is printed too: it moves
//! only when the work does.

use std::time::{Duration, Instant};

use sriov::fixture::Fixture;
use sriov_dra::config::NodeConfig;
use sriov_dra::inventory::NodeInventory;
use sriov_dra::kube::slices::{self, SliceParams};

const RUNS: usize = 30;

fn main() {
    let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).expect("temp dir");
    let t = Instant::now();
    Fixture::Scale2048
        .build(dir.path())
        .expect("fixture builds");
    println!("built scale-2048 fixture in {:.0} ms", ms(t.elapsed()));

    let config = NodeConfig::default();
    let params = SliceParams::new(&config, "bench-node");
    let mut pci = Vec::new();
    let mut pci_cpu = Vec::new();
    let mut scan = Vec::new();
    let mut scan_cpu = Vec::new();
    let mut render = Vec::new();
    let mut total = Vec::new();
    for _ in 0..RUNS {
        // The PCI part alone, to tell it from the RDMA join.
        let (c0, t0) = (cpu_time(), Instant::now());
        let inv = sriov::scan(dir.path()).expect("PCI scan");
        pci.push(t0.elapsed());
        pci_cpu.push(cpu_time().saturating_sub(c0));
        assert_eq!(inv.functions.len(), 2056);

        let (c0, t0) = (cpu_time(), Instant::now());
        let inv = NodeInventory::discover(dir.path()).expect("scan");
        let (c1, t1) = (cpu_time(), Instant::now());
        let s = slices::render(&inv, &config, &params);
        let t2 = Instant::now();
        assert_eq!(s.len(), 16);
        scan.push(t1 - t0);
        scan_cpu.push(c1.saturating_sub(c0));
        render.push(t2 - t1);
        total.push(t2 - t0);
    }
    for (name, v) in [
        ("pci scan", &mut pci),
        ("pci scan cpu", &mut pci_cpu),
        ("scan", &mut scan),
        ("scan cpu", &mut scan_cpu),
        ("render", &mut render),
        ("scan+render", &mut total),
    ] {
        v.sort();
        println!(
            "discover scale-2048 {name:<12} median {:7.2} ms  best {:7.2} ms  (n={})",
            ms(v[v.len() / 2]),
            ms(v[0]),
            v.len()
        );
    }
    println!("target: scan+render <= 30 ms (wall); cpu = all threads, user + system");
}

/// User + system time of the whole process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
