//! `sriov-dra demo` as a user runs it: the whole path shows the VF with its
//! addresses in the pod and the claim's networkData, and the machine is
//! left as it was found, also when a real SIGINT or SIGTERM arrives at
//! several moments, and after `--keep` ends with Ctrl-C. Needs root.
#![cfg(feature = "demo")]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sriov::testing::have_root;

/// How long one demo may take to reach a line (two busy cores).
const PATIENCE: Duration = Duration::from_secs(120);

/// A running demo whose stdout lines arrive on a channel.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sriov-dra"))
            .arg("demo")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the demo starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads lines until one starts with `prefix`; false if the demo ended first.
    fn wait_for(&mut self, prefix: &str) -> bool {
        loop {
            match self.lines.recv_timeout(PATIENCE) {
                Ok(line) => {
                    let hit = line.starts_with(prefix);
                    self.seen.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "no {prefix:?} within {PATIENCE:?}:\n{}",
                        self.seen.join("\n")
                    )
                }
            }
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory effects; the pid is our own child's.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, signal) }, 0);
    }

    /// Waits for the exit; (success, stdout, stderr).
    fn finish(mut self) -> (bool, String, String) {
        while self.lines.recv_timeout(PATIENCE).is_ok_and(|l| {
            self.seen.push(l);
            true
        }) {}
        let status = self.child.wait().expect("the demo exits");
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        (status.success(), self.seen.join("\n"), stderr)
    }
}

/// Whatever the demo of process `pid` left: its netns, its links, its directory.
fn leftovers(pid: u32) -> Vec<String> {
    let mut left = Vec::new();
    let netns = format!("/run/netns/sriov-dra-demo-{pid}");
    if Path::new(&netns).exists() {
        left.push(netns);
    }
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link show runs");
    for line in String::from_utf8_lossy(&links.stdout).lines() {
        let name = line.split(':').nth(1).unwrap_or_default().trim();
        let name = name.split('@').next().unwrap_or_default();
        if ["dv", "dp", "dq"]
            .iter()
            .any(|p| name.starts_with(&format!("{p}{pid}-")))
        {
            left.push(format!("link {name}"));
        }
    }
    let prefix = format!("sriov-dra-demo-{pid}-");
    for entry in std::fs::read_dir(sriov::fixture::scratch_base())
        .expect("scratch dir")
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            left.push(entry.path().display().to_string());
        }
    }
    left
}

#[test]
fn the_demo_shows_the_vf_in_the_pod_and_leaves_nothing_behind() {
    if !have_root("the_demo_shows_the_vf_in_the_pod_and_leaves_nothing_behind") {
        return;
    }
    let demo = Demo::start(&[]);
    let pid = demo.pid();
    let (ok, out, err) = demo.finish();
    assert!(ok, "{out}\n{err}");
    for expected in [
        "== 6/6",
        "vlan 100 qos 0 proto 802.1Q", // the simulated PF recorded the VLAN
        "inet 10.56.0.1/24",           // ip -n <pod> addr
        "inet6 fd00:56::1/64",
        "\"interfaceName\": \"fh0\"",   // status.devices[].networkData
        "\"state\": \"attached\"",      // debug API /attachments
        "vlan 0 qos 0",                 // restored at unprepare
        "IPv4 0 in use, IPv6 0 in use", // addresses released
        "removed network namespace",
    ] {
        assert!(out.contains(expected), "no {expected:?} in:\n{out}");
    }
    assert!(
        !err.contains("WARN") && !err.contains("ERROR"),
        "a clean run logs no warning:\n{err}"
    );
    assert_eq!(leftovers(pid), Vec::<String>::new());
}

#[test]
fn a_signal_at_any_stage_leaves_nothing_behind() {
    if !have_root("a_signal_at_any_stage_leaves_nothing_behind") {
        return;
    }
    let moments = [
        ("", libc::SIGINT),
        ("== 1/6", libc::SIGINT),
        ("== 2/6", libc::SIGTERM),
        ("== 3/6", libc::SIGINT),
        ("   PF side:", libc::SIGINT),
        ("== 4/6", libc::SIGINT),
        ("   $ ip -n", libc::SIGTERM),
        ("== 5/6", libc::SIGINT),
        ("== 6/6", libc::SIGINT),
    ];
    for (moment, signal) in moments {
        let mut demo = Demo::start(&[]);
        let pid = demo.pid();
        let reached = moment.is_empty() || demo.wait_for(moment);
        assert!(reached, "the demo ended before {moment:?}");
        demo.signal(signal);
        let (ok, out, err) = demo.finish();
        let interrupted = err.contains("interrupted by SIG");
        if moment.is_empty() {
            // Before the handlers exist the signal kills it: nothing made yet.
            assert!(ok || interrupted || out.is_empty(), "{out}\n{err}");
        } else if moment < "== 5/6" {
            assert!(!ok && interrupted, "at {moment:?}: {out}\n{err}");
            assert!(out.contains("== cleanup (after "), "{out}");
        } else {
            // Near the end the demo may finish before the signal lands.
            assert!(ok || interrupted, "at {moment:?}: {out}\n{err}");
        }
        assert_eq!(
            leftovers(pid),
            Vec::<String>::new(),
            "at {moment:?}:\n{out}\n{err}"
        );
    }
}

#[test]
fn keep_runs_until_ctrl_c_then_stops_the_pod_and_cleans_up() {
    if !have_root("keep_runs_until_ctrl_c_then_stops_the_pod_and_cleans_up") {
        return;
    }
    let mut demo = Demo::start(&["--keep"]);
    let pid = demo.pid();
    assert!(demo.wait_for("   pod netns:"));
    // The pod is up for a look around: `ip -n` sees the VF.
    let ip = Command::new("ip")
        .args(["-n", &format!("sriov-dra-demo-{pid}"), "-br", "addr"])
        .output()
        .expect("ip runs");
    let ip = String::from_utf8_lossy(&ip.stdout);
    assert!(ip.contains("fh0") && ip.contains("10.56.0.1/24"), "{ip}");
    demo.signal(libc::SIGINT);
    let (ok, out, err) = demo.finish();
    assert!(ok, "Ctrl-C ends a --keep demo normally:\n{out}\n{err}");
    assert!(out.contains("== 6/6"), "{out}");
    assert_eq!(leftovers(pid), Vec::<String>::new());
}

#[test]
fn without_root_the_demo_says_it_needs_root_and_makes_nothing() {
    if !have_root("without_root_the_demo_says_it_needs_root_and_makes_nothing") {
        return;
    }
    // Drop to nobody for the child (setpriv is util-linux, always there on Debian).
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_sriov-dra"))
        .arg("demo")
        .output()
        .expect("setpriv runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: sriov-dra demo needs root"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}
