//! Delays between attempts at something that keeps failing: doubling
//! from a floor to a cap, so a peer that comes back (a restarting
//! runtime, an API server past its hiccup, a re-registered Node) is found
//! quickly and an absent one is not hammered.

use std::time::Duration;

/// Exponential delay between attempts, reset once one succeeded.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min` and never exceeds `max` (a `max` below `min` is
    /// raised to `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The delay before the next attempt; each call doubles the following
    /// one up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = delay.saturating_mul(2).min(self.max);
        delay
    }

    /// Back to the floor after an attempt that worked.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_floor_to_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let delays: Vec<u128> = (0..9).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn cap_below_floor_is_the_floor() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_millis(10));
        assert_eq!(backoff.next_delay(), Duration::from_secs(1));
        assert_eq!(backoff.next_delay(), Duration::from_secs(1));
    }
}
