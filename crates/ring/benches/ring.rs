//! Throughput of the ring against crossbeam's `ArrayQueue` carrying the same 400-byte event,
//! one and two producers, consumer draining on its own thread.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;

const EVENT: &[u8] = &[b'x'; 400];
const CAPACITY: usize = 8192;

/// Sends `iters` events split across `producers` threads and waits until all are drained.
fn run_ring(producers: u64, iters: u64) -> Duration {
    let (producer, mut consumer) =
        evstream_ring::channel(CAPACITY, || Vec::<u8>::with_capacity(1024)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let drainer = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut received = 0u64;
            let mut bytes = 0usize;
            while received < iters {
                let drained = consumer.drain(256, |slot| bytes += slot.len());
                received += drained.events as u64;
                if drained.events == 0 {
                    std::hint::spin_loop();
                }
            }
            done.store(true, Ordering::Release);
            bytes
        })
    };
    let start = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|_| {
            let producer = producer.clone();
            let n = iters.div_ceil(producers);
            thread::spawn(move || {
                for _ in 0..n {
                    while producer
                        .try_publish(|slot| {
                            slot.clear();
                            slot.extend_from_slice(EVENT);
                            Ok::<(), ()>(())
                        })
                        .is_err()
                    {
                        std::hint::spin_loop();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drainer.join().unwrap();
    start.elapsed()
}

/// The hand-written baseline: a bounded crossbeam queue of owned `Vec<u8>` events.
fn run_array_queue(producers: u64, iters: u64) -> Duration {
    let queue = Arc::new(ArrayQueue::<Vec<u8>>::new(CAPACITY));
    let drainer = {
        let queue = Arc::clone(&queue);
        thread::spawn(move || {
            let mut received = 0u64;
            while received < iters {
                match queue.pop() {
                    Some(event) => {
                        received += 1;
                        criterion::black_box(event);
                    }
                    None => std::hint::spin_loop(),
                }
            }
        })
    };
    let start = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|_| {
            let queue = Arc::clone(&queue);
            let n = iters.div_ceil(producers);
            thread::spawn(move || {
                for _ in 0..n {
                    let mut event = EVENT.to_vec();
                    while let Err(back) = queue.push(event) {
                        event = back;
                        std::hint::spin_loop();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drainer.join().unwrap();
    start.elapsed()
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_400B");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    for producers in [1u64, 2] {
        group.throughput(Throughput::Elements(100_000));
        group.bench_with_input(
            BenchmarkId::new("evstream_ring", producers),
            &producers,
            |b, &p| b.iter_custom(|iters| (0..iters).map(|_| run_ring(p, 100_000)).sum()),
        );
        group.bench_with_input(
            BenchmarkId::new("crossbeam_array_queue", producers),
            &producers,
            |b, &p| b.iter_custom(|iters| (0..iters).map(|_| run_array_queue(p, 100_000)).sum()),
        );
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
