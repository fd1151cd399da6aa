//! `evstream bench`: N events of a given size through the whole path into Redis, read back
//! and checked, with publish latency percentiles and end-to-end throughput.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use evstream::{publish, ship, Config, PublishError};
use evstream_intellisense::percentiles::{self, ms, Percentiles};
use serde::Serialize;

use crate::args::{BenchArgs, EventKind, Rate};
use crate::engine::new_histogram;
use crate::pipeline::{self, Delivery, Target};
use crate::report_html::{AppendLatency, Report as ReportPage, Sample, Sampler};

/// How long shipping may make no progress before the bench gives up with the reason, at
/// least: an open circuit breaker pauses shipping for up to `ship.breaker_cool_down_max_ms`
/// (a server that answers but keeps failing), which a bench must sit out (see `stall_limit`).
const STALL: Duration = Duration::from_secs(30);

/// `STALL`, or longer when the breaker's cool-down plus a retry is longer.
fn stall_limit(config: &Config) -> Duration {
    let cool_down = Duration::from_millis(config.ship.breaker_cool_down_max_ms)
        + Duration::from_millis(config.ship.retry_max_ms + config.ship.timeout_ms);
    STALL.max(cool_down + Duration::from_secs(10))
}

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
    event_kind: EventKind,
    /// The JSON payload's size; with `--event-kind orders`, the mean of an order's two events.
    payload_bytes: usize,
    #[serde(flatten)]
    delivery: Delivery,
    /// Times `publish` found the ring full and the bench retried.
    ring_full_retries: u64,
    throughput_eps: f64,
    elapsed_s: f64,
    #[serde(serialize_with = "percentiles::nanos")]
    publish_ns: Percentiles,
    /// Publish → appended to the stream, from the entries read back (1 ms resolution).
    #[serde(serialize_with = "percentiles::millis")]
    append_latency_ms: Percentiles,
    /// With `--duration`: how delivery was counted and what memory did.
    #[serde(skip_serializing_if = "Option::is_none")]
    soak: Option<Soak>,
}

/// The stream length a timed run keeps when `ship.max_len` is 0.
const SOAK_MAX_LEN: u64 = 1_000_000;

/// A long run's extra figures.
#[derive(Serialize)]
struct Soak {
    duration_s: f64,
    /// `XINFO STREAM … entries-added` during the run: every append, even of entries trimmed
    /// since (the stream keeps `ship.max_len`).
    appended: u64,
    /// Entries still in the stream, each checked (order, uniqueness, byte-identical data).
    checked_in_stream: u64,
    memory: Memory,
}

/// This process's resident memory over a run.
#[derive(Serialize)]
struct Memory {
    /// After the first tenth of the run (the ring and buffers are warm by then).
    rss_after_warmup_mib: f64,
    rss_end_mib: f64,
    rss_max_mib: f64,
    /// End against after-warm-up, percent.
    growth_percent: f64,
}

impl Memory {
    fn of(samples: &[Sample]) -> Option<Self> {
        let rss: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|s| Some((s.at_s, s.rss_bytes? as f64 / (1024.0 * 1024.0))))
            .collect();
        let end_at = rss.last()?.0;
        let warm = rss.iter().find(|(at, _)| *at >= end_at / 10.0)?.1;
        let end = rss.last()?.1;
        Some(Self {
            rss_after_warmup_mib: warm,
            rss_end_mib: end,
            rss_max_mib: rss.iter().map(|r| r.1).fold(0.0, f64::max),
            growth_percent: (end - warm) / warm * 100.0,
        })
    }
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
    let events = match (args.duration, args.rate) {
        (Some(duration), Rate::PerSecond(rate)) => {
            (rate as f64 * duration.as_secs_f64()).round().max(1.0) as u64
        }
        (Some(_), Rate::Max) => u64::MAX, // until the duration is over
        (None, _) => args.events,
    };
    if args.duration.is_some() && config.ship.max_len == 0 {
        // A timed run at a high rate would fill Redis: the shipper bounds the bench's stream.
        config.ship.max_len = SOAK_MAX_LEN;
        if given_url.is_some() {
            eprintln!(
                "evstream bench: a timed run trims {} to about {SOAK_MAX_LEN} entries \
                 (MAXLEN ~, blind to consumer groups); point it at a stream of its own \
                 (--stream) on a Redis that serves others",
                config.redis.stream
            );
        }
    }
    if args.duration.is_none() && config.ship.max_len != 0 && config.ship.max_len < events {
        // Trimming would delete events before they are read back and count them as lost.
        eprintln!(
            "evstream bench: ship.max_len {} is below --events; raised to {events} for this \
             run so every event can be read back",
            config.ship.max_len
        );
        config.ship.max_len = events;
    }
    if !args.json {
        let what = match args.duration {
            Some(duration) => format!("for {duration:?}"),
            None => format!("{events} events"),
        };
        let kind = match args.event_kind {
            EventKind::Payload => format!("{} bytes", args.payload_bytes),
            EventKind::Orders => "OrderCreated/OrderFilled pairs (typed)".to_owned(),
        };
        eprintln!(
            "evstream bench: {what} of {kind} from {} producer(s) at {} into {} ({})",
            args.producers,
            args.rate,
            super::stream_name(&config),
            target.describe()
        );
    }
    let appended_before = match args.duration {
        Some(_) => entries_added(&config)?,
        None => 0,
    };
    let pad = "x".repeat(args.payload_bytes);
    // Correlation ids made once (no allocation while timing publish), many enough to spread
    // over every partition of a partitioned stream.
    let correlations: Arc<[String]> = (0..CORRELATIONS).map(|c| format!("b{c}")).collect();
    let (publisher, receiver) = publish::channel(&config)?;
    let producer_id = publisher.producer_id().to_owned();
    let shipper = ship::spawn(&config, receiver).context("cannot start the shipper")?;
    let sampler = (args.report.is_some() || args.duration.is_some() || !args.json).then(|| {
        Sampler::start(
            sample_interval(args.duration),
            publisher.monitor(),
            shipper.monitor(),
            None,
            !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
    });

    let started_wall = SystemTime::now();
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let per_producer = events.div_ceil(args.producers as u64);
    let stall = stall_limit(&config);
    let threads: Vec<_> = (0..args.producers as u64)
        .map(|producer| {
            let publisher = publisher.clone();
            let pad = pad.clone();
            let correlations = Arc::clone(&correlations);
            let payload_bytes = args.payload_bytes;
            let event_kind = args.event_kind;
            let count = per_producer.min(events.saturating_sub(producer * per_producer));
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
                    if n % 1024 == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let payload = Payload {
                        producer,
                        n,
                        pad: &pad[..pad_len(payload_bytes, producer, n)],
                    };
                    // An order's two events share its correlation id (so its partition).
                    let mut order_id = OrderId::new(producer, n / 2);
                    let mut full_since = None;
                    loop {
                        let start = Instant::now();
                        let result = match event_kind {
                            EventKind::Payload => {
                                let correlation = &correlations[(n % CORRELATIONS) as usize];
                                publisher.publish("BenchEvent", &payload, correlation)
                            }
                            EventKind::Orders => {
                                let correlation = &correlations[(n / 2 % CORRELATIONS) as usize];
                                let order = Order::new(order_id.text(), n / 2);
                                if n.is_multiple_of(2) {
                                    publisher.on_order_created(&order.created(correlation))
                                } else {
                                    publisher.on_order_filled(&order.filled(correlation))
                                }
                            }
                        };
                        let took = start.elapsed().as_nanos() as u64;
                        match result {
                            Ok(()) => {
                                histogram.saturating_record(took.max(1));
                                break;
                            }
                            Err(error @ PublishError::RingFull { .. }) => {
                                // Full for this long: the shipper is stuck; say so, do not hang.
                                if full_since.get_or_insert(start).elapsed() > stall {
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
    let finished = pipeline::wait_until_shipped(&shipper, published, stall)?;
    let elapsed = finished - started;
    let report = shipper.shutdown(Duration::from_secs(30));
    let samples = sampler.map(Sampler::stop).unwrap_or_default();

    let mut append_latency = AppendLatency::new(started_wall);
    let audit = pipeline::audit(&config, &target.url, |entry, data| {
        if let Some(timestamp_ns) = entry.get::<u64>("timestamp_ns") {
            append_latency.record(&entry.id, timestamp_ns);
        }
        match args.event_kind {
            EventKind::Payload => is_bench_payload(data, &pad, args.payload_bytes),
            EventKind::Orders => is_bench_order(entry.get::<String>("event_type").as_deref(), data),
        }
    })?;
    let (delivery, soak) = match args.duration {
        None => (
            Delivery::measure(published, &producer_id, &audit, &report),
            None,
        ),
        Some(_) => {
            // The stream keeps only the newest `ship.max_len` entries of a long run: count
            // every append with Redis's own counter, check the entries still there.
            let appended = entries_added(&config)?.saturating_sub(appended_before);
            let delivery = Delivery::counted(published, appended, &producer_id, &audit, &report);
            let soak = Soak {
                duration_s: elapsed.as_secs_f64(),
                appended,
                checked_in_stream: audit.producers.get(&producer_id).map_or(0, |p| p.distinct),
                memory: Memory::of(&samples)
                    .context("cannot read this process's memory (/proc/self/status)")?,
            };
            (delivery, Some(soak))
        }
    };
    let clean = delivery.is_clean();
    let summary = Summary {
        redis: target.describe(),
        events: published,
        producers: args.producers,
        event_kind: args.event_kind,
        payload_bytes: match args.event_kind {
            EventKind::Payload => args.payload_bytes,
            EventKind::Orders => Order::mean_json_bytes(),
        },
        delivery,
        ring_full_retries: retries,
        throughput_eps: published as f64 / elapsed.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        publish_ns: Percentiles::of_nanos(&histogram),
        append_latency_ms: append_latency.summary(),
        soak,
    };
    if let Some(path) = &args.report {
        ReportPage {
            title: "evstream bench",
            summary: &serde_json::to_value(&summary)?,
            publish_ns: &histogram,
            samples: &samples,
            append_latency: &append_latency,
            market: None,
        }
        .write(path)?;
    }
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
        pipeline::write_percentiles_ns("publish", &summary.publish_ns, &mut out)?;
        let a = &summary.append_latency_ms;
        writeln!(
            out,
            "publish→stream p50 {:.0} ms  p99 {:.0} ms  p99.9 {:.0} ms  max {:.0} ms",
            ms(a.p50),
            ms(a.p99),
            ms(a.p999),
            ms(a.max)
        )?;
        if let Some(soak) = &summary.soak {
            let m = &soak.memory;
            writeln!(
                out,
                "memory        {:.1} MiB after warm-up, {:.1} MiB at the end ({:+.1} %), max {:.1} MiB",
                m.rss_after_warmup_mib, m.rss_end_mib, m.growth_percent, m.rss_max_mib
            )?;
        }
        if let Some(path) = &args.report {
            writeln!(out, "report        {}", path.display())?;
        }
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Distinct correlation ids the bench cycles through.
const CORRELATIONS: u64 = 1024;

/// Samples a short run every 250 ms, a long one every second.
fn sample_interval(duration: Option<Duration>) -> Duration {
    match duration {
        Some(d) if d > Duration::from_secs(60) => Duration::from_secs(1),
        _ => Duration::from_millis(250),
    }
}

/// `entries-added` of the stream, summed over its partitions (0 when it does not exist yet).
fn entries_added(config: &Config) -> anyhow::Result<u64> {
    super::block_on(evstream::audit::entries_added(config))?.map_err(super::partition_error)
}

/// Whether `data` is, byte for byte, the payload the bench published.
fn is_bench_payload(data: &[u8], pad: &str, payload_bytes: usize) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return false;
    };
    let (Some(producer), Some(n)) = (value["producer"].as_u64(), value["n"].as_u64()) else {
        return false;
    };
    let expected = Payload {
        producer,
        n,
        pad: &pad[..pad_len(payload_bytes, producer, n)],
    };
    serde_json::to_vec(&expected).is_ok_and(|bytes| bytes == data)
}

/// Whether `data` is, byte for byte, the `OrderCreated` or `OrderFilled` the bench published
/// for the order its `orderId` names.
fn is_bench_order(event_type: Option<&str>, data: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return false;
    };
    let Some((producer, k)) = value["orderId"]
        .as_str()
        .and_then(|id| id.split_once('-'))
        .and_then(|(p, k)| Some((p.parse().ok()?, k.parse().ok()?)))
    else {
        return false;
    };
    let mut id = OrderId::new(producer, k);
    let order = Order::new(id.text(), k);
    let expected = match event_type {
        Some("OrderCreated") => serde_json::to_vec(&order.created("")),
        Some("OrderFilled") => serde_json::to_vec(&order.filled("")),
        _ => return false,
    };
    expected.is_ok_and(|bytes| bytes == data)
}

/// `<producer>-<k>` formatted on the stack: no allocation in the timed loop.
struct OrderId {
    buffer: [u8; 48],
    len: usize,
}

impl OrderId {
    fn new(producer: u64, k: u64) -> Self {
        let mut buffer = [0u8; 48];
        let mut cursor = std::io::Cursor::new(&mut buffer[..]);
        // Two u64s and a dash always fit in 48 bytes.
        let _ = write!(cursor, "{producer}-{k}");
        let len = cursor.position() as usize;
        Self { buffer, len }
    }

    fn text(&mut self) -> &str {
        std::str::from_utf8(&self.buffer[..self.len]).unwrap_or_default()
    }
}

/// The fields of the bench's `k`-th order of a producer, derived from `k` alone so the
/// read-back can rebuild each event.
struct Order<'a> {
    id: &'a str,
    symbol: &'static str,
    quantity: f64,
    price: f64,
    buy: bool,
}

const SYMBOLS: [&str; 4] = ["AAPL", "MSFT", "NVDA", "TSLA"];

impl<'a> Order<'a> {
    fn new(id: &'a str, k: u64) -> Self {
        Self {
            id,
            symbol: SYMBOLS[(k % 4) as usize],
            quantity: 100.0 + (k % 7) as f64,
            price: 100.0 + (k % 400) as f64 * 0.25,
            buy: k.is_multiple_of(2),
        }
    }

    fn created(&self, correlation_id: &'a str) -> publish::OrderCreated<'a> {
        publish::OrderCreated {
            correlation_id,
            order_id: self.id,
            symbol: self.symbol,
            quantity: self.quantity,
            price: self.price,
            side: if self.buy {
                publish::Side::Buy
            } else {
                publish::Side::Sell
            },
        }
    }

    fn filled(&self, correlation_id: &'a str) -> publish::OrderFilled<'a> {
        publish::OrderFilled {
            correlation_id,
            order_id: self.id,
            fill_id: self.id,
            quantity: self.quantity,
            price: self.price,
        }
    }

    /// The mean JSON size of an order's two events, for the summary.
    fn mean_json_bytes() -> usize {
        let mut id = OrderId::new(0, 12_345);
        let order = Order::new(id.text(), 12_345);
        let created = serde_json::to_vec(&order.created("")).map_or(0, |b| b.len());
        let filled = serde_json::to_vec(&order.filled("")).map_or(0, |b| b.len());
        (created + filled) / 2
    }
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

    #[test]
    fn the_order_check_accepts_the_published_bytes_only() {
        let mut id = OrderId::new(3, 41);
        let order = Order::new(id.text(), 41);
        let created = serde_json::to_vec(&order.created("c")).unwrap();
        assert!(is_bench_order(Some("OrderCreated"), &created));
        assert!(!is_bench_order(Some("OrderFilled"), &created));
        let filled = serde_json::to_vec(&order.filled("c")).unwrap();
        assert!(is_bench_order(Some("OrderFilled"), &filled));
        let changed = String::from_utf8(created)
            .unwrap()
            .replace("\"price\":110.25", "\"price\":110.5");
        assert!(!is_bench_order(Some("OrderCreated"), changed.as_bytes()));
    }
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
