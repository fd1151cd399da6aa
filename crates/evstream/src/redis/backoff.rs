//! Exponential backoff with full jitter between retries of a failed batch.

use std::time::Duration;

#[derive(Debug)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    /// xorshift64 state: jitter needs spread, not cryptographic randomness.
    state: u64,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration, seed: u64) -> Self {
        Self {
            base,
            max: max.max(base),
            attempt: 0,
            state: seed | 1,
        }
    }

    /// The next delay: uniform in `[0, min(max, base × 2^attempt)]`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let fraction = (self.state >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.mul_f64(fraction)
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_jittered() {
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1), 42);
        let delays: Vec<_> = (0..12).map(|_| backoff.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let ceiling = Duration::from_millis(10 * (1 << i)).min(Duration::from_secs(1));
            assert!(*d <= ceiling, "attempt {i}: {d:?} > {ceiling:?}");
        }
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 8, "jittered: {delays:?}");
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(10));
    }
}
