//! Latency harness: percentiles (HdrHistogram) of one publishing call, with one and two
//! producer threads while a consumer thread drains on the other core, next to the anchors a
//! Rust engineer would otherwise pick, in the same run.
//!
//! The event is an order: `OrderCreated { orderId, symbol, quantity, price, side }` (~80 bytes
//! of JSON), published
//! - through the typed facade (`on_order_created`: a binary copy, the JSON is written by the
//!   consumer),
//! - as any `Serialize` struct of the same fields (`publish`: recorded in binary, JSON later),
//! - serialized in the call (`serde_json` into a reused buffer, then `publish_raw`: what
//!   formatting on the engine's thread costs),
//! - through `quicklog` (deferred formatting, one producer: its queue is single-producer),
//! - through `tracing` with `tracing-appender`'s non-blocking writer (formats in the call).
//!
//! The consumer drains as evstream's shipper does: up to 256 events per call, and when the ring
//! is empty it sleeps 1 ms (the shipper's idle poll). The producers publish `--rate` events per
//! second together (default 1,000,000, shared by the producers: the ring is never full, as in
//! an engine that the shipper keeps up with); `--rate 0` publishes flat out and `--spin` makes the consumer spin on an
//! empty ring instead (both worst cases, reported in BENCHMARKS.md).
//!
//! `--drain-only` measures the other side: the consumer's cost per event (taking it out of the
//! ring and writing its JSON), single-threaded.
//!
//! Run: `cargo bench -p evstream --bench publish_latency [-- --events N --rate R --json]`
//! (`--only typed,serialize` for some rows only). Calls are timed with the CPU's counter
//! (`quanta`'s raw TSC reads, as the C++ loggers' benchmarks do); the timer's own cost is
//! measured and printed, and included in every figure.
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use evstream::config::{Config, RingConfig};
use evstream::publish::{self, CapturedEvent, OrderCreated, Publisher, Side};
use hdrhistogram::Histogram;
use quicklog::serialize::Serialize as _;
use serde::Serialize;

/// The same fields as [`OrderCreated`], as a plain `Serialize` struct.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Order<'a> {
    order_id: &'a str,
    symbol: &'a str,
    quantity: f64,
    price: f64,
    side: Side,
}

/// A bigger order as some engines emit it: 16 fields, ~440 bytes of JSON (the event of the
/// earlier rows of BENCHMARKS.md).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WideOrder<'a> {
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

const ORDER_ID: &str = "ORD-2026-12-04-000012345";
const CORRELATION_ID: &str = "ord-000012345";

fn typed(n: u64) -> OrderCreated<'static> {
    OrderCreated {
        correlation_id: CORRELATION_ID,
        order_id: ORDER_ID,
        symbol: "AAPL",
        quantity: 100.0 + (n % 7) as f64,
        price: 189.25 + (n % 13) as f64 * 0.01,
        side: Side::Buy,
    }
}

fn plain(n: u64) -> Order<'static> {
    let o = typed(n);
    Order {
        order_id: o.order_id,
        symbol: o.symbol,
        quantity: o.quantity,
        price: o.price,
        side: o.side,
    }
}

fn wide(n: u64) -> WideOrder<'static> {
    WideOrder {
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

struct Options {
    events: u64,
    /// Events per second, all producers together; 0: flat out.
    rate: u64,
    spin: bool,
    /// Ring slots (`--capacity`, default 65,536 as the default configuration).
    capacity: usize,
}

struct Row {
    name: &'static str,
    producers: usize,
    histogram: Histogram<u64>,
    retries_when_full: u64,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Runs `producers` threads that each time `events` calls of `publish_one`, paced at the
/// rate, after a warm-up of a tenth as many.
fn measure<F>(options: &Options, producers: usize, publish_one: F) -> (Histogram<u64>, u64)
where
    F: Fn(u64) -> bool + Send + Sync + 'static,
{
    let publish_one = Arc::new(publish_one);
    let (events, rate) = (options.events, options.rate / producers as u64);
    let handles: Vec<_> = (0..producers)
        .map(|_| {
            let publish_one = Arc::clone(&publish_one);
            thread::spawn(move || {
                let clock = quanta::Clock::new();
                let mut histogram = new_histogram();
                let mut retries = 0u64;
                let warm_up = events / 10;
                let begin = Instant::now();
                for n in 0..warm_up + events {
                    if let Some(gap) = 1_000_000_000u64.checked_div(rate) {
                        let due = begin + Duration::from_nanos(n * gap);
                        while Instant::now() < due {
                            std::hint::spin_loop();
                        }
                    }
                    loop {
                        let start = clock.raw();
                        let accepted = publish_one(n);
                        let elapsed = clock.delta_as_nanos(start, clock.raw());
                        if accepted {
                            if n >= warm_up {
                                histogram.saturating_record(elapsed.max(1));
                            }
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

/// A ring of the default size (65,536 slots of 1 KiB) and a consumer that drains it as the
/// shipper does.
fn evstream_channel(options: &Options) -> (Publisher, thread::JoinHandle<()>) {
    let config = Config {
        ring: RingConfig::default()
            .set_capacity(options.capacity)
            .set_slot_bytes(1024),
        ..Config::default()
    };
    let (publisher, mut receiver) = publish::channel(&config).expect("valid config");
    let spin = options.spin;
    let drainer = thread::spawn(move || {
        let mut batch: Vec<CapturedEvent> = Vec::with_capacity(256);
        while !receiver.is_finished() {
            if receiver.drain_into(&mut batch, 256) == 0 {
                if spin {
                    std::hint::spin_loop();
                } else {
                    thread::sleep(Duration::from_millis(1));
                }
            }
            receiver.recycle(batch.drain(..));
        }
    });
    (publisher, drainer)
}

#[derive(Clone, Copy)]
enum Path {
    Typed,
    Serialize,
    Wide,
    InCall,
}

fn run_evstream(options: &Options, producers: usize, path: Path) -> Row {
    let (publisher, drainer) = evstream_channel(options);
    let (histogram, retries) = measure(options, producers, move |n| {
        match path {
            Path::Typed => publisher.on_order_created(&typed(n)),
            Path::Serialize => publisher.publish("OrderCreated", &plain(n), CORRELATION_ID),
            Path::Wide => publisher.publish("OrderCreated", &wide(n), CORRELATION_ID),
            Path::InCall => IN_CALL.with_borrow_mut(|buffer| {
                buffer.clear();
                serde_json::to_writer(&mut *buffer, &plain(n)).expect("serializable");
                publisher.publish_raw("OrderCreated", buffer, CORRELATION_ID)
            }),
        }
        .is_ok()
    });
    drainer.join().expect("drainer");
    Row {
        name: match path {
            Path::Typed => "evstream on_order_created (typed, binary copy)",
            Path::Serialize => "evstream publish, Serialize struct (deferred)",
            Path::Wide => "evstream publish, 16-field 440-byte struct",
            Path::InCall => "serialize in the call: serde_json + publish_raw",
        },
        producers,
        histogram,
        retries_when_full: retries,
    }
}

thread_local! {
    static IN_CALL: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(1024));
}

/// `tracing` with `tracing-appender`'s non-blocking writer (to a sink): the fields are
/// formatted in the call, the writer thread only writes.
fn run_tracing(options: &Options, producers: usize) -> Row {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(65_536)
        .lossy(false)
        .finish(std::io::sink());
    let subscriber = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .finish();
    let dispatch = tracing::Dispatch::new(subscriber);
    let (histogram, retries) = measure(options, producers, move |n| {
        tracing::dispatcher::with_default(&dispatch, || {
            let o = typed(n);
            tracing::info!(
                order_id = o.order_id,
                symbol = o.symbol,
                quantity = o.quantity,
                price = o.price,
                side = "BUY",
                correlation_id = o.correlation_id,
                "OrderCreated"
            );
        });
        true
    });
    drop(guard);
    Row {
        name: "tracing + tracing-appender non_blocking",
        producers,
        histogram,
        retries_when_full: retries,
    }
}

/// quicklog's deferred path: the order's fields copied into its byte buffer (`^` prefix and
/// its `Serialize`), formatted by the flushing thread. Its queue is single-producer.
fn run_quicklog(options: &Options) -> Row {
    quicklog::init!();
    quicklog::with_flush!(quicklog_flush::noop_flusher::NoopFlusher);
    let done = Arc::new(AtomicBool::new(false));
    let flusher = {
        let done = Arc::clone(&done);
        let spin = options.spin;
        thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                // `flush!` formats one line; drain everything queued, then poll again.
                while quicklog::try_flush!().is_ok() {}
                if !spin {
                    thread::sleep(Duration::from_millis(1));
                }
            }
            while quicklog::try_flush!().is_ok() {}
        })
    };
    let (histogram, retries) = measure(options, 1, |n| {
        let order = QuicklogOrder(typed(n));
        quicklog::try_log!(quicklog::level::Level::Info, "{}", ^order).is_ok()
    });
    done.store(true, Ordering::Release);
    flusher.join().expect("flusher");
    Row {
        name: "quicklog (deferred formatting)",
        producers: 1,
        histogram,
        retries_when_full: retries,
    }
}

struct QuicklogOrder(OrderCreated<'static>);

impl quicklog::serialize::Serialize for QuicklogOrder {
    fn encode(&self, write_buf: &'static mut [u8]) -> quicklog::serialize::Store {
        fn decode(bytes: &[u8]) -> String {
            let (id_len, rest) = bytes.split_at(1);
            let (id, rest) = rest.split_at(usize::from(id_len[0]));
            let (symbol_len, rest) = rest.split_at(1);
            let (symbol, rest) = rest.split_at(usize::from(symbol_len[0]));
            let quantity = f64::from_le_bytes(rest[..8].try_into().unwrap_or_default());
            let price = f64::from_le_bytes(rest[8..16].try_into().unwrap_or_default());
            format!(
                "{{\"orderId\":\"{}\",\"symbol\":\"{}\",\"quantity\":{quantity:?},\"price\":{price:?},\"side\":\"BUY\"}}",
                String::from_utf8_lossy(id),
                String::from_utf8_lossy(symbol),
            )
        }
        let o = &self.0;
        let mut at = 0;
        for text in [o.order_id, o.symbol] {
            write_buf[at] = text.len() as u8;
            write_buf[at + 1..at + 1 + text.len()].copy_from_slice(text.as_bytes());
            at += 1 + text.len();
        }
        write_buf[at..at + 8].copy_from_slice(&o.quantity.to_le_bytes());
        write_buf[at + 8..at + 16].copy_from_slice(&o.price.to_le_bytes());
        quicklog::serialize::Store::new(decode, write_buf)
    }

    fn buffer_size_required(&self) -> usize {
        2 + self.0.order_id.len() + self.0.symbol.len() + 16
    }
}

fn timer_overhead() -> Histogram<u64> {
    let clock = quanta::Clock::new();
    let mut histogram = new_histogram();
    for _ in 0..1_000_000 {
        let start = clock.raw();
        let elapsed = clock.delta_as_nanos(start, clock.raw());
        histogram.saturating_record(elapsed.max(1));
    }
    histogram
}

/// The consumer's side: nanoseconds per event to take `count` events out of the ring and write
/// their JSON (what the shipper's thread pays, single-threaded, nothing else running).
fn drain_cost(path: Path, count: u64) -> f64 {
    let config = Config {
        ring: RingConfig::default()
            .set_capacity(count.next_power_of_two() as usize)
            .set_slot_bytes(1024),
        ..Config::default()
    };
    let (publisher, mut receiver) = publish::channel(&config).expect("valid config");
    let raw = serde_json::to_vec(&plain(0)).expect("serializable");
    for n in 0..count {
        match path {
            Path::Typed => publisher.on_order_created(&typed(n)),
            Path::Serialize => publisher.publish("OrderCreated", &plain(n), CORRELATION_ID),
            Path::Wide => publisher.publish("OrderCreated", &wide(n), CORRELATION_ID),
            Path::InCall => publisher.publish_raw("OrderCreated", &raw, CORRELATION_ID),
        }
        .expect("room in the ring");
    }
    let mut batch = Vec::with_capacity(256);
    let started = Instant::now();
    while receiver.drain_into(&mut batch, 256) > 0 {
        receiver.recycle(batch.drain(..));
    }
    started.elapsed().as_nanos() as f64 / count as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    let options = Options {
        events: value("--events").unwrap_or(1_000_000),
        rate: value("--rate").unwrap_or(1_000_000),
        spin: args.iter().any(|a| a == "--spin"),
        capacity: value("--capacity").unwrap_or(65_536) as usize,
    };
    let json = args.iter().any(|a| a == "--json");
    if args.iter().any(|a| a == "--drain-only") {
        for (name, path) in [
            ("typed OrderCreated", Path::Typed),
            ("Serialize struct, same fields", Path::Serialize),
            ("16-field struct", Path::Wide),
            (
                "pre-serialized (publish_raw): no JSON to write",
                Path::InCall,
            ),
        ] {
            let ns: Vec<f64> = (0..5).map(|_| drain_cost(path, 1 << 20)).collect();
            let mut sorted = ns.clone();
            sorted.sort_by(f64::total_cmp);
            println!(
                "drain + JSON, {name}: median {:.0} ns/event (runs {ns:.0?})",
                sorted[2]
            );
        }
        return;
    }
    let payload_bytes = serde_json::to_vec(&plain(0)).expect("serializable").len();
    let overhead = timer_overhead();
    // `--only typed,serialize` runs only those rows (names: typed, serialize, in-call, wide,
    // quicklog, tracing), for quick comparisons.
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_owned).collect());
    let wanted = |name: &str| {
        only.as_ref()
            .is_none_or(|only| only.iter().any(|o| o == name))
    };
    let mut rows = Vec::new();
    for producers in [1, 2] {
        for (name, path) in [
            ("typed", Path::Typed),
            ("serialize", Path::Serialize),
            ("in-call", Path::InCall),
        ] {
            if wanted(name) {
                rows.push(run_evstream(&options, producers, path));
            }
        }
        if producers == 1 && wanted("wide") {
            rows.push(run_evstream(&options, producers, Path::Wide));
        }
        if producers == 1 && wanted("quicklog") {
            rows.push(run_quicklog(&options));
        }
        if wanted("tracing") {
            rows.push(run_tracing(&options, producers));
        }
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
            "events_per_producer": options.events,
            "rate_all_producers": options.rate,
            "consumer": if options.spin { "spins" } else { "polls every 1 ms when idle" },
            "timer_overhead_ns": {"p50": overhead.value_at_quantile(0.5), "p99": overhead.value_at_quantile(0.99)},
            "rows": rows,
        });
        println!("{report:#}");
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "publish latency, {payload_bytes}-byte order, {} timed calls per producer at {} \
         (consumer {}; timer overhead p50 {} ns, p99 {} ns, included below)",
        options.events,
        match options.rate {
            0 => "max rate".to_owned(),
            rate => format!("{rate}/s (all producers)"),
        },
        if options.spin {
            "spinning"
        } else {
            "polling every 1 ms when idle"
        },
        overhead.value_at_quantile(0.5),
        overhead.value_at_quantile(0.99)
    );
    let _ = writeln!(
        out,
        "{:<50} {:>4} {:>8} {:>8} {:>8} {:>10} {:>10}",
        "path", "prod", "p50 ns", "p99 ns", "p99.9 ns", "max ns", "full-retry"
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{:<50} {:>4} {:>8} {:>8} {:>8} {:>10} {:>10}",
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
