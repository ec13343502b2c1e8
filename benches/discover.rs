//! Full scan + slice build of the 2048-VF fixture node, in-process and as
//! a whole `sriov-dra discover -o slices` process, and the publish loop's
//! partial rescan after one PF's link event (plan + re-read + merge into
//! the last inventory) against the full scan a round used to do.
//!
//! Prints the median and best of repeated runs against the targets: in
//! process ≤ 30 ms; as a process ≤ 100 ms wall and ≤ 20 MiB peak RSS (from
//! `wait4`'s rusage of the child). Run with `cargo bench --bench discover`.
//!
//! In process, both kinds of scan are measured: cold (nothing known, as a
//! one-off `discover` or the driver's first round) and warm (the driver's
//! later rounds, with the `ScanMemo` its publish loop keeps, which reads
//! only what can change while a device exists). The 30 ms target is the
//! driver's: the warm line.
//!
//! Wall time swings with whatever else the machine runs, so the CPU time
//! the process spent (all threads, user + system) is printed too: it moves
//! only when the work does.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use sriov::fixture::Fixture;
use sriov::memo::ScanMemo;
use sriov_dra::config::NodeConfig;
use sriov_dra::events::Nudge;
use sriov_dra::events::targets::{Plan, link_owner, plan};
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
    // First, while this process is still small: Linux carries the peak RSS
    // of the image a child replaced at exec (here, this process's, shared
    // through vfork) into the child's ru_maxrss, so the child's own peak
    // shows only while ours is below it.
    whole_process(dir.path());

    let config = NodeConfig::default();
    let params = SliceParams::new(&config, "bench-node");
    let mut pci = Vec::new();
    let mut pci_cpu = Vec::new();
    let mut scan = Vec::new();
    let mut scan_cpu = Vec::new();
    let mut render = Vec::new();
    let mut total = Vec::new();
    let mut warm = Vec::new();
    let mut warm_cpu = Vec::new();
    let mut warm_total = Vec::new();
    // The driver's publish loop keeps one memo for all its scans; the
    // first fills it, as the loop's first round does. It raises the
    // open-file limit first, as the driver does.
    sriov_dra::driver::raise_open_file_limit();
    let memo = ScanMemo::default();
    let first = NodeInventory::discover_remembering(dir.path(), &memo).expect("scan");
    assert_eq!(
        memo.dirs_open(),
        2056,
        "every network function's directory kept"
    );
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
        drop(s);

        let (c0, t0) = (cpu_time(), Instant::now());
        let inv = NodeInventory::discover_remembering(dir.path(), &memo).expect("scan");
        let (c1, t1) = (cpu_time(), Instant::now());
        let s = slices::render(&inv, &config, &params);
        let t2 = Instant::now();
        assert_eq!(s.len(), 16);
        assert_eq!(inv.devices.len(), first.devices.len());
        warm.push(t1 - t0);
        warm_cpu.push(c1.saturating_sub(c0));
        warm_total.push(t2 - t0);
    }
    for (name, v) in [
        ("pci scan", &mut pci),
        ("pci scan cpu", &mut pci_cpu),
        ("cold scan", &mut scan),
        ("cold scan cpu", &mut scan_cpu),
        ("render", &mut render),
        ("cold scan+render", &mut total),
        ("warm scan", &mut warm),
        ("warm scan cpu", &mut warm_cpu),
        ("warm scan+render", &mut warm_total),
    ] {
        v.sort();
        println!(
            "discover scale-2048 {name:<16} median {:7.2} ms  best {:7.2} ms  (n={})",
            ms(v[v.len() / 2]),
            ms(v[0]),
            v.len()
        );
    }
    println!(
        "target: scan+render <= 30 ms (wall) in process: the driver's scans, each after \
         the first (warm: one ScanMemo, as its publish loop keeps); a first or one-off \
         scan is the cold line, and the CLI's target is the process line"
    );
    println!("cpu = all threads, user + system");
    link_event_round(dir.path());
}

/// What a round reads after one PF's link went down or up: the plan and
/// partial rescan the loop does now, against a full scan.
fn link_event_round(root: &Path) {
    let last = NodeInventory::discover(root).expect("scan");
    let pf = last
        .devices
        .iter()
        .find(|d| !d.function.is_vf())
        .expect("a PF");
    let name = pf.function.netdev.as_ref().expect("PF netdev").name.clone();
    let operstate = root
        .join("bus/pci/devices")
        .join(pf.function.address.to_string())
        .join(format!("net/{name}/operstate"));
    let nudges = BTreeSet::from([Nudge::Link { name }]);
    let mut partial = Vec::new();
    let mut full = Vec::new();
    let mut read = 0;
    for i in 0..RUNS {
        let state = if i % 2 == 0 { "down\n" } else { "up\n" };
        std::fs::write(&operstate, state).expect("operstate");
        let t0 = Instant::now();
        let Plan::Partial(targets) = plan(&nudges, &last, |n| link_owner(root, n)) else {
            panic!("a known PF's link event maps to its PF");
        };
        let rescanned = last.rescan(&targets).expect("rescan");
        partial.push(t0.elapsed());
        read = rescanned.read.len();
        let t0 = Instant::now();
        let scanned = NodeInventory::discover(root).expect("scan");
        full.push(t0.elapsed());
        assert_eq!(scanned.devices.len(), rescanned.inventory.devices.len());
    }
    partial.sort();
    full.sort();
    for (what, v) in [
        ("rescan of one PF after a link event", &partial),
        ("full scan, as every round did before", &full),
    ] {
        println!(
            "round scale-2048 {what:<38} median {:7.2} ms  best {:7.2} ms  (n={})",
            ms(v[v.len() / 2]),
            ms(v[0]),
            v.len()
        );
    }
    println!(
        "round scale-2048 functions read: {read} of {} (plan + re-read + merge vs scan)",
        last.devices.len()
    );
}

/// Runs the CLI as an operator would, `RUNS` times, and prints its wall
/// time and peak RSS.
fn whole_process(root: &Path) {
    let exe = env!("CARGO_BIN_EXE_sriov-dra");
    let mut wall = Vec::new();
    let mut rss_kib = Vec::new();
    for _ in 0..RUNS {
        let t0 = Instant::now();
        // Reaped by `wait4` below, which also gives its rusage.
        #[allow(clippy::zombie_processes)]
        let child = Command::new(exe)
            .args(["discover", "--node-name", "bench-node", "-o", "slices"])
            .arg("--sysfs-root")
            .arg(root)
            .stdout(Stdio::null())
            .spawn()
            .expect("sriov-dra starts");
        let (status, usage) = wait4(child.id());
        wall.push(t0.elapsed());
        assert!(
            status == 0,
            "sriov-dra discover exited with wait status {status}"
        );
        // Linux reports ru_maxrss in KiB.
        rss_kib.push(usage.ru_maxrss);
    }
    wall.sort();
    rss_kib.sort();
    println!(
        "discover scale-2048 process      median {:7.2} ms  best {:7.2} ms  (n={}, target <= 100 ms)",
        ms(wall[wall.len() / 2]),
        ms(wall[0]),
        wall.len()
    );
    println!(
        "discover scale-2048 process RSS  median {:7.2} MiB max  {:7.2} MiB  (n={}, target <= 20 MiB peak)",
        rss_kib[rss_kib.len() / 2] as f64 / 1024.0,
        rss_kib[rss_kib.len() - 1] as f64 / 1024.0,
        rss_kib.len()
    );
}

/// Reaps child `pid` and returns its wait status and resource usage.
fn wait4(pid: u32) -> (i32, libc::rusage) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits");
    let mut status = 0;
    // SAFETY: wait4 writes only the status and rusage it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped; pointers are valid.
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(got, pid, "wait4: {}", std::io::Error::last_os_error());
    (status, usage)
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
