//! What IntelliSense found in a demo run, read back from Redis over every partition: the
//! latencies per symbol (`<stream>:analysis`) and the alerts it raised (`<stream>:alerts`),
//! in the shapes the summary and the HTML report show.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use evstream::Config;
use evstream_intellisense::{for_each_latency, AnalysisKeys, LatencyKind};
use hdrhistogram::Histogram;
use redis::streams::{StreamId, StreamRangeReply};
use redis::AsyncCommands;
use serde::Serialize;

/// Entries read per `XRANGE`.
const PAGE: usize = 10_000;

/// Alerts of each kind shown as examples in the summary.
const EXAMPLES_PER_KIND: usize = 3;

/// Latency histograms of one symbol, nanoseconds.
#[derive(Debug, Clone)]
pub(crate) struct SymbolHistograms {
    /// Quote → `OrderCreated`.
    pub(crate) creation: Histogram<u64>,
    /// `OrderCreated` → first `OrderFilled`.
    pub(crate) fill: Histogram<u64>,
}

/// One entry of `<stream>:alerts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct FiredAlert {
    /// When IntelliSense wrote it: the entry id's milliseconds (Unix time).
    pub(crate) at_ms: u64,
    /// `creation_latency`, `fill_latency` or `risk`.
    pub(crate) kind: String,
    /// `WARNING` or `CRITICAL`.
    pub(crate) level: String,
    pub(crate) correlation_id: String,
    pub(crate) symbol: String,
    /// The latency in ns, or the risk score.
    pub(crate) value: f64,
    pub(crate) threshold: f64,
    pub(crate) message: String,
}

/// Everything IntelliSense wrote about the run.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub(crate) symbols: BTreeMap<String, SymbolHistograms>,
    /// In the order they were raised.
    pub(crate) alerts: Vec<FiredAlert>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Spread {
    pub(crate) count: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

impl Spread {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        Self {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.5)),
            p90_ms: ms(histogram.value_at_quantile(0.9)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// The latencies of one symbol, for the summary.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct SymbolLatency {
    /// `OrderCreated` → first fill: the venue.
    pub(crate) fill: Spread,
    /// Triggering quote → `OrderCreated`: the engine's decision.
    pub(crate) creation: Spread,
}

/// The alerts that fired, for the summary.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AlertsFired {
    pub(crate) total: u64,
    /// Count by kind, then level.
    pub(crate) by_kind: BTreeMap<String, BTreeMap<String, u64>>,
    /// The first few of each kind.
    pub(crate) examples: Vec<FiredAlert>,
}

impl Findings {
    /// Reads what IntelliSense wrote on every partition of `config`'s stream from `since`
    /// on (a Redis given with `--redis-url` may hold the results of earlier runs), each
    /// partition from the node that holds it.
    pub(crate) fn read(config: &Config, since: SystemTime) -> anyhow::Result<Self> {
        let since_ms = since
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        super::super::block_on(async {
            let mut findings = Findings::default();
            for part in config.partition_configs() {
                let (mut connection, _) =
                    evstream::partitions::connect(&part, &redis::AsyncConnectionConfig::new())
                        .await
                        .map_err(super::super::partition_error)?;
                let keys = AnalysisKeys::new(&part.redis.stream);
                let analysis = read_stream(&mut connection, &keys.analysis, since_ms).await?;
                findings.add_latencies(&analysis);
                let alerts = read_stream(&mut connection, &keys.alerts, since_ms).await?;
                findings.add_alerts(&alerts);
            }
            findings.alerts.sort_by_key(|a| a.at_ms);
            Ok(findings)
        })?
    }

    /// Entries of `<stream>:analysis`: fields `<kind>:<symbol>` holding comma-separated
    /// latencies in ns (see `evstream_intellisense`'s crate docs).
    fn add_latencies(&mut self, entries: &[StreamId]) {
        for entry in entries {
            for_each_latency(entry, |kind, symbol, ns| {
                let histograms =
                    self.symbols
                        .entry(symbol.to_owned())
                        .or_insert_with(|| SymbolHistograms {
                            creation: latency_histogram(),
                            fill: latency_histogram(),
                        });
                match kind {
                    LatencyKind::Fill => &mut histograms.fill,
                    LatencyKind::Creation => &mut histograms.creation,
                }
                .saturating_record(ns.max(1));
            });
        }
    }

    /// Entries of `<stream>:alerts`, one per alert.
    fn add_alerts(&mut self, entries: &[StreamId]) {
        for entry in entries {
            let text = |field: &str| entry.get::<String>(field).unwrap_or_default();
            let number = |field: &str| text(field).parse::<f64>().unwrap_or(f64::NAN);
            self.alerts.push(FiredAlert {
                at_ms: entry
                    .id
                    .split_once('-')
                    .and_then(|(ms, _)| ms.parse().ok())
                    .unwrap_or(0),
                kind: text("kind"),
                level: text("level"),
                correlation_id: text("correlation_id"),
                symbol: text("symbol"),
                value: number("value"),
                threshold: number("threshold"),
                message: text("message"),
            });
        }
    }

    /// Percentiles per symbol.
    pub(crate) fn latency_by_symbol(&self) -> BTreeMap<String, SymbolLatency> {
        self.symbols
            .iter()
            .map(|(symbol, h)| {
                let latency = SymbolLatency {
                    fill: Spread::of(&h.fill),
                    creation: Spread::of(&h.creation),
                };
                (symbol.clone(), latency)
            })
            .collect()
    }

    /// Counts and examples of the alerts.
    pub(crate) fn alerts_fired(&self) -> AlertsFired {
        let mut by_kind: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let mut examples = Vec::new();
        for alert in &self.alerts {
            let levels = by_kind.entry(alert.kind.clone()).or_default();
            let seen: u64 = levels.values().sum();
            *levels.entry(alert.level.clone()).or_default() += 1;
            if seen < EXAMPLES_PER_KIND as u64 {
                examples.push(alert.clone());
            }
        }
        AlertsFired {
            total: self.alerts.len() as u64,
            by_kind,
            examples,
        }
    }
}

/// The entries of the stream `key` added from `since_ms` (Unix milliseconds) on, oldest
/// first.
async fn read_stream(
    connection: &mut redis::aio::MultiplexedConnection,
    key: &str,
    since_ms: u64,
) -> anyhow::Result<Vec<StreamId>> {
    let mut entries = Vec::new();
    let mut start = since_ms.to_string();
    loop {
        let page: StreamRangeReply = connection.xrange_count(key, &start, "+", PAGE).await?;
        let full = page.ids.len() == PAGE;
        if let Some(last) = page.ids.last() {
            start = format!("({}", last.id);
        }
        entries.extend(page.ids);
        if !full {
            return Ok(entries);
        }
    }
}

/// 1 ns to 1 hour, three significant digits (as IntelliSense's own).
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("static bounds are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(kind: &str, level: &str, at_ms: u64) -> FiredAlert {
        FiredAlert {
            at_ms,
            kind: kind.to_owned(),
            level: level.to_owned(),
            correlation_id: format!("ord-{at_ms}"),
            symbol: "AAPL".to_owned(),
            value: 1.0,
            threshold: 1.0,
            message: String::new(),
        }
    }

    #[test]
    fn alerts_are_counted_by_kind_and_level_with_the_first_few_as_examples() {
        let findings = Findings {
            symbols: BTreeMap::new(),
            alerts: (0..5)
                .map(|i| alert("fill_latency", "WARNING", i))
                .chain([alert("risk", "WARNING", 7), alert("risk", "CRITICAL", 9)])
                .collect(),
        };
        let fired = findings.alerts_fired();
        assert_eq!(fired.total, 7);
        assert_eq!(fired.by_kind["fill_latency"]["WARNING"], 5);
        assert_eq!(fired.by_kind["risk"]["CRITICAL"], 1);
        let examples: Vec<u64> = fired.examples.iter().map(|a| a.at_ms).collect();
        assert_eq!(examples, [0, 1, 2, 7, 9]);
    }

    #[test]
    fn spreads_are_in_milliseconds() {
        let mut h = latency_histogram();
        for ms in 1..=100u64 {
            h.record(ms * 1_000_000).unwrap();
        }
        let s = Spread::of(&h);
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p90_ms - 90.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
        assert_eq!(Spread::of(&latency_histogram()), Spread::default());
    }
}
