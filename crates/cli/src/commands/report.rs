//! `evstream report`: what IntelliSense computed, read back from Redis.

use std::io::Write;
use std::process::ExitCode;

use evstream::Config;
use evstream_intellisense::percentiles::ms;

use crate::args::ReportArgs;

/// What IntelliSense computed for `group`, over every partition of the stream.
pub(crate) fn read_all(
    config: &Config,
    group: &str,
) -> anyhow::Result<evstream_intellisense::Report> {
    super::block_on(evstream_intellisense::read_partitions(config, group))?
        .map_err(super::partition_error)
}

pub(crate) fn run(config: &Config, args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let group = args.group.as_deref().unwrap_or(&config.consume.group);
    let report = read_all(config, group)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "IntelliSense results of group '{group}' on stream '{}'",
        super::stream_name(config)
    )?;
    let optional = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    for (name, value) in [
        ("processed", report.processed.to_string()),
        ("duplicates", report.duplicates_skipped.to_string()),
        ("orders", report.orders.to_string()),
        ("fills", report.fills.to_string()),
        ("signals", report.signals.to_string()),
        ("alerts", report.alerts.to_string()),
        ("dead letters", report.dead_lettered.to_string()),
        ("lag", optional(report.lag)),
        ("pending", optional(report.pending)),
    ] {
        writeln!(out, "{name:<13} {value:>12}")?;
    }
    if !report.symbols.is_empty() {
        writeln!(
            out,
            "\n{:<8} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "symbol", "fills", "fill p50", "fill p99", "create p50", "create p99"
        )?;
        for (symbol, s) in &report.symbols {
            writeln!(
                out,
                "{symbol:<8} {:>10} {:>8.3}ms {:>8.3}ms {:>8.3}ms {:>8.3}ms",
                s.fill_latency.count,
                ms(s.fill_latency.p50),
                ms(s.fill_latency.p99),
                ms(s.creation_latency.p50),
                ms(s.creation_latency.p99)
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
