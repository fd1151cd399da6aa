//! What a simulated engine's threads measure of their `publish` calls, shared by the
//! demo's market ([`crate::market`]) and the bench.

use std::time::Duration;

use hdrhistogram::Histogram;

/// What the engine threads saw.
#[derive(Debug)]
pub(crate) struct EngineReport {
    pub(crate) published: u64,
    pub(crate) refused: u64,
    /// Nanoseconds per accepted `publish` call.
    pub(crate) latency_ns: Histogram<u64>,
    pub(crate) elapsed: Duration,
}

/// A histogram of publish call times: 1 ns to 60 s, three significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds are valid")
}
