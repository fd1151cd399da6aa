//! `evstream report`: the results of IntelliSense, read back from Redis.

use std::collections::{BTreeMap, HashMap};

use evstream::{Config, OpsError, PartitionError};
use hdrhistogram::Histogram;
use redis::aio::ConnectionLike;
use redis::{AsyncCommands, Value};
use serde::Serialize;

use crate::percentiles::{self, Percentiles};
use crate::AnalysisKeys;

/// Latencies of one symbol.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SymbolReport {
    /// Signal → `OrderCreated`.
    #[serde(serialize_with = "percentiles::millis_suffixed")]
    pub creation_latency: Percentiles,
    /// `OrderCreated` → first fill.
    #[serde(serialize_with = "percentiles::millis_suffixed")]
    pub fill_latency: Percentiles,
}

/// What `evstream report` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// The consumer group.
    pub group: String,
    /// Events whose effects were applied (exactly once each).
    pub processed: u64,
    /// Deliveries recognised as already applied and skipped.
    pub duplicates_skipped: u64,
    /// `OrderCreated` events processed.
    pub orders: u64,
    /// `OrderFilled` events processed.
    pub fills: u64,
    /// `MarketDataUpdate`/`Signal` events processed.
    pub signals: u64,
    /// Alerts raised (latency and risk).
    pub alerts: u64,
    /// Entries this group dead-lettered.
    pub dead_lettered: u64,
    /// Entries of the stream the group has not read yet (`XINFO GROUPS` lag), if known.
    pub lag: Option<u64>,
    /// Entries read but not acknowledged.
    pub pending: Option<u64>,
    /// Latencies per symbol, from `<stream>:analysis`.
    pub symbols: BTreeMap<String, SymbolReport>,
}

/// Reads the report of `group` on `stream`.
pub async fn read_report<C>(
    connection: &mut C,
    stream: &str,
    group: &str,
) -> redis::RedisResult<Report>
where
    C: ConnectionLike + Send + Sync,
{
    let mut builder = ReportBuilder::new(group);
    builder.add_partition(connection, stream).await?;
    Ok(builder.finish())
}

/// What IntelliSense computed for `group` over every partition of `config`'s stream (one
/// without partitions), each read from the server that holds it, and added up: what
/// `evstream report` prints.
pub async fn read_partitions(config: &Config, group: &str) -> Result<Report, PartitionError> {
    let mut builder = ReportBuilder::new(group);
    for part in config.partition_configs() {
        let stream = &part.redis.stream;
        let (mut connection, _) =
            evstream::partitions::connect(&part, &redis::AsyncConnectionConfig::new()).await?;
        builder
            .add_partition(&mut connection, stream)
            .await
            .map_err(|source| PartitionError::Read {
                stream: stream.clone(),
                source: OpsError::Redis {
                    what: format!("the results of group '{group}'"),
                    source,
                },
            })?;
    }
    Ok(builder.finish())
}

/// Which latency an `<stream>:analysis` field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyKind {
    /// Signal → `OrderCreated` (`creation_latency:<SYMBOL>`).
    Creation,
    /// `OrderCreated` → first `OrderFilled` (`fill_latency:<SYMBOL>`).
    Fill,
}

/// Calls `record(kind, symbol, nanoseconds)` for every latency of one entry of
/// `<stream>:analysis` (fields `<kind>:<SYMBOL>`, each a comma-separated list of latencies in
/// ns; see the crate docs). Fields of other shapes are skipped.
pub fn for_each_latency(
    entry: &redis::streams::StreamId,
    mut record: impl FnMut(LatencyKind, &str, u64),
) {
    for (field, value) in &entry.map {
        let Some((kind, symbol)) = field.split_once(':') else {
            continue;
        };
        let kind = match kind {
            "fill_latency" => LatencyKind::Fill,
            "creation_latency" => LatencyKind::Creation,
            _ => continue,
        };
        let Ok(text) = redis::from_redis_value::<String>(value.clone()) else {
            continue;
        };
        for latency in text.split(',').filter_map(|n| n.parse::<u64>().ok()) {
            record(kind, symbol, latency);
        }
    }
}

/// The report of a group over the partitions of a stream, each read from the node that holds
/// it: counters and lag add up, latency percentiles come from every partition's samples.
#[derive(Debug)]
pub struct ReportBuilder {
    report: Report,
    histograms: BTreeMap<String, (Histogram<u64>, Histogram<u64>)>,
}

impl ReportBuilder {
    /// An empty report of `group`.
    pub fn new(group: &str) -> Self {
        Self {
            report: Report {
                group: group.to_owned(),
                ..Report::default()
            },
            histograms: BTreeMap::new(),
        }
    }

    /// Adds what the group did on `stream` (one partition, or the whole unpartitioned stream).
    pub async fn add_partition<C>(
        &mut self,
        connection: &mut C,
        stream: &str,
    ) -> redis::RedisResult<()>
    where
        C: ConnectionLike + Send + Sync,
    {
        let group = self.report.group.clone();
        let keys = AnalysisKeys::new(stream);
        let counters: HashMap<String, u64> = connection
            .hgetall(evstream::consume::ConsumeKeys::new(stream, &group).counters)
            .await?;
        let counter = |name: &str| counters.get(name).copied().unwrap_or(0);
        let report = &mut self.report;
        report.processed += counter("processed");
        report.duplicates_skipped += counter("duplicates_skipped");
        report.orders += counter("orders");
        report.fills += counter("fills");
        report.signals += counter("signals");
        report.alerts += counter("alerts");
        report.dead_lettered += counter("dead_lettered");
        if let Ok(groups) = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async::<Vec<HashMap<String, Value>>>(connection)
            .await
        {
            let int = |v: Option<&Value>| match v {
                Some(Value::Int(i)) => u64::try_from(*i).ok(),
                _ => None,
            };
            if let Some(info) = groups.iter().find(
                |g| matches!(g.get("name"), Some(Value::BulkString(n)) if n == group.as_bytes()),
            ) {
                let add = |total: Option<u64>, part: Option<u64>| match (total, part) {
                    (Some(t), Some(p)) => Some(t + p),
                    (t, p) => t.or(p),
                };
                report.lag = add(report.lag, int(info.get("lag")));
                report.pending = add(report.pending, int(info.get("pending")));
            }
        }
        let histograms = &mut self.histograms;
        let mut start = "-".to_owned();
        loop {
            let page: redis::streams::StreamRangeReply = connection
                .xrange_count(&keys.analysis, &start, "+", 10_000)
                .await?;
            let Some(last) = page.ids.last() else { break };
            start = format!("({}", last.id);
            for entry in &page.ids {
                for_each_latency(entry, |kind, symbol, latency| {
                    let (creation, fill) = histograms
                        .entry(symbol.to_owned())
                        .or_insert_with(|| (crate::histogram(), crate::histogram()));
                    match kind {
                        LatencyKind::Fill => fill,
                        LatencyKind::Creation => creation,
                    }
                    .saturating_record(latency.max(1));
                });
            }
            if page.ids.len() < 10_000 {
                break;
            }
        }
        Ok(())
    }

    /// The report.
    pub fn finish(self) -> Report {
        let mut report = self.report;
        report.symbols = self
            .histograms
            .into_iter()
            .map(|(symbol, (creation, fill))| {
                (
                    symbol,
                    SymbolReport {
                        creation_latency: Percentiles::of_nanos(&creation),
                        fill_latency: Percentiles::of_nanos(&fill),
                    },
                )
            })
            .collect();
        report
    }
}
