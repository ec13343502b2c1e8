//! The lab report: per NIC model, every case with its result, reason and
//! timing, as Markdown (for people) and JSON (for the lab's records).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::cases::{CaseResult, Outcome};

/// One case's line.
#[derive(Debug, Clone)]
pub struct Entry {
    /// `vf-settings/vlan`, `traffic/ping-v6`, ….
    pub case: String,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took.
    pub elapsed: Duration,
}

impl Entry {
    /// An entry that took no time (not run).
    pub fn instant(case: impl Into<String>, outcome: Outcome) -> Entry {
        Entry {
            case: case.into(),
            outcome,
            elapsed: Duration::ZERO,
        }
    }
}

/// Runs `case`, timing it.
pub fn timed(case: impl FnOnce() -> CaseResult) -> Entry {
    let started = Instant::now();
    let result = case();
    Entry {
        case: result.name,
        outcome: result.outcome,
        elapsed: started.elapsed(),
    }
}

/// The part of the report for one NIC model.
#[derive(Debug, Clone)]
pub struct NicReport {
    /// Model name from the profile.
    pub model: String,
    /// The PFs the cases used.
    pub pfs: Vec<String>,
    /// Every case, in order.
    pub entries: Vec<Entry>,
}

/// The whole report of one run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The node's name from the profile.
    pub node: String,
    /// True for `--simulate`: nothing in it touched hardware.
    pub simulated: bool,
    /// One part per NIC model.
    pub nics: Vec<NicReport>,
}

/// Counts per result, in a fixed order.
fn summary<'a>(entries: impl Iterator<Item = &'a Entry>) -> Vec<(&'static str, usize)> {
    let mut counts: Vec<(&'static str, usize)> = [
        "pass",
        "unsupported",
        "simulated",
        "needs hardware",
        "skipped",
        "FAIL",
    ]
    .into_iter()
    .map(|r| (r, 0))
    .collect();
    for e in entries {
        if let Some(c) = counts.iter_mut().find(|(r, _)| *r == e.outcome.result()) {
            c.1 += 1;
        }
    }
    counts
}

impl Report {
    /// Whether any case failed.
    pub fn failed(&self) -> bool {
        self.entries()
            .any(|e| matches!(e.outcome, Outcome::Fail(_)))
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.nics.iter().flat_map(|n| n.entries.iter())
    }

    /// One Markdown table per NIC model, then the totals.
    pub fn markdown(&self) -> String {
        let mode = if self.simulated {
            " (SIMULATED: no case touched hardware)"
        } else {
            ""
        };
        let mut out = format!("# hw-tests on {}{mode}\n", self.node);
        for nic in &self.nics {
            out.push_str(&format!(
                "\n## {} (PFs: {})\n\n| case | result | reason | time |\n|---|---|---|---|\n",
                nic.model,
                nic.pfs.join(", ")
            ));
            for e in &nic.entries {
                out.push_str(&format!(
                    "| `{}` | {} | {} | {} |\n",
                    e.case,
                    e.outcome.result(),
                    cell(e.outcome.reason()),
                    seconds(e.elapsed)
                ));
            }
            out.push_str(&format!("\n{}\n", summary_line(nic.entries.iter())));
        }
        out.push_str(&format!("\ntotal: {}\n", summary_line(self.entries())));
        out
    }

    /// The same as JSON.
    pub fn json(&self) -> serde_json::Value {
        let counts = |entries: &mut dyn Iterator<Item = &Entry>| {
            summary(entries)
                .into_iter()
                .map(|(r, n)| (r.to_string(), json!(n)))
                .collect::<serde_json::Map<_, _>>()
        };
        json!({
            "node": self.node,
            "simulated": self.simulated,
            "nics": self.nics.iter().map(|nic| json!({
                "model": nic.model,
                "pfs": nic.pfs,
                "cases": nic.entries.iter().map(|e| json!({
                    "case": e.case,
                    "result": e.outcome.result(),
                    "reason": e.outcome.reason(),
                    "seconds": e.elapsed.as_secs_f64(),
                })).collect::<Vec<_>>(),
                "summary": counts(&mut nic.entries.iter()),
            })).collect::<Vec<_>>(),
            "summary": counts(&mut self.entries()),
        })
    }
}

fn summary_line<'a>(entries: impl Iterator<Item = &'a Entry>) -> String {
    summary(entries)
        .into_iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A table cell: pipes escaped, newlines flattened.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn seconds(d: Duration) -> String {
    if d.is_zero() {
        "-".into()
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            node: "lab-1".into(),
            simulated: false,
            nics: vec![NicReport {
                model: "E810".into(),
                pfs: vec!["ens2f0".into()],
                entries: vec![
                    Entry {
                        case: "vf-settings/vlan".into(),
                        outcome: Outcome::Pass,
                        elapsed: Duration::from_millis(12),
                    },
                    Entry::instant(
                        "rdma/exclusive-move",
                        Outcome::NeedsHardware("no RDMA device on VF 0 | ice".into()),
                    ),
                ],
            }],
        }
    }

    #[test]
    fn markdown_has_a_table_per_model_with_reason_and_time() {
        let md = report().markdown();
        assert!(md.contains("## E810 (PFs: ens2f0)"), "{md}");
        assert!(
            md.contains("| `vf-settings/vlan` | pass |  | 12.0 ms |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| `rdma/exclusive-move` | needs hardware | no RDMA device on VF 0 \\| ice | - |"
            ),
            "{md}"
        );
        assert!(md.contains("total: pass 1, unsupported 0, simulated 0, needs hardware 1"));
        assert!(!report().failed());
    }

    #[test]
    fn json_carries_the_same_lines() {
        let j = report().json();
        assert_eq!(j["nics"][0]["model"], "E810");
        assert_eq!(j["nics"][0]["cases"][1]["result"], "needs hardware");
        assert_eq!(j["summary"]["pass"], 1);
        assert_eq!(j["simulated"], false);
    }
}
