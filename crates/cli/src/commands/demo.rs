//! `evstream demo`: a simulated trading engine publishing order lifecycles through the whole
//! path (ring → shipper → Redis stream), then the stream read back and audited.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use evstream::{publish, ship, Config};
use serde::Serialize;

use crate::args::DemoArgs;
use crate::engine::{self, EngineSpec};
use crate::pipeline::{self, Delivery, Percentiles, Target};

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
    publish_ns: Percentiles,
}

pub(crate) fn run(
    config: &Config,
    given_url: Option<&str>,
    args: &DemoArgs,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.producers > 0, "--producers must be at least 1");
    let target = Target::resolve(given_url)?;
    let mut config = config.clone();
    target.configure(&mut config);
    let (publisher, receiver) =
        publish::channel(&config).context("cannot build the capture ring")?;
    let producer_id = publisher.producer_id().to_owned();
    let shipper = ship::spawn(&config, receiver).context("cannot start the shipper")?;
    if !args.json {
        eprintln!(
            "evstream demo: {} engine threads, {} events/s for {:?} into stream '{}' on {}",
            args.producers,
            args.rate,
            args.duration,
            config.redis.stream,
            target.describe()
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let spec = EngineSpec {
        rate: Some(args.rate),
        producers: args.producers,
        duration: args.duration,
        max_events_per_producer: None,
    };
    let report = engine::run(&publisher, spec, &stop);
    drop(publisher);
    pipeline::wait_until_shipped(&shipper, report.published, Duration::from_secs(30))?;
    let shutdown = shipper.shutdown(Duration::from_secs(30));
    let audit = pipeline::audit(&config, &target.url, |_, data| {
        serde_json::from_slice::<serde_json::Value>(data).is_ok()
    })?;
    let delivery = Delivery::measure(report.published, &producer_id, &audit, &shutdown);
    let clean = delivery.is_clean();
    let summary = Summary {
        redis: target.describe(),
        stream: config.redis.stream.clone(),
        producer_id,
        duration_s: report.elapsed.as_secs_f64(),
        refused: report.refused,
        shipped: delivery.delivered,
        delivery,
        publish_ns: Percentiles::of(&report.latency_ns),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{:<13} {:>12}", "refused", summary.refused)?;
        summary.delivery.write_text(&mut out)?;
        summary.publish_ns.write_text("publish", &mut out)?;
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
