//! The durations of the timed `publish` calls, kept in the process for
//! [`CaptureHealth`](super::CaptureHealth): an engine with a metrics system of its own (or
//! the C ABI's `evstream_metrics_snapshot`) reads percentiles without a Prometheus scrape.
//!
//! Recorded by the drain, on the shipper's thread, from the figure each sampled call left in
//! its slot: `publish` itself never touches it.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Percentiles of the timed `publish` calls since start, in nanoseconds (0 while none was
/// timed). Two significant digits: a figure is within 1 % of the call's duration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PublishDurations {
    /// Calls timed (one in `ring.publish_timing_sample`).
    pub timed: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Longest.
    pub max_ns: u64,
}

/// An empty histogram of 1 ns to about 4.3 s (a slot's `u32` of nanoseconds).
pub(super) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, u64::from(u32::MAX), 2).expect("static bounds are valid")
}

/// Adds one timed call.
pub(super) fn record(timings: &Mutex<Histogram<u64>>, nanos: u32) {
    let mut timings = timings.lock().unwrap_or_else(|e| e.into_inner());
    timings.saturating_record(u64::from(nanos).max(1));
}

/// The percentiles so far.
pub(super) fn durations(timings: &Mutex<Histogram<u64>>) -> PublishDurations {
    let timings = timings.lock().unwrap_or_else(|e| e.into_inner());
    if timings.is_empty() {
        return PublishDurations::default();
    }
    PublishDurations {
        timed: timings.len(),
        p50_ns: timings.value_at_quantile(0.5),
        p99_ns: timings.value_at_quantile(0.99),
        p999_ns: timings.value_at_quantile(0.999),
        max_ns: timings.max(),
    }
}
