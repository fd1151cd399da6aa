//! One summary of a latency histogram (count, p50, p99, p99.9, max) for everything that
//! prints latencies: `evstream report` (creation and fill latency per symbol), and the
//! summaries of `demo`, `bench` and `consume` (publish, append and pipeline latency).
//!
//! It lives here, not in the `evstream` library, because its users are IntelliSense and the
//! CLI (which depends on IntelliSense), and IntelliSense already depends on `hdrhistogram`;
//! the library would take that dependency for a type it never uses itself.
//!
//! The values are [`Duration`]s, exact whatever the histogram's unit. How they print is the
//! user's choice, and the JSON shapes that exist are kept as they are, each by one
//! `serialize_with` function: [`nanos`] (`{"p50", "p99", "p999", "max"}` in integer
//! nanoseconds), [`millis`] (the same in fractional milliseconds, with `count`), and
//! [`millis_suffixed`] (`{"count", "p50_ms", "p99_ms", "max_ms"}`, the report's).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::ser::{SerializeStruct, Serializer};

/// Latency percentiles of a histogram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Largest.
    pub max: Duration,
}

impl Percentiles {
    /// The percentiles of a histogram of nanoseconds.
    pub fn of_nanos(histogram: &Histogram<u64>) -> Self {
        Self::of(histogram, Duration::from_nanos(1))
    }

    /// The percentiles of `histogram`, whose values are numbers of `unit`
    /// (`Duration::from_nanos(1)` for a histogram of nanoseconds).
    pub fn of(histogram: &Histogram<u64>, unit: Duration) -> Self {
        let unit_ns = u64::try_from(unit.as_nanos()).unwrap_or(u64::MAX);
        let at = |value: u64| Duration::from_nanos(value.saturating_mul(unit_ns));
        Self {
            count: histogram.len(),
            p50: at(histogram.value_at_quantile(0.5)),
            p99: at(histogram.value_at_quantile(0.99)),
            p999: at(histogram.value_at_quantile(0.999)),
            max: at(histogram.max()),
        }
    }
}

/// `duration` in fractional milliseconds.
pub fn ms(duration: Duration) -> f64 {
    duration.as_nanos() as f64 / 1e6
}

fn ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// `{"p50", "p99", "p999", "max"}` in nanoseconds (integers): `publish_ns`,
/// `pipeline_latency_ns`.
pub fn nanos<S: Serializer>(p: &Percentiles, serializer: S) -> Result<S::Ok, S::Error> {
    let mut s = serializer.serialize_struct("Percentiles", 4)?;
    s.serialize_field("p50", &ns(p.p50))?;
    s.serialize_field("p99", &ns(p.p99))?;
    s.serialize_field("p999", &ns(p.p999))?;
    s.serialize_field("max", &ns(p.max))?;
    s.end()
}

/// `{"p50", "p99", "p999", "max", "count"}`, the latencies in milliseconds:
/// `append_latency_ms`.
pub fn millis<S: Serializer>(p: &Percentiles, serializer: S) -> Result<S::Ok, S::Error> {
    let mut s = serializer.serialize_struct("Percentiles", 5)?;
    s.serialize_field("p50", &ms(p.p50))?;
    s.serialize_field("p99", &ms(p.p99))?;
    s.serialize_field("p999", &ms(p.p999))?;
    s.serialize_field("max", &ms(p.max))?;
    s.serialize_field("count", &p.count)?;
    s.end()
}

/// `{"count", "p50_ms", "p99_ms", "max_ms"}`: the latencies of `evstream report`.
pub fn millis_suffixed<S: Serializer>(p: &Percentiles, serializer: S) -> Result<S::Ok, S::Error> {
    let mut s = serializer.serialize_struct("Percentiles", 4)?;
    s.serialize_field("count", &p.count)?;
    s.serialize_field("p50_ms", &ms(p.p50))?;
    s.serialize_field("p99_ms", &ms(p.p99))?;
    s.serialize_field("max_ms", &ms(p.max))?;
    s.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values: &[u64]) -> Histogram<u64> {
        let mut histogram = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for &value in values {
            histogram.record(value).unwrap();
        }
        histogram
    }

    #[test]
    fn values_are_in_the_histograms_unit() {
        // Below 2,048 a histogram of three significant digits is exact.
        let h = histogram(&[100, 200, 300]);
        let ns = Percentiles::of(&h, Duration::from_nanos(1));
        assert_eq!(
            (ns.count, ns.p50, ns.max),
            (3, Duration::from_nanos(200), Duration::from_nanos(300))
        );
        let us = Percentiles::of(&h, Duration::from_micros(1));
        assert_eq!(us.max, Duration::from_micros(300));
        assert_eq!(ms(us.max), 0.3);
        assert_eq!(
            Percentiles::of(&histogram(&[]), Duration::from_nanos(1)).count,
            0
        );
    }

    #[test]
    fn each_json_shape_keeps_its_field_names() {
        #[derive(serde::Serialize)]
        struct Shapes {
            #[serde(serialize_with = "nanos")]
            a_ns: Percentiles,
            #[serde(serialize_with = "millis")]
            b_ms: Percentiles,
            #[serde(serialize_with = "millis_suffixed")]
            c: Percentiles,
        }
        let p = Percentiles::of(&histogram(&[1_500_000]), Duration::from_nanos(1));
        let json = serde_json::to_value(Shapes {
            a_ns: p,
            b_ms: p,
            c: p,
        })
        .unwrap();
        assert_eq!(json["a_ns"]["p99"], ns(p.p99));
        assert!(ns(p.p99) >= 1_500_000);
        assert_eq!(json["a_ns"].as_object().unwrap().len(), 4);
        assert_eq!(json["b_ms"]["count"], 1);
        assert_eq!(json["b_ms"].as_object().unwrap().len(), 5);
        assert_eq!(json["c"]["max_ms"], ms(p.max));
        assert_eq!(json["c"].as_object().unwrap().len(), 4);
    }
}
