//! The circuit breaker: stops hammering a Redis that keeps failing, without delaying a
//! server that is back or new.
//!
//! Closed → open after `threshold` consecutive failures → after the cool-down, half-open: one
//! probe batch may go → success closes it, failure opens it again for twice the cool-down (up
//! to a maximum). The first cool-down is short (a fraction of a second): a breaker protects a
//! server that is struggling, and most outages a shipper sees are a server that went away and
//! came back, or a failover to a new one, where every second of cool-down is a second of
//! events waiting. What tells the two apart is [`probe_now`](Breaker::probe_now): the shipper
//! calls it when a fresh connection's handshake succeeded or Sentinel announced a promotion,
//! ending the cool-down at once. An open breaker only delays sending; nothing is dropped
//! (events wait in the ring or the journal).

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

/// What a failure or a success did to the breaker, for the shipper's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// Nothing worth a log line.
    None,
    /// It opened (from closed) for this cool-down.
    Opened(Duration),
    /// A probe failed: open again for this (longer) cool-down.
    Reopened(Duration),
    /// It closed after being open since this long.
    Closed(Duration),
}

#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    first_cool_down: Duration,
    max_cool_down: Duration,
    /// The cool-down of the next opening: doubles with each failed probe.
    cool_down: Duration,
    consecutive_failures: u32,
    open_until: Option<Instant>,
    /// When it opened, for the "resumed after" log line.
    opened_at: Option<Instant>,
    probing: bool,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, first_cool_down: Duration, max_cool_down: Duration) -> Self {
        let first_cool_down = first_cool_down.max(Duration::from_millis(1));
        Self {
            threshold: threshold.max(1),
            first_cool_down,
            max_cool_down: max_cool_down.max(first_cool_down),
            cool_down: first_cool_down,
            consecutive_failures: 0,
            open_until: None,
            opened_at: None,
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

    /// A server answered a new connection's handshake, or a promotion was announced: end the
    /// cool-down now, so the next batch goes as the probe.
    pub(crate) fn probe_now(&mut self, now: Instant) {
        if let Some(until) = &mut self.open_until {
            *until = (*until).min(now);
        }
    }

    /// A new server (a promoted replica): what the old one's failures taught about its
    /// health does not apply. Probe now, and start the cool-down from its first value.
    pub(crate) fn new_server(&mut self, now: Instant) {
        self.probe_now(now);
        self.cool_down = self.first_cool_down;
    }

    pub(crate) fn on_success(&mut self, now: Instant) -> Transition {
        self.consecutive_failures = 0;
        self.cool_down = self.first_cool_down;
        self.probing = false;
        match (self.open_until.take(), self.opened_at.take()) {
            (Some(_), Some(at)) => Transition::Closed(now.saturating_duration_since(at)),
            _ => Transition::None,
        }
    }

    pub(crate) fn on_failure(&mut self, now: Instant) -> Transition {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let reopening = self.probing || self.open_until.is_some();
        if !reopening && self.consecutive_failures < self.threshold {
            return Transition::None;
        }
        if reopening && !self.probing {
            // Already open (a batch that was in flight at the opening failed too).
            return Transition::None;
        }
        let cool_down = self.cool_down;
        self.open_until = Some(now + cool_down);
        self.opened_at.get_or_insert(now);
        self.cool_down = (cool_down * 2).min(self.max_cool_down);
        let transition = if self.probing {
            Transition::Reopened(cool_down)
        } else {
            Transition::Opened(cool_down)
        };
        self.probing = false;
        transition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn opens_after_threshold_probes_after_cool_down_and_closes_on_success() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(3, 250 * MS, 30_000 * MS);
        for _ in 0..2 {
            assert_eq!(breaker.on_failure(t0), Transition::None);
            assert!(breaker.allow(t0), "below the threshold it stays closed");
        }
        assert_eq!(breaker.on_failure(t0), Transition::Opened(250 * MS));
        assert_eq!(breaker.state(t0), BreakerState::Open);
        assert!(!breaker.allow(t0 + 249 * MS));
        let later = t0 + 250 * MS;
        assert_eq!(breaker.state(later), BreakerState::HalfOpen);
        assert!(breaker.allow(later), "one probe");
        assert!(!breaker.allow(later), "only one probe");
        assert_eq!(breaker.on_success(later), Transition::Closed(250 * MS));
        assert_eq!(breaker.state(later), BreakerState::Closed);
        assert!(breaker.allow(later));
    }

    #[test]
    fn each_failed_probe_doubles_the_cool_down_up_to_the_maximum_and_success_resets_it() {
        let mut now = Instant::now();
        let mut breaker = Breaker::new(1, 250 * MS, 1_000 * MS);
        assert_eq!(breaker.on_failure(now), Transition::Opened(250 * MS));
        for expected in [500, 1000, 1000] {
            now += breaker.cool_down / 2 + 1000 * MS;
            assert!(breaker.allow(now), "probe");
            assert_eq!(breaker.on_failure(now), Transition::Reopened(expected * MS));
            assert_eq!(breaker.state(now + (expected - 1) * MS), BreakerState::Open);
        }
        now += 1000 * MS;
        assert!(breaker.allow(now));
        assert!(matches!(breaker.on_success(now), Transition::Closed(_)));
        assert_eq!(
            breaker.on_failure(now),
            Transition::Opened(250 * MS),
            "reset"
        );
    }

    #[test]
    fn failures_of_batches_in_flight_at_the_opening_do_not_extend_it() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(1, 250 * MS, 30_000 * MS);
        assert_eq!(breaker.on_failure(t0), Transition::Opened(250 * MS));
        assert_eq!(breaker.on_failure(t0 + 10 * MS), Transition::None);
        assert_eq!(breaker.state(t0 + 250 * MS), BreakerState::HalfOpen);
    }

    #[test]
    fn a_new_server_ends_the_cool_down_at_once() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(1, 30_000 * MS, 30_000 * MS);
        breaker.on_failure(t0);
        let promoted = t0 + 2_000 * MS;
        assert_eq!(breaker.state(promoted), BreakerState::Open);
        breaker.probe_now(promoted);
        assert!(breaker.allow(promoted), "the probe goes now");
        breaker.probe_now(promoted);
        assert!(!breaker.allow(promoted), "still one probe at a time");
        let mut grown = Breaker::new(1, 250 * MS, 8_000 * MS);
        grown.on_failure(t0);
        for minute in 1..=4 {
            let probe = t0 + minute * 60_000 * MS;
            assert!(grown.allow(probe));
            grown.on_failure(probe);
        }
        assert_eq!(grown.cool_down, 8_000 * MS);
        let promoted = t0 + 300_000 * MS;
        grown.new_server(promoted);
        assert!(grown.allow(promoted), "a promoted server is probed at once");
        assert_eq!(
            grown.on_failure(promoted),
            Transition::Reopened(250 * MS),
            "and its cool-down starts afresh"
        );
        let mut closed = Breaker::new(1, 250 * MS, 1_000 * MS);
        closed.probe_now(t0);
        assert_eq!(
            closed.state(t0),
            BreakerState::Closed,
            "a closed one stays closed"
        );
    }
}
