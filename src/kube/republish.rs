//! When the node's slices are published again: at start, every
//! [`REPUBLISH_INTERVAL`] (the safety net), whenever the kubelet's
//! registration verdict changes, and shortly after a [`Nudge`] (a kernel
//! link or PCI event, a change to our slices in the API), gathered by a
//! [`Debouncer`]. Each round reads the inventory, hands it to the
//! preparer first (what is published is what can be prepared), judges the
//! devices' health, and publishes with the unhealthy ones tainted.
//!
//! A round after nudges re-reads only the functions they name
//! ([`crate::events::targets`]), merged into the last inventory; the other
//! rounds, and nudges that name nothing it can map, read everything. A
//! periodic round also lets the publisher try device taints again when it
//! fell back to the attribute.
//!
//! The period counts from the last round that read everything, not from
//! the last round: a node whose VFs move in and out of pods all day sends
//! link events all day, and they must not put the safety net off. A round
//! that fails (a scan error, an API server that refused the slices) is
//! tried again after [`RETRY_FIRST`], then twice as long each time up to
//! [`RETRY_MAX`], so a slice deleted during an API hiccup is not left
//! missing until the period; the round after a failed one reads
//! everything. While the Node object does not exist nothing is written
//! (its garbage collector would take it) and only the Node is looked for.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sriov::memo::ScanMemo;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::claim::prepare::Preparer;
use crate::config::NodeConfig;
use crate::events::Nudge;
use crate::events::changes::diff;
use crate::events::debounce::Debouncer;
use crate::events::targets::{Plan, link_owner, plan};
use crate::health::{HealthBook, HealthReport, judge};
use crate::inventory::NodeInventory;
use crate::kube::node::{NodeLookup, lookup_node};
use crate::kube::publish::SlicePublisher;
use crate::kubelet::registration::RegistrationState;
use crate::metrics::metrics;
use crate::readiness::Readiness;

/// How often the inventory is re-read and the slices republished when
/// nothing else triggers it.
pub const REPUBLISH_INTERVAL: Duration = Duration::from_secs(60);

/// The wait before a failed round is tried again.
pub const RETRY_FIRST: Duration = Duration::from_millis(500);

/// The longest wait between tries of a round that keeps failing.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// The first wait before the Node is looked for again while it does not
/// exist; it doubles up to [`NODE_POLL_MAX`]. A Node deleted by hand or by
/// an autoscaler comes back when the kubelet registers it again, which a
/// running kubelet does only when it restarts, and a restarted kubelet
/// registers this plugin again too, which starts a round at once: the
/// polls are for the rest.
pub const NODE_POLL: Duration = Duration::from_secs(1);

/// The longest wait between looks for a Node that does not exist.
pub const NODE_POLL_MAX: Duration = Duration::from_secs(10);

/// Everything the publish loop works with.
pub struct PublishLoop {
    /// Writes the slices.
    pub publisher: SlicePublisher,
    /// Reads the Node (the slices' owner) every round.
    pub client: kube::Client,
    /// This node's name.
    pub node: String,
    /// Gets each inventory, and says which devices are held by claims.
    pub preparer: Arc<Preparer>,
    /// Selectors, driver name, sysfs root.
    pub config: NodeConfig,
    /// The kubelet's registration verdict.
    pub registration: watch::Receiver<RegistrationState>,
    /// Told when the first publish succeeded.
    pub readiness: Readiness,
    /// Kernel and slice events.
    pub nudges: mpsc::Receiver<Nudge>,
    /// Where each round's health verdicts go (the kubelet's health stream
    /// follows it).
    pub health: Arc<HealthBook>,
    /// The safety-net period, [`REPUBLISH_INTERVAL`] in the driver.
    pub period: Duration,
}

/// The loop's memory between rounds.
struct Rounds {
    last: Option<Arc<NodeInventory>>,
    /// What full scans need not read again.
    memo: Arc<ScanMemo>,
    debouncer: Debouncer,
    nudges_open: bool,
    /// When the safety-net round is due: a period after the last round
    /// that read everything.
    full_due: Option<Instant>,
    /// After a failed round: when to try again.
    retry: Option<Instant>,
    /// The waits between retries of rounds that keep failing.
    retries: Backoff,
    /// While the Node object does not exist: when to look for it again.
    /// Only the Node is read meanwhile.
    node_poll: Option<Instant>,
    /// The waits between those looks.
    node_polls: Backoff,
}

/// How a round ended, which decides when the next ones run.
struct RoundEnd {
    /// It read every device (or meant to): the period starts again.
    read_all: bool,
    /// The inventory was read and the slices published.
    ok: bool,
    /// Not published: the Node object does not exist.
    node_gone: bool,
}

impl Rounds {
    /// Before the first round.
    fn new() -> Rounds {
        Rounds {
            last: None,
            memo: Arc::default(),
            debouncer: Debouncer::default(),
            nudges_open: true,
            full_due: None,
            retry: None,
            retries: Backoff::new(RETRY_FIRST, RETRY_MAX),
            node_poll: None,
            node_polls: Backoff::new(NODE_POLL, NODE_POLL_MAX),
        }
    }

    /// The last round did not publish (it failed, or there is no Node):
    /// the next one reads everything, whatever its nudges name, since a
    /// partial read after a failed one would miss what that one was to
    /// read.
    fn failed(&self) -> bool {
        self.retry.is_some() || self.node_poll.is_some()
    }

    /// Notes how a round ended, at `now`.
    fn ended(&mut self, end: RoundEnd, now: Instant, period: Duration) {
        if end.read_all {
            self.full_due = Some(now + period);
        }
        if end.ok {
            self.stop_retrying();
            self.stop_polling();
        } else if end.node_gone {
            // Nothing to retry until the Node exists: the polls look for
            // it (already polling: their pace stands).
            self.stop_retrying();
            if self.node_poll.is_none() {
                self.node_still_gone(now);
            }
        } else {
            // The retry reads the Node too.
            self.stop_polling();
            self.retry = Some(now + self.retries.next_delay());
        }
    }

    /// After a look found no Node at `now`: the next look, later.
    fn node_still_gone(&mut self, now: Instant) {
        self.node_poll = Some(now + self.node_polls.next_delay());
    }

    fn stop_retrying(&mut self) {
        self.retry = None;
        self.retries.reset();
    }

    fn stop_polling(&mut self) {
        self.node_poll = None;
        self.node_polls.reset();
    }
}

/// Why a round runs, which decides what it reads.
#[derive(Debug)]
enum Why {
    /// The first round: read all.
    Start,
    /// The kubelet's registration verdict changed: read all.
    Registration,
    /// The safety-net period: read all, and try taints again.
    Period,
    /// A debounced batch of nudges: read what they name.
    Events(BTreeSet<Nudge>),
    /// The last round failed: read all and publish again.
    Retry,
    /// The Node object exists again after a time without: read all and
    /// publish.
    NodeBack,
}

/// How a round's inventory was read, for the log.
enum Reading {
    /// Everything, and why.
    Full(String),
    /// Only these functions, merged into the last inventory.
    Partial(BTreeSet<sriov::PciAddress>),
}

/// The inventory a round works with: the nudges' functions re-read into
/// `last`, or a full scan when there is no last one or the nudges cannot
/// be mapped to functions. Blocking (sysfs).
fn read_inventory(
    root: &std::path::Path,
    memo: &ScanMemo,
    last: Option<&NodeInventory>,
    why: &Why,
) -> anyhow::Result<(NodeInventory, Reading)> {
    let full = |why: String| {
        Ok((
            NodeInventory::discover_remembering(root, memo)?,
            Reading::Full(why),
        ))
    };
    let (nudges, last) = match (why, last) {
        (Why::Start, _) => return full("start".into()),
        (Why::Registration, _) => return full("kubelet registration changed".into()),
        (Why::Period, _) => return full("period".into()),
        (Why::Retry, _) => return full("the last round failed".into()),
        (Why::NodeBack, _) => return full("the Node object exists again".into()),
        (Why::Events(_), None) => return full("no inventory yet".into()),
        (Why::Events(nudges), Some(last)) => (nudges, last),
    };
    match plan(nudges, last, |name| link_owner(root, name)) {
        Plan::Full { why } => full(why),
        Plan::Partial(targets) if targets.is_empty() => {
            Ok((last.clone(), Reading::Partial(targets)))
        }
        Plan::Partial(targets) => match last.rescan(&targets) {
            Ok(rescanned) => {
                // What the memo holds of them may be older than what is
                // published now (a NUMA node it re-reads in turn).
                memo.forget(&rescanned.read);
                Ok((rescanned.inventory, Reading::Partial(rescanned.read)))
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "re-reading devices failed; reading every device");
                full("re-reading failed".into())
            }
        },
    }
}

impl PublishLoop {
    /// Runs rounds until `stopped` completes or the registration server is
    /// gone. The first round that succeeds makes the slices part of
    /// `readiness` ready.
    pub async fn run(mut self, stopped: impl Future<Output = ()>) {
        tokio::pin!(stopped);
        let mut rounds = Rounds::new();
        let mut why = Why::Start;
        loop {
            let end = self.round(&mut rounds, why).await;
            rounds.ended(end, Instant::now(), self.period);
            match self.next_round(&mut stopped, &mut rounds).await {
                Some(next) => why = next,
                None => return,
            }
        }
    }

    async fn round(&mut self, rounds: &mut Rounds, why: Why) -> RoundEnd {
        let why = match why {
            Why::Events(_) if rounds.failed() => Why::Retry,
            why => why,
        };
        if matches!(why, Why::Period) {
            self.publisher.retry_taints();
        }
        // A round that fails before it knows what it read counts as a full
        // one when it set out to be one: the retry reads everything anyway.
        let mut end = RoundEnd {
            read_all: !matches!(why, Why::Events(_)),
            ok: false,
            node_gone: false,
        };
        let (root, held_by) = (self.config.sysfs_root.clone(), self.preparer.clone());
        let (last, memo) = (rounds.last.clone(), rounds.memo.clone());
        let after_events = matches!(why, Why::Events(_));
        let scanned = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let (inventory, reading) = read_inventory(&root, &memo, last.as_deref(), &why)?;
            let held = held_by.held_devices()?;
            Ok((inventory, reading, held))
        });
        let (inventory, reading, held) = match scanned.await {
            Ok(Ok(scanned)) => scanned,
            Ok(Err(e)) => {
                error!(error = %format!("{e:#}"), "inventory failed; trying again shortly");
                return end;
            }
            Err(e) => {
                error!(error = %e, "inventory task failed; trying again shortly");
                return end;
            }
        };
        end.read_all |= matches!(reading, Reading::Full(_));
        match reading {
            Reading::Partial(read) if read.is_empty() => {
                info!("no device to re-read; republishing the last inventory")
            }
            Reading::Partial(read) => {
                let read: Vec<String> = read.iter().map(|a| a.device_name()).collect();
                info!(?read, "re-read devices after events")
            }
            Reading::Full(why) if after_events => info!(%why, "read every device after events"),
            Reading::Full(why) => debug!(%why, "read every device"),
        }
        if let Some(last) = &rounds.last {
            let changes = diff(last, &inventory);
            if !changes.is_empty() {
                info!(
                    added = ?changes.added,
                    removed = ?changes.removed,
                    changed = ?changes.changed,
                    "inventory changed"
                );
            }
        }
        // What is published is what can be prepared.
        let offered: Vec<String> = inventory.offered(&self.config).map(|d| d.name()).collect();
        self.preparer.refresh(&inventory, offered.iter().cloned());
        let report = self.judge_health(&inventory, &offered, &held);
        metrics().inventory(offered.len(), report.unhealthy());
        // Every round: a Node deleted and re-created has a new UID, and
        // slices owned by the old one would be collected. While there is
        // none, nothing is written: the collector would take it again, and
        // the slice watch would bring it back, round after round.
        let gone = match lookup_node(&self.client, &self.node).await {
            NodeLookup::Found(owner) => {
                self.publisher.set_owner(owner);
                false
            }
            NodeLookup::Gone => true,
            // Unread while it was known to be gone: the owner kept is the
            // deleted Node's.
            NodeLookup::Unknown => rounds.node_poll.is_some(),
        };
        if gone {
            if rounds.node_poll.is_none() {
                warn!(node = %self.node, "the Node object does not exist (deleted); publishing nothing until it is registered again");
            }
            rounds.last = Some(Arc::new(inventory));
            end.node_gone = true;
            return end;
        }
        match self
            .publisher
            .publish_with_health(&inventory, &self.config, &held, &report.devices)
            .await
        {
            Ok(outcome) => {
                info!(?outcome, taints = ?self.publisher.taint_mode(), "ResourceSlices published");
                self.readiness.set_slices_published();
                end.ok = true;
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "publishing ResourceSlices failed; trying again shortly")
            }
        }
        rounds.last = Some(Arc::new(inventory));
        end
    }

    /// Judges the offered and held devices, logs each device whose health
    /// changed, and returns the report.
    fn judge_health(
        &self,
        inventory: &NodeInventory,
        offered: &[String],
        held: &BTreeSet<String>,
    ) -> Arc<HealthReport> {
        let names: BTreeSet<&str> = offered
            .iter()
            .map(String::as_str)
            .chain(held.iter().map(String::as_str))
            .collect();
        let verdicts = judge(inventory, names);
        let before = self.health.current();
        if self.health.update(verdicts, SystemTime::now()) {
            let after = self.health.current();
            log_transitions(&before.devices, &after.devices);
        }
        self.health.current()
    }

    /// Waits for the next round: the period, a change of the kubelet's
    /// registration verdict, or nudges gone quiet. `None` when the driver
    /// stops, or when the registration server is gone (its channel closed:
    /// the driver is shutting down, and a closed channel is "changed" at
    /// once, which would republish in a burst).
    async fn next_round(
        &mut self,
        stopped: &mut (impl Future<Output = ()> + Unpin),
        rounds: &mut Rounds,
    ) -> Option<Why> {
        let period_end = rounds
            .full_due
            .unwrap_or_else(|| Instant::now() + self.period);
        let retry_at = rounds.retry;
        loop {
            let due = rounds.debouncer.due().map(Instant::from_std);
            let node_at = rounds.node_poll;
            tokio::select! {
                _ = &mut *stopped => return None,
                _ = tokio::time::sleep_until(period_end) => return Some(Why::Period),
                _ = tokio::time::sleep_until(retry_at.unwrap_or(period_end)), if retry_at.is_some() => {
                    return Some(Why::Retry)
                }
                _ = tokio::time::sleep_until(node_at.unwrap_or(period_end)), if node_at.is_some() => {
                    // Only the Node is read until it exists again.
                    match lookup_node(&self.client, &self.node).await {
                        NodeLookup::Found(_) => {
                            info!(node = %self.node, "the Node object exists again; publishing");
                            return Some(Why::NodeBack);
                        }
                        NodeLookup::Gone | NodeLookup::Unknown => {
                            rounds.node_still_gone(Instant::now())
                        }
                    }
                }
                _ = tokio::time::sleep_until(due.unwrap_or(period_end)), if due.is_some() => {
                    if let Some(nudges) = rounds.debouncer.take_due(std::time::Instant::now()) {
                        let sample: Vec<&Nudge> = nudges.iter().take(8).collect();
                        info!(nudges = nudges.len(), ?sample, "rescanning after events");
                        return Some(Why::Events(nudges));
                    }
                }
                nudge = self.nudges.recv(), if rounds.nudges_open => match nudge {
                    Some(n) => rounds.debouncer.note(std::time::Instant::now(), n),
                    None => rounds.nudges_open = false,
                },
                changed = self.registration.changed() => return match changed {
                    Ok(()) => {
                        info!(state = ?*self.registration.borrow(), "kubelet registration changed; republishing");
                        Some(Why::Registration)
                    }
                    Err(_) => {
                        info!("kubelet registration server stopped; no more republishing");
                        None
                    }
                },
            }
        }
    }
}

/// One log line per device whose health changed, naming the device.
fn log_transitions(
    before: &BTreeMap<String, crate::health::DeviceHealth>,
    after: &BTreeMap<String, crate::health::DeviceHealth>,
) {
    for (device, now) in after {
        let was = before.get(device).and_then(|h| h.problem.as_ref());
        match (was, now.problem.as_ref()) {
            (None, Some(p)) => {
                warn!(%device, reason = p.reason(), message = %p.message(), "device unhealthy")
            }
            (Some(_), None) => info!(%device, "device healthy again"),
            (Some(a), Some(b)) if a != b => {
                warn!(%device, reason = b.reason(), message = %b.message(), "device unhealthy")
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "republish_tests.rs"]
mod tests;
