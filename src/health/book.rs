//! Since when each device has its status, and who hears about changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::judge::Problem;

/// One device's status and since when it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceHealth {
    /// `None`: healthy.
    pub problem: Option<Problem>,
    /// When this status was first seen, to the second (a taint's
    /// `timeAdded` must not move while the problem lasts).
    pub since: SystemTime,
}

impl DeviceHealth {
    /// True when nothing is wrong.
    pub fn is_healthy(&self) -> bool {
        self.problem.is_none()
    }
}

/// The health of every judged device, as of the last check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// The pool the devices belong to (the node name).
    pub pool: String,
    /// When the devices were last judged.
    pub checked_at: SystemTime,
    /// By device name.
    pub devices: BTreeMap<String, DeviceHealth>,
}

impl HealthReport {
    /// How many devices are unhealthy.
    pub fn unhealthy(&self) -> usize {
        self.devices.values().filter(|d| !d.is_healthy()).count()
    }
}

/// Keeps the [`HealthReport`] and tells subscribers when a status changes.
pub struct HealthBook {
    tx: watch::Sender<Arc<HealthReport>>,
}

/// `t` cut to whole seconds: the API keeps times to the second, and a
/// render must compare equal to what it published.
fn to_second(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    UNIX_EPOCH + Duration::from_secs(secs)
}

impl HealthBook {
    /// A book for `pool` with no device judged yet.
    pub fn new(pool: &str) -> Self {
        let (tx, _) = watch::channel(Arc::new(HealthReport {
            pool: pool.to_string(),
            checked_at: UNIX_EPOCH,
            devices: BTreeMap::new(),
        }));
        HealthBook { tx }
    }

    /// Follows the report: a receiver wakes on every status change (not on
    /// a check that changed nothing).
    pub fn subscribe(&self) -> watch::Receiver<Arc<HealthReport>> {
        self.tx.subscribe()
    }

    /// The report as it is now.
    pub fn current(&self) -> Arc<HealthReport> {
        self.tx.borrow().clone()
    }

    /// Records the verdicts of a check made at `now`. A device keeps its
    /// `since` while its problem is the same; devices not judged any more
    /// are dropped. Returns whether any status changed.
    pub fn update(&self, verdicts: BTreeMap<String, Option<Problem>>, now: SystemTime) -> bool {
        let now = to_second(now);
        self.tx.send_if_modified(|report| {
            let devices: BTreeMap<String, DeviceHealth> = verdicts
                .into_iter()
                .map(|(name, problem)| {
                    let since = match report.devices.get(&name) {
                        Some(old) if old.problem == problem => old.since,
                        _ => now,
                    };
                    (name, DeviceHealth { problem, since })
                })
                .collect();
            let changed = devices != report.devices;
            *report = Arc::new(HealthReport {
                pool: report.pool.clone(),
                checked_at: now,
                devices,
            });
            changed
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> Option<Problem> {
        Some(Problem::PfLinkDown {
            pf: "ens1f0".into(),
            operstate: "down".into(),
        })
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn since_holds_while_the_status_holds_and_moves_when_it_changes() {
        let book = HealthBook::new("node-a");
        let mut rx = book.subscribe();
        assert!(book.update(BTreeMap::from([("vf".into(), None)]), at(10)));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();

        // The same verdict later: no change, but the check time moves.
        assert!(!book.update(BTreeMap::from([("vf".into(), None)]), at(20)));
        assert!(
            !rx.has_changed().unwrap(),
            "no wake-up for a check that changed nothing"
        );
        assert_eq!(book.current().checked_at, at(20));
        assert_eq!(book.current().devices["vf"].since, at(10));

        assert!(book.update(BTreeMap::from([("vf".into(), down())]), at(30)));
        assert!(!book.update(BTreeMap::from([("vf".into(), down())]), at(40)));
        let report = book.current();
        assert_eq!(report.devices["vf"].since, at(30), "timeAdded stays put");
        assert_eq!(report.unhealthy(), 1);

        assert!(book.update(BTreeMap::from([("vf".into(), None)]), at(50)));
        assert_eq!(book.current().devices["vf"].since, at(50));
        assert_eq!(book.current().unhealthy(), 0);
    }

    #[test]
    fn times_are_kept_to_the_second() {
        let book = HealthBook::new("node-a");
        book.update(
            BTreeMap::from([("vf".into(), down())]),
            at(7) + Duration::from_millis(900),
        );
        assert_eq!(book.current().devices["vf"].since, at(7));
    }
}
