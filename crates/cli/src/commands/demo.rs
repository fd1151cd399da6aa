//! `evstream demo`: a simulated market (see [`crate::market`]: quotes, orders, fills, cancels,
//! rejects, a slow venue, risky orders, all from `--seed`) published through the whole path
//! (ring → shipper → Redis stream → two IntelliSense consumers in one group), then the stream
//! read back and audited, and what IntelliSense found reported: latencies per symbol and the
//! alerts it raised.

mod findings;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use evstream::config::OpsConfig;
use evstream::consume::PartitionedConsumer;
use evstream::ops::alerts::FiringAlert;
use evstream::ops::{OpsState, PartitionedOpsLoop};
use evstream::publish::CaptureMonitor;
use evstream::ship::ShipperMonitor;
use evstream::{publish, ship, Config};
use evstream_intellisense::percentiles::{self, ms, Percentiles};
use evstream_intellisense::{IntelliSense, IntelliSenseConfig};
use serde::Serialize;

use self::findings::{AlertsFired, Findings, SymbolLatency};
use crate::args::{DemoArgs, MetricsArgs};
use crate::http::{self, Sources};
use crate::market::{Market, MarketSpec, SlowEpisode, Tally};
use crate::pipeline::{self, Delivery, Target};
use crate::report_html::{
    AppendLatency, MarketView, ProcessedProbe, Report as ReportPage, Sampler,
};

#[derive(Debug, Serialize)]
struct Summary {
    /// The market's seed: `--seed` replays the run.
    seed: u64,
    redis: String,
    stream: String,
    producer_id: String,
    duration_s: f64,
    refused: u64,
    #[serde(flatten)]
    delivery: Delivery,
    /// Alias of `delivered`: events the shipper appended to the stream.
    shipped: u64,
    #[serde(serialize_with = "percentiles::nanos")]
    publish_ns: Percentiles,
    /// The shipper's dead letters (`dead_letters`) by reason: refused before the stream
    /// (`ship.known_event_types`, strict validation), so never seen by the consumers; they
    /// wait in `<stream>:dlq` (`evstream dlq list`).
    dead_letters_by_reason: BTreeMap<String, u64>,
    /// Events whose effects the consumer group applied (exactly once each).
    processed: u64,
    /// Events the group acknowledged unhandled: types IntelliSense does not read
    /// (`OrderCancelled`, `OrderRejected`). With `processed`, every event that reached the
    /// stream.
    skipped: u64,
    /// What IntelliSense computed, read back from Redis.
    analysis: evstream_intellisense::Report,
    /// Publish → appended to the stream, from the entries read back (1 ms resolution).
    #[serde(serialize_with = "percentiles::millis")]
    append_latency_ms: Percentiles,
    /// Alerts of the ops loop still firing at the end.
    alerts_firing: Vec<FiringAlert>,
    /// What the simulated engine published, from its plan.
    market: MarketSummary,
    /// Fill and creation latency per symbol, as IntelliSense measured them.
    latency_by_symbol: BTreeMap<String, SymbolLatency>,
    /// The alerts IntelliSense raised (`<stream>:alerts`).
    intellisense_alerts: AlertsFired,
}

#[derive(Debug, Serialize)]
struct MarketSummary {
    #[serde(flatten)]
    tally: Tally,
    slow_venue_episode: SlowEpisode,
}

/// Two IntelliSense consumers of `intellisense_group`, each on a thread of its own (each one
/// consumer per partition of the stream).
struct Consumers {
    stop: tokio::sync::watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<evstream::consume::ConsumeReport>>,
}

impl Consumers {
    fn start(config: &Config) -> anyhow::Result<Self> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut threads = Vec::new();
        for name in ["demo-consumer-1", "demo-consumer-2"] {
            let analysis = Arc::default();
            let consumers = PartitionedConsumer::new(config, name, |part| {
                IntelliSense::new(&part.redis.stream, IntelliSenseConfig::default())
                    .with_analysis(Arc::clone(&analysis))
            })
            .context("cannot start the demo's consumers")?;
            let stats = consumers.stats();
            let mut stopped = stopped.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            threads.push(std::thread::spawn(move || {
                runtime.block_on(async move {
                    let stop = async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    let _ = consumers.run(stop).await;
                    stats.snapshot()
                })
            }));
        }
        Ok(Self { stop, threads })
    }

    /// Stops both and returns their summed `processed` and `skipped`.
    fn stop(self) -> (u64, u64) {
        let _ = self.stop.send(true);
        self.threads
            .into_iter()
            .filter_map(|t| t.join().ok())
            .fold((0, 0), |(p, s), r| (p + r.processed, s + r.skipped))
    }
}

/// The ops loop and /metrics + /health for the run, on a thread of their own.
struct Ops {
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
    /// One per partition.
    states: Vec<Arc<OpsState>>,
    served: Option<std::net::SocketAddr>,
}

impl Ops {
    /// `manage`: whether the loop may trim and remove consumers (only on the demo's own
    /// private Redis; a Redis the user gave is only observed).
    fn start(
        config: &Config,
        metrics: &MetricsArgs,
        capture: CaptureMonitor,
        shipper: ShipperMonitor,
        manage: bool,
    ) -> anyhow::Result<Self> {
        // One loop per partition; the first also watches this process's ring and shipper.
        let mut loops = PartitionedOpsLoop::new(config)
            .context("cannot start the ops loop")?
            .with_capture(capture.clone())
            .with_shipper(shipper.clone());
        if !manage {
            loops = loops.observe_only();
        }
        let states = loops.states();
        let sources = Sources {
            ops: states.clone(),
            capture: Some(capture),
            shipper: Some(shipper),
            consumer: None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (served_tx, served_rx) = std::sync::mpsc::channel();
        let metrics = metrics.clone();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let served = http::start(&metrics, sources).await;
                let ok = served.is_ok();
                let _ = served_tx.send(served);
                if ok {
                    let stop = async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    let _ = loops.run(stop).await;
                }
            });
        });
        let served = served_rx
            .recv()
            .context("the ops thread ended before serving /metrics")??;
        Ok(Self {
            stop,
            thread,
            states,
            served,
        })
    }

    /// Stops the loop and returns the alerts firing at the end.
    fn stop(self) -> Vec<FiringAlert> {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
        self.states
            .iter()
            .flat_map(|state| state.snapshot().firing)
            .collect()
    }
}

/// Creates the demo's group at the end of every partition (and the stream, if missing),
/// unless it exists.
fn create_groups_at_end(config: &Config) -> anyhow::Result<()> {
    for part in config.partition_configs() {
        let mut connection = part
            .redis
            .client()?
            .get_connection_with_timeout(Duration::from_secs(3))?;
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&part.redis.stream)
            .arg(&part.consume.group)
            .arg("$")
            .arg("MKSTREAM")
            .query(&mut connection);
        match created {
            Err(error) if error.code() != Some("BUSYGROUP") => {
                return Err(anyhow::Error::new(error).context(format!(
                    "cannot create the group {} on {}",
                    part.consume.group, part.redis.stream
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Reads how many entries the demo group has handled: its `processed` and `skipped`
/// counters (types IntelliSense does not read are acknowledged unhandled), summed over
/// partitions, over connections kept for the run (one per partition: on a cluster, each to
/// the partition's primary).
struct GroupCounter {
    counters: Vec<(redis::Connection, String)>,
}

impl GroupCounter {
    fn open(config: &Config) -> anyhow::Result<Self> {
        let counters = config
            .partition_configs()
            .iter()
            .map(|part| {
                let connection = part
                    .redis
                    .client()?
                    .get_connection_with_timeout(Duration::from_secs(3))?;
                let key =
                    evstream::consume::ConsumeKeys::new(&part.redis.stream, &part.consume.group)
                        .counters;
                Ok((connection, key))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { counters })
    }

    fn handled(&mut self) -> anyhow::Result<u64> {
        let mut total = 0;
        for (connection, key) in &mut self.counters {
            let (processed, skipped): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
                .arg(&*key)
                .arg("processed")
                .arg("skipped")
                .query(connection)?;
            total += processed.unwrap_or(0) + skipped.unwrap_or(0);
        }
        Ok(total)
    }

    /// Waits until the counter reaches `target` (or `timeout` passes).
    fn wait_for(&mut self, target: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let handled = self.handled()?;
            if handled >= target {
                return Ok(());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the consumers fell behind: the group handled {handled} entries, \
                 {target} expected after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub(crate) fn run(
    config: &Config,
    given_url: Option<&str>,
    args: &DemoArgs,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.producers > 0, "--producers must be at least 1");
    let seed = args.seed.unwrap_or_else(clock_seed);
    let market = Market::plan(&MarketSpec {
        seed,
        rate: args.rate,
        duration: args.duration,
        producers: args.producers,
    });
    let planned = market.tally();
    let slow_venue_episode = market.slow;
    let target = Target::resolve(config, given_url)?;
    let mut config = config.clone();
    target.configure(&mut config);
    let (publisher, receiver) =
        publish::channel(&config).context("cannot build the capture ring")?;
    let producer_id = publisher.producer_id().to_owned();
    let shipper = ship::spawn(&config, receiver).context("cannot start the shipper")?;
    if config.ops == OpsConfig::default() {
        // A short run: look often.
        config.ops.alert_interval_ms = 1000;
        config.ops.interval_ms = 5000;
    }
    let ops = Ops::start(
        &config,
        &args.metrics,
        publisher.monitor(),
        shipper.monitor(),
        target.private.is_some(),
    )?;
    if target.private.is_none() {
        // A shared Redis may hold older entries: the demo's group starts at the end, created
        // here, before the engine starts (by the consumer threads, on a busy machine, it
        // could come after the engine's first events, which the group would never see).
        config.consume.start_id = "$".to_owned();
        create_groups_at_end(&config)?;
    }
    let mut counter = GroupCounter::open(&config)?;
    let handled_before = counter.handled()?;
    let consumers = Consumers::start(&config)?;
    if !args.json {
        eprintln!(
            "evstream demo (seed {seed}): {} engine threads, {} events/s for {:?} ({} orders) \
             into stream '{}' on {}",
            args.producers,
            args.rate,
            args.duration,
            planned.orders,
            super::stream_name(&config),
            target.describe()
        );
        if let Some(addr) = ops.served {
            eprintln!("metrics on http://{addr}/metrics, health on http://{addr}/health");
        }
    }
    let mut group = GroupCounter::open(&config)?;
    let probe: ProcessedProbe = Box::new(move || {
        group
            .handled()
            .ok()
            .map(|p| p.saturating_sub(handled_before))
    });
    let sampler = Sampler::start(
        Duration::from_millis(250),
        publisher.monitor(),
        shipper.monitor(),
        Some(probe),
        !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    let started_wall = SystemTime::now();
    let report = market.run(&publisher);
    drop(publisher);
    pipeline::wait_until_shipped(&shipper, report.published, Duration::from_secs(30))?;
    let dead_letters_by_reason = shipper.health().dead_letters;
    let shutdown = shipper.shutdown(Duration::from_secs(30));
    // The shipper's dead letters never reach the stream: the consumers see the rest.
    let reached_stream = report.published.saturating_sub(shutdown.dead_lettered);
    let waited = counter.wait_for(handled_before + reached_stream, Duration::from_secs(60));
    let (processed, skipped) = consumers.stop();
    let alerts_firing = ops.stop();
    let samples = sampler.stop();
    waited?;
    let analysis = super::report::read_all(&config, &config.consume.group)?;
    let findings = Findings::read(&config, started_wall)?;
    let mut append_latency = AppendLatency::new(started_wall);
    let audit = pipeline::audit(&config, &target.url, |entry, data| {
        if let Some(timestamp_ns) = entry.get::<u64>("timestamp_ns") {
            append_latency.record(&entry.id, timestamp_ns);
        }
        serde_json::from_slice::<serde_json::Value>(data).is_ok()
    })?;
    let delivery = Delivery::measure(report.published, &producer_id, &audit, &shutdown);
    let clean = delivery.is_clean() && processed + skipped >= reached_stream;
    let summary = Summary {
        seed,
        redis: target.describe(),
        stream: config.redis.stream.clone(),
        producer_id,
        duration_s: report.elapsed.as_secs_f64(),
        refused: report.refused,
        shipped: delivery.delivered,
        delivery,
        publish_ns: Percentiles::of_nanos(&report.latency_ns),
        dead_letters_by_reason,
        processed,
        skipped,
        analysis,
        append_latency_ms: append_latency.summary(),
        alerts_firing,
        market: MarketSummary {
            tally: planned,
            slow_venue_episode,
        },
        latency_by_symbol: findings.latency_by_symbol(),
        intellisense_alerts: findings.alerts_fired(),
    };
    if let Some(path) = &args.report {
        ReportPage {
            title: "evstream demo",
            summary: &serde_json::to_value(&summary)?,
            publish_ns: &report.latency_ns,
            samples: &samples,
            append_latency: &append_latency,
            market: Some(market_view(
                &findings,
                &summary.intellisense_alerts,
                started_wall,
            )),
        }
        .write(path)?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        write_text(&summary, args, &mut out)?;
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A seed when none was given: the clock's nanoseconds (printed, so the run can be replayed).
fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A duration as `--duration` reads it back: `90s`, or `1500ms` with a fraction.
fn replayable(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// The summary for people.
fn write_text(summary: &Summary, args: &DemoArgs, out: &mut impl Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "{:<13} {:>12}  (replay: evstream demo --seed {} --rate {} --duration {} --producers {})",
        "seed",
        summary.seed,
        summary.seed,
        args.rate,
        replayable(args.duration),
        args.producers
    )?;
    writeln!(out, "{:<13} {:>12}", "refused", summary.refused)?;
    summary.delivery.write_text(out)?;
    for (reason, count) in &summary.dead_letters_by_reason {
        writeln!(
            out,
            "{:<13} {count:>12}  {reason} (refused by the shipper, in {}: \
             `evstream dlq list`)",
            "dead letter",
            evstream::keys::dead_letters(&summary.stream)
        )?;
    }
    pipeline::write_percentiles_ns("publish", &summary.publish_ns, out)?;
    let l = &summary.append_latency_ms;
    writeln!(
        out,
        "publish→stream p50 {:.0} ms  p99 {:.0} ms  p99.9 {:.0} ms  max {:.0} ms",
        ms(l.p50),
        ms(l.p99),
        ms(l.p999),
        ms(l.max)
    )?;
    let a = &summary.analysis;
    writeln!(
        out,
        "{:<13} {:>12}  (2 IntelliSense consumers, group {})",
        "processed", summary.processed, a.group
    )?;
    writeln!(
        out,
        "{:<13} {:>12}  (acknowledged unhandled: cancels and rejects)",
        "skipped", summary.skipped
    )?;
    for alert in &summary.alerts_firing {
        writeln!(
            out,
            "{:<13} {} {}: {}",
            "ops alert",
            alert.severity.as_str(),
            alert.alert,
            alert.message
        )?;
    }

    let m = &summary.market.tally;
    let slow = &summary.market.slow_venue_episode;
    writeln!(out, "\nThe market (what the engine published)")?;
    writeln!(
        out,
        "{:<13} {:>12}  ({:.1} per order)",
        "market data",
        m.market_data,
        m.market_data as f64 / m.orders.max(1) as f64
    )?;
    writeln!(out, "{:<13} {:>12}", "orders", m.orders)?;
    writeln!(
        out,
        "{:<13} {:>12}  ({} of them partial)",
        "fills", m.fills, m.partial_fills
    )?;
    for (label, value, note) in [
        ("filled", m.filled, "orders filled completely".to_owned()),
        (
            "cancelled",
            m.cancelled,
            "some after partial fills".to_owned(),
        ),
        ("rejected", m.rejected, "by the venue".to_owned()),
        (
            "open",
            m.open,
            "resting on the book, never filled".to_owned(),
        ),
        ("risky", m.risky, "notional above the limit".to_owned()),
        (
            "slow venue",
            m.slow_venue,
            format!(
                "orders on {} while it was slow, {:.2}-{:.2} s into the run",
                slow.venue, slow.from_s, slow.to_s
            ),
        ),
    ] {
        writeln!(out, "{label:<13} {value:>12}  ({note})")?;
    }

    writeln!(
        out,
        "\nWhat IntelliSense measured: {} orders, {} fills, {} alerts",
        a.orders, a.fills, a.alerts
    )?;
    writeln!(
        out,
        "{:<8} {:>7} {:>9} {:>9} {:>9} {:>9}  {:>13} {:>9}",
        "latency", "n", "fill p50", "p90", "p99", "max", "creation p50", "p99"
    )?;
    for (symbol, s) in &summary.latency_by_symbol {
        writeln!(
            out,
            "{symbol:<8} {:>7} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7.1}ms  {:>11.3}ms {:>7.3}ms",
            s.fill.count,
            s.fill.p50_ms,
            s.fill.p90_ms,
            s.fill.p99_ms,
            s.fill.max_ms,
            s.creation.p50_ms,
            s.creation.p99_ms
        )?;
    }
    let fired = &summary.intellisense_alerts;
    let counts: Vec<String> = fired
        .by_kind
        .iter()
        .flat_map(|(kind, levels)| {
            levels
                .iter()
                .map(move |(level, n)| format!("{kind} {level} {n}"))
        })
        .collect();
    writeln!(
        out,
        "{:<13} {:>12}  ({})",
        "alerts fired",
        fired.total,
        if counts.is_empty() {
            "none".to_owned()
        } else {
            counts.join(", ")
        }
    )?;
    for alert in &fired.examples {
        writeln!(
            out,
            "  {} {} {} {}: {}",
            alert.kind, alert.level, alert.correlation_id, alert.symbol, alert.message
        )?;
    }
    if let Some(path) = &args.report {
        writeln!(out, "{:<13} {}", "report", path.display())?;
    }
    Ok(())
}

/// What the report page draws of IntelliSense's findings.
fn market_view<'a>(
    findings: &'a Findings,
    fired: &AlertsFired,
    started: SystemTime,
) -> MarketView<'a> {
    let started_ms = started
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let example = |kind: &str, level: &str| {
        fired
            .examples
            .iter()
            .chain(&findings.alerts)
            .find(|a| a.kind == kind && a.level == level)
            .map(|a| format!("{} {}: {}", a.correlation_id, a.symbol, a.message))
            .unwrap_or_default()
    };
    MarketView {
        fill_latency: findings
            .symbols
            .iter()
            .map(|(symbol, h)| (symbol.as_str(), &h.fill))
            .collect(),
        fill_alert_ms: IntelliSenseConfig::default().fill_alert_ms,
        alerts: findings
            .alerts
            .iter()
            .map(|a| {
                let at_s = a.at_ms.saturating_sub(started_ms) as f64 / 1e3;
                (at_s, format!("{} {}", a.kind, a.level))
            })
            .collect(),
        alert_rows: fired
            .by_kind
            .iter()
            .flat_map(|(kind, levels)| {
                levels
                    .iter()
                    .map(move |(level, n)| (format!("{kind} {level}"), *n, example(kind, level)))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_command_reads_its_duration_back() {
        for duration in [
            Duration::from_secs(10),
            Duration::from_secs(90),
            Duration::from_millis(1500),
            Duration::from_millis(250),
        ] {
            let text = replayable(duration);
            assert_eq!(crate::args::parse_duration(&text), Ok(duration), "{text}");
        }
    }
}
