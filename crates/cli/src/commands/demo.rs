//! `evstream demo`: a simulated trading engine publishing through the capture path.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread;

use anyhow::Context;
use evstream::publish::{self, CapturedEvent};
use evstream::Config;
use serde::Serialize;

use crate::args::DemoArgs;
use crate::engine::{self, EngineSpec};

#[derive(Debug, Serialize)]
struct Summary {
    producer_id: String,
    duration_s: f64,
    published: u64,
    refused: u64,
    drained: u64,
    lost: u64,
    duplicates: u64,
    sequence_gaps: u64,
    publish_ns: Percentiles,
}

#[derive(Debug, Serialize)]
struct Percentiles {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

pub(crate) fn run(config: &Config, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.producers > 0, "--producers must be at least 1");
    let (publisher, mut receiver) =
        publish::channel(config).context("cannot build the capture ring")?;
    if !args.json {
        eprintln!(
            "evstream demo: {} engine threads, {} events/s for {:?}, producer {}",
            args.producers,
            args.rate,
            args.duration,
            publisher.producer_id()
        );
    }
    // The drain: checks that sequences come out consecutive, each exactly once.
    let drain = thread::spawn(move || {
        let mut batch: Vec<CapturedEvent> = Vec::with_capacity(1024);
        let (mut drained, mut expected, mut gaps, mut duplicates) = (0u64, 1u64, 0u64, 0u64);
        while !receiver.is_finished() {
            if receiver.drain_into(&mut batch, 1024) == 0 {
                thread::sleep(std::time::Duration::from_micros(200));
            }
            for event in &batch {
                match event.sequence().cmp(&expected) {
                    std::cmp::Ordering::Equal => {}
                    std::cmp::Ordering::Less => duplicates += 1,
                    std::cmp::Ordering::Greater => gaps += event.sequence() - expected,
                }
                expected = event.sequence() + 1;
                drained += 1;
            }
            receiver.recycle(batch.drain(..));
        }
        (drained, gaps, duplicates)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let spec = EngineSpec {
        rate: Some(args.rate),
        producers: args.producers,
        duration: args.duration,
        max_events_per_producer: None,
    };
    let producer_id = publisher.producer_id().to_owned();
    let report = engine::run(&publisher, spec, &stop);
    drop(publisher);
    let (drained, sequence_gaps, duplicates) = drain.join().expect("drain thread panicked");
    let latency = &report.latency_ns;
    let summary = Summary {
        producer_id,
        duration_s: report.elapsed.as_secs_f64(),
        published: report.published,
        refused: report.refused,
        drained,
        lost: report.published.saturating_sub(drained),
        duplicates,
        sequence_gaps,
        publish_ns: Percentiles {
            p50: latency.value_at_quantile(0.5),
            p99: latency.value_at_quantile(0.99),
            p999: latency.value_at_quantile(0.999),
            max: latency.max(),
        },
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        writeln!(out, "published   {:>12}", summary.published)?;
        writeln!(out, "refused     {:>12}", summary.refused)?;
        writeln!(out, "drained     {:>12}", summary.drained)?;
        writeln!(out, "lost        {:>12}", summary.lost)?;
        writeln!(out, "duplicates  {:>12}", summary.duplicates)?;
        writeln!(
            out,
            "publish latency  p50 {} ns  p99 {} ns  p99.9 {} ns  max {} ns",
            summary.publish_ns.p50,
            summary.publish_ns.p99,
            summary.publish_ns.p999,
            summary.publish_ns.max
        )?;
    }
    let healthy = summary.lost == 0 && summary.duplicates == 0 && summary.sequence_gaps == 0;
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
