//! `evstream demo`: a simulated trading engine publishing order lifecycles through the whole
//! path (ring → shipper → Redis stream → two IntelliSense consumers in one group), then the
//! stream read back and audited, and the analysis reported.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

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

use crate::args::{DemoArgs, MetricsArgs};
use crate::engine::{self, EngineSpec};
use crate::http::{self, Sources};
use crate::pipeline::{self, Delivery, Target};
use crate::report_html::{AppendLatency, ProcessedProbe, Report as ReportPage, Sampler};

#[derive(Debug, Serialize)]
struct Summary {
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
    /// Events whose effects the consumer group applied (exactly once each): every event
    /// that reached the stream.
    processed: u64,
    /// What IntelliSense computed, read back from Redis.
    analysis: evstream_intellisense::Report,
    /// Publish → appended to the stream, from the entries read back (1 ms resolution).
    #[serde(serialize_with = "percentiles::millis")]
    append_latency_ms: Percentiles,
    /// Alerts of the ops loop still firing at the end.
    alerts_firing: Vec<FiringAlert>,
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

    /// Stops both and returns their summed `processed`.
    fn stop(self) -> u64 {
        let _ = self.stop.send(true);
        self.threads
            .into_iter()
            .filter_map(|t| t.join().ok())
            .map(|r| r.processed)
            .sum()
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

/// Reads the demo group's `processed` counter (summed over partitions), over connections
/// kept for the run (one per partition: on a cluster, each to the partition's primary).
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

    fn processed(&mut self) -> anyhow::Result<u64> {
        let mut total = 0;
        for (connection, key) in &mut self.counters {
            let processed: Option<u64> = redis::cmd("HGET")
                .arg(&*key)
                .arg("processed")
                .query(connection)?;
            total += processed.unwrap_or(0);
        }
        Ok(total)
    }

    /// Waits until the counter reaches `target` (or `timeout` passes).
    fn wait_for(&mut self, target: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let processed = self.processed()?;
            if processed >= target {
                return Ok(());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the consumers fell behind: the group's processed counter is {processed}, \
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
        // A shared Redis may hold older entries: the demo's group starts at the end.
        config.consume.start_id = "$".to_owned();
    }
    let mut counter = GroupCounter::open(&config)?;
    let processed_before = counter.processed()?;
    let consumers = Consumers::start(&config)?;
    if !args.json {
        eprintln!(
            "evstream demo: {} engine threads, {} events/s for {:?} into stream '{}' on {}",
            args.producers,
            args.rate,
            args.duration,
            super::stream_name(&config),
            target.describe()
        );
        if let Some(addr) = ops.served {
            eprintln!("metrics on http://{addr}/metrics, health on http://{addr}/health");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut group = GroupCounter::open(&config)?;
    let probe: ProcessedProbe = Box::new(move || {
        group
            .processed()
            .ok()
            .map(|p| p.saturating_sub(processed_before))
    });
    let sampler = Sampler::start(
        Duration::from_millis(250),
        publisher.monitor(),
        shipper.monitor(),
        Some(probe),
        !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    let started_wall = std::time::SystemTime::now();
    let spec = EngineSpec {
        rate: Some(args.rate),
        producers: args.producers,
        duration: args.duration,
        max_events_per_producer: None,
    };
    let report = engine::run(&publisher, spec, &stop);
    drop(publisher);
    pipeline::wait_until_shipped(&shipper, report.published, Duration::from_secs(30))?;
    let dead_letters_by_reason = shipper.health().dead_letters;
    let shutdown = shipper.shutdown(Duration::from_secs(30));
    // The shipper's dead letters never reach the stream: the consumers see the rest.
    let reached_stream = report.published.saturating_sub(shutdown.dead_lettered);
    let waited = counter.wait_for(processed_before + reached_stream, Duration::from_secs(60));
    let processed = consumers.stop();
    let alerts_firing = ops.stop();
    let samples = sampler.stop();
    waited?;
    let analysis = super::report::read_all(&config, &config.consume.group)?;
    let mut append_latency = AppendLatency::new(started_wall);
    let audit = pipeline::audit(&config, &target.url, |entry, data| {
        if let Some(timestamp_ns) = entry.get::<u64>("timestamp_ns") {
            append_latency.record(&entry.id, timestamp_ns);
        }
        serde_json::from_slice::<serde_json::Value>(data).is_ok()
    })?;
    let delivery = Delivery::measure(report.published, &producer_id, &audit, &shutdown);
    let clean = delivery.is_clean() && processed >= reached_stream;
    let summary = Summary {
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
        analysis,
        append_latency_ms: append_latency.summary(),
        alerts_firing,
    };
    if let Some(path) = &args.report {
        ReportPage {
            title: "evstream demo",
            summary: &serde_json::to_value(&summary)?,
            publish_ns: &report.latency_ns,
            samples: &samples,
            append_latency: &append_latency,
        }
        .write(path)?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{:<13} {:>12}", "refused", summary.refused)?;
        summary.delivery.write_text(&mut out)?;
        for (reason, count) in &summary.dead_letters_by_reason {
            writeln!(
                out,
                "{:<13} {count:>12}  {reason} (refused by the shipper, in {}: \
                 `evstream dlq list`)",
                "dead letter",
                evstream::keys::dead_letters(&summary.stream)
            )?;
        }
        pipeline::write_percentiles_ns("publish", &summary.publish_ns, &mut out)?;
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
        writeln!(out, "{:<13} {:>12}", "orders", a.orders)?;
        writeln!(out, "{:<13} {:>12}", "fills", a.fills)?;
        writeln!(out, "{:<13} {:>12}", "alerts", a.alerts)?;
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
        for (symbol, s) in &a.symbols {
            writeln!(
                out,
                "fill latency  {symbol:<6} p50 {:.3} ms  p99 {:.3} ms  ({} orders)",
                ms(s.fill_latency.p50),
                ms(s.fill_latency.p99),
                s.fill_latency.count
            )?;
        }
        if let Some(path) = &args.report {
            writeln!(out, "{:<13} {}", "report", path.display())?;
        }
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
