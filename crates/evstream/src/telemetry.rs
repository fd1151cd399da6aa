//! Metrics through the [`metrics`] facade; the application picks the exporter (the `evstream`
//! command serves them in Prometheus format on `/metrics`). Without an installed recorder
//! every call here does nothing.
//!
//! Names follow Prometheus conventions (base units, `_total` for counters); the reference is
//! `docs/operations.md`. Process-local state (ring, shipper, consumer) is mirrored from the
//! snapshots the library already keeps, by each snapshot's own `record` method
//! ([`CaptureHealth::record`](crate::publish::CaptureHealth::record),
//! [`ShipperHealth::record`](crate::ship::ShipperHealth::record),
//! [`ConsumeReport::record`](crate::consume::ConsumeReport::record)), so the hot path never
//! touches the metrics registry; the only
//! measurement taken on the hot path (publish duration, one call in
//! `ring.publish_timing_sample`) travels in the ring slot and is recorded by the drain.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Histogram buckets for latencies in seconds: 250 ns to 1 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    250e-9, 500e-9, 1e-6, 2.5e-6, 5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3,
    5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1.0,
];

/// Registers every metric's help text and unit with the installed recorder.
pub fn describe() {
    describe_counter!(
        "evstream_events_published_total",
        "Events accepted by publish."
    );
    describe_counter!(
        "evstream_events_refused_total",
        "Events refused by publish, by reason."
    );
    describe_gauge!(
        "evstream_ring_depth",
        "Events waiting in the ring for the shipper."
    );
    describe_gauge!("evstream_ring_capacity", "Slots of the ring.");
    describe_gauge!(
        "evstream_ring_cursor",
        "Positions claimed in the ring since start."
    );
    describe_histogram!(
        "evstream_publish_duration_seconds",
        Unit::Seconds,
        "Time spent inside publish (one call in ring.publish_timing_sample is timed)."
    );
    describe_counter!(
        "evstream_events_shipped_total",
        "Events appended to the stream."
    );
    describe_counter!(
        "evstream_events_spilled_total",
        "Events written to the spill journal."
    );
    describe_counter!(
        "evstream_duplicates_prevented_total",
        "Events of retried batches found already appended and skipped."
    );
    describe_counter!("evstream_batches_total", "Batch attempts, by result.");
    describe_histogram!(
        "evstream_batch_duration_seconds",
        Unit::Seconds,
        "Round trip of one confirmed batch."
    );
    describe_gauge!(
        "evstream_breaker_state",
        "Circuit breaker: 0 closed, 1 half-open, 2 open."
    );
    describe_gauge!(
        "evstream_journal_events",
        "Events waiting in the spill journal."
    );
    describe_gauge!(
        "evstream_journal_bytes",
        Unit::Bytes,
        "Bytes of the spill journal."
    );
    describe_gauge!(
        "evstream_journal_full",
        "1 when the journal's disk budget is used up."
    );
    describe_counter!(
        "evstream_journal_lost_total",
        "Events lost to torn or corrupt journal records."
    );
    describe_counter!(
        "evstream_journals_refused_total",
        "Journals of earlier processes not replayed: older than ship.dedupe_ttl_s, with their producer's high-water mark gone from Redis."
    );
    describe_counter!(
        "evstream_dead_letters_total",
        "Events this process sent to the dead letter queue, by stage and reason."
    );
    describe_counter!(
        "evstream_consume_entries_total",
        "Entries a consumer finished, by result."
    );
    describe_counter!(
        "evstream_consume_claimed_total",
        "Entries claimed with XAUTOCLAIM."
    );
    describe_counter!(
        "evstream_consume_redis_errors_total",
        "Failed Redis calls of a consumer."
    );
    describe_gauge!(
        "evstream_redis_up",
        "1 when the last poll of Redis succeeded."
    );
    describe_gauge!(
        "evstream_redis_memory_used_bytes",
        Unit::Bytes,
        "Redis used_memory."
    );
    describe_gauge!(
        "evstream_redis_memory_max_bytes",
        Unit::Bytes,
        "Redis maxmemory (0: unbounded)."
    );
    describe_gauge!(
        "evstream_redis_memory_used_ratio",
        "used_memory / maxmemory."
    );
    describe_gauge!(
        "evstream_redis_fragmentation_ratio",
        "Redis allocator_frag_ratio."
    );
    describe_gauge!(
        "evstream_redis_eviction_policy_safe",
        "1 when maxmemory-policy cannot evict the stream (noeviction, volatile-*)."
    );
    describe_gauge!("evstream_redis_activedefrag", "1 when activedefrag is on.");
    describe_gauge!("evstream_stream_length", "Entries in the stream.");
    describe_counter!(
        "evstream_stream_entries_added_total",
        "Entries ever added to the stream."
    );
    describe_gauge!(
        "evstream_stream_first_entry_age_seconds",
        Unit::Seconds,
        "Age of the oldest entry."
    );
    describe_gauge!(
        "evstream_group_pending",
        "Entries delivered to a group and not acknowledged."
    );
    describe_gauge!("evstream_group_lag", "Entries a group has not read yet.");
    describe_gauge!(
        "evstream_archive_behind_seconds",
        Unit::Seconds,
        "With an archive: how long ago the oldest entry it does not hold yet was appended (0: it holds everything)."
    );
    describe_gauge!("evstream_group_consumers", "Consumers of a group.");
    describe_gauge!(
        "evstream_consumer_idle_seconds",
        Unit::Seconds,
        "Time since a consumer last read."
    );
    describe_gauge!(
        "evstream_consumer_pending",
        "Entries pending for one consumer."
    );
    describe_gauge!("evstream_dlq_length", "Entries in the dead letter stream.");
    describe_counter!(
        "evstream_dlq_entries_added_total",
        "Entries ever added to the dead letter stream (poison pills)."
    );
    describe_counter!(
        "evstream_dlq_entries_total",
        "Dead letters by stage and reason, read from the dead letter stream by the ops loop."
    );
    describe_counter!(
        "evstream_trimmed_entries_total",
        "Entries trimmed by the ops loop, by mode."
    );
    describe_counter!(
        "evstream_dlq_trimmed_entries_total",
        "Dead letters deleted by the ops loop's dead-letter retention (ops.dlq_max_len, ops.dlq_max_age_s)."
    );
    describe_counter!(
        "evstream_archive_entries_total",
        "Entries archived (in files recorded in the manifest), by kind: events, dlq."
    );
    describe_counter!(
        "evstream_archive_files_total",
        "Archive files written and recorded, by kind."
    );
    describe_counter!(
        "evstream_archive_bytes_total",
        Unit::Bytes,
        "Bytes of the archive files written and recorded, by kind."
    );
    describe_counter!(
        "evstream_archive_errors_total",
        "Archiver passes that failed (Redis, disk); each is retried."
    );
    describe_counter!(
        "evstream_trim_lost_entries_total",
        "Entries a group still needed, deleted by an aggressive trim at critical memory."
    );
    describe_counter!(
        "evstream_consumers_removed_total",
        "Idle consumers with nothing pending removed from a group."
    );
    describe_gauge!("evstream_alert_firing", "1 while an alert fires.");
    describe_histogram!(
        "evstream_intellisense_latency_seconds",
        Unit::Seconds,
        "IntelliSense: order latencies by kind (creation: signal to order; fill: order to first fill) and symbol."
    );
    describe_histogram!(
        "evstream_intellisense_risk_score",
        "IntelliSense: each order's notional over its symbol's limit (its alert fires above 1)."
    );
    describe_counter!(
        "evstream_intellisense_alerts_total",
        "IntelliSense: alerts raised, by kind (creation_latency, fill_latency, risk) and level."
    );
    describe_counter!(
        "evstream_intellisense_events_total",
        "IntelliSense: events analysed, by kind (signal, order, fill)."
    );
    describe_gauge!(
        "evstream_intellisense_orders_open",
        "IntelliSense: orders this process holds waiting for their fill (or fills waiting for their order)."
    );
    describe_counter!(
        "evstream_intellisense_orders_unmatched_total",
        "IntelliSense: orders never filled, or fills whose order never came, within tracker_ttl_s (or pushed out by tracker_capacity), and not paired by another consumer either."
    );
}
