//! A consumer's live counters ([`ConsumeStats`]) and their snapshot ([`ConsumeReport`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use metrics::counter;

/// Live counters of a consumer, readable from any thread while it runs.
#[derive(Debug, Default)]
pub struct ConsumeStats {
    pub(super) read: AtomicU64,
    pub(super) processed: AtomicU64,
    pub(super) duplicates_skipped: AtomicU64,
    pub(super) skipped: AtomicU64,
    pub(super) unvalidated: AtomicU64,
    pub(super) dead_lettered: AtomicU64,
    pub(super) failed_attempts: AtomicU64,
    pub(super) claimed: AtomicU64,
    pub(super) deleted: AtomicU64,
    pub(super) effect_errors: AtomicU64,
    pub(super) redis_errors: AtomicU64,
    pub(super) connected: AtomicBool,
    pub(super) last_error: Mutex<Option<String>>,
}

/// A snapshot of [`ConsumeStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ConsumeReport {
    /// Entries read (new, own pending and claimed), redeliveries included.
    pub read: u64,
    /// Entries whose handler succeeded and whose commit this consumer applied.
    pub processed: u64,
    /// Entries acknowledged without effect because they were already applied (by another
    /// consumer, an earlier try, or as the same event in another entry).
    pub duplicates_skipped: u64,
    /// Entries acknowledged without handling: types the handler does not take.
    pub skipped: u64,
    /// Processed entries (counted in `processed` too) whose type the schema registry in use
    /// does not know, handed over without validation (see `consume.strict_schemas`).
    pub unvalidated: u64,
    /// Entries this consumer wrote to the dead letter queue.
    pub dead_lettered: u64,
    /// Deliveries that failed and were left pending for a retry.
    pub failed_attempts: u64,
    /// Entries claimed from the pending list with `XAUTOCLAIM`.
    pub claimed: u64,
    /// Pending entries found deleted from the stream (trimmed before anyone acked them).
    pub deleted: u64,
    /// Entries acknowledged whose effects failed in Redis (each also dead-lettered with
    /// reason `effect_failed`).
    pub effect_errors: u64,
    /// Failed Redis calls (each retried).
    pub redis_errors: u64,
    /// Whether the last Redis call succeeded.
    pub connected: bool,
    /// The last Redis error, if any.
    pub last_error: Option<String>,
}

impl ConsumeReport {
    /// Mirrors the consumer's counters into the metrics, labelled with its `group` (see
    /// [`crate::telemetry`]).
    pub fn record(&self, group: &str) {
        let group = group.to_owned();
        for (result, n) in [
            ("processed", self.processed),
            ("duplicate", self.duplicates_skipped),
            ("skipped", self.skipped),
            ("dead_lettered", self.dead_lettered),
            ("failed", self.failed_attempts),
        ] {
            counter!("evstream_consume_entries_total", "group" => group.clone(), "result" => result)
                .absolute(n);
        }
        counter!("evstream_consume_claimed_total", "group" => group.clone()).absolute(self.claimed);
        counter!("evstream_consume_unvalidated_total", "group" => group.clone())
            .absolute(self.unvalidated);
        counter!("evstream_consume_redis_errors_total", "group" => group)
            .absolute(self.redis_errors);
    }
}

impl ConsumeStats {
    /// The current values.
    pub fn snapshot(&self) -> ConsumeReport {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ConsumeReport {
            read: load(&self.read),
            processed: load(&self.processed),
            duplicates_skipped: load(&self.duplicates_skipped),
            skipped: load(&self.skipped),
            unvalidated: load(&self.unvalidated),
            dead_lettered: load(&self.dead_lettered),
            failed_attempts: load(&self.failed_attempts),
            claimed: load(&self.claimed),
            deleted: load(&self.deleted),
            effect_errors: load(&self.effect_errors),
            redis_errors: load(&self.redis_errors),
            connected: self.connected.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
