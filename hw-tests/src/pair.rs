//! The cases that need two VFs of one PF in two network namespaces: ping
//! between them (v4, v6), the RDMA device moved exclusively with its VF and
//! seen by `rdma link` inside, and `ib_write_bw` / `ib_send_lat` between
//! the two. Namespaces and moves are done with iproute2 (`ip`, `rdma`),
//! independent of the driver's own code; deleting a namespace sends the
//! VFs and RDMA devices back to the host, which [`Pair`]'s drop does and
//! waits for.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cases::Outcome;
use crate::profile::NicProfile;
use crate::report::Entry;
use crate::tools::{need_root, need_tools, rdma_netns_exclusive, run, vf_netdev, vf_rdma_device};

/// Why a pair could not be set up: missing hardware, or a failure.
#[derive(Debug)]
pub enum Blocked {
    /// A prerequisite is missing (reported as `needs hardware`).
    Needs(String),
    /// Setting up failed (reported as `FAIL`).
    Failed(String),
}

impl Blocked {
    fn outcome(&self) -> Outcome {
        match self {
            Blocked::Needs(r) => Outcome::NeedsHardware(r.clone()),
            Blocked::Failed(r) => Outcome::Fail(r.clone()),
        }
    }
}

/// Two namespaces, each holding one VF (and, with RDMA, its RDMA device).
pub struct Pair {
    sysfs_root: PathBuf,
    namespaces: Vec<String>,
    /// The VFs' netdevs, in namespace order.
    pub vfs: [String; 2],
    /// Their RDMA devices, when moved.
    pub rdma: Option<[String; 2]>,
}

impl Pair {
    /// Moves the profile's `pair_vfs` of its first PF into two new
    /// namespaces, with the profile's peer addresses; with `rdma`, their
    /// RDMA devices too (needs the exclusive netns mode).
    pub fn new(sysfs_root: &Path, nic: &NicProfile, rdma: bool) -> Result<Pair, Blocked> {
        need_root().map_err(Blocked::Needs)?;
        need_tools(&["ip", "ping"]).map_err(Blocked::Needs)?;
        let pf = &nic.pfs[0];
        let [a, b] = nic.pair_vfs;
        let vfs = [
            vf_netdev(sysfs_root, pf, a).map_err(Blocked::Needs)?,
            vf_netdev(sysfs_root, pf, b).map_err(Blocked::Needs)?,
        ];
        let rdma = if rdma {
            need_tools(&["rdma"]).map_err(Blocked::Needs)?;
            let devices = [
                vf_rdma_device(sysfs_root, pf, a).map_err(Blocked::Needs)?,
                vf_rdma_device(sysfs_root, pf, b).map_err(Blocked::Needs)?,
            ];
            // No RDMA netlink at all (ib_core not loaded) is missing hardware
            // support, not a failure of the case.
            let system = run("rdma", &["system"])
                .map_err(|e| Blocked::Needs(format!("no RDMA netlink ({e})")))?;
            if !rdma_netns_exclusive(&system) {
                return Err(Blocked::Needs(
                    "rdma system is in shared netns mode; `rdma system set netns exclusive` (with no other netns open) to run it".into(),
                ));
            }
            Some(devices)
        } else {
            None
        };
        let mut pair = Pair {
            sysfs_root: sysfs_root.to_path_buf(),
            namespaces: Vec::new(),
            vfs,
            rdma,
        };
        pair.set_up(nic).map_err(Blocked::Failed)?;
        Ok(pair)
    }

    fn set_up(&mut self, nic: &NicProfile) -> Result<(), String> {
        for i in 0..2 {
            let ns = format!("hwt-{}-{i}", std::process::id());
            run("ip", &["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            let vf = self.vfs[i].clone();
            run("ip", &["link", "set", "dev", &vf, "netns", &ns])?;
            if let Some(rdma) = &self.rdma {
                run("rdma", &["dev", "set", &rdma[i], "netns", &ns])?;
            }
            run("ip", &["-n", &ns, "link", "set", "dev", "lo", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "dev", &vf, "up"])?;
            if let Some(peer) = &nic.peer {
                for addr in [peer.ipv4.get(i), peer.ipv6.get(i)].into_iter().flatten() {
                    let text = addr.to_string();
                    let mut args = vec!["-n", &ns, "addr", "add", &text, "dev", &vf];
                    if addr.is_ipv6() {
                        // No duplicate address detection: ping at once.
                        args.push("nodad");
                    }
                    run("ip", &args)?;
                }
            }
        }
        Ok(())
    }

    /// The namespace of side `i`.
    pub fn netns(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    /// Runs `args` inside side `i`'s namespace.
    pub fn exec(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["netns", "exec", self.netns(i)];
        all.extend_from_slice(args);
        run("ip", &all)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..) {
            let _ = run("ip", &["netns", "del", &ns]);
        }
        // Physical netdevs come home when their namespace goes; wait for it,
        // so the next case finds them.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .vfs
            .iter()
            .any(|vf| !self.sysfs_root.join("class/net").join(vf).exists())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `traffic/ping-v4` and `traffic/ping-v6`: each VF pings the other.
pub fn ping_cases(sysfs_root: &Path, nic: &NicProfile) -> Vec<Entry> {
    let names = ["traffic/ping-v4", "traffic/ping-v6"];
    let Some(peer) = &nic.peer else {
        return names
            .iter()
            .map(|n| {
                Entry::instant(
                    *n,
                    Outcome::Skipped("no [nic.peer] addresses in the profile".into()),
                )
            })
            .collect();
    };
    let started = Instant::now();
    let pair = match Pair::new(sysfs_root, nic, false) {
        Ok(p) => p,
        Err(b) => {
            return names
                .iter()
                .map(|n| Entry::instant(*n, b.outcome()))
                .collect();
        }
    };
    let setup = started.elapsed();
    let mut entries = Vec::new();
    for (name, list, flag) in [(names[0], &peer.ipv4, "-4"), (names[1], &peer.ipv6, "-6")] {
        if list.len() != 2 {
            entries.push(Entry::instant(
                name,
                Outcome::Skipped(format!("no two addresses for {flag} in [nic.peer]")),
            ));
            continue;
        }
        let started = Instant::now();
        let mut failures = Vec::new();
        for (from, to) in [(0, 1), (1, 0)] {
            let target = list[to].ip().to_string();
            if let Err(e) = pair.exec(
                from,
                &["ping", flag, "-c", "3", "-i", "0.2", "-W", "2", &target],
            ) {
                failures.push(format!("{} → {target}: {e}", pair.vfs[from]));
            }
        }
        entries.push(Entry {
            case: name.into(),
            outcome: if failures.is_empty() {
                Outcome::Pass
            } else {
                Outcome::Fail(failures.join("; "))
            },
            elapsed: started.elapsed() + setup,
        });
    }
    entries
}

/// `rdma/exclusive-move`: the VF's RDMA device moves into the pod's
/// namespace, `rdma link` there shows it and the host's does not; it comes
/// home when the namespace goes.
pub fn rdma_move_case(sysfs_root: &Path, nic: &NicProfile) -> Entry {
    let started = Instant::now();
    let outcome = (|| {
        let pair = match Pair::new(sysfs_root, nic, true) {
            Ok(p) => p,
            Err(b) => return b.outcome(),
        };
        let Some(rdma) = pair.rdma.clone() else {
            return Outcome::Fail("the pair has no RDMA devices".into());
        };
        let inside = match pair.exec(0, &["rdma", "link", "show"]) {
            Ok(t) => t,
            Err(e) => return Outcome::Fail(e),
        };
        let host = run("rdma", &["link", "show"]).unwrap_or_default();
        if !mentions(&inside, &rdma[0]) {
            return Outcome::Fail(format!(
                "rdma link in {} does not show {}: {inside}",
                pair.netns(0),
                rdma[0]
            ));
        }
        if mentions(&host, &rdma[0]) {
            return Outcome::Fail(format!("the host's rdma link still shows {}", rdma[0]));
        }
        drop(pair);
        let host = run("rdma", &["link", "show"]).unwrap_or_default();
        if !mentions(&host, &rdma[0]) {
            return Outcome::Fail(format!(
                "{} did not come back to the host after its netns was deleted",
                rdma[0]
            ));
        }
        Outcome::Pass
    })();
    Entry {
        case: "rdma/exclusive-move".into(),
        outcome,
        elapsed: started.elapsed(),
    }
}

/// Whether `rdma link` output names `device` (`link mlx5_2/1 ...`).
pub fn mentions(rdma_link: &str, device: &str) -> bool {
    rdma_link
        .split_whitespace()
        .any(|w| w.split('/').next() == Some(device))
}

/// `rdma/ib_write_bw` and `rdma/ib_send_lat` between the pair's RDMA devices.
pub fn perf_cases(sysfs_root: &Path, nic: &NicProfile) -> Vec<Entry> {
    let tools = ["ib_write_bw", "ib_send_lat"];
    let Some(server_ip) = nic
        .peer
        .as_ref()
        .and_then(|p| p.ipv4.get(1))
        .map(|a| a.ip().to_string())
    else {
        return tools
            .iter()
            .map(|t| {
                Entry::instant(
                    format!("rdma/{t}"),
                    Outcome::Skipped("no [nic.peer] ipv4 addresses in the profile".into()),
                )
            })
            .collect();
    };
    if let Err(e) = need_tools(&tools) {
        return tools
            .iter()
            .map(|t| {
                Entry::instant(
                    format!("rdma/{t}"),
                    Outcome::NeedsHardware(format!("{e} (perftest)")),
                )
            })
            .collect();
    }
    let pair = match Pair::new(sysfs_root, nic, true) {
        Ok(p) => p,
        Err(b) => {
            return tools
                .iter()
                .map(|t| Entry::instant(format!("rdma/{t}"), b.outcome()))
                .collect();
        }
    };
    let Some(rdma) = pair.rdma.clone() else {
        return Vec::new();
    };
    tools
        .iter()
        .map(|tool| {
            let started = Instant::now();
            let outcome = match perftest(&pair, tool, &rdma, &server_ip) {
                Ok(figures) => Outcome::Measured(figures),
                Err(e) => Outcome::Fail(e),
            };
            Entry {
                case: format!("rdma/{tool}"),
                outcome,
                elapsed: started.elapsed(),
            }
        })
        .collect()
}

/// Runs a perftest server in side 1 and its client in side 0; the client's figures.
fn perftest(
    pair: &Pair,
    tool: &str,
    rdma: &[String; 2],
    server_ip: &str,
) -> Result<String, String> {
    let server = Command::new("ip")
        .args(["netns", "exec", pair.netns(1), tool, "-d", &rdma[1], "-F"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the {tool} server: {e}"))?;
    // The server listens for the out-of-band exchange within a second.
    std::thread::sleep(Duration::from_secs(1));
    let client = pair.exec(0, &[tool, "-d", &rdma[0], "-F", server_ip]);
    let server = server
        .wait_with_output()
        .map_err(|e| format!("{tool} server: {e}"))?;
    let out = client?;
    if !server.status.success() {
        return Err(format!(
            "{tool} server: {}",
            String::from_utf8_lossy(&server.stderr).trim()
        ));
    }
    parse_perftest(&out).ok_or_else(|| format!("{tool} printed no result line: {out}"))
}

/// The result of a perftest run as `header value` pairs of its last
/// result line (`#bytes 65536, BW average[Gb/sec] 92.51, ...`).
pub fn parse_perftest(output: &str) -> Option<String> {
    let lines: Vec<&str> = output.lines().collect();
    let header_at = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with("#bytes"))?;
    let header: Vec<&str> = lines[header_at]
        .split("  ")
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let values = lines[header_at + 1..]
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .rfind(|v| !v.is_empty() && v.iter().all(|x| x.parse::<f64>().is_ok()))?;
    Some(
        header
            .iter()
            .zip(values)
            .map(|(h, v)| format!("{h} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perftest_figures_are_read_from_the_last_result_line() {
        let out = "\
---------------------------------------------------------------------------------------
 #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]
 65536      5000             92.43              92.41  		   0.176262
---------------------------------------------------------------------------------------
";
        assert_eq!(
            parse_perftest(out).unwrap(),
            "#bytes 65536, #iterations 5000, BW peak[Gb/sec] 92.43, BW average[Gb/sec] 92.41, MsgRate[Mpps] 0.176262"
        );
        assert_eq!(parse_perftest("Couldn't connect to 192.0.2.2:18515"), None);
    }

    #[test]
    fn rdma_link_output_is_matched_by_device() {
        let out = "link mlx5_2/1 state ACTIVE physical_state LINK_UP netdev ens1f0v0\n";
        assert!(mentions(out, "mlx5_2"));
        assert!(!mentions(out, "mlx5_20"));
        assert!(!mentions(out, "mlx5_1"));
    }
}
