//! Gathering a burst of nudges into one rescan: fire once things have been
//! quiet for a moment, but never later than a bound after the first nudge,
//! so a steady trickle of events cannot postpone a rescan for ever. Pure:
//! the caller passes the time in.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::Nudge;

/// Quiet time after the last nudge before a rescan.
pub const QUIET: Duration = Duration::from_millis(150);
/// Longest wait after the first nudge: the rescan and republish must land
/// within 2 s of a change, and a scan and a publish take a few hundred ms
/// at most on a large node.
pub const MAX_WAIT: Duration = Duration::from_millis(600);

/// Nudges waiting for their rescan.
#[derive(Debug)]
pub struct Debouncer {
    quiet: Duration,
    max_wait: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
    pending: BTreeSet<Nudge>,
}

impl Default for Debouncer {
    fn default() -> Self {
        Debouncer::new(QUIET, MAX_WAIT)
    }
}

impl Debouncer {
    /// A debouncer with its own timings.
    pub fn new(quiet: Duration, max_wait: Duration) -> Self {
        Debouncer {
            quiet,
            max_wait,
            first: None,
            last: None,
            pending: BTreeSet::new(),
        }
    }

    /// Notes a nudge received at `now`.
    pub fn note(&mut self, now: Instant, nudge: Nudge) {
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.pending.insert(nudge);
    }

    /// When the pending nudges are due; `None` when none are pending.
    pub fn due(&self) -> Option<Instant> {
        Some((self.last? + self.quiet).min(self.first? + self.max_wait))
    }

    /// The pending nudges if they are due at `now`, emptying the debouncer.
    pub fn take_due(&mut self, now: Instant) -> Option<BTreeSet<Nudge>> {
        if self.due()? > now {
            return None;
        }
        self.first = None;
        self.last = None;
        Some(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str) -> Nudge {
        Nudge::Link { name: name.into() }
    }

    #[test]
    fn a_burst_is_one_rescan_after_it_goes_quiet() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Debouncer::default();
        assert_eq!(d.due(), None);
        d.note(ms(0), link("a"));
        d.note(ms(100), link("b"));
        d.note(ms(100), link("b"));
        assert_eq!(d.due(), Some(ms(250)));
        assert_eq!(d.take_due(ms(200)), None, "still within the quiet time");
        let fired = d.take_due(ms(250)).unwrap();
        assert_eq!(fired, BTreeSet::from([link("a"), link("b")]));
        assert_eq!(d.due(), None);
        assert_eq!(d.take_due(ms(10_000)), None);
    }

    #[test]
    fn a_steady_trickle_fires_at_the_bound() {
        let t0 = Instant::now();
        let mut d = Debouncer::default();
        let mut now = t0;
        for i in 0..20 {
            d.note(now, link(&format!("vf{i}")));
            now += Duration::from_millis(100);
            if d.take_due(now).is_some() {
                break;
            }
        }
        assert!(now - t0 <= MAX_WAIT, "fired after {:?}", now - t0);
    }
}
