//! Issue 2: many producer threads × many events through `Publisher`: every accepted event is
//! drained exactly once, in order per producer, with consecutive sequences and the exact bytes.

use std::thread;

use evstream::config::{Config, RingConfig};
use evstream::publish::{self, CapturedEvent};
use serde::Serialize;

#[derive(Serialize)]
struct Tick<'a> {
    thread: u64,
    n: u64,
    symbol: &'a str,
    price: f64,
}

#[test]
fn four_producers_exactly_once_in_order_with_consecutive_sequences() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 250_000;
    let config = Config {
        ring: RingConfig::default().set_capacity(8192).set_slot_bytes(256),
        ..Config::default()
    };
    let (publisher, mut receiver) = publish::channel(&config).unwrap();
    let producers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let publisher = publisher.clone();
            thread::spawn(move || {
                let mut refused = 0u64;
                for n in 0..PER_THREAD {
                    let tick = Tick {
                        thread,
                        n,
                        symbol: "MSFT",
                        price: 411.0 + n as f64 / 100.0,
                    };
                    let correlation = format!("t{thread}");
                    while publisher.publish("Tick", &tick, &correlation).is_err() {
                        refused += 1;
                        thread::yield_now();
                    }
                }
                refused
            })
        })
        .collect();
    drop(publisher);

    let mut next_n = [0u64; THREADS as usize];
    let mut expected_sequence = 1u64;
    let mut batch: Vec<CapturedEvent> = Vec::new();
    while !receiver.is_finished() {
        receiver.drain_into(&mut batch, 512);
        for event in &batch {
            assert_eq!(
                event.sequence(),
                expected_sequence,
                "sequences are consecutive"
            );
            expected_sequence += 1;
            let value: serde_json::Value = serde_json::from_slice(event.data()).unwrap();
            let (thread, n) = (
                value["thread"].as_u64().unwrap(),
                value["n"].as_u64().unwrap(),
            );
            assert_eq!(
                n, next_n[thread as usize],
                "thread {thread}: in order, exactly once"
            );
            next_n[thread as usize] += 1;
            assert_eq!(event.correlation_id(), format!("t{thread}"));
            let tick = Tick {
                thread,
                n,
                symbol: "MSFT",
                price: 411.0 + n as f64 / 100.0,
            };
            assert_eq!(
                event.data(),
                serde_json::to_vec(&tick).unwrap(),
                "byte-identical"
            );
        }
        receiver.recycle(batch.drain(..));
    }
    let refused: u64 = producers.into_iter().map(|p| p.join().unwrap()).sum();
    assert_eq!(expected_sequence - 1, THREADS * PER_THREAD);
    assert!(next_n.iter().all(|&n| n == PER_THREAD));
    let health = receiver.health();
    assert_eq!(health.published, THREADS * PER_THREAD);
    assert_eq!(
        health.refused.ring_full, refused,
        "each full-ring refusal is counted"
    );
}
