//! `evstream report`: what IntelliSense computed, read back from Redis.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use evstream::Config;

use crate::args::ReportArgs;

pub(crate) fn run(config: &Config, args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let group = args.group.as_deref().unwrap_or(&config.consume.group);
    let url = evstream::ship::redact_url(&config.redis.url);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(async {
        let client = redis::Client::open(config.redis.url.as_str())
            .with_context(|| format!("invalid Redis URL {url}"))?;
        let mut connection = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| anyhow::anyhow!("connecting to Redis at {url} took longer than 5 s"))?
        .with_context(|| {
            format!("cannot connect to Redis at {url}; is it running? (--redis-url)")
        })?;
        evstream_intellisense::read_report(&mut connection, &config.redis.stream, group)
            .await
            .with_context(|| format!("cannot read the results of group '{group}'"))
    })?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "IntelliSense results of group '{group}' on stream '{}'",
        config.redis.stream
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
                s.fill_latency.p50_ms,
                s.fill_latency.p99_ms,
                s.creation_latency.p50_ms,
                s.creation_latency.p99_ms
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
