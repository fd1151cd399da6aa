//! A simulated trading engine: threads that publish order lifecycles
//! (`MarketDataUpdate` → `OrderCreated` → `OrderFilled`, sharing one correlation id) at a
//! target rate, timing every `publish` call.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use evstream::publish::{MarketDataUpdate, OrderCreated, OrderFilled, Side};
use evstream::{PublishError, Publisher};
use hdrhistogram::Histogram;

const SYMBOLS: [(&str, f64); 5] = [
    ("AAPL", 189.0),
    ("MSFT", 411.0),
    ("NVDA", 131.0),
    ("TSLA", 242.0),
    ("SPY", 563.0),
];

/// What to simulate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EngineSpec {
    /// Events per second, all threads together; `None` publishes as fast as possible.
    pub(crate) rate: Option<u64>,
    /// Publishing threads.
    pub(crate) producers: usize,
    /// Stop after this long…
    pub(crate) duration: Duration,
    /// …or after this many events per thread, whichever comes first.
    pub(crate) max_events_per_producer: Option<u64>,
}

/// What the engine threads saw.
#[derive(Debug)]
pub(crate) struct EngineReport {
    pub(crate) published: u64,
    pub(crate) refused: u64,
    /// Nanoseconds per accepted `publish` call.
    pub(crate) latency_ns: Histogram<u64>,
    pub(crate) elapsed: Duration,
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds are valid")
}

/// Runs the engine threads to completion. `stop` ends them early.
pub(crate) fn run(publisher: &Publisher, spec: EngineSpec, stop: &Arc<AtomicBool>) -> EngineReport {
    let started = Instant::now();
    let threads: Vec<_> = (0..spec.producers)
        .map(|thread_index| {
            let publisher = publisher.clone();
            let stop = Arc::clone(stop);
            let rate = spec.rate.map(|r| (r / spec.producers as u64).max(1));
            thread::spawn(move || simulate(&publisher, thread_index, rate, spec, &stop))
        })
        .collect();
    let mut report = EngineReport {
        published: 0,
        refused: 0,
        latency_ns: new_histogram(),
        elapsed: Duration::ZERO,
    };
    for handle in threads {
        let (published, refused, histogram) = handle.join().expect("engine thread panicked");
        report.published += published;
        report.refused += refused;
        report
            .latency_ns
            .add(histogram)
            .expect("histograms share bounds");
    }
    report.elapsed = started.elapsed();
    report
}

fn simulate(
    publisher: &Publisher,
    thread_index: usize,
    rate: Option<u64>,
    spec: EngineSpec,
    stop: &AtomicBool,
) -> (u64, u64, Histogram<u64>) {
    let mut histogram = new_histogram();
    let (mut published, mut refused) = (0u64, 0u64);
    let mut order_id = String::with_capacity(32);
    let mut fill_id = String::with_capacity(40);
    let started = Instant::now();
    let limit = spec.max_events_per_producer.unwrap_or(u64::MAX);
    let mut sent = 0u64;
    let mut order = 0u64;
    'run: while sent < limit && !stop.load(Ordering::Relaxed) {
        let elapsed = started.elapsed();
        if elapsed >= spec.duration {
            break;
        }
        // Publish what is due by now, then sleep a tick: bursts of ~rate/1000 events per ms.
        let due = match rate {
            Some(rate) => ((elapsed.as_secs_f64() * rate as f64) as u64).min(limit),
            None => limit.min(sent + 3 * 1024),
        };
        if due <= sent {
            thread::sleep(Duration::from_millis(1));
            continue;
        }
        while sent < due {
            order += 1;
            let (symbol, base) = SYMBOLS[(order as usize + thread_index) % SYMBOLS.len()];
            let price = base + (order % 100) as f64 * 0.01;
            order_id.clear();
            let _ = write!(order_id, "ord-{thread_index}-{order}");
            fill_id.clear();
            let _ = write!(fill_id, "{order_id}-fill-1");
            let correlation_id = order_id.as_str();
            let fill = fill_id.as_str();
            let lifecycle: [&dyn Fn() -> Result<(), PublishError>; 3] = [
                &|| {
                    publisher.on_market_data(&MarketDataUpdate {
                        correlation_id,
                        symbol,
                        bid: price - 0.01,
                        ask: price + 0.01,
                        last: price,
                        bid_size: 300.0,
                        ask_size: 500.0,
                        exchange_ts_ns: evstream::publish::wall_clock_ns(),
                    })
                },
                &|| {
                    publisher.on_order_created(&OrderCreated {
                        correlation_id,
                        order_id: correlation_id,
                        symbol,
                        quantity: 100.0,
                        price,
                        side: if order.is_multiple_of(2) {
                            Side::Buy
                        } else {
                            Side::Sell
                        },
                    })
                },
                &|| {
                    publisher.on_order_filled(&OrderFilled {
                        correlation_id,
                        order_id: correlation_id,
                        fill_id: fill,
                        quantity: 100.0,
                        price,
                    })
                },
            ];
            for publish in lifecycle {
                let start = Instant::now();
                let result = publish();
                let took = start.elapsed().as_nanos() as u64;
                match result {
                    Ok(()) => {
                        published += 1;
                        histogram.saturating_record(took.max(1));
                    }
                    Err(PublishError::Closed) => break 'run,
                    Err(_) => refused += 1,
                }
                sent += 1;
            }
        }
    }
    (published, refused, histogram)
}
