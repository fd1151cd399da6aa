//! `evstream consume`: IntelliSense as one member of a consumer group.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use evstream::consume::{
    ConsumeReport, ConsumeStats, Consumer, Effects, Envelope, Handler, HandlerError,
    PartitionedConsumer,
};
use evstream::schema::Registry;
use evstream::Config;
use evstream_intellisense::percentiles::{self, Percentiles};
use evstream_intellisense::{Analysis, IntelliSense, IntelliSenseConfig};
use serde::Serialize;

use crate::args::{ConsumeArgs, HandlerKind};
use crate::http::{self, Sources};
use crate::pipeline::{self};

#[derive(Debug, Serialize)]
struct Summary {
    stream: String,
    group: String,
    consumer: String,
    #[serde(flatten)]
    counters: ConsumeReport,
    /// Seconds from the first entry read to the last one processed.
    active_s: f64,
    /// Entries processed per second over `active_s`.
    events_per_s: f64,
    /// Event time → processed, nanoseconds.
    #[serde(serialize_with = "percentiles::nanos")]
    pipeline_latency_ns: Percentiles,
    alerts: u64,
    tracker_open: usize,
    tracker_evicted: u64,
}

/// When work started and last progressed, sampled while the consumer runs.
#[derive(Debug, Default)]
struct Activity {
    first_read: Option<Instant>,
    last_progress: Option<Instant>,
    last_count: u64,
}

/// Acknowledges every event and does nothing else: the runtime's own cost, for benchmarks.
struct AckOnly;

impl Handler for AckOnly {
    fn handle(&mut self, _: &Envelope, _: &mut Effects) -> Result<(), HandlerError> {
        Ok(())
    }
}

pub(crate) fn run(mut config: Config, args: &ConsumeArgs) -> anyhow::Result<ExitCode> {
    args.apply(&mut config)?;
    match args.handler {
        HandlerKind::Intellisense => {
            let settings = IntelliSenseConfig {
                creation_alert_ms: args.creation_alert.as_secs_f64() * 1e3,
                fill_alert_ms: args.fill_alert.as_secs_f64() * 1e3,
                ..IntelliSenseConfig::default()
            };
            let analysis = Arc::default();
            let consumers = consumers(&config, args, |part| {
                IntelliSense::new(&part.redis.stream, settings.clone())
                    .with_analysis(Arc::clone(&analysis))
            })?;
            drive(&config, args, consumers, Some(analysis))
        }
        HandlerKind::AckOnly => {
            let consumers = consumers(&config, args, |_| AckOnly)?;
            drive(&config, args, consumers, None)
        }
    }
}

/// One consumer per partition of the stream (one without partitions), counting together.
fn consumers<H: Handler>(
    config: &Config,
    args: &ConsumeArgs,
    handler: impl FnMut(&Config) -> H,
) -> anyhow::Result<PartitionedConsumer<H>> {
    PartitionedConsumer::new(config, &args.consumer, handler)
        .context("cannot start the consumer")?
        .try_map(|consumer| with_schemas(consumer, args))
}

/// Applies `--schemas`.
fn with_schemas<H: Handler>(
    consumer: Consumer<H>,
    args: &ConsumeArgs,
) -> anyhow::Result<Consumer<H>> {
    Ok(match args.schemas.as_str() {
        "off" => consumer,
        "redis" => consumer.with_schemas_from_redis(),
        dir => consumer.with_schemas(
            Registry::from_dir(std::path::Path::new(dir))
                .with_context(|| format!("cannot use the schemas in {dir}"))?,
        ),
    })
}

fn drive<H: Handler + Sync + 'static>(
    config: &Config,
    args: &ConsumeArgs,
    consumers: PartitionedConsumer<H>,
    analysis: Option<Arc<std::sync::Mutex<Analysis>>>,
) -> anyhow::Result<ExitCode> {
    let stats = consumers.stats();
    // Two workers: the connections' reply parsing runs beside the handler.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let activity = Arc::new(std::sync::Mutex::new(Activity::default()));
    let report = runtime.block_on(async {
        let sources = Sources {
            consumer: Some((config.consume.group.clone(), Arc::clone(&stats))),
            ..Sources::default()
        };
        let served = http::start(&args.metrics, sources).await?;
        if !args.json {
            eprintln!(
                "evstream consume: consumer '{}' of group '{}' on stream '{}' at {}{} \
                 (Ctrl-C to stop)",
                args.consumer,
                config.consume.group,
                super::stream_name(config),
                evstream::redis::redact_url(&config.redis.url),
                served.map_or_else(String::new, |addr| format!(
                    "; http://{addr}/metrics and /health"
                )),
            );
        }
        let watch = tokio::spawn(watch_activity(
            Arc::clone(&stats),
            Arc::clone(&activity),
            args.exit_when_idle,
            !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ));
        // Every partition's consumer stops on the same signal.
        let report = consumers
            .run(stop_signal(watch))
            .await
            .map_err(super::partition_error)?;
        Ok::<_, anyhow::Error>(report)
    })?;

    if !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(); // end the progress line
    }
    let activity = activity.lock().unwrap_or_else(|e| e.into_inner());
    let active = match (activity.first_read, activity.last_progress) {
        (Some(first), Some(last)) => last.saturating_duration_since(first),
        _ => Duration::ZERO,
    };
    let analysis = analysis
        .map(|a| a.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default();
    let summary = Summary {
        stream: config.redis.stream.clone(),
        group: config.consume.group.clone(),
        consumer: args.consumer.clone(),
        active_s: active.as_secs_f64(),
        events_per_s: if active.is_zero() {
            0.0
        } else {
            report.processed as f64 / active.as_secs_f64()
        },
        counters: report,
        pipeline_latency_ns: Percentiles::of_nanos(&analysis.pipeline),
        alerts: analysis.alerts,
        tracker_open: analysis.tracker_open,
        tracker_evicted: analysis.tracker_evicted,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        let c = &summary.counters;
        for (name, value) in [
            ("read", c.read),
            ("processed", c.processed),
            ("duplicates", c.duplicates_skipped),
            ("dead letters", c.dead_lettered),
            ("claimed", c.claimed),
            ("retried", c.failed_attempts),
            ("alerts", summary.alerts),
        ] {
            writeln!(out, "{name:<13} {value:>12}")?;
        }
        writeln!(
            out,
            "{:<13} {:>12.0} events/s",
            "throughput", summary.events_per_s
        )?;
        pipeline::write_percentiles_ns("event→done", &summary.pipeline_latency_ns, &mut out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGINT, SIGTERM, or when the activity watcher says the consumer is idle.
async fn stop_signal(idle: tokio::task::JoinHandle<()>) {
    tokio::select! {
        () = super::termination() => {}
        _ = idle => {}
    }
}

/// Samples the counters every 10 ms: when work started and last progressed. Returns once
/// nothing was processed for `exit_when_idle` (never without it).
async fn watch_activity(
    stats: Arc<ConsumeStats>,
    activity: Arc<std::sync::Mutex<Activity>>,
    exit_when_idle: Option<Duration>,
    progress: bool,
) {
    let started = Instant::now();
    let (mut printed_at, mut printed_count) = (started, 0);
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = Instant::now();
        let report = stats.snapshot();
        let mut activity = activity.lock().unwrap_or_else(|e| e.into_inner());
        if report.read > 0 && activity.first_read.is_none() {
            activity.first_read = Some(now);
        }
        let done =
            report.processed + report.dead_lettered + report.skipped + report.duplicates_skipped;
        if done != activity.last_count {
            activity.last_count = done;
            activity.last_progress = Some(now);
        }
        if progress && now.duration_since(printed_at) >= Duration::from_secs(2) {
            let rate = (report.processed - printed_count) as f64
                / now.duration_since(printed_at).as_secs_f64();
            eprint!(
                "\rprocessed {:>10}  {:>8.0}/s  duplicates {}  dead letters {}  claimed {}  {}   ",
                report.processed,
                rate,
                report.duplicates_skipped,
                report.dead_lettered,
                report.claimed,
                if report.connected {
                    "connected"
                } else {
                    "reconnecting"
                }
            );
            (printed_at, printed_count) = (now, report.processed);
        }
        if let Some(idle) = exit_when_idle {
            let since = activity.last_progress.unwrap_or(started);
            if now.duration_since(since) >= idle {
                return;
            }
        }
    }
}
