//! Regression test for issue 2: zero heap allocations across 1M accepted `publish` calls (and
//! the full-ring refusals met on the way) after warm-up,
//! while a consumer thread drains concurrently.
//!
//! The counting allocator below is the only `unsafe` outside `evstream-ring`: a global
//! allocator can only be written as an `unsafe impl`. It forwards to the system allocator and
//! counts calls made on threads that opted in.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::thread;

use evstream::config::{Config, RingConfig};
use evstream::publish::{self, CapturedEvent, OrderCreated, OrderFilled, Side};
use evstream::PublishError;

struct Counting;

thread_local! {
    /// Whether this thread's allocations are counted.
    static TRACKED: Cell<bool> = const { Cell::new(false) };
    /// Allocations counted on this thread (per thread, so parallel tests do not mix).
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the thread-locals may already be gone while a thread exits.
    if TRACKED.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds exactly as it does for `System`; counting touches only
// const-initialised thread-locals, which do not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded contract (see the impl).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded contract (see the impl).
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded contract (see the impl).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Publishes one event, retrying (without allocating) while the ring is full, so every call
/// counted is an accepted event.
fn publish_one(publisher: &evstream::Publisher, n: u64, value: &serde_json::Value, raw: &[u8]) {
    while !try_publish_one(publisher, n, value, raw) {
        thread::yield_now();
    }
}

fn try_publish_one(
    publisher: &evstream::Publisher,
    n: u64,
    value: &serde_json::Value,
    raw: &[u8],
) -> bool {
    let result = match n % 4 {
        0 => publisher.on_order_created(&OrderCreated {
            correlation_id: "corr-7f3a9c2e-5b1d-4e8f-a6c0-123456789abc",
            order_id: "ORD-000000012345",
            symbol: "AAPL",
            quantity: 100.0 + (n % 7) as f64,
            price: 189.25,
            side: Side::Buy,
        }),
        1 => publisher.on_order_filled(&OrderFilled {
            correlation_id: "corr-7f3a9c2e-5b1d-4e8f-a6c0-123456789abc",
            order_id: "ORD-000000012345",
            fill_id: "FILL-1",
            quantity: 50.0,
            price: 189.24,
        }),
        2 => publisher.publish("Signal", value, "sig"),
        _ => publisher.publish_raw("Raw", raw, ""),
    };
    match result {
        Ok(()) => true,
        Err(PublishError::RingFull { .. }) => false,
        Err(other) => panic!("unexpected refusal: {other}"),
    }
}

#[test]
fn one_million_publish_calls_allocate_nothing_after_warm_up() {
    let config = Config {
        ring: RingConfig::default()
            .set_capacity(4096)
            .set_slot_bytes(1024),
        ..Config::default()
    };
    let (publisher, mut receiver) = publish::channel(&config).unwrap();
    let drainer = thread::spawn(move || {
        let mut batch: Vec<CapturedEvent> = Vec::with_capacity(1024);
        let mut drained = 0u64;
        while !receiver.is_finished() {
            if receiver.drain_into(&mut batch, 1024) == 0 {
                thread::yield_now();
            }
            drained += batch.len() as u64;
            receiver.recycle(batch.drain(..));
        }
        drained
    });
    // Built before measuring: the caller's own values may allocate, `publish` may not.
    let value = serde_json::json!({"name": "momentum", "score": 0.93, "tags": ["a", "b"]});
    let raw = br#"{"pre":"serialized","n":1}"#.to_vec();

    for n in 0..50_000 {
        publish_one(&publisher, n, &value, &raw);
    }
    let before = allocations();
    TRACKED.with(|t| t.set(true));
    for n in 0..1_000_000 {
        publish_one(&publisher, n, &value, &raw);
    }
    TRACKED.with(|t| t.set(false));
    let allocations = allocations() - before;

    let health = publisher.health();
    drop(publisher);
    let drained = drainer.join().unwrap();
    assert_eq!(
        allocations, 0,
        "publish allocated {allocations} times in 1M calls"
    );
    assert_eq!(
        drained, health.published,
        "every accepted event was drained"
    );
    assert!(
        health.published > 500_000,
        "most calls were accepted: {health:?}"
    );
}

#[test]
fn the_counting_allocator_does_count() {
    TRACKED.with(|t| t.set(true));
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 100]);
    let after = allocations();
    TRACKED.with(|t| t.set(false));
    drop(v);
    assert!(after > before, "a Vec allocation must be seen");
}
