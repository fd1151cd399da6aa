//! `evstream bench`: N events of a given size through the whole path into Redis, read back
//! and checked, with publish latency percentiles and end-to-end throughput.

use std::io::Write;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use evstream::{publish, ship, Config, PublishError};
use serde::Serialize;

use crate::args::{BenchArgs, Rate};
use crate::engine::new_histogram;
use crate::pipeline::{self, Delivery, Percentiles, Target};

/// How long shipping may make no progress before the bench gives up with the reason.
const STALL: Duration = Duration::from_secs(30);

#[derive(Serialize)]
struct Payload<'a> {
    producer: u64,
    n: u64,
    pad: &'a str,
}

#[derive(Serialize)]
struct Summary {
    redis: String,
    events: u64,
    producers: usize,
    payload_bytes: usize,
    #[serde(flatten)]
    delivery: Delivery,
    /// Times `publish` found the ring full and the bench retried.
    ring_full_retries: u64,
    throughput_eps: f64,
    elapsed_s: f64,
    publish_ns: Percentiles,
}

pub(crate) fn run(
    config: &Config,
    given_url: Option<&str>,
    args: &BenchArgs,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.producers > 0, "--producers must be at least 1");
    anyhow::ensure!(args.events > 0, "--events must be at least 1");
    let target = Target::resolve(config, given_url)?;
    let mut config = config.clone();
    target.configure(&mut config);
    if config.ship.max_len != 0 && config.ship.max_len < args.events {
        // Trimming would delete events before they are read back and count them as lost.
        eprintln!(
            "evstream bench: ship.max_len {} is below --events; raised to {} for this run so \
             every event can be read back",
            config.ship.max_len, args.events
        );
        config.ship.max_len = args.events;
    }
    if !args.json {
        eprintln!(
            "evstream bench: {} events of {} bytes from {} producer(s) at {} into {} ({})",
            args.events,
            args.payload_bytes,
            args.producers,
            args.rate,
            config.redis.stream,
            target.describe()
        );
    }
    let pad = "x".repeat(args.payload_bytes);
    let (publisher, receiver) = publish::channel(&config)?;
    let producer_id = publisher.producer_id().to_owned();
    let shipper = ship::spawn(&config, receiver).context("cannot start the shipper")?;

    let started = Instant::now();
    let per_producer = args.events.div_ceil(args.producers as u64);
    let threads: Vec<_> = (0..args.producers as u64)
        .map(|producer| {
            let publisher = publisher.clone();
            let pad = pad.clone();
            let payload_bytes = args.payload_bytes;
            let count = per_producer.min(args.events.saturating_sub(producer * per_producer));
            let interval = match args.rate {
                Rate::Max => None,
                Rate::PerSecond(rate) => Some(Duration::from_secs_f64(
                    args.producers as f64 / rate.max(1) as f64,
                )),
            };
            thread::spawn(move || {
                let mut histogram = new_histogram();
                let mut retries = 0u64;
                let begin = Instant::now();
                for n in 0..count {
                    if let Some(interval) = interval {
                        let due = begin + interval.mul_f64(n as f64);
                        let now = Instant::now();
                        if due > now {
                            thread::sleep(due - now);
                        }
                    }
                    let payload = Payload {
                        producer,
                        n,
                        pad: &pad[..pad_len(payload_bytes, producer, n)],
                    };
                    let mut full_since = None;
                    loop {
                        let start = Instant::now();
                        let result = publisher.publish("BenchEvent", &payload, "");
                        let took = start.elapsed().as_nanos() as u64;
                        match result {
                            Ok(()) => {
                                histogram.saturating_record(took.max(1));
                                break;
                            }
                            Err(error @ PublishError::RingFull { .. }) => {
                                // Full for this long: the shipper is stuck; say so, do not hang.
                                if full_since.get_or_insert(start).elapsed() > STALL {
                                    return Err(error);
                                }
                                retries += 1;
                                thread::sleep(Duration::from_micros(100));
                            }
                            Err(other) => return Err(other),
                        }
                    }
                }
                Ok((histogram, retries))
            })
        })
        .collect();
    let mut histogram = new_histogram();
    let mut retries = 0;
    for thread in threads {
        let (h, r) = thread
            .join()
            .expect("bench producer panicked")
            .with_context(|| {
                format!(
                    "publishing stalled; shipper: {:?}",
                    shipper.health().last_error
                )
            })?;
        histogram.add(h).expect("histograms share bounds");
        retries += r;
    }
    let published = publisher.health().published;
    drop(publisher);
    let finished = pipeline::wait_until_shipped(&shipper, published, STALL)?;
    let elapsed = finished - started;
    let report = shipper.shutdown(Duration::from_secs(30));

    let audit = pipeline::audit(&config, &target.url, |_, data| {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
            return false;
        };
        let (Some(producer), Some(n)) = (value["producer"].as_u64(), value["n"].as_u64()) else {
            return false;
        };
        // Byte for byte what was published.
        let expected = Payload {
            producer,
            n,
            pad: &pad[..pad_len(args.payload_bytes, producer, n)],
        };
        serde_json::to_vec(&expected).is_ok_and(|bytes| bytes == data)
    })?;
    let delivery = Delivery::measure(published, &producer_id, &audit, &report);
    let clean = delivery.is_clean();
    let summary = Summary {
        redis: target.describe(),
        events: args.events,
        producers: args.producers,
        payload_bytes: args.payload_bytes,
        delivery,
        ring_full_retries: retries,
        throughput_eps: published as f64 / elapsed.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        publish_ns: Percentiles::of(&histogram),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        summary.delivery.write_text(&mut out)?;
        writeln!(
            out,
            "throughput    {:>12.0} events/s end to end ({:.2} s)",
            summary.throughput_eps, summary.elapsed_s
        )?;
        summary.publish_ns.write_text("publish", &mut out)?;
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Padding that makes the payload of event `n` of `producer` exactly `bytes` long (or as
/// short as it gets, if `bytes` is below the unpadded size).
fn pad_len(bytes: usize, producer: u64, n: u64) -> usize {
    let digits = |v: u64| v.checked_ilog10().map_or(1, |d| d as usize + 1);
    // {"producer":P,"n":N,"pad":""}
    let unpadded = r#"{"producer":,"n":,"pad":""}"#.len() + digits(producer) + digits(n);
    bytes.saturating_sub(unpadded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_exactly_the_requested_size() {
        let pad = "x".repeat(1000);
        for (producer, n) in [(0, 0), (3, 9), (12, 1_000_000), (1, u64::MAX)] {
            let payload = Payload {
                producer,
                n,
                pad: &pad[..pad_len(400, producer, n)],
            };
            assert_eq!(
                serde_json::to_vec(&payload).unwrap().len(),
                400,
                "{producer} {n}"
            );
        }
    }
}
