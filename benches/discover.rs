//! Full scan + slice build of the 2048-VF fixture node.
//!
//! Prints the median and best of repeated runs; target ≤ 30 ms on a 2-core
//! machine. Run with `cargo bench --bench discover`.

use std::time::{Duration, Instant};

use sriov::fixture::Fixture;
use sriov_dra::config::NodeConfig;
use sriov_dra::inventory::NodeInventory;
use sriov_dra::kube::slices::{self, SliceParams};

fn main() {
    let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).expect("temp dir");
    let t = Instant::now();
    Fixture::Scale2048
        .build(dir.path())
        .expect("fixture builds");
    println!("built scale-2048 fixture in {:.0} ms", ms(t.elapsed()));

    let config = NodeConfig::default();
    let params = SliceParams::new(&config, "bench-node");
    let mut scan = Vec::new();
    let mut render = Vec::new();
    let mut total = Vec::new();
    for _ in 0..30 {
        let t0 = Instant::now();
        let inv = NodeInventory::discover(dir.path()).expect("scan");
        let t1 = Instant::now();
        let s = slices::render(&inv, &config, &params);
        let t2 = Instant::now();
        assert_eq!(s.len(), 16);
        scan.push(t1 - t0);
        render.push(t2 - t1);
        total.push(t2 - t0);
    }
    for (name, v) in [
        ("scan", &mut scan),
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
    println!("target: scan+render <= 30 ms");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
