//! `evstream status`: the stream, Redis memory, groups and consumers, dead letters and the
//! alert rules evaluated on what Redis says now. Tables for people, `--json` for scripts.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use evstream::ops::alerts::{self, Finding, Inputs, Severity};
use evstream::ops::observe::{self, EvictionRisk, Observation};
use evstream::ops::trim::{self, MemoryLevel, TrimPlan};
use evstream::Config;
use serde::Serialize;

use crate::args::StatusArgs;

/// Dead letters read to count them by reason; beyond, the counts say "of the oldest N".
const DLQ_SCAN_LIMIT: u64 = 100_000;

/// Everything `status` shows.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    /// The stream's key (`stream` is the observation of it).
    #[serde(rename = "stream_key")]
    pub(crate) stream: String,
    /// The Redis URL, password hidden (`redis` is the observation of the server).
    #[serde(rename = "redis_url")]
    pub(crate) redis: String,
    /// With Redis Cluster: the partition's slot and the primary that holds it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cluster: Option<ClusterPlace>,
    #[serde(flatten)]
    pub(crate) observation: Observation,
    pub(crate) memory_level: MemoryLevel,
    pub(crate) eviction_risk: EvictionRisk,
    pub(crate) first_entry_age_s: Option<f64>,
    pub(crate) last_entry_age_s: Option<f64>,
    /// What retention would trim now (the ops loop does it).
    pub(crate) retention: TrimPlan,
    /// Dead letters by `stage/reason`.
    pub(crate) dead_letters_by_reason: BTreeMap<String, u64>,
    /// Whether every dead letter was counted (false beyond 100,000).
    pub(crate) dead_letters_all_counted: bool,
    /// Alert rules evaluated on this observation (Redis-side rules only: a process's ring
    /// and shipper are seen by its own ops loop and /health).
    pub(crate) alerts: Vec<Finding>,
}

impl Status {
    /// Reads the status of `config.redis.stream`.
    pub(crate) async fn read(
        config: &Config,
        connection: &mut redis::aio::MultiplexedConnection,
    ) -> anyhow::Result<Self> {
        let stream = &config.redis.stream;
        let timeout = Duration::from_secs(5);
        let count_above = Some(config.ops.max_len).filter(|&n| n > 0);
        let observation = observe::observe(connection, stream, count_above, timeout).await?;
        let (counts, _) = observe::dead_letters_by_reason(
            connection,
            &evstream::keys::dead_letters(stream),
            None,
            DLQ_SCAN_LIMIT,
            timeout,
        )
        .await?;
        let counted: u64 = counts.values().sum();
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let age = |id: Option<observe::EntryId>| {
            id.map(|id| now_ms.saturating_sub(id.ms) as f64 / 1000.0)
        };
        let memory_level = MemoryLevel::of(observation.redis.used_ratio(), &config.ops);
        let alerts = alerts::evaluate(
            &config.ops,
            &Inputs {
                observation: Some(&observation),
                ..Inputs::default()
            },
        );
        Ok(Self {
            stream: stream.clone(),
            redis: evstream::redis::redact_url(&config.redis.url),
            cluster: None,
            memory_level,
            eviction_risk: observation.redis.eviction_risk(),
            first_entry_age_s: age(observation.stream.as_ref().and_then(|s| s.first_id)),
            last_entry_age_s: age(observation.stream.as_ref().and_then(|s| s.last_id)),
            retention: trim::plan(&config.ops, &observation, memory_level, now_ms),
            dead_letters_by_reason: counts
                .into_iter()
                .map(|((stage, reason), n)| (format!("{stage}/{reason}"), n))
                .collect(),
            dead_letters_all_counted: counted >= observation.dlq.length,
            alerts,
            observation,
        })
    }

    pub(crate) fn write_text(&self, out: &mut impl Write) -> std::io::Result<()> {
        let o = &self.observation;
        let r = &o.redis;
        writeln!(out, "redis        {} (Redis {})", self.redis, r.version)?;
        let memory = match r.used_ratio() {
            Some(ratio) => format!(
                "{} of {} ({:.1}%, {})",
                bytes(r.used_memory),
                bytes(r.maxmemory),
                ratio * 100.0,
                match self.memory_level {
                    MemoryLevel::Critical => "CRITICAL",
                    MemoryLevel::Warning => "WARNING",
                    _ => "ok",
                }
            ),
            None => format!("{} (no maxmemory set)", bytes(r.used_memory)),
        };
        writeln!(out, "memory       {memory}")?;
        writeln!(
            out,
            "fragment.    allocator {:.2}, rss {:.2}, activedefrag {}",
            r.allocator_frag_ratio,
            r.mem_fragmentation_ratio,
            match r.activedefrag {
                Some(true) => "on",
                Some(false) => "off",
                None => "unknown",
            }
        )?;
        let policy_note = match self.eviction_risk {
            EvictionRisk::None => "",
            EvictionRisk::HighWaterMarks => "  UNSAFE: can evict duplicate protection",
            EvictionRisk::Stream => "  UNSAFE: can evict the stream",
        };
        writeln!(out, "eviction     {}{policy_note}", r.maxmemory_policy)?;
        match &o.stream {
            None => writeln!(out, "stream       {} does not exist yet", self.stream)?,
            Some(s) => {
                writeln!(
                    out,
                    "stream       {}: {} entries, {} added ever",
                    self.stream, s.length, s.entries_added
                )?;
                if let (Some(first), Some(last)) = (self.first_entry_age_s, self.last_entry_age_s) {
                    writeln!(
                        out,
                        "             oldest {} ago, newest {} ago",
                        age(first),
                        age(last)
                    )?;
                }
            }
        }
        if !self.retention.held_back_by.is_empty() {
            writeln!(
                out,
                "retention    held back by group(s) {} (entries not read or not acknowledged)",
                self.retention.held_back_by.join(", ")
            )?;
        }
        if o.groups.is_empty() {
            writeln!(out, "groups       none")?;
        } else {
            writeln!(
                out,
                "\n{:<24} {:>9} {:>10} {:>10}  LAST DELIVERED",
                "GROUP", "CONSUMERS", "PENDING", "LAG"
            )?;
            for g in &o.groups {
                writeln!(
                    out,
                    "{:<24} {:>9} {:>10} {:>10}  {}",
                    g.name,
                    g.consumers.len(),
                    g.pending,
                    g.lag.map_or_else(|| "?".to_owned(), |l| l.to_string()),
                    g.last_delivered
                )?;
                for c in &g.consumers {
                    writeln!(
                        out,
                        "  {:<22} {:>9} {:>10}  idle {}",
                        c.name,
                        "",
                        c.pending,
                        age(c.idle_ms as f64 / 1000.0)
                    )?;
                }
            }
        }
        writeln!(
            out,
            "\ndead letters {} in {} ({} ever)",
            o.dlq.length,
            evstream::keys::dead_letters(&self.stream),
            o.dlq.entries_added
        )?;
        for (reason, n) in &self.dead_letters_by_reason {
            writeln!(out, "  {reason:<30} {n:>10}")?;
        }
        if !self.dead_letters_all_counted {
            writeln!(out, "  (reasons of the oldest {DLQ_SCAN_LIMIT} only)")?;
        }
        if o.dlq.length > 0 {
            writeln!(
                out,
                "  (see them: evstream dlq list; put them back once fixed: evstream dlq replay)"
            )?;
        }
        if self.alerts.is_empty() {
            writeln!(out, "\nalerts       none")?;
        } else {
            writeln!(out, "\nalerts")?;
            for a in &self.alerts {
                let level = match a.severity {
                    Severity::Critical => "CRITICAL",
                    Severity::Warning => "WARNING ",
                };
                writeln!(out, "  {level} {:<22} {}", a.alert, a.message)?;
            }
        }
        Ok(())
    }
}

/// Where a partition lives in a Redis Cluster.
#[derive(Debug, Serialize)]
pub(crate) struct ClusterPlace {
    pub(crate) slot: u16,
    /// `host:port` of the primary.
    pub(crate) primary: String,
}

/// A partitioned stream's status: each partition's (each read from the node holding it) and
/// the totals.
#[derive(Debug, Serialize)]
struct Partitioned {
    stream: String,
    /// Entries in all partitions.
    length: u64,
    /// Dead letters in all partitions' dead letter streams.
    dlq_length: u64,
    /// Alert rules firing, over all partitions.
    alerts: usize,
    partitions: Vec<Status>,
}

pub(crate) fn run(config: &Config, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let mut statuses = Vec::new();
    for part in &config.partition_configs() {
        let mut status = super::with_redis(part, |mut connection| async move {
            Status::read(part, &mut connection).await
        })?
        .with_context(|| format!("cannot read the status of {}", part.redis.stream))?;
        if part.redis.url.starts_with("redis+cluster://") {
            status.cluster = Some(ClusterPlace {
                slot: evstream::redis::key_slot(&part.redis.stream),
                primary: part
                    .redis
                    .client()?
                    .get_connection_info()
                    .addr()
                    .to_string(),
            });
        }
        statuses.push(status);
    }
    let mut out = std::io::stdout().lock();
    if config.redis.partitions.is_none() {
        let status = &statuses[0];
        if args.json {
            serde_json::to_writer_pretty(&mut out, status)?;
            writeln!(out)?;
        } else {
            status.write_text(&mut out)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let total = Partitioned {
        stream: config.redis.stream.clone(),
        length: statuses
            .iter()
            .filter_map(|s| s.observation.stream.as_ref().map(|s| s.length))
            .sum(),
        dlq_length: statuses.iter().map(|s| s.observation.dlq.length).sum(),
        alerts: statuses.iter().map(|s| s.alerts.len()).sum(),
        partitions: statuses,
    };
    if args.json {
        serde_json::to_writer_pretty(&mut out, &total)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "stream       {} in {} partitions: {} entries, {} dead letters, {} alert(s)",
            total.stream,
            total.partitions.len(),
            total.length,
            total.dlq_length,
            total.alerts
        )?;
        for status in &total.partitions {
            match &status.cluster {
                Some(place) => writeln!(
                    out,
                    "\n== {} == slot {} on primary {}",
                    status.stream, place.slot, place.primary
                )?,
                None => writeln!(out, "\n== {} ==", status.stream)?,
            }
            status.write_text(&mut out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `1.5 GiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `3.2s`, `4m10s`, `2h05m`.
fn age(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{}h{:02}m", (s / 3600.0) as u64, (s % 3600.0 / 60.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(age(3.21), "3.2s");
        assert_eq!(age(250.0), "4m10s");
        assert_eq!(age(7500.0), "2h05m");
    }
}
