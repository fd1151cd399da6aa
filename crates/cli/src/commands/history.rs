//! `evstream tail`, `evstream trace` and `evstream export`: the stream and its archive as
//! one history.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use evstream::archive::{ParquetWriter, Record};
use evstream::error::ArchiveError;
use evstream::history::{self, Filter, Source, Step};
use evstream::Config;

use super::archive::archive_error;
use crate::args::{parse_duration, ExportArgs, ExportFormat, TailArgs, TraceArgs};

pub(crate) fn tail(config: &Config, args: &TailArgs) -> anyhow::Result<ExitCode> {
    let filter = Filter {
        event_types: args.event_type.clone(),
        correlation_id: args.correlation_id.clone(),
        producer_id: args.producer.clone(),
    };
    let since_ms = args
        .since
        .map(|d| unix_ms().saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
    let mut out = std::io::stdout().lock();
    let mut shown = 0u64;
    let mut write_error = None;
    let following = history::tail(
        config,
        &filter,
        since_ms,
        !args.no_follow,
        Duration::from_millis(100),
        |record| {
            let written = if args.json {
                serde_json::to_writer(&mut out, record)
                    .map_err(std::io::Error::from)
                    .and_then(|()| writeln!(out))
            } else {
                writeln!(out, "{}", line(record))
            };
            if let Err(error) = written {
                write_error = Some(error);
                return ControlFlow::Break(());
            }
            shown += 1;
            if args.count.is_some_and(|n| shown >= n) {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        },
    );
    let result = super::block_on(async {
        tokio::select! {
            result = following => Some(result),
            () = super::termination() => None,
        }
    })?;
    if let Some(result) = result {
        result.map_err(archive_error)?;
    }
    match write_error {
        // `evstream tail | head`: the reader went away, which is how it says "enough".
        Some(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
        Some(error) => return Err(error).context("cannot write to stdout"),
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn trace(config: &Config, args: &TraceArgs) -> anyhow::Result<ExitCode> {
    let archive = args.archive.clone().or_else(|| config.archive.dir.clone());
    let steps = super::block_on(history::trace(
        config,
        &args.correlation_id,
        archive.as_deref(),
    ))?
    .map_err(archive_error)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &serde_json::json!({ "events": steps }))?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    if steps.is_empty() {
        let searched = match &archive {
            Some(dir) => format!("the stream and the archive {}", dir.display()),
            None => "the stream (give --archive DIR to search the archive too)".to_owned(),
        };
        writeln!(
            out,
            "no event with correlation id {} in {searched}",
            args.correlation_id
        )?;
        return Ok(ExitCode::FAILURE);
    }
    for step in &steps {
        writeln!(out, "{}", step_line(step))?;
    }
    let (first, last) = (
        steps[0].record.time_ns(),
        steps[steps.len() - 1].record.time_ns(),
    );
    writeln!(
        out,
        "{} events over {}",
        steps.len(),
        duration(last.saturating_sub(first))
    )?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn export(config: &Config, args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let from_ms = parse_time(&args.from).context("--from")?;
    let to_ms = parse_time(&args.to).context("--to")?;
    anyhow::ensure!(from_ms < to_ms, "--from must be before --to");
    let archive = args.archive.clone().or_else(|| config.archive.dir.clone());
    let export = |each: &mut dyn FnMut(Record) -> Result<(), ArchiveError>| {
        super::block_on(history::export(
            config,
            archive.as_deref(),
            from_ms,
            to_ms,
            args.dead_letters,
            each,
        ))?
        .map_err(archive_error)
    };
    let exported = match args.format {
        ExportFormat::Parquet => {
            let path = args
                .output
                .as_ref()
                .context("--format parquet writes a file: give --output FILE")?;
            let mut writer =
                ParquetWriter::create(path, &config.redis.stream).map_err(archive_error)?;
            let count = export(&mut |record| writer.push(record))?;
            writer.finish().map_err(archive_error)?;
            count
        }
        ExportFormat::Jsonl => {
            let mut out: Box<dyn Write> = match &args.output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let target = args
                .output
                .clone()
                .unwrap_or_else(|| PathBuf::from("stdout"));
            let count = export(&mut |record| {
                serde_json::to_writer(&mut out, &record)
                    .map_err(std::io::Error::from)
                    .and_then(|()| writeln!(out))
                    .map_err(|source| ArchiveError::Io {
                        what: "writing",
                        path: target.clone(),
                        source,
                    })
            })?;
            out.flush().context("cannot write the export")?;
            count
        }
    };
    eprintln!(
        "exported {exported} {}",
        if args.dead_letters {
            "dead letters"
        } else {
            "events"
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// A time of `--from`/`--to` in Unix milliseconds: `now`, RFC 3339, or a duration ago.
fn parse_time(text: &str) -> anyhow::Result<u64> {
    if text == "now" {
        return Ok(unix_ms());
    }
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        let since = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .context("a time before 1970")?;
        return Ok(u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
    }
    let ago = parse_duration(text).map_err(|_| {
        anyhow::anyhow!(
            "'{text}' is not a time: give now, an RFC 3339 time (2026-12-05T08:00:00Z) or a \
             duration ago (2h, 30m)"
        )
    })?;
    Ok(unix_ms().saturating_sub(u64::try_from(ago.as_millis()).unwrap_or(u64::MAX)))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `2026-12-05T08:02:06.123456789Z` of a record's time.
fn time(record: &Record) -> String {
    let ns = u64::try_from(record.time_ns()).unwrap_or(0);
    humantime::format_rfc3339_nanos(SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

fn or_dash(value: Option<&str>) -> &str {
    value.unwrap_or("-")
}

/// A record as `tail` prints it.
fn line(record: &Record) -> String {
    format!(
        "{}  {} {}  {}  {}#{}  {}",
        time(record),
        or_dash(record.event_type.as_deref()),
        or_dash(record.version.as_deref()),
        or_dash(record.correlation_id.as_deref()),
        or_dash(record.producer_id.as_deref()),
        record.sequence.map_or("-".to_owned(), |s| s.to_string()),
        or_dash(record.data.as_deref()),
    )
}

/// A step as `trace` prints it: the tail line with the time since the previous step and
/// where it was read.
fn step_line(step: &Step) -> String {
    let record = &step.record;
    let since = step
        .since_previous_ns
        .map_or_else(|| "start".to_owned(), |ns| format!("+{}", duration(ns)));
    let source = match (step.source, record.kind) {
        (_, evstream::archive::Kind::DeadLetters) => "dead letter",
        (Source::Stream, _) => "stream",
        (Source::Archive, _) => "archive",
    };
    format!(
        "{}  {:>12}  {} {}  {}#{}  [{source}]  {}",
        time(record),
        since,
        or_dash(record.event_type.as_deref()),
        or_dash(record.version.as_deref()),
        or_dash(record.producer_id.as_deref()),
        record.sequence.map_or("-".to_owned(), |s| s.to_string()),
        or_dash(record.data.as_deref()),
    )
}

/// `1.234 ms`, `12.5 s`, `850 ns`.
fn duration(ns: i64) -> String {
    let abs = ns.unsigned_abs() as f64;
    let sign = if ns < 0 { "-" } else { "" };
    if abs < 1_000.0 {
        format!("{sign}{abs} ns")
    } else if abs < 1_000_000.0 {
        format!("{sign}{:.1} µs", abs / 1e3)
    } else if abs < 1_000_000_000.0 {
        format!("{sign}{:.3} ms", abs / 1e6)
    } else {
        format!("{sign}{:.3} s", abs / 1e9)
    }
}
