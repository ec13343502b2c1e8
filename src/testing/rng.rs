//! A small deterministic generator (xorshift64*) for the crash tests'
//! random choices and kill moments, so a failing run can be repeated with
//! its printed seed.

/// The generator's state.
pub struct Rng(u64);

impl Rng {
    /// Seeded; a zero seed is moved off zero.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A seed from the clock, for a run that was not asked to repeat one.
    pub fn clock_seed() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    }

    /// The next number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_gives_one_sequence_within_bounds() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let first: Vec<u64> = (0..20).map(|_| a.below(7)).collect();
        let second: Vec<u64> = (0..20).map(|_| b.below(7)).collect();
        assert_eq!(first, second);
        assert!(first.iter().all(|n| *n < 7));
        assert!(first.iter().any(|n| *n != first[0]), "{first:?}");
        assert_eq!(Rng::new(0).below(1_000_000), Rng::new(1).below(1_000_000));
    }
}
