//! Latency harness: percentiles (HdrHistogram) of one `publish` call for a ~400-byte
//! `OrderCreated`, serialization included, with one and two producer threads while a
//! consumer thread drains. Baselines in the same run: what an engineer writes by hand,
//! `serde_json::to_vec` + crossbeam `ArrayQueue::push` or `crossbeam_channel::try_send`.
//!
//! Run: `cargo bench -p evstream --bench publish_latency [-- --events N] [-- --json]`.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use evstream::config::{Config, RingConfig};
use evstream::publish::{self, CapturedEvent};
use hdrhistogram::Histogram;
use serde::Serialize;

/// An `OrderCreated` as a real engine emits it: ~400 bytes of JSON.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderCreated<'a> {
    order_id: &'a str,
    client_order_id: &'a str,
    symbol: &'a str,
    quantity: f64,
    price: f64,
    side: &'a str,
    order_type: &'a str,
    time_in_force: &'a str,
    account: &'a str,
    strategy: &'a str,
    venue: &'a str,
    trader: &'a str,
    created_ts_ns: u64,
    risk_check_ns: u64,
    parent_order_id: &'a str,
    notes: &'a str,
}

fn event(n: u64) -> OrderCreated<'static> {
    OrderCreated {
        order_id: "ORD-2026-11-26-000000012345",
        client_order_id: "CL-7f3a9c2e-5b1d-4e8f-a6c0-123456789abc",
        symbol: "AAPL",
        quantity: 100.0 + (n % 7) as f64,
        price: 189.25 + (n % 13) as f64 * 0.01,
        side: "BUY",
        order_type: "LIMIT",
        time_in_force: "DAY",
        account: "ACC-EQUITIES-PROP-001",
        strategy: "momentum-breakout-v3",
        venue: "XNAS",
        trader: "algo-engine-7",
        created_ts_ns: 1_764_000_000_000_000_000 + n,
        risk_check_ns: 850 + n % 100,
        parent_order_id: "PARENT-2026-11-26-000000000042",
        notes: "risk checks passed",
    }
}

const CORRELATION_ID: &str = "corr-7f3a9c2e-5b1d-4e8f-a6c0-123456789abc";

struct Row {
    name: String,
    producers: usize,
    histogram: Histogram<u64>,
    retries_when_full: u64,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Runs `producers` threads that each time `events` calls of `publish_one`, after a warm-up.
fn measure<F>(events: u64, producers: usize, publish_one: F) -> (Histogram<u64>, u64)
where
    F: Fn(u64) -> bool + Send + Sync + 'static,
{
    let publish_one = Arc::new(publish_one);
    let handles: Vec<_> = (0..producers)
        .map(|_| {
            let publish_one = Arc::clone(&publish_one);
            thread::spawn(move || {
                let mut histogram = new_histogram();
                let mut retries = 0u64;
                for n in 0..events / 10 {
                    while !publish_one(n) {
                        std::hint::spin_loop();
                    }
                }
                for n in 0..events {
                    loop {
                        let start = Instant::now();
                        let accepted = publish_one(n);
                        let elapsed = start.elapsed().as_nanos() as u64;
                        if accepted {
                            histogram.saturating_record(elapsed.max(1));
                            break;
                        }
                        // Full: the consumer is behind. Not a publish latency; retry.
                        retries += 1;
                        thread::yield_now();
                    }
                }
                (histogram, retries)
            })
        })
        .collect();
    let mut total = new_histogram();
    let mut retries = 0;
    for handle in handles {
        let (histogram, r) = handle.join().expect("producer thread");
        total.add(histogram).expect("same bounds");
        retries += r;
    }
    (total, retries)
}

/// `timing`: whether `publish` times one call in 64 for its metrics histogram (the default).
fn run_evstream(events: u64, producers: usize, raw: bool, timing: bool) -> Row {
    let config = Config {
        ring: RingConfig::default()
            .set_capacity(65_536)
            .set_slot_bytes(1024)
            .set_publish_timing_sample(if timing { 64 } else { 0 }),
        ..Config::default()
    };
    let (publisher, mut receiver) = publish::channel(&config).expect("valid config");
    let drainer = thread::spawn(move || {
        let mut batch: Vec<CapturedEvent> = Vec::with_capacity(1024);
        while !receiver.is_finished() {
            if receiver.drain_into(&mut batch, 1024) == 0 {
                std::hint::spin_loop();
            }
            receiver.recycle(batch.drain(..));
        }
    });
    let bytes = serde_json::to_vec(&event(0)).expect("serializable");
    let (histogram, retries) = measure(events, producers, move |n| {
        if raw {
            publisher
                .publish_raw("OrderCreated", &bytes, CORRELATION_ID)
                .is_ok()
        } else {
            publisher
                .publish("OrderCreated", &event(n), CORRELATION_ID)
                .is_ok()
        }
    });
    drainer.join().expect("drainer");
    Row {
        name: match (raw, timing) {
            (true, _) => "evstream publish_raw (pre-serialized)".into(),
            (false, true) => "evstream publish (serializes)".into(),
            (false, false) => "evstream publish, publish_timing_sample = 0".into(),
        },
        producers,
        histogram,
        retries_when_full: retries,
    }
}

fn run_array_queue(events: u64, producers: usize) -> Row {
    let queue = Arc::new(crossbeam_queue::ArrayQueue::<(String, Vec<u8>)>::new(
        65_536,
    ));
    let done = Arc::new(AtomicBool::new(false));
    let drainer = {
        let (queue, done) = (Arc::clone(&queue), Arc::clone(&done));
        thread::spawn(move || {
            while !done.load(Ordering::Acquire) || !queue.is_empty() {
                if queue.pop().is_none() {
                    std::hint::spin_loop();
                }
            }
        })
    };
    let q = Arc::clone(&queue);
    let (histogram, retries) = measure(events, producers, move |n| {
        let data = serde_json::to_vec(&event(n)).expect("serializable");
        q.push((CORRELATION_ID.to_owned(), data)).is_ok()
    });
    done.store(true, Ordering::Release);
    drainer.join().expect("drainer");
    Row {
        name: "serde_json::to_vec + crossbeam ArrayQueue".into(),
        producers,
        histogram,
        retries_when_full: retries,
    }
}

fn run_channel(events: u64, producers: usize) -> Row {
    let (tx, rx) = crossbeam_channel::bounded::<(String, Vec<u8>)>(65_536);
    let drainer = thread::spawn(move || while rx.recv().is_ok() {});
    let (histogram, retries) = measure(events, producers, move |n| {
        let data = serde_json::to_vec(&event(n)).expect("serializable");
        tx.try_send((CORRELATION_ID.to_owned(), data)).is_ok()
    });
    drainer.join().expect("drainer");
    Row {
        name: "serde_json::to_vec + crossbeam_channel".into(),
        producers,
        histogram,
        retries_when_full: retries,
    }
}

fn timer_overhead() -> Histogram<u64> {
    let mut histogram = new_histogram();
    for _ in 0..1_000_000 {
        let start = Instant::now();
        let elapsed = start.elapsed().as_nanos() as u64;
        histogram.saturating_record(elapsed.max(1));
    }
    histogram
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    let events = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000u64);
    let payload_bytes = serde_json::to_vec(&event(0)).expect("serializable").len();

    let overhead = timer_overhead();
    let mut rows = vec![run_serialize_only(events), run_evstream_inline(events)];
    let inline_only = args.iter().any(|a| a == "--inline-only");
    for producers in [1, 2].into_iter().filter(|_| !inline_only) {
        rows.push(run_evstream(events, producers, false, true));
        rows.push(run_evstream(events, producers, true, true));
        if producers == 1 {
            rows.push(run_evstream(events, producers, false, false));
        }
        rows.push(run_array_queue(events, producers));
        rows.push(run_channel(events, producers));
    }

    if json {
        let rows: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name, "producers": r.producers, "samples": r.histogram.len(),
                    "p50_ns": r.histogram.value_at_quantile(0.5),
                    "p99_ns": r.histogram.value_at_quantile(0.99),
                    "p999_ns": r.histogram.value_at_quantile(0.999),
                    "max_ns": r.histogram.max(),
                    "retries_when_full": r.retries_when_full,
                })
            })
            .collect();
        let report = serde_json::json!({
            "payload_bytes": payload_bytes,
            "events_per_producer": events,
            "timer_overhead_ns": {"p50": overhead.value_at_quantile(0.5), "p99": overhead.value_at_quantile(0.99)},
            "rows": rows,
        });
        println!("{report:#}");
        return;
    }
    println!(
        "publish latency, {payload_bytes}-byte OrderCreated, {events} timed calls per producer \
         (timer overhead p50 {} ns, p99 {} ns, included below)",
        overhead.value_at_quantile(0.5),
        overhead.value_at_quantile(0.99)
    );
    println!(
        "{:<44} {:>4} {:>8} {:>8} {:>8} {:>10} {:>10}",
        "path", "prod", "p50 ns", "p99 ns", "p99.9 ns", "max ns", "full-retry"
    );
    for r in &rows {
        println!(
            "{:<44} {:>4} {:>8} {:>8} {:>8} {:>10} {:>10}",
            r.name,
            r.producers,
            r.histogram.value_at_quantile(0.5),
            r.histogram.value_at_quantile(0.99),
            r.histogram.value_at_quantile(0.999),
            r.histogram.max(),
            r.retries_when_full
        );
    }
}

/// One thread publishes and, every 256 events, drains: `publish` without a concurrent consumer.
fn run_evstream_inline(events: u64) -> Row {
    let config = Config {
        ring: RingConfig::default()
            .set_capacity(1024)
            .set_slot_bytes(1024),
        ..Config::default()
    };
    let (publisher, mut receiver) = publish::channel(&config).expect("valid config");
    let mut histogram = new_histogram();
    let mut batch: Vec<CapturedEvent> = Vec::with_capacity(1024);
    for n in 0..events + events / 10 {
        let start = Instant::now();
        let result = publisher.publish("OrderCreated", &event(n), CORRELATION_ID);
        let elapsed = start.elapsed().as_nanos() as u64;
        result.expect("ring drained every 256 events");
        if n >= events / 10 {
            histogram.saturating_record(elapsed.max(1));
        }
        if n % 256 == 255 {
            receiver.drain_into(&mut batch, 1024);
            receiver.recycle(batch.drain(..));
        }
    }
    Row {
        name: "evstream publish, no concurrent consumer".into(),
        producers: 1,
        histogram,
        retries_when_full: 0,
    }
}

/// The floor: `serde_json::to_writer` of the same event into a reused `Vec`, nothing else.
fn run_serialize_only(events: u64) -> Row {
    let mut histogram = new_histogram();
    let mut buf = Vec::with_capacity(1024);
    for n in 0..events {
        let start = Instant::now();
        buf.clear();
        serde_json::to_writer(&mut buf, &event(n)).expect("serializable");
        let elapsed = start.elapsed().as_nanos() as u64;
        histogram.saturating_record(elapsed.max(1));
    }
    std::hint::black_box(&buf);
    Row {
        name: "serialization only (serde_json, reused Vec)".into(),
        producers: 1,
        histogram,
        retries_when_full: 0,
    }
}
