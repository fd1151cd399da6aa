//! Issue 3: the shipper against real `redis-server` processes from the testkit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use evstream::audit::{audit_stream, Audit};
use evstream::config::{AppendMode, Config, RingConfig};
use evstream::publish::{self, Publisher};
use evstream::{ship, PublishError};
use evstream_testkit::{FaultProxy, RedisServer, Reply, SentinelSet};
use redis::streams::StreamId;
use redis::Value;
use serde::Serialize;

#[derive(Serialize)]
struct Tick {
    thread: u64,
    n: u64,
    symbol: &'static str,
    price: f64,
}

/// Held by the tests whose claim depends on CPU to spare (the journal keeping up with an
/// outage) and by the busiest fault test, so that the harness never runs them side by side on
/// a two-core machine.
static CPU_HUNGRY: Mutex<()> = Mutex::new(());

fn cpu_hungry() -> std::sync::MutexGuard<'static, ()> {
    CPU_HUNGRY.lock().unwrap_or_else(|e| e.into_inner())
}

fn tick(thread: u64, n: u64) -> Tick {
    Tick {
        thread,
        n,
        symbol: "NVDA",
        price: 131.0 + (n % 1000) as f64 / 100.0,
    }
}

fn config(url: &str, stream: &str) -> Config {
    let mut config = Config::default();
    config.redis.url = url.to_owned();
    config.redis.stream = stream.to_owned();
    config.ring = RingConfig::default()
        .set_capacity(65_536)
        .set_slot_bytes(256);
    config.ship.max_len = 0;
    config.ship.retry_max_ms = 200;
    config.ship.breaker_cool_down_ms = 500;
    config
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// Publishes `per_thread` ticks from each of `threads` threads, retrying while the ring is
/// full, and returns how many refusals (full ring) the threads saw.
fn publish_ticks(
    publisher: &Publisher,
    threads: u64,
    per_thread: u64,
    pace: Option<Duration>,
) -> u64 {
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let publisher = publisher.clone();
            thread::spawn(move || {
                let mut refused = 0;
                for n in 0..per_thread {
                    loop {
                        match publisher.publish("Tick", &tick(thread, n), &format!("t{thread}")) {
                            Ok(()) => break,
                            Err(PublishError::RingFull { .. }) => {
                                refused += 1;
                                thread::sleep(Duration::from_micros(200));
                            }
                            Err(other) => panic!("unexpected refusal: {other}"),
                        }
                    }
                    if let Some(pace) = pace {
                        if n % 100 == 99 {
                            thread::sleep(pace);
                        }
                    }
                }
                refused
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

/// A connection for reading back: pages of thousands of entries may take longer than the
/// client's default 500 ms response timeout in a debug build.
async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap()
}

fn field<'a>(entry: &'a StreamId, name: &str) -> &'a [u8] {
    match entry.map.get(name) {
        Some(Value::BulkString(bytes)) => bytes,
        _ => b"",
    }
}

/// Audits the stream: per thread, ticks in order and byte-identical to what was published.
fn audit_ticks(url: &str, stream: &str) -> (Audit, u64) {
    block_on(async {
        let mut connection = connect(url).await;
        let mut next: HashMap<u64, u64> = HashMap::new();
        let mut misordered = 0u64;
        let audit = audit_stream(&mut connection, stream, 2000, |entry, data| {
            let value: serde_json::Value = match serde_json::from_slice(data) {
                Ok(v) => v,
                Err(_) => return false,
            };
            let (Some(thread), Some(n)) = (value["thread"].as_u64(), value["n"].as_u64()) else {
                return false;
            };
            let expected = next.entry(thread).or_default();
            if n != *expected {
                misordered += 1;
            }
            *expected = n + 1;
            field(entry, "event_type") == b"Tick"
                && field(entry, "correlation_id") == format!("t{thread}").as_bytes()
                && data == serde_json::to_vec(&tick(thread, n)).unwrap()
        })
        .await
        .unwrap();
        (audit, misordered)
    })
}

/// The longest time between two consecutive entries of `stream`, by their ids.
fn longest_gap(url: &str, stream: &str) -> Duration {
    block_on(async {
        let mut connection = connect(url).await;
        let (mut start, mut last, mut gap) = ("-".to_owned(), None::<u64>, 0);
        loop {
            let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(stream)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut connection)
                .await
                .unwrap();
            let Some(end) = page.ids.last() else {
                break Duration::from_millis(gap);
            };
            for entry in &page.ids {
                let ms: u64 = entry.id.split('-').next().unwrap().parse().unwrap();
                gap = gap.max(ms - last.unwrap_or(ms));
                last = Some(ms);
            }
            start = format!("({}", end.id);
        }
    })
}

fn assert_exactly_once(audit: &Audit, misordered: u64, expected: u64) {
    assert_eq!(audit.entries, expected, "{audit:?}");
    assert_eq!(audit.duplicates, 0, "{audit:?}");
    assert_eq!(audit.duplicate_event_ids, 0, "{audit:?}");
    assert_eq!(audit.out_of_order, 0, "{audit:?}");
    assert_eq!(audit.corrupt, 0, "{audit:?}");
    assert_eq!(misordered, 0, "per-thread order");
    let producer = audit.producers.values().next().unwrap();
    assert_eq!(
        (producer.first, producer.last, producer.gaps()),
        (1, expected, 0)
    );
}

#[test]
fn one_million_events_from_four_threads_exactly_once_in_order() {
    let _alone = cpu_hungry();
    let redis = RedisServer::start().unwrap();
    let config = config(&redis.url(), "events");
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();
    let started = Instant::now();
    publish_ticks(&publisher, 4, 250_000, None);
    let report = shipper.shutdown(Duration::from_secs(60));
    let elapsed = started.elapsed();
    assert_eq!(report.undelivered, 0, "{report:?}");
    assert_eq!(report.shipped, 1_000_000, "{report:?}");
    let (audit, misordered) = audit_ticks(&redis.url(), "events");
    assert_exactly_once(&audit, misordered, 1_000_000);
    eprintln!("1M events shipped and audited; publishing + flush took {elapsed:?}");
}

/// The guarded transaction pipelines its batches (`ship.in_flight` of them on one
/// connection) and keeps every producer's order.
#[test]
fn transaction_mode_pipelines_batches_exactly_once_in_order() {
    let redis = RedisServer::start().unwrap();
    let mut config = config(&redis.url(), "events");
    config.ship.append = AppendMode::Transaction;
    config.ship.in_flight = 4;
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();
    publish_ticks(&publisher, 2, 150_000, None);
    let report = shipper.shutdown(Duration::from_secs(60));
    assert_eq!(
        (report.shipped, report.undelivered),
        (300_000, 0),
        "{report:?}"
    );
    let (audit, misordered) = audit_ticks(&redis.url(), "events");
    assert_exactly_once(&audit, misordered, 300_000);
    assert_eq!(
        redis
            .command(&["EXISTS", "events:evstream-parked", "events:dlq"])
            .unwrap()
            .as_int(),
        Some(0)
    );
}

#[test]
fn redis_killed_five_times_loses_and_duplicates_nothing() {
    killed_five_times(AppendMode::Script);
}

#[test]
fn redis_killed_five_times_in_transaction_mode_loses_and_duplicates_nothing() {
    killed_five_times(AppendMode::Transaction);
}

fn killed_five_times(append: AppendMode) {
    let mut redis = RedisServer::builder().aof(true).start().unwrap();
    let url = redis.url();
    let mut config = config(&url, "events");
    config.ship.append = append;
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let publisher = publisher.clone();
        let done = Arc::clone(&done);
        thread::spawn(move || {
            // About 60,000 events/s: the ring (65,536) absorbs each restart.
            let refused = publish_ticks(&publisher, 2, 250_000, Some(Duration::from_millis(3)));
            done.store(true, Ordering::SeqCst);
            refused
        })
    };
    let mut kills = 0;
    while kills < 5 && !done.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(600));
        redis.kill().unwrap();
        thread::sleep(Duration::from_millis(100));
        redis.restart().unwrap();
        kills += 1;
    }
    producer.join().unwrap();
    let report = shipper.shutdown(Duration::from_secs(60));
    assert_eq!(kills, 5, "the run lasted long enough for five kills");
    assert_eq!(report.undelivered, 0, "{report:?}");
    let (audit, misordered) = audit_ticks(&url, "events");
    assert_exactly_once(&audit, misordered, 500_000);
}

#[test]
fn connection_cut_after_a_batch_is_sent_duplicates_nothing() {
    connection_cuts_duplicate_nothing(AppendMode::Script);
}

#[test]
fn connection_cut_in_transaction_mode_duplicates_nothing() {
    connection_cuts_duplicate_nothing(AppendMode::Transaction);
}

fn connection_cuts_duplicate_nothing(append: AppendMode) {
    let redis = RedisServer::start().unwrap();
    let proxy = FaultProxy::start(redis.addr().parse().unwrap()).unwrap();
    let mut config = config(&proxy.url(), "events");
    config.ship.in_flight = 4;
    config.ship.append = append;
    // Batches that fit in one of the proxy's 64 KiB reads: a cut then follows a whole
    // request, which Redis runs (a full batch of 256 would be cut mid-request, never run,
    // and no retry would find it landed; a fast host fills every batch).
    config.ship.batch_max = 64;
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();
    let producer = {
        let publisher = publisher.clone();
        thread::spawn(move || publish_ticks(&publisher, 2, 100_000, Some(Duration::from_millis(2))))
    };
    let mut cuts = 0;
    while !producer.is_finished() && cuts < 10 {
        thread::sleep(Duration::from_millis(150));
        // The next request (a batch) reaches Redis, its answer never reaches the shipper.
        proxy.cut_after_client_bytes(1);
        while proxy.cut_pending() && !producer.is_finished() {
            thread::sleep(Duration::from_millis(5));
        }
        cuts += 1;
    }
    producer.join().unwrap();
    let health = shipper.health();
    let report = shipper.shutdown(Duration::from_secs(60));
    assert!(cuts >= 5, "cuts: {cuts}");
    assert!(proxy.cuts() >= 5);
    assert_eq!(report.undelivered, 0, "{report:?}");
    assert!(health.batches_failed > 0, "cuts caused retries: {health:?}");
    // A cut right after a batch's call (script or EXEC): it ran, its answer was lost, the
    // retry finds the mark past it and skips.
    assert!(
        health.duplicates_skipped > 0,
        "a retried batch that had landed was skipped: {health:?}"
    );
    let (audit, misordered) = audit_ticks(&redis.url(), "events");
    assert_exactly_once(&audit, misordered, 200_000);
}

#[test]
fn a_stalled_connection_times_out_and_batches_released_late_duplicate_nothing() {
    let _alone = cpu_hungry();
    let redis = RedisServer::start().unwrap();
    let proxy = FaultProxy::start(redis.addr().parse().unwrap()).unwrap();
    let config = config(&proxy.url(), "events");
    assert_eq!(config.ship.timeout_ms, 100);
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();
    let producer = {
        let publisher = publisher.clone();
        thread::spawn(move || publish_ticks(&publisher, 2, 80_000, Some(Duration::from_millis(4))))
    };
    // Redis stops answering for 600 ms, three times: the batches in flight (and the
    // reconnection attempts) must time out rather than wait, and the requests held in the
    // stalled connections reach Redis late, after the shipper gave up on them.
    let mut stalls = 0;
    while !producer.is_finished() && stalls < 3 {
        thread::sleep(Duration::from_millis(200));
        proxy.stall(true);
        thread::sleep(Duration::from_millis(600));
        proxy.stall(false);
        stalls += 1;
    }
    // At ~50,000 events/s a 600 ms stall can come near filling the ring: publish refuses (never blocks),
    // and these publishers retry.
    producer.join().unwrap();
    let health = shipper.health();
    let report = shipper.shutdown(Duration::from_secs(60));
    assert_eq!(stalls, 3, "the producer outlasted the stalls");
    assert_eq!(report.undelivered, 0, "{report:?}");
    assert!(
        health.batches_failed > 0,
        "stalled batches timed out: {health:?}"
    );
    let (audit, misordered) = audit_ticks(&redis.url(), "events");
    assert_exactly_once(&audit, misordered, 160_000);
}

#[test]
fn poison_events_go_to_the_dead_letter_stream_and_good_ones_to_the_stream() {
    let redis = RedisServer::start().unwrap();
    let config = config(&redis.url(), "orders");
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();
    for n in 0..1000u64 {
        if n % 10 == 3 {
            publisher
                .publish_raw("Broken", format!("{{\"n\":{n},").as_bytes(), "bad")
                .unwrap();
        } else {
            publisher
                .publish_raw("Good", format!("{{\"n\":{n}}}").as_bytes(), "good")
                .unwrap();
        }
    }
    let health_before = shipper.health();
    let report = shipper.shutdown(Duration::from_secs(30));
    assert_eq!(report.undelivered, 0);
    assert_eq!(
        (report.shipped, report.dead_lettered),
        (900, 100),
        "{report:?} {health_before:?}"
    );

    let good = redis.command(&["XLEN", "orders"]).unwrap().as_int();
    let dead = redis.command(&["XLEN", "orders:dlq"]).unwrap().as_int();
    assert_eq!((good, dead), (Some(900), Some(100)));
    block_on(async {
        let mut connection = connect(&redis.url()).await;
        let letters: redis::streams::StreamRangeReply =
            redis::AsyncCommands::xrange_all(&mut connection, "orders:dlq")
                .await
                .unwrap();
        for (i, letter) in letters.ids.iter().enumerate() {
            let n = i as u64 * 10 + 3;
            assert_eq!(field(letter, "dlq_reason"), b"invalid_json");
            assert_eq!(field(letter, "dlq_stage"), b"ship");
            assert!(std::str::from_utf8(field(letter, "dlq_error"))
                .unwrap()
                .contains("JSON"));
            assert_eq!(field(letter, "data"), format!("{{\"n\":{n},").as_bytes());
            assert_eq!(
                field(letter, "sequence"),
                (n + 1).to_string().as_bytes(),
                "keeps its number"
            );
            assert_eq!(field(letter, "event_type"), b"Broken");
        }
        let (audit, _) = {
            let audit = audit_stream(&mut connection, "orders", 1000, |_, data| {
                serde_json::from_slice::<serde_json::Value>(data).is_ok()
            })
            .await
            .unwrap();
            (audit, ())
        };
        assert_eq!(
            (audit.entries, audit.corrupt, audit.duplicates),
            (900, 0, 0)
        );
        // Every sequence is in the stream or in the dead-letter stream.
        let producer = audit.producers.values().next().unwrap();
        assert_eq!(
            (producer.first, producer.last, producer.distinct),
            (1, 1000, 900)
        );
    });
}

#[test]
fn unreachable_redis_opens_the_breaker_and_recovers_without_loss() {
    let redis = RedisServer::start().unwrap();
    let proxy = FaultProxy::start(redis.addr().parse().unwrap()).unwrap();
    let mut config = config(&proxy.url(), "events");
    config.ship.breaker_threshold = 3;
    config.ship.breaker_cool_down_ms = 300;
    config.ship.retry_base_ms = 5;
    config.ship.retry_max_ms = 20;
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();
    proxy.refuse_connections(true);
    proxy.cut_all();
    publish_ticks(&publisher, 1, 10_000, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while shipper.health().breaker != ship::BreakerState::Open && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let open = shipper.health();
    assert_eq!(open.breaker, ship::BreakerState::Open, "{open:?}");
    assert!(!open.redis_connected);
    assert!(open.last_error.is_some());
    assert_eq!(open.shipped, 0);
    proxy.refuse_connections(false);
    let report = shipper.shutdown(Duration::from_secs(30));
    assert_eq!(
        (report.shipped, report.undelivered),
        (10_000, 0),
        "{report:?}"
    );
    let (audit, misordered) = audit_ticks(&redis.url(), "events");
    assert_exactly_once(&audit, misordered, 10_000);
}

/// Redis unreachable for `outage` while `rate` events/s are published into a ring far
/// smaller than the outage needs: the journal absorbs the rest, then drains in order.
fn outage_longer_than_the_ring(outage: Duration, rate: u64, ring: usize) {
    let _alone = cpu_hungry();
    let redis = RedisServer::start().unwrap();
    let proxy = FaultProxy::start(redis.addr().parse().unwrap()).unwrap();
    let journal = tempfile::tempdir().unwrap();
    let mut config = config(&proxy.url(), "events");
    config.ring = RingConfig::default().set_capacity(ring).set_slot_bytes(256);
    config.ship.journal_dir = Some(journal.path().to_owned());
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();

    let total = rate * (outage.as_secs() + 4);
    let producer = {
        let publisher = publisher.clone();
        // Paced in bursts of 100 events: `rate` events/s.
        let pause = Duration::from_secs_f64(100.0 / rate as f64);
        thread::spawn(move || publish_ticks(&publisher, 1, total, Some(pause)))
    };
    thread::sleep(Duration::from_secs(1));
    proxy.refuse_connections(true);
    proxy.cut_all();
    thread::sleep(outage);
    let during = shipper.health();
    proxy.refuse_connections(false);
    let refused = producer.join().unwrap();
    let report = shipper.shutdown(Duration::from_secs(120));
    assert!(
        during.spilled > ring as u64,
        "the journal took what the ring could not: {during:?}"
    );
    assert!(!during.redis_connected, "{during:?}");
    assert_eq!((report.undelivered, report.journaled), (0, 0), "{report:?}");
    assert_eq!(refused, 0, "publish was never refused: the journal kept up");
    let (audit, misordered) = audit_ticks(&redis.url(), "events");
    assert_exactly_once(&audit, misordered, total);
    let left: u64 = std::fs::read_dir(journal.path())
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        left < 64 * 1024 * 1024,
        "the journal drained (at most the open segment remains)"
    );
}

#[test]
fn outage_longer_than_the_ring_spills_to_the_journal_and_loses_nothing() {
    // 16,384 slots hold 0.8 s at this rate; the outage lasts 4 s.
    outage_longer_than_the_ring(Duration::from_secs(4), 20_000, 16_384);
}

/// The issue's figure: Redis away for 60 s at 20,000 events/s (1.2M events, the ring holds
/// 65,536). About 90 s; run with `cargo test -p evstream --test ship -- --ignored`.
#[test]
#[ignore = "60-second outage; run explicitly"]
fn redis_away_for_sixty_seconds_at_twenty_thousand_per_second() {
    outage_longer_than_the_ring(Duration::from_secs(60), 20_000, 65_536);
}

#[test]
fn undelivered_events_stay_in_the_journal_and_the_next_start_replays_them() {
    let redis = RedisServer::start().unwrap();
    let proxy = FaultProxy::start(redis.addr().parse().unwrap()).unwrap();
    let journal = tempfile::tempdir().unwrap();
    proxy.refuse_connections(true);

    // First process: Redis unreachable, shut down with everything undelivered.
    let mut first = config(&proxy.url(), "events");
    first.ship.journal_dir = Some(journal.path().to_owned());
    let (publisher, receiver) = publish::channel(&first).unwrap();
    let first_producer = publisher.producer_id().to_owned();
    let shipper = ship::spawn(&first, receiver).unwrap();
    publish_ticks(&publisher, 1, 10_000, None);
    let report = shipper.shutdown(Duration::from_millis(300));
    assert_eq!(
        (report.shipped, report.journaled, report.undelivered),
        (0, 10_000, 0),
        "{report:?}"
    );
    drop(publisher);

    // Next start, Redis back: the old journal is replayed next to the new events.
    let mut second = config(&redis.url(), "events");
    second.ship.journal_dir = Some(journal.path().to_owned());
    let (publisher, receiver) = publish::channel(&second).unwrap();
    let shipper = ship::spawn(&second, receiver).unwrap();
    assert_eq!(
        shipper.health().journal_events,
        10_000,
        "found the old journal"
    );
    for n in 0..100u64 {
        publisher.publish("Tick", &tick(9, n), "t9").unwrap();
    }
    let report = shipper.shutdown(Duration::from_secs(30));
    assert_eq!(
        (report.shipped, report.undelivered, report.journaled),
        (10_100, 0, 0),
        "{report:?}"
    );
    let audit = block_on(async {
        let mut connection = connect(&redis.url()).await;
        audit_stream(&mut connection, "events", 2000, |_, _| true)
            .await
            .unwrap()
    });
    assert_eq!(
        (audit.entries, audit.duplicates, audit.out_of_order),
        (10_100, 0, 0)
    );
    let replayed = &audit.producers[&first_producer];
    assert_eq!(
        (replayed.first, replayed.last, replayed.gaps()),
        (1, 10_000, 0)
    );
    assert!(
        !journal.path().join(&first_producer).exists(),
        "the replayed journal is removed"
    );
}

/// With partitions, each lane journals under `partition-<p>/` and the next start's lanes
/// replay their own partition's journals: nothing lost, nothing twice, in any partition.
#[test]
fn a_partitioned_shippers_journals_are_replayed_per_partition() {
    let redis = RedisServer::start().unwrap();
    let proxy = FaultProxy::start(redis.addr().parse().unwrap()).unwrap();
    let journal = tempfile::tempdir().unwrap();
    proxy.refuse_connections(true);
    let partitioned = |url: &str| {
        let mut config = config(url, "events");
        config.redis.partitions = Some(3);
        config.ship.journal_dir = Some(journal.path().to_owned());
        config
    };

    let first = partitioned(&proxy.url());
    let (publisher, receiver) = publish::channel(&first).unwrap();
    let shipper = ship::spawn(&first, receiver).unwrap();
    publish_ticks(&publisher, 6, 2_000, None);
    let report = shipper.shutdown(Duration::from_millis(300));
    assert_eq!(
        (report.shipped, report.journaled, report.undelivered),
        (0, 12_000, 0),
        "{report:?}"
    );
    drop(publisher);
    let lanes: Vec<_> = (0..3)
        .filter(|p| journal.path().join(format!("partition-{p}")).exists())
        .collect();
    assert!(lanes.len() > 1, "journals of several partitions: {lanes:?}");

    let second = partitioned(&redis.url());
    let (publisher, receiver) = publish::channel(&second).unwrap();
    let shipper = ship::spawn(&second, receiver).unwrap();
    assert_eq!(
        shipper.health().journal_events,
        12_000,
        "found the old journals"
    );
    drop(publisher);
    let report = shipper.shutdown(Duration::from_secs(30));
    assert_eq!((report.undelivered, report.journaled), (0, 0), "{report:?}");

    let mut total = Audit::default();
    let mut misordered = 0;
    for key in second.redis.stream_keys() {
        let (audit, wrong) = audit_ticks(&redis.url(), &key);
        total.add_partition(audit);
        misordered += wrong;
    }
    assert_eq!(
        (
            total.entries,
            total.duplicates,
            total.out_of_order,
            total.corrupt
        ),
        (12_000, 0, 0, 0),
        "{total:?}"
    );
    assert_eq!(misordered, 0, "per-thread order");
    let producer = total.producers.values().next().unwrap();
    assert_eq!((producer.distinct, producer.gaps()), (12_000, 0));
}

#[test]
fn strict_mode_dead_letters_unknown_event_types() {
    let redis = RedisServer::start().unwrap();
    let mut config = config(&redis.url(), "strict");
    config.ship.known_event_types = vec!["OrderCreated".into()];
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();
    publisher
        .publish("OrderCreated", &serde_json::json!({"orderId": "1"}), "c")
        .unwrap();
    publisher
        .publish("Mystery", &serde_json::json!({"x": 1}), "c")
        .unwrap();
    publisher
        .publish("OrderCreated", &serde_json::json!({"orderId": "2"}), "c")
        .unwrap();
    let report = shipper.shutdown(Duration::from_secs(10));
    assert_eq!((report.shipped, report.dead_lettered), (2, 1), "{report:?}");
    block_on(async {
        let mut connection = connect(&redis.url()).await;
        let letters: redis::streams::StreamRangeReply =
            redis::AsyncCommands::xrange_all(&mut connection, "strict:dlq")
                .await
                .unwrap();
        assert_eq!(letters.ids.len(), 1);
        assert_eq!(field(&letters.ids[0], "dlq_reason"), b"unknown_type");
        assert_eq!(field(&letters.ids[0], "event_type"), b"Mystery");
        assert_eq!(field(&letters.ids[0], "sequence"), b"2");
    });
}

/// Issue 8 and issue 18: Redis Sentinel, on the default settings. While 20,000 events/s are
/// published, the primary is killed with SIGKILL. The sentinels wait 3 s before they fail
/// over, so the shipper's circuit breaker opens first (the case that cost 30 s: a fixed
/// cool-down decided when the new master was tried); appends must resume within a second or
/// two of the promotion, and with `min_replicas_ack = 1` nothing acknowledged is lost and
/// nothing is appended twice.
#[test]
fn issue_18_a_sentinel_failover_on_the_defaults_resumes_within_a_second_of_the_promotion() {
    // Two replicas: the promoted one still has one to confirm `WAIT 1`.
    let mut set = SentinelSet::start_with(2).unwrap();
    // 3 s unless scripts/bench-failover.sh asks for the deployment docs' 1 s.
    let down_after: u64 = std::env::var("EVSTREAM_TEST_DOWN_AFTER_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(3000);
    set.set_down_after(down_after).unwrap();
    let journal = tempfile::tempdir().unwrap();
    // The defaults, but for the Sentinel URL and what the deployment docs ask for.
    let mut config = Config::default();
    config.redis.url = set.url();
    config.ship.min_replicas_ack = 1;
    config.ship.journal_dir = Some(journal.path().to_owned());
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();

    let rate = 20_000;
    let total = rate * 12;
    let producer = {
        let publisher = publisher.clone();
        // Paced in bursts of 100 events: `rate` events/s.
        let pause = Duration::from_secs_f64(100.0 / rate as f64);
        thread::spawn(move || publish_ticks(&publisher, 1, total, Some(pause)))
    };
    thread::sleep(Duration::from_secs(3));
    let old_port = set.master_port().unwrap();
    set.master().unwrap().kill().unwrap();
    let killed = Instant::now();
    // Promotion: the moment a replica answers ROLE as a master. Meanwhile the breaker opens.
    let mut breaker_opened = false;
    let (new_port, promoted) = loop {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no promotion in 30 s"
        );
        breaker_opened |= shipper.health().breaker == ship::BreakerState::Open;
        let promoted = set
            .servers
            .iter()
            .filter(|s| s.port() != old_port)
            .find(|s| {
                matches!(s.command(&["ROLE"]), Ok(Reply::Array(Some(role)))
                if matches!(role.first(), Some(Reply::Bulk(Some(r))) if r == b"master"))
            });
        if let Some(server) = promoted {
            break (server.port(), Instant::now());
        }
        thread::sleep(Duration::from_millis(5));
    };
    assert!(
        breaker_opened || down_after < 3000,
        "the breaker opened before the promotion ({:?} after the kill); the test's premise",
        promoted - killed
    );
    let shipped_at_promotion = shipper.health().shipped;
    let resumed = loop {
        assert!(
            promoted.elapsed() < Duration::from_secs(60),
            "appends did not resume within 60 s of the promotion"
        );
        if shipper.health().shipped > shipped_at_promotion {
            break promoted.elapsed();
        }
        thread::sleep(Duration::from_millis(5));
    };
    let refused = producer.join().unwrap();
    let report = shipper.shutdown(Duration::from_secs(60));
    eprintln!(
        "failover: primary {old_port} killed; {new_port} promoted after {:?}; appends resumed \
         {resumed:?} after the promotion",
        promoted - killed
    );
    // Target: within 1 s of the promotion (measured: BENCHMARKS.md); the bound leaves room
    // for a loaded CI machine. Before issue 18 it was the breaker's 30 s cool-down.
    assert!(
        resumed < Duration::from_secs(3),
        "appends resumed {resumed:?} after the promotion (target 1 s)"
    );
    assert_eq!(refused, 0, "the ring and the journal absorbed the failover");
    assert_eq!((report.undelivered, report.journaled), (0, 0), "{report:?}");
    let url = format!("redis://127.0.0.1:{new_port}");
    let (audit, misordered) = audit_ticks(&url, "events");
    eprintln!(
        "longest gap between appends: {:?}; {} entries, {} duplicates",
        longest_gap(&url, "events"),
        audit.entries,
        audit.duplicates
    );
    assert_exactly_once(&audit, misordered, total);
}

/// Operators see which producer holds which connection in `CLIENT LIST`.
#[test]
fn the_shipper_names_its_connection_after_its_producer() {
    let redis = RedisServer::start().unwrap();
    let config = config(&redis.url(), "events");
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let producer_id = publisher.producer_id().to_owned();
    let shipper = ship::spawn(&config, receiver).unwrap();
    publisher.publish("Tick", &tick(0, 0), "t0").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while shipper.health().shipped < 1 {
        assert!(Instant::now() < deadline, "{:?}", shipper.health());
        thread::sleep(Duration::from_millis(10));
    }
    let clients = redis.command(&["CLIENT", "LIST"]).unwrap();
    let clients = clients.as_text().unwrap_or_default();
    assert!(
        clients.contains(&format!("name=evstream-ship:{producer_id} ")),
        "{clients}"
    );
    drop(shipper);
}

/// Issue 18, item 5: the publisher's ACL tightened while the shipper runs (its unguard may no
/// longer `SET` the high-water mark, nor its guard park the stream), then granted again. The
/// stream, its consumer group and the mark survive; nothing is lost, duplicated or counted
/// before it is appended.
#[test]
fn issue_18_an_acl_tightened_while_shipping_loses_and_duplicates_nothing() {
    let redis = RedisServer::start().unwrap();
    redis
        .command(&["ACL", "SETUSER", "pub", "on", ">pw", "~*", "+@all"])
        .unwrap();
    redis
        .command(&["XGROUP", "CREATE", "events", "g", "$", "MKSTREAM"])
        .unwrap();
    let url = redis.url().replacen("redis://", "redis://pub:pw@", 1);
    let mut config = config(&url, "events");
    config.ship.append = AppendMode::Transaction;
    config.ship.in_flight = 4;
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();
    let publishing = thread::spawn(move || {
        publish_ticks(&publisher, 1, 30_000, Some(Duration::from_millis(5)));
    });
    thread::sleep(Duration::from_millis(300));
    let before = shipper.health().shipped;
    redis.command(&["ACL", "SETUSER", "pub", "-set"]).unwrap();
    thread::sleep(Duration::from_millis(200));
    let denied = shipper.health();
    thread::sleep(Duration::from_millis(600));
    let during = shipper.health();
    redis.command(&["ACL", "SETUSER", "pub", "+set"]).unwrap();
    publishing.join().unwrap();
    let report = shipper.shutdown(Duration::from_secs(30));
    assert_eq!(
        (report.shipped, report.undelivered),
        (30_000, 0),
        "{report:?}"
    );
    let (audit, misordered) = audit_ticks(&redis.url(), "events");
    assert_exactly_once(&audit, misordered, 30_000);
    let groups = redis.command(&["XINFO", "GROUPS", "events"]).unwrap();
    assert!(
        matches!(&groups, evstream_testkit::Reply::Array(Some(g)) if g.len() == 1),
        "the group survived: {groups:?}"
    );
    let producer = audit.producers.keys().next().unwrap().clone();
    assert_eq!(
        redis
            .command(&["GET", &format!("events:hwm:{producer}")])
            .unwrap()
            .as_text()
            .as_deref(),
        Some("30000")
    );
    assert!(before > 0, "shipping had started: {before}");
    assert!(
        during.last_error.is_some() && during.batches_failed > 0,
        "the failures were reported: {during:?}"
    );
    assert_eq!(
        denied.shipped, during.shipped,
        "nothing counted while the mark could not move: {denied:?} {during:?}"
    );
}

/// Writes a spill journal segment for `producer_id` under `root` by hand, in the documented
/// format (`ship/journal.rs`): one record holding `events` as (sequence, timestamp_ns, data),
/// all JSON, event type `Tick`, correlation id `c`. As a process that died would leave it.
fn write_journal(root: &std::path::Path, producer_id: &str, events: &[(u64, u64, String)]) {
    let mut payload = (events.len() as u32).to_le_bytes().to_vec();
    for (sequence, timestamp_ns, data) in events {
        payload.extend_from_slice(&sequence.to_le_bytes());
        payload.extend_from_slice(&timestamp_ns.to_le_bytes());
        payload.push(0); // JSON, version 1
        payload.push(4);
        payload.extend_from_slice(b"Tick");
        payload.push(1);
        payload.extend_from_slice(b"c");
        payload.extend_from_slice(&(data.len() as u32).to_le_bytes());
        payload.extend_from_slice(data.as_bytes());
    }
    let mut record = (payload.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    record.extend_from_slice(&payload);
    let dir = root.join(producer_id);
    std::fs::create_dir_all(&dir).unwrap();
    let first = events.first().map_or(1, |e| e.0);
    std::fs::write(dir.join(format!("{first:020}.seg")), record).unwrap();
}

/// Every entry of `stream` as (producer_id, sequence, event_id, timestamp_ns, data).
fn entries(url: &str, stream: &str) -> Vec<(String, u64, String, u64, Vec<u8>)> {
    block_on(async {
        let mut connection = connect(url).await;
        let reply: redis::streams::StreamRangeReply =
            redis::AsyncCommands::xrange_all(&mut connection, stream)
                .await
                .unwrap();
        let text =
            |entry: &StreamId, name: &str| String::from_utf8(field(entry, name).to_vec()).unwrap();
        reply
            .ids
            .iter()
            .map(|entry| {
                (
                    text(entry, "producer_id"),
                    text(entry, "sequence").parse().unwrap(),
                    text(entry, "event_id"),
                    text(entry, "timestamp_ns").parse().unwrap(),
                    field(entry, "data").to_vec(),
                )
            })
            .collect()
    })
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Issue 18: event ids are unique across producers and stable across replays. Two producers'
/// journals with the same sequences in the same millisecond, replayed by a third shipper, must
/// give distinct ids (consumers deduplicate by id and would drop the second); an event that a
/// producer shipped itself must get the same id when a journal holding it is replayed by
/// another process.
#[test]
fn issue_18_replayed_journals_keep_event_ids_unique_across_producers_and_stable() {
    let redis = RedisServer::start().unwrap();
    let journal = tempfile::tempdir().unwrap();
    // Same sequences, same timestamp, two producers.
    let at = now_ns();
    let events: Vec<_> = (1..=50u64)
        .map(|n| (n, at, format!("{{\"n\":{n}}}")))
        .collect();
    write_journal(journal.path(), "engine-a:1", &events);
    write_journal(journal.path(), "engine-b:1", &events);
    let mut third = config(&redis.url(), "events");
    third.ship.journal_dir = Some(journal.path().to_owned());
    let (publisher, receiver) = publish::channel(&third).unwrap();
    let shipper = ship::spawn(&third, receiver).unwrap();
    drop(publisher);
    let report = shipper.shutdown(Duration::from_secs(30));
    assert_eq!((report.shipped, report.undelivered), (100, 0), "{report:?}");
    let replayed = entries(&redis.url(), "events");
    assert_eq!(replayed.len(), 100);
    let ids: std::collections::HashSet<_> = replayed.iter().map(|e| e.2.clone()).collect();
    assert_eq!(
        ids.len(),
        100,
        "two producers' events with the same sequence and millisecond share an event_id"
    );

    // A producer ships events itself; a journal holding the same events (a batch whose
    // answer was lost) is replayed by another process into another stream: same ids.
    let original = config(&redis.url(), "original");
    let (publisher, receiver) = publish::channel(&original).unwrap();
    let producer_id = publisher.producer_id().to_owned();
    let shipper = ship::spawn(&original, receiver).unwrap();
    for n in 0..20 {
        publisher.publish("Tick", &tick(0, n), "c").unwrap();
    }
    drop(publisher);
    assert_eq!(shipper.shutdown(Duration::from_secs(30)).shipped, 20);
    let shipped = entries(&redis.url(), "original");
    let again = tempfile::tempdir().unwrap();
    let events: Vec<_> = shipped
        .iter()
        .map(|(_, sequence, _, timestamp_ns, data)| {
            (
                *sequence,
                *timestamp_ns,
                String::from_utf8(data.clone()).unwrap(),
            )
        })
        .collect();
    write_journal(again.path(), &producer_id, &events);
    let mut replaying = config(&redis.url(), "replayed");
    replaying.ship.journal_dir = Some(again.path().to_owned());
    let (publisher, receiver) = publish::channel(&replaying).unwrap();
    let shipper = ship::spawn(&replaying, receiver).unwrap();
    drop(publisher);
    assert_eq!(shipper.shutdown(Duration::from_secs(30)).shipped, 20);
    let replayed = entries(&redis.url(), "replayed");
    let ids = |entries: &[(String, u64, String, u64, Vec<u8>)]| {
        entries
            .iter()
            .map(|e| (e.0.clone(), e.1, e.2.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&replayed),
        ids(&shipped),
        "a replayed event keeps the id it was shipped with"
    );
}

/// Issue 18: the no-duplicate state (a producer's high-water mark) expires `dedupe_ttl_s`
/// after its last append. A journal whose events are older than that, replayed without the
/// mark, would append again what had been delivered: it is refused, left in place and
/// counted, unless the mark is still there (then the replay skips what Redis has).
#[test]
fn issue_18_a_journal_older_than_the_mark_ttl_is_not_replayed_as_duplicates() {
    let redis = RedisServer::start().unwrap();
    let journal = tempfile::tempdir().unwrap();
    let eight_days_ago = now_ns() - 8 * 24 * 3600 * 1_000_000_000;
    let events: Vec<_> = (1..=10u64)
        .map(|n| (n, eight_days_ago + n, format!("{{\"n\":{n}}}")))
        .collect();
    // Events 1..=5 reached the stream eight days ago; the mark has expired since.
    for (sequence, timestamp_ns, data) in &events[..5] {
        redis
            .command(&[
                "XADD",
                "events",
                "*",
                "event_id",
                &format!("old-{sequence}"),
                "event_type",
                "Tick",
                "version",
                "v1",
                "correlation_id",
                "c",
                "timestamp_ns",
                &timestamp_ns.to_string(),
                "producer_id",
                "old-engine:1",
                "sequence",
                &sequence.to_string(),
                "data",
                data,
            ])
            .unwrap();
    }
    write_journal(journal.path(), "old-engine:1", &events);
    let mut config = config(&redis.url(), "events");
    config.ship.journal_dir = Some(journal.path().to_owned());

    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while shipper.health().journals_refused == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let health = shipper.health();
    drop(publisher);
    let report = shipper.shutdown(Duration::from_secs(10));
    assert_eq!(report.undelivered, 0, "{report:?}");
    assert_eq!(health.journals_refused, 1, "{health:?}");
    let error = health.last_error.unwrap_or_default();
    assert!(
        error.contains("old-engine:1")
            && error.contains("ship.dedupe_ttl_s")
            && error.contains("ship.replay_stale_journals"),
        "the error names the journal and the way out: {error}"
    );
    let stream = entries(&redis.url(), "events");
    assert_eq!(
        stream.len(),
        5,
        "the stale journal was replayed without its mark: duplicates {:?}",
        stream.iter().map(|e| e.1).collect::<Vec<_>>()
    );
    assert!(
        journal
            .path()
            .join("old-engine:1")
            .join(format!("{:020}.seg", 1))
            .exists(),
        "the refused journal is left where it was"
    );

    // With the mark still in Redis, the same journal replays: only what Redis lacks.
    redis
        .command(&["SET", "events:hwm:old-engine:1", "5"])
        .unwrap();
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();
    drop(publisher);
    shipper.shutdown(Duration::from_secs(30));
    let stream = entries(&redis.url(), "events");
    assert_eq!(
        stream.iter().map(|e| e.1).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert!(!journal.path().join("old-engine:1").exists());

    // Forced: a stale journal none of whose events reached the stream, mark long gone.
    write_journal(journal.path(), "never-delivered:1", &events);
    let mut forced = config.clone();
    forced.ship.replay_stale_journals = true;
    let (publisher, receiver) = publish::channel(&forced).unwrap();
    let shipper = ship::spawn(&forced, receiver).unwrap();
    drop(publisher);
    let report = shipper.shutdown(Duration::from_secs(30));
    assert_eq!(report.shipped, 10, "{report:?}");
    assert!(!journal.path().join("never-delivered:1").exists());
}
