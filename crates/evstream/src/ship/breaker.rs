//! The circuit breaker: stops hammering a Redis that keeps failing.
//!
//! Closed → open after `threshold` consecutive failures → after `cool_down`, half-open: one
//! probe batch may go → success closes it, failure opens it again. An open breaker only
//! delays sending; nothing is dropped (events wait in the ring).

use std::time::{Duration, Instant};

use serde::Serialize;

/// The breaker's state, as reported in health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Sending normally.
    Closed,
    /// Not sending until the cool-down ends.
    Open,
    /// One probe allowed.
    HalfOpen,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cool_down: Duration,
    consecutive_failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cool_down: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cool_down,
            consecutive_failures: 0,
            open_until: None,
            probing: false,
        }
    }

    pub(crate) fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether a batch may be sent now; in half-open state, only one (the probe).
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen if self.probing => false,
            BreakerState::HalfOpen => {
                self.probing = true;
                true
            }
        }
    }

    pub(crate) fn on_success(&mut self) {
        self.consecutive_failures = 0;
        self.open_until = None;
        self.probing = false;
    }

    pub(crate) fn on_failure(&mut self, now: Instant) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if self.probing || self.consecutive_failures >= self.threshold {
            self.open_until = Some(now + self.cool_down);
            self.probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_probes_after_cool_down_and_closes_on_success() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(3, Duration::from_secs(30));
        for _ in 0..2 {
            breaker.on_failure(t0);
            assert!(breaker.allow(t0), "below the threshold it stays closed");
        }
        breaker.on_failure(t0);
        assert_eq!(breaker.state(t0), BreakerState::Open);
        assert!(!breaker.allow(t0 + Duration::from_secs(29)));
        let later = t0 + Duration::from_secs(30);
        assert_eq!(breaker.state(later), BreakerState::HalfOpen);
        assert!(breaker.allow(later), "one probe");
        assert!(!breaker.allow(later), "only one probe");
        breaker.on_success();
        assert_eq!(breaker.state(later), BreakerState::Closed);
        assert!(breaker.allow(later));
    }

    #[test]
    fn failed_probe_reopens_for_a_full_cool_down() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(1, Duration::from_secs(10));
        breaker.on_failure(t0);
        let probe_time = t0 + Duration::from_secs(10);
        assert!(breaker.allow(probe_time));
        breaker.on_failure(probe_time);
        assert_eq!(
            breaker.state(probe_time + Duration::from_secs(9)),
            BreakerState::Open
        );
        assert_eq!(
            breaker.state(probe_time + Duration::from_secs(10)),
            BreakerState::HalfOpen,
            "a full cool-down after the failed probe"
        );
    }
}
