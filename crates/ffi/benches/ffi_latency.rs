//! The C++ harness's conditions (`examples/cpp/latency.cpp`) from Rust, so the three rows of
//! `scripts/bench-cpp.sh` compare the same thing: a ~400-byte `OrderCreated` JSON published
//! in bursts of 50,000 timed calls while the shipper ships into Redis, waiting for the ring
//! to drain between bursts. Rows: the Rust `Publisher::publish_raw` and `evstream_publish`
//! through the C ABI; then the typed `OrderCreated` (~100 bytes of JSON, copied in binary):
//! `Publisher::on_order_created` and `evstream_on_order_created` through the C ABI.
//!
//! Run: `cargo bench -p evstream-ffi --bench ffi_latency -- --redis-url URL [--calls N]`.
use std::time::{Duration, Instant};

use evstream::config::{Config, RingConfig};
use evstream::publish::{OrderCreated, Side};
use evstream::{publish, ship};
use evstream_ffi::*;

const JSON: &str = concat!(
    r#"{"orderId":"ORD-2026-11-26-000000012345","clientOrderId":"CL-7f3a9c2e-5b1d-4e8f-a6c0-123456789abc","#,
    r#""symbol":"AAPL","quantity":100.0,"price":189.25,"side":"BUY","orderType":"LIMIT","#,
    r#""timeInForce":"DAY","account":"ACC-EQUITIES-PROP-001","strategy":"momentum-breakout-v3","#,
    r#""venue":"XNAS","trader":"algo-engine-7","createdTsNs":1764000000000000000,"riskCheckNs":850,"#,
    r#""parentOrderId":"PARENT-2026-11-26-000000000042","notes":"risk checks passed"}"#
);
const CORRELATION: &str = "corr-7f3a9c2e-5b1d-4e8f-a6c0-123456789abc";
const BURST: u64 = 50_000;

/// Times `calls` calls of `publish` in bursts, `depth()` telling when the ring has drained.
fn harness(calls: u64, publish: impl Fn() -> bool, depth: impl Fn() -> u64) -> Vec<u64> {
    let drain = || {
        while depth() > 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    for _ in 0..BURST {
        while !publish() {}
    }
    drain();
    let mut samples = Vec::with_capacity(calls as usize);
    let mut done = 0;
    while done < calls {
        let end = calls.min(done + BURST);
        while done < end {
            let start = Instant::now();
            let accepted = publish();
            let elapsed = start.elapsed().as_nanos() as u64;
            assert!(accepted, "a publish was refused within a burst");
            samples.push(elapsed);
            done += 1;
        }
        drain();
    }
    samples.sort_unstable();
    samples
}

fn row(name: &str, samples: &[u64]) {
    let at = |q: f64| samples[((q * samples.len() as f64) as usize).min(samples.len() - 1)];
    println!(
        r#"{{"row":"{name}","calls":{},"payload_bytes":{},"p50_ns":{},"p99_ns":{},"p999_ns":{},"max_ns":{}}}"#,
        samples.len(),
        JSON.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        samples[samples.len() - 1]
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let Some(url) = value("--redis-url") else {
        eprintln!("usage: ffi_latency --redis-url URL [--calls N] (scripts/bench-cpp.sh runs it)");
        return;
    };
    let calls: u64 = value("--calls")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);

    let mut config = Config::default();
    config.redis.url.clone_from(&url);
    config.redis.stream = "bench-rust".to_owned();
    config.ring = RingConfig::default().set_capacity(131_072);
    let (publisher, receiver) = publish::channel(&config).expect("valid configuration");
    let shipper = ship::spawn(&config, receiver).expect("shipper starts");
    let samples = harness(
        calls,
        || {
            publisher
                .publish_raw("OrderCreated", JSON.as_bytes(), CORRELATION)
                .is_ok()
        },
        || publisher.health().depth,
    );
    row("rust Publisher::publish_raw", &samples);
    let order = OrderCreated {
        correlation_id: "ord-000012345",
        order_id: "ORD-2026-12-04-000012345",
        symbol: "AAPL",
        quantity: 100.0,
        price: 189.25,
        side: Side::Buy,
    };
    let samples = harness(
        calls,
        || publisher.on_order_created(&order).is_ok(),
        || publisher.health().depth,
    );
    row("rust Publisher::on_order_created (typed)", &samples);
    drop(publisher);
    shipper.shutdown(Duration::from_secs(30));

    let c_url = std::ffi::CString::new(url).expect("no NUL in the URL");
    let options = evstream_options {
        stream: c"bench-ffi".as_ptr(),
        ring_capacity: 131_072,
        slot_bytes: 0,
        max_event_bytes: 0,
        journal_dir: std::ptr::null(),
        producer_name: std::ptr::null(),
    };
    let mut status = 0;
    // SAFETY: valid NUL-terminated strings, options and status.
    let handle = unsafe { evstream_create(c_url.as_ptr(), &options, &mut status) };
    assert_eq!(status, EVSTREAM_OK);
    let text = |s: &str| evstream_str {
        ptr: s.as_ptr().cast(),
        len: s.len(),
    };
    let samples = harness(
        calls,
        // SAFETY: a live handle and valid strings.
        || unsafe {
            evstream_publish(
                handle,
                text("OrderCreated"),
                text(CORRELATION),
                JSON.as_ptr(),
                JSON.len(),
            ) == EVSTREAM_OK
        },
        || {
            let mut health = evstream_health::default();
            // SAFETY: a live handle and a writable struct.
            unsafe { evstream_health_snapshot(handle, &mut health) };
            health.ring_depth
        },
    );
    row("rust → C ABI evstream_publish", &samples);
    let order = evstream_order_created {
        correlation_id: text("ord-000012345"),
        order_id: text("ORD-2026-12-04-000012345"),
        symbol: text("AAPL"),
        quantity: 100.0,
        price: 189.25,
        side: EVSTREAM_SIDE_BUY,
    };
    let samples = harness(
        calls,
        // SAFETY: a live handle and a valid order.
        || unsafe { evstream_on_order_created(handle, &order) == EVSTREAM_OK },
        || {
            let mut health = evstream_health::default();
            // SAFETY: a live handle and a writable struct.
            unsafe { evstream_health_snapshot(handle, &mut health) };
            health.ring_depth
        },
    );
    row("rust → C ABI evstream_on_order_created (typed)", &samples);
    // SAFETY: no other call uses the handle any more.
    unsafe { evstream_destroy(handle) };
}
