//! `evstream status`: the stream, Redis memory, groups and consumers, dead letters and the
//! alert rules evaluated on what Redis says now ([`evstream::status`]). Tables for people,
//! `--json` for scripts.

use std::io::Write;
use std::process::ExitCode;

use evstream::ops::alerts::Severity;
use evstream::ops::observe::EvictionRisk;
use evstream::ops::trim::MemoryLevel;
use evstream::status::{Status, StreamStatus, DLQ_SCAN_LIMIT};
use evstream::{Config, PartitionError};

use crate::args::StatusArgs;

pub(crate) fn run(config: &Config, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let total = super::block_on(StreamStatus::read(config))?.map_err(|error| match error {
        PartitionError::Read { stream, source } => {
            anyhow::Error::new(source).context(format!("cannot read the status of {stream}"))
        }
        error => super::partition_error(error),
    })?;
    let mut out = std::io::stdout().lock();
    if config.redis.partitions.is_none() {
        let status = &total.partitions[0];
        if args.json {
            serde_json::to_writer_pretty(&mut out, status)?;
            writeln!(out)?;
        } else {
            write_text(status, &mut out)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
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
            write_text(status, &mut out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The status of one stream key as a table.
fn write_text(status: &Status, out: &mut impl Write) -> std::io::Result<()> {
    let o = &status.observation;
    let r = &o.redis;
    writeln!(out, "redis        {} (Redis {})", status.redis, r.version)?;
    let memory = match r.used_ratio() {
        Some(ratio) => format!(
            "{} of {} ({:.1}%, {})",
            bytes(r.used_memory),
            bytes(r.maxmemory),
            ratio * 100.0,
            match status.memory_level {
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
    let policy_note = match status.eviction_risk {
        EvictionRisk::None => "",
        EvictionRisk::HighWaterMarks => "  UNSAFE: can evict duplicate protection",
        EvictionRisk::Stream => "  UNSAFE: can evict the stream",
    };
    writeln!(out, "eviction     {}{policy_note}", r.maxmemory_policy)?;
    match &o.stream {
        None => writeln!(out, "stream       {} does not exist yet", status.stream)?,
        Some(s) => {
            writeln!(
                out,
                "stream       {}: {} entries, {} added ever",
                status.stream, s.length, s.entries_added
            )?;
            if let (Some(first), Some(last)) = (status.first_entry_age_s, status.last_entry_age_s) {
                writeln!(
                    out,
                    "             oldest {} ago, newest {} ago",
                    age(first),
                    age(last)
                )?;
            }
        }
    }
    if !status.retention.held_back_by.is_empty() {
        writeln!(
            out,
            "retention    held back by group(s) {} (entries not read or not acknowledged)",
            status.retention.held_back_by.join(", ")
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
        evstream::keys::dead_letters(&status.stream),
        o.dlq.entries_added
    )?;
    for (reason, n) in &status.dead_letters_by_reason {
        writeln!(out, "  {reason:<30} {n:>10}")?;
    }
    if !status.dead_letters_all_counted {
        writeln!(out, "  (reasons of the oldest {DLQ_SCAN_LIMIT} only)")?;
    }
    if o.dlq.length > 0 {
        writeln!(
            out,
            "  (see them: evstream dlq list; put them back once fixed: evstream dlq replay)"
        )?;
    }
    if status.alerts.is_empty() {
        writeln!(out, "\nalerts       none")?;
    } else {
        writeln!(out, "\nalerts")?;
        for a in &status.alerts {
            let level = match a.severity {
                Severity::Critical => "CRITICAL",
                Severity::Warning => "WARNING ",
            };
            writeln!(out, "  {level} {:<22} {}", a.alert, a.message)?;
        }
    }
    Ok(())
}

/// `1.5 GiB`.
pub(super) fn bytes(n: u64) -> String {
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
