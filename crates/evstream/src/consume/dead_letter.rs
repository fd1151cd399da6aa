//! The consumer's dead letters: an entry's copy in `<stream>:dlq` with the `dlq_*` fields of
//! `docs/envelope.md`.

use std::sync::atomic::Ordering;

use redis::aio::MultiplexedConnection;
use redis::{Cmd, RedisError};

use super::decode::{self, RawEntry};
use super::{ConsumeStats, Consumer, Effects};
use crate::publish::wall_clock_ns;

impl<H> Consumer<H> {
    /// Adds the dead letter of `entry` to `effects`: its fields (without an oversized
    /// `data`) plus the `dlq_*` fields of `docs/envelope.md`.
    pub(super) fn dead_letter(
        &self,
        effects: &mut Effects,
        entry: &RawEntry,
        reason: &str,
        message: &str,
    ) {
        effects.apply(&mut self.dead_letter_command(entry, reason, message));
        effects.count("dead_lettered", 1);
        // A hostile writer must not flood the log: the first ten, then every power of two
        // (every one is in the dead letter stream and the metrics).
        let n = self.dead_letter_logs.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= 10 || n.is_power_of_two() {
            tracing::warn!(id = %entry.id, reason, deliveries = entry.deliveries, error = message, dead_lettered_so_far = n, "entry dead-lettered");
        }
    }

    fn dead_letter_command(&self, entry: &RawEntry, reason: &str, message: &str) -> Cmd {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&self.keys.dead_letters).arg("*");
        // What a hostile entry can make the dead letter copy is bounded like what it can
        // make the consumer decode: oversized fields and fields past the limit are left out
        // and counted.
        let mut dropped = 0;
        let fields = entry.fields.iter().flat_map(decode::Fields::iter);
        for (index, (name, value)) in fields.enumerate() {
            let is_data = name == crate::envelope::FIELD_DATA.as_bytes();
            if is_data && value.len() > self.config.max_data_bytes {
                xadd.arg("dlq_data_bytes").arg(value.len());
            } else if name.starts_with(b"dlq_") {
                continue;
            } else if index >= decode::MAX_FIELDS
                || decode::oversized_field(name, value, self.config.max_data_bytes)
            {
                dropped += 1;
            } else {
                xadd.arg(name).arg(value);
            }
        }
        if dropped > 0 {
            xadd.arg("dlq_fields_dropped").arg(dropped);
        }
        xadd.arg("dlq_reason")
            .arg(reason)
            .arg("dlq_stage")
            .arg("consume")
            .arg("dlq_error")
            .arg(message)
            .arg("dlq_at_ns")
            .arg(wall_clock_ns())
            .arg("dlq_source_id")
            .arg(&entry.id)
            .arg("dlq_deliveries")
            .arg(entry.deliveries)
            .arg("dlq_group")
            .arg(&self.config.group)
            .arg("dlq_consumer")
            .arg(&self.name);
        xadd
    }

    /// Effects that failed inside a commit cannot be undone (the entry is acknowledged):
    /// each gets a dead letter (`effect_failed`) so that an operator sees it.
    pub(super) async fn record_effect_failures(
        &self,
        writer: &mut MultiplexedConnection,
        entries: &[RawEntry],
        failures: Vec<(usize, String)>,
    ) -> Result<(), RedisError> {
        ConsumeStats::add(&self.stats.effect_errors, failures.len() as u64);
        let mut pipe = redis::pipe();
        for (index, error) in failures {
            tracing::error!(id = %entries[index].id, %error, "an effect failed after its entry was acknowledged");
            pipe.add_command(self.dead_letter_command(&entries[index], "effect_failed", &error))
                .ignore();
        }
        pipe.query_async::<()>(writer).await
    }
}
