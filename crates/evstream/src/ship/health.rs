//! What a shipper tells about itself: its live health, summed over its lanes, and what its
//! shutdown achieved.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{counter, gauge};
use serde::Serialize;

use super::BreakerState;

/// What a shutdown achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShutdownReport {
    /// Events appended to the stream over the shipper's life.
    pub shipped: u64,
    /// Events sent to the dead-letter stream over the shipper's life.
    pub dead_lettered: u64,
    /// Events not delivered by the deadline and in the spill journal for the next start to
    /// replay: written to its files (the OS has them; on disk too with `journal_fsync =
    /// "always"`, and after the final fsync otherwise).
    pub journaled: u64,
    /// Events not delivered by the deadline and not journaled (no journal configured, its
    /// budget used up, or its writes failed: a record that did not reach the file whole
    /// counts here): these are lost.
    pub undelivered: u64,
    /// Whether the shipper thread panicked (a bug; `undelivered` is then unknown).
    pub panicked: bool,
}

impl ShutdownReport {
    pub(super) fn add(&mut self, lane: &Self) {
        self.shipped += lane.shipped;
        self.dead_lettered += lane.dead_lettered;
        self.journaled += lane.journaled;
        self.undelivered += lane.undelivered;
        self.panicked |= lane.panicked;
    }
}

/// A snapshot of the shipper, for health checks and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShipperHealth {
    /// Whether the last Redis operation succeeded on a live connection.
    pub redis_connected: bool,
    /// Circuit breaker state.
    pub breaker: BreakerState,
    /// Batches sent and not answered yet.
    pub batches_in_flight: u64,
    /// Events taken from the ring and not confirmed yet.
    pub unconfirmed_events: u64,
    /// Events appended to the stream.
    pub shipped: u64,
    /// Events found already appended when their batch was retried (duplicates prevented).
    pub duplicates_skipped: u64,
    /// Batches confirmed.
    pub batches_ok: u64,
    /// Batch attempts that failed (and were retried).
    pub batches_failed: u64,
    /// Dead letters by reason code.
    pub dead_letters: BTreeMap<String, u64>,
    /// Events waiting in the spill journal (this producer's and earlier ones' to replay).
    pub journal_events: u64,
    /// Bytes of the spill journal on disk.
    pub journal_bytes: u64,
    /// Events written to the journal since start.
    pub spilled: u64,
    /// Whether the journal's disk budget is used up (the ring fills, publish refuses).
    pub journal_full: bool,
    /// Events lost to torn or corrupt journal records.
    pub journal_lost: u64,
    /// Journals of earlier processes not replayed: their events are older than
    /// `ship.dedupe_ttl_s` and their producer's high-water mark is gone from Redis, so a
    /// replay could append again what was delivered. They stay on disk; see
    /// `docs/operations.md`, "A journal older than the mark".
    pub journals_refused: u64,
    /// Sampled events that did not match their schema (`ship.validation = "sample"`;
    /// shipped anyway).
    pub schema_violations: u64,
    /// The last error, if any since start.
    pub last_error: Option<String>,
}

impl ShipperHealth {
    /// Mirrors the shipper's counters into the metrics (see [`crate::telemetry`]).
    pub fn record(&self) {
        counter!("evstream_events_shipped_total").absolute(self.shipped);
        counter!("evstream_events_spilled_total").absolute(self.spilled);
        counter!("evstream_duplicates_prevented_total").absolute(self.duplicates_skipped);
        counter!("evstream_batches_total", "result" => "ok").absolute(self.batches_ok);
        counter!("evstream_batches_total", "result" => "failed").absolute(self.batches_failed);
        gauge!("evstream_breaker_state").set(match self.breaker {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        });
        gauge!("evstream_journal_events").set(self.journal_events as f64);
        gauge!("evstream_journal_bytes").set(self.journal_bytes as f64);
        gauge!("evstream_journal_full").set(if self.journal_full { 1.0 } else { 0.0 });
        counter!("evstream_journal_lost_total").absolute(self.journal_lost);
        counter!("evstream_journals_refused_total").absolute(self.journals_refused);
        for (reason, n) in &self.dead_letters {
            counter!("evstream_dead_letters_total", "stage" => "ship", "reason" => reason.clone())
                .absolute(*n);
        }
    }
}

/// One lane's live counters, written by the lane, read by [`ShipperHandle::health`](super::ShipperHandle::health)
/// and [`ShipperMonitor`](super::ShipperMonitor).
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) connected: AtomicBool,
    pub(super) breaker_open: AtomicBool,
    pub(super) breaker_half_open: AtomicBool,
    pub(super) in_flight: AtomicU64,
    pub(super) unconfirmed: AtomicU64,
    pub(super) shipped: AtomicU64,
    pub(super) skipped: AtomicU64,
    pub(super) batches_ok: AtomicU64,
    pub(super) batches_failed: AtomicU64,
    pub(super) dead_letters: Mutex<BTreeMap<String, u64>>,
    pub(super) last_error: Mutex<Option<String>>,
    pub(super) journal_events: AtomicU64,
    pub(super) journal_bytes: AtomicU64,
    pub(super) spilled: AtomicU64,
    pub(super) journal_full: AtomicBool,
    pub(super) journal_lost: AtomicU64,
    pub(super) journals_refused: AtomicU64,
    pub(super) schema_violations: AtomicU64,
}

impl State {
    /// The lanes' health as one: sums, the worst breaker, connected only if every lane is,
    /// and the last error of a lane that has one (named by its partition when there are
    /// several).
    pub(super) fn merged(lanes: &[Arc<State>]) -> ShipperHealth {
        let mut lanes = lanes.iter().map(|lane| lane.snapshot()).enumerate();
        let Some((_, mut total)) = lanes.next() else {
            return State::default().snapshot();
        };
        let several = lanes.len() > 0;
        if several {
            total.last_error = total.last_error.map(|e| format!("partition 0: {e}"));
        }
        for (partition, lane) in lanes {
            total.redis_connected &= lane.redis_connected;
            total.breaker = match (total.breaker, lane.breaker) {
                (BreakerState::Open, _) | (_, BreakerState::Open) => BreakerState::Open,
                (BreakerState::HalfOpen, _) | (_, BreakerState::HalfOpen) => BreakerState::HalfOpen,
                _ => BreakerState::Closed,
            };
            total.batches_in_flight += lane.batches_in_flight;
            total.unconfirmed_events += lane.unconfirmed_events;
            total.shipped += lane.shipped;
            total.duplicates_skipped += lane.duplicates_skipped;
            total.batches_ok += lane.batches_ok;
            total.batches_failed += lane.batches_failed;
            for (reason, count) in lane.dead_letters {
                *total.dead_letters.entry(reason).or_default() += count;
            }
            total.journal_events += lane.journal_events;
            total.journal_bytes += lane.journal_bytes;
            total.spilled += lane.spilled;
            total.journal_full |= lane.journal_full;
            total.journal_lost += lane.journal_lost;
            total.journals_refused += lane.journals_refused;
            total.schema_violations += lane.schema_violations;
            if let Some(error) = lane.last_error {
                total.last_error = Some(format!("partition {partition}: {error}"));
            }
        }
        total
    }

    fn snapshot(&self) -> ShipperHealth {
        let breaker = if self.breaker_open.load(Ordering::Relaxed) {
            BreakerState::Open
        } else if self.breaker_half_open.load(Ordering::Relaxed) {
            BreakerState::HalfOpen
        } else {
            BreakerState::Closed
        };
        ShipperHealth {
            redis_connected: self.connected.load(Ordering::Relaxed),
            breaker,
            batches_in_flight: self.in_flight.load(Ordering::Relaxed),
            unconfirmed_events: self.unconfirmed.load(Ordering::Relaxed),
            shipped: self.shipped.load(Ordering::Relaxed),
            duplicates_skipped: self.skipped.load(Ordering::Relaxed),
            batches_ok: self.batches_ok.load(Ordering::Relaxed),
            batches_failed: self.batches_failed.load(Ordering::Relaxed),
            dead_letters: lock(&self.dead_letters).clone(),
            last_error: lock(&self.last_error).clone(),
            journal_events: self.journal_events.load(Ordering::Relaxed),
            journal_bytes: self.journal_bytes.load(Ordering::Relaxed),
            spilled: self.spilled.load(Ordering::Relaxed),
            journal_full: self.journal_full.load(Ordering::Relaxed),
            journal_lost: self.journal_lost.load(Ordering::Relaxed),
            journals_refused: self.journals_refused.load(Ordering::Relaxed),
            schema_violations: self.schema_violations.load(Ordering::Relaxed),
        }
    }

    pub(super) fn set_error(&self, error: String) {
        *lock(&self.last_error) = Some(error);
    }

    pub(super) fn dead_lettered(&self) -> u64 {
        lock(&self.dead_letters).values().sum()
    }
}

/// Locks a mutex, ignoring poisoning: the data are counters and a message, valid either way.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
