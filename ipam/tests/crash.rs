//! Crash test: SIGKILL a process that is allocating and releasing, at
//! random moments, again and again; after each kill reopen the store and
//! check that every allocation the child acknowledged (printed after
//! `allocate` returned, i.e. after the durable commit) is still there, that
//! acknowledged releases stayed released, that no address has two owners
//! and that the file opens at all.
//!
//! `harness = false`: the same binary is the child when `IPAM_CRASH_CHILD_DIR`
//! is set. Kill count: `IPAM_CRASH_KILLS` (default 220, at least 200 in CI).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipam::{Ipam, IpamError, Owner, PoolConfig};

const CHILD_ENV: &str = "IPAM_CRASH_CHILD_DIR";

fn pools() -> Vec<PoolConfig> {
    serde_json::from_str(
        r#"[{"name":"crash","scope":"node",
             "subnets":[{"subnet":"10.0.0.0/16","gateway":"10.0.0.1"},{"subnet":"fd00:c::/64"}],
             "exclude":["10.0.255.0/24"]}]"#,
    )
    .expect("crash test pools")
}

/// xorshift64*: enough randomness for timings, no dependency.
struct Rng(u64);

impl Rng {
    fn seeded(extra: u64) -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng((nanos ^ extra.rotate_left(32)) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

fn ips_text(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(|ip| ip.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Child: allocate (dynamic and static) and release forever, printing each
/// acknowledgement only after the call returned.
fn child(dir: &Path) {
    let pid = u64::from(std::process::id());
    let ipam = match Ipam::open(dir, &pools()) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("child: open failed: {e}");
            std::process::exit(2);
        }
    };
    let mut held: Vec<Owner> = match ipam.list() {
        Ok(list) => list.into_iter().map(|a| a.owner).collect(),
        Err(e) => {
            eprintln!("child: list failed: {e}");
            std::process::exit(2);
        }
    };
    println!("READY");
    let mut rng = Rng::seeded(pid);
    for n in 0u64.. {
        let roll = rng.below(10);
        let result = if held.is_empty() || (roll < 6 && held.len() < 150) {
            let owner = Owner::new(format!("c{pid}-{n}"), "req", "dev").expect("owner");
            ipam.allocate(&owner, "crash").map(|a| {
                println!("ACK {} {}", owner.key(), ips_text(&a.ips()));
                held.push(owner);
            })
        } else if roll < 7 {
            let owner = Owner::new(format!("s{pid}-{n}"), "req", "dev").expect("owner");
            let net = format!("10.0.255.{}/16", rng.below(254) + 1)
                .parse()
                .expect("cidr");
            match ipam.allocate_static(&owner, &[net]) {
                Ok(a) => {
                    println!("ACK {} {}", owner.key(), ips_text(&a.ips()));
                    held.push(owner);
                    Ok(())
                }
                Err(IpamError::AddressInUse { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        } else {
            let owner = held.swap_remove(rng.below(held.len() as u64) as usize);
            println!("REL {}", owner.key());
            ipam.release(&owner)
                .map(|_| println!("RELACK {}", owner.key()))
        };
        if let Err(e) = result {
            eprintln!("child: operation failed: {e}");
            std::process::exit(3);
        }
    }
}

/// What the parent knows from the child's acknowledgements.
#[derive(Default)]
struct Model {
    /// Acknowledged and not released: must be in the store, as printed.
    acked: BTreeMap<String, String>,
    /// Release started but not acknowledged: present (as printed) or gone.
    releasing: BTreeMap<String, String>,
    /// Release acknowledged: must be gone.
    released: BTreeSet<String>,
    acks: usize,
    release_acks: usize,
}

impl Model {
    fn apply(&mut self, line: &str) {
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("ACK"), Some(key), Some(ips)) => {
                self.acked.insert(key.to_string(), ips.to_string());
                self.acks += 1;
            }
            (Some("REL"), Some(key), None) => {
                if let Some(ips) = self.acked.remove(key) {
                    self.releasing.insert(key.to_string(), ips);
                }
            }
            (Some("RELACK"), Some(key), None) => {
                self.releasing.remove(key);
                self.acked.remove(key);
                self.released.insert(key.to_string());
                self.release_acks += 1;
            }
            // READY, or a line cut short by the kill: acknowledges nothing.
            _ => {}
        }
    }

    /// Checks the store against the model; then folds "releasing" owners
    /// into whatever the store says.
    fn check(&mut self, dir: &Path, round: usize) {
        if round.is_multiple_of(10) && dir.join(ipam::STATE_FILE).exists() {
            // The CLI's read-only view must also cope with a crashed file.
            let reader = ipam::IpamReader::open(dir)
                .unwrap_or_else(|e| panic!("round {round}: read-only open after kill: {e}"));
            let listed: BTreeSet<String> = reader
                .list()
                .expect("read-only list")
                .into_iter()
                .map(|a| a.owner.key())
                .collect();
            for key in self.acked.keys() {
                assert!(
                    listed.contains(key),
                    "round {round}: read-only view lacks {key}"
                );
            }
        }
        let ipam = Ipam::open(dir, &pools())
            .unwrap_or_else(|e| panic!("round {round}: store does not open after kill: {e}"));
        let problems = ipam.verify().expect("verify");
        assert!(problems.is_empty(), "round {round}: {problems:?}");
        let stored: BTreeMap<String, String> = ipam
            .list()
            .expect("list")
            .into_iter()
            .map(|a| (a.owner.key(), ips_text(&a.ips())))
            .collect();
        let mut seen = BTreeSet::new();
        for ips in stored.values() {
            for ip in ips.split(',') {
                assert!(
                    seen.insert(ip.to_string()),
                    "round {round}: {ip} has two owners"
                );
            }
        }
        for (key, ips) in &self.acked {
            assert_eq!(
                stored.get(key),
                Some(ips),
                "round {round}: acknowledged allocation of {key} lost or changed"
            );
        }
        for key in &self.released {
            assert!(
                !stored.contains_key(key),
                "round {round}: acknowledged release of {key} came back"
            );
        }
        for (key, ips) in std::mem::take(&mut self.releasing) {
            match stored.get(&key) {
                None => {
                    self.released.insert(key);
                }
                Some(now) => {
                    assert_eq!(*now, ips, "round {round}: {key} changed during release");
                    self.acked.insert(key, ips);
                }
            }
        }
    }
}

fn parent() {
    let kills: usize = std::env::var("IPAM_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(220);
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("own executable");
    let stderr_path = dir.path().join("child-stderr.log");
    let state = dir.path().join("state");
    let mut rng = Rng::seeded(0x1234);
    let mut model = Model::default();
    let started = Instant::now();
    let mut during_open = 0;
    for round in 0..kills {
        let stderr = std::fs::File::create(&stderr_path).expect("stderr log");
        let mut proc = Command::new(&exe)
            .env(CHILD_ENV, &state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn child");
        let stdout = proc.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let mut lines = Vec::new();
        // One kill in five is timed from spawn and may land inside open
        // (recovery of the previous crash); the rest land while working.
        if rng.below(5) == 0 {
            std::thread::sleep(Duration::from_micros(rng.below(15_000)));
            during_open += 1;
        } else {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(l) => lines.push(l),
                Err(_) => {
                    let _ = proc.kill();
                    let _ = proc.wait();
                    panic!(
                        "round {round}: child never became ready: {}",
                        std::fs::read_to_string(&stderr_path).unwrap_or_default()
                    );
                }
            }
            std::thread::sleep(Duration::from_micros(rng.below(40_000)));
        }
        // std's Child::kill sends SIGKILL on unix.
        let _ = proc.kill();
        let status = proc.wait().expect("wait child");
        reader.join().expect("reader thread");
        lines.extend(rx.try_iter());
        assert_eq!(
            status.signal(),
            Some(9),
            "round {round}: child ended by itself ({status}): {}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        for l in &lines {
            model.apply(l);
        }
        model.check(&state, round);
    }
    println!(
        "ipam crash test: {kills} SIGKILLs ({during_open} timed from spawn, may hit open/recovery), \
         {} acknowledged allocations, {} acknowledged releases, {} live at end, all checks passed in {:.1}s",
        model.acks,
        model.release_acks,
        model.acked.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(kills >= 200 || std::env::var("IPAM_CRASH_KILLS").is_ok());
}

fn main() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        println!("crash: test");
        return;
    }
    parent();
}
