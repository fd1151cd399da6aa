//! Issue 4: the consumer-group runtime against real `redis-server` processes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use evstream::config::Config;
use evstream::consume::{
    Accept, ConsumeReport, ConsumeStats, Consumer, Effects, Envelope, Handler, HandlerError,
};
use evstream_testkit::RedisServer;
use redis::Commands;

const STREAM: &str = "events";

fn config(url: &str) -> Config {
    let mut config = Config::default();
    config.redis.url = url.to_owned();
    config.redis.stream = STREAM.to_owned();
    config.consume.group = "g".to_owned();
    config.consume.min_idle_ms = 200;
    config.consume.block_ms = 100;
    config.consume.max_deliveries = 3;
    config
}

fn envelope(n: u64, event_type: &str, version: &str, data: &str) -> Vec<(String, String)> {
    vec![
        ("event_id".into(), uuid::Uuid::now_v7().to_string()),
        ("event_type".into(), event_type.into()),
        ("version".into(), version.into()),
        ("correlation_id".into(), format!("ord-{}", n / 3)),
        (
            "timestamp_ns".into(),
            (1_764_000_000_000_000_000 + n).to_string(),
        ),
        ("producer_id".into(), "test:1".into()),
        ("sequence".into(), (n + 1).to_string()),
        ("data".into(), data.into()),
    ]
}

/// Appends `count` valid envelopes (`{"n":<n>}`) and returns their event ids.
fn append_good(connection: &mut redis::Connection, first: u64, count: u64) -> Vec<String> {
    let mut pipe = redis::pipe();
    let mut ids = Vec::new();
    for n in first..first + count {
        let fields = envelope(n, "Tick", "v1", &format!("{{\"n\":{n}}}"));
        ids.push(fields[0].1.clone());
        pipe.xadd(STREAM, "*", &fields).ignore();
    }
    pipe.query::<()>(connection).unwrap();
    ids
}

/// Applies one `HINCRBY applied <event_id> 1` per event: a non-idempotent effect, so any
/// double application shows as a 2.
#[derive(Clone, Default)]
struct CountingHandler {
    calls: Arc<AtomicU64>,
    /// Sleep in `handle` (to make another consumer claim the entry meanwhile).
    delay: Option<Duration>,
}

impl Handler for CountingHandler {
    fn accepts(&self, event_type: &str, version: u32) -> Accept {
        match (event_type, version) {
            ("Tick", 1) => Accept::Handle,
            ("Tick", _) => Accept::UnknownVersion,
            _ => Accept::Skip,
        }
    }

    fn handle(&mut self, event: &Envelope, effects: &mut Effects) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(delay) = self.delay {
            std::thread::sleep(delay);
        }
        let value: serde_json::Value = serde_json::from_str(&event.data)?;
        if value.get("fail").is_some() {
            return Err("the payload asks to fail".into());
        }
        if value.get("panic").is_some() {
            panic!("the payload asks to panic");
        }
        effects.apply(
            redis::cmd("HINCRBY")
                .arg("applied")
                .arg(event.event_id.to_string())
                .arg(1),
        );
        Ok(())
    }
}

/// Runs `consumer` on its own thread until `until` holds for its stats (or 60 s pass).
fn run_until<H: Handler + 'static>(
    consumer: Consumer<H>,
    until: impl Fn(&ConsumeReport) -> bool + Send + 'static,
) -> std::thread::JoinHandle<ConsumeReport> {
    let stats = consumer.stats();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(consumer.run(wait_for(stats, until)))
    })
}

async fn wait_for(stats: Arc<ConsumeStats>, until: impl Fn(&ConsumeReport) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !until(&stats.snapshot()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What a consumer that crashes right after reading leaves behind: `count` entries pending
/// in `consumer`, never acknowledged.
fn read_and_crash(connection: &mut redis::Connection, consumer: &str, count: usize) {
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(STREAM)
        .arg(">")
        .query(connection)
        .unwrap();
}

fn applied_counts(connection: &mut redis::Connection) -> HashMap<String, u64> {
    connection.hgetall("applied").unwrap()
}

fn group_info(connection: &mut redis::Connection) -> (u64, u64) {
    let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(STREAM)
        .query(connection)
        .unwrap();
    let int = |v: &redis::Value| match v {
        redis::Value::Int(i) => *i as u64,
        other => panic!("not an int: {other:?}"),
    };
    (int(&groups[0]["pending"]), int(&groups[0]["lag"]))
}

fn counter(connection: &mut redis::Connection, name: &str) -> u64 {
    connection
        .hget::<_, _, Option<u64>>("events:consume:g", name)
        .unwrap()
        .unwrap_or(0)
}

#[test]
fn every_entry_is_applied_once_then_lag_and_pending_are_zero() {
    let server = RedisServer::start().unwrap();
    let mut connection = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let ids = append_good(&mut connection, 0, 20_000);

    let handler = CountingHandler::default();
    let consumer = Consumer::new(&config(&server.url()), "c1", handler.clone()).unwrap();
    let report = run_until(consumer, |r| r.processed >= 20_000)
        .join()
        .unwrap();

    assert_eq!(report.processed, 20_000, "{report:?}");
    assert_eq!(report.duplicates_skipped, 0);
    let applied = applied_counts(&mut connection);
    assert_eq!(applied.len(), ids.len());
    assert!(applied.values().all(|&n| n == 1));
    assert_eq!(counter(&mut connection, "processed"), 20_000);
    assert_eq!(group_info(&mut connection), (0, 0), "(pending, lag)");
}

/// The reading connection is evstream's own (plain TCP): it must authenticate and select
/// the URL's database like the redis crate's connections do.
#[test]
fn a_consumer_reads_with_a_password_on_another_database() {
    let server = RedisServer::builder().password("s3cret").start().unwrap();
    let url = format!("{}/3", server.url());
    let mut connection = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    append_good(&mut connection, 0, 1_000);

    let consumer = Consumer::new(&config(&url), "c1", CountingHandler::default()).unwrap();
    let stats = consumer.stats();
    let running = run_until(consumer, |r| r.processed >= 3_000);
    wait_until(|| stats.snapshot().processed >= 1_000);
    // While it runs: its reading connection is named and on database 3.
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut connection)
        .unwrap();
    let reader = clients
        .lines()
        .find(|line| line.contains("cmd=xreadgroup"))
        .unwrap_or_else(|| panic!("no reading connection in {clients}"));
    assert!(reader.contains("name=evstream-consume:g:c1"), "{reader}");
    assert!(reader.contains(" db=3 "), "{reader}");
    append_good(&mut connection, 1_000, 2_000);
    let report = running.join().unwrap();

    assert_eq!(report.processed, 3_000, "{report:?}");
    assert_eq!(report.redis_errors, 0, "{report:?}");
    let applied = applied_counts(&mut connection);
    assert_eq!(applied.len(), 3_000);
    assert!(applied.values().all(|&n| n == 1));
    assert_eq!(group_info(&mut connection), (0, 0), "(pending, lag)");
}

#[test]
fn a_restarted_consumer_finishes_its_pending_entries_and_skips_acked_ones() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut connection = redis::Client::open(url.clone())
        .unwrap()
        .get_connection()
        .unwrap();
    append_good(&mut connection, 0, 1000);

    // First life: processes everything that is there.
    let handler = CountingHandler::default();
    let consumer = Consumer::new(&config(&url), "c1", handler.clone()).unwrap();
    run_until(consumer, |r| r.processed >= 1000).join().unwrap();
    assert_eq!(handler.calls.load(Ordering::Relaxed), 1000);

    // More entries arrive; c1 "crashes" right after reading 300 of them (read, never acked).
    append_good(&mut connection, 1000, 500);
    read_and_crash(&mut connection, "c1", 300);
    assert_eq!(group_info(&mut connection).0, 300, "300 pending in c1");

    // Second life, same name: the 300 pending entries first, then the 200 new ones; none of
    // the 1000 acked entries again.
    let handler = CountingHandler::default();
    let consumer = Consumer::new(&config(&url), "c1", handler.clone()).unwrap();
    let report = run_until(consumer, |r| r.processed >= 500).join().unwrap();
    assert_eq!(report.processed, 500, "{report:?}");
    assert_eq!(handler.calls.load(Ordering::Relaxed), 500);
    assert_eq!(report.claimed, 0, "own entries are re-read, not claimed");
    let applied = applied_counts(&mut connection);
    assert_eq!(applied.len(), 1500);
    assert!(applied.values().all(|&n| n == 1));
    assert_eq!(group_info(&mut connection), (0, 0));
}

#[test]
fn entries_of_a_dead_consumer_are_claimed_and_applied_exactly_once() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut connection = redis::Client::open(url.clone())
        .unwrap()
        .get_connection()
        .unwrap();
    append_good(&mut connection, 0, 2000);
    // A consumer that dies holding 700 entries and never comes back.
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(STREAM)
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query::<()>(&mut connection)
        .unwrap();
    read_and_crash(&mut connection, "dead", 700);

    let consumer = Consumer::new(&config(&url), "alive", CountingHandler::default()).unwrap();
    let report = run_until(consumer, |r| r.processed >= 2000).join().unwrap();
    assert_eq!(report.processed, 2000, "{report:?}");
    assert_eq!(report.claimed, 700);
    let applied = applied_counts(&mut connection);
    assert_eq!(applied.len(), 2000);
    assert!(applied.values().all(|&n| n == 1));
    assert_eq!(group_info(&mut connection), (0, 0));
}

#[test]
fn two_consumers_holding_the_same_entry_apply_it_once() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut connection = redis::Client::open(url.clone())
        .unwrap()
        .get_connection()
        .unwrap();
    append_good(&mut connection, 0, 40);

    // `slow` takes 40 × 50 ms = 2 s over its batch; after 200 ms idle, `fast` claims the
    // same entries and commits them first. `slow`'s commit must then skip every effect.
    let mut slow_config = config(&url);
    slow_config.consume.count = 40;
    let slow = Consumer::new(
        &slow_config,
        "slow",
        CountingHandler {
            delay: Some(Duration::from_millis(50)),
            ..CountingHandler::default()
        },
    )
    .unwrap();
    let slow = run_until(slow, |r| r.processed + r.duplicates_skipped >= 40);
    std::thread::sleep(Duration::from_millis(300));
    let fast = Consumer::new(&config(&url), "fast", CountingHandler::default()).unwrap();
    let fast = run_until(fast, |r| r.processed >= 40);
    let (slow, fast) = (slow.join().unwrap(), fast.join().unwrap());

    assert_eq!(fast.processed, 40, "{fast:?}");
    assert_eq!(slow.processed, 0, "{slow:?}");
    assert_eq!(slow.duplicates_skipped, 40, "{slow:?}");
    let applied = applied_counts(&mut connection);
    assert_eq!(applied.len(), 40);
    assert!(applied.values().all(|&n| n == 1), "{applied:?}");
    assert_eq!(counter(&mut connection, "processed"), 40);
    assert_eq!(counter(&mut connection, "duplicates_skipped"), 40);
}

#[test]
fn poison_entries_reach_the_dead_letter_queue_after_max_deliveries() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut connection = redis::Client::open(url.clone())
        .unwrap()
        .get_connection()
        .unwrap();
    append_good(&mut connection, 0, 100);
    let huge = format!("{{\"blob\":\"{}\"}}", "x".repeat(10 * 1024 * 1024));
    let mut missing = envelope(101, "Tick", "v1", "{}");
    missing.retain(|(k, _)| k != "event_id");
    let poison: Vec<(&str, Vec<(String, String)>)> = vec![
        ("invalid_json", envelope(100, "Tick", "v1", "{not json")),
        ("missing_field", missing),
        ("unknown_version", envelope(102, "Tick", "v9", "{}")),
        ("too_large", envelope(103, "Tick", "v1", &huge)),
        (
            "handler_error",
            envelope(104, "Tick", "v1", r#"{"fail":true}"#),
        ),
        (
            "handler_error",
            envelope(106, "Tick", "v1", r#"{"panic":true}"#),
        ),
        ("invalid_envelope", envelope(105, "Tick", "one", "{}")),
        ("too_large", {
            let mut many = envelope(107, "Tick", "v1", "{}");
            many.extend((0..1000).map(|i| (format!("extra{i}"), "x".to_owned())));
            many
        }),
        ("too_large", {
            let mut long = envelope(108, "Tick", "v1", "{}");
            long[3].1 = "c".repeat(100_000);
            long
        }),
    ];
    let mut poison_ids = HashMap::new();
    for (reason, fields) in &poison {
        let id: String = connection.xadd(STREAM, "*", fields).unwrap();
        poison_ids.insert(id, *reason);
    }
    append_good(&mut connection, 200, 100);

    let consumer = Consumer::new(&config(&url), "c1", CountingHandler::default()).unwrap();
    let report = run_until(consumer, |r| r.dead_lettered >= 9 && r.processed >= 200)
        .join()
        .unwrap();
    assert_eq!(
        report.processed, 200,
        "good entries around them: {report:?}"
    );
    assert_eq!(report.dead_lettered, 9);
    // Each poison entry failed max_deliveries - 1 = 2 times before its last delivery.
    assert_eq!(report.failed_attempts, 18, "{report:?}");

    let dead: redis::streams::StreamRangeReply = connection.xrange_all("events:dlq").unwrap();
    assert_eq!(dead.ids.len(), 9);
    for entry in &dead.ids {
        let field = |name: &str| entry.get::<String>(name).unwrap_or_default();
        let source = field("dlq_source_id");
        assert_eq!(field("dlq_reason"), poison_ids[&source], "{entry:?}");
        assert_eq!(field("dlq_stage"), "consume");
        assert_eq!(field("dlq_deliveries"), "3");
        assert!(!field("dlq_error").is_empty());
        assert!(field("dlq_at_ns").parse::<u64>().is_ok());
        if !field("dlq_data_bytes").is_empty() {
            assert!(entry.get::<String>("data").is_none(), "10 MB not copied");
            assert_eq!(field("dlq_data_bytes"), huge.len().to_string());
        } else if field("dlq_reason") == "too_large" {
            // 1000 extra fields, or a 100 KB correlation id: left out and counted.
            let dropped: usize = field("dlq_fields_dropped").parse().unwrap();
            assert!(dropped == 1 || dropped == 1000 - (64 - 8), "{dropped}");
            assert!(entry.map.len() <= 64 + 10, "{} fields", entry.map.len());
            assert!(entry.map.values().all(|v| {
                redis::from_redis_value::<Vec<u8>>(v.clone()).is_ok_and(|v| v.len() <= 4096)
            }));
        } else {
            assert_eq!(field("producer_id"), "test:1", "original fields kept");
        }
    }
    assert_eq!(
        group_info(&mut connection),
        (0, 0),
        "dead letters are acked"
    );
}

#[test]
fn a_destroyed_group_is_re_created_and_the_same_events_are_not_applied_again() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut connection = redis::Client::open(url.clone())
        .unwrap()
        .get_connection()
        .unwrap();
    append_good(&mut connection, 0, 500);

    let consumer = Consumer::new(&config(&url), "c1", CountingHandler::default()).unwrap();
    let stats = consumer.stats();
    let running = run_until(consumer, |r| r.processed >= 800);
    wait_until(|| stats.snapshot().processed >= 500);
    // An operator destroys the group; it comes back from "0" when the consumer next reads.
    redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(STREAM)
        .arg("g")
        .query::<()>(&mut connection)
        .unwrap();
    append_good(&mut connection, 500, 300);
    let report = running.join().unwrap();

    assert_eq!(report.processed, 800, "{report:?}");
    assert_eq!(
        report.duplicates_skipped, 500,
        "the first 500 again, recognised by event id"
    );
    let applied = applied_counts(&mut connection);
    assert!(applied.values().all(|&n| n == 1));
    assert_eq!(applied.len(), 800);
}

#[test]
fn shutdown_wakes_a_blocked_read_at_once() {
    let server = RedisServer::start().unwrap();
    let mut config = config(&server.url());
    config.consume.block_ms = 30_000;
    config.consume.min_idle_ms = 60_000;
    let consumer = Consumer::new(&config, "c1", CountingHandler::default()).unwrap();
    let stats = consumer.stats();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(consumer.run(async {
                let _ = rx.await;
            }))
    });
    wait_until(|| stats.snapshot().connected);
    std::thread::sleep(Duration::from_millis(300)); // now blocked in XREADGROUP
    let asked = Instant::now();
    tx.send(()).unwrap();
    running.join().unwrap();
    assert!(
        asked.elapsed() < Duration::from_millis(1500),
        "stopped after {:?}, not at the end of its block",
        asked.elapsed()
    );
}

fn wait_until(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met within 30 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes to the stream key itself as if it were a hash: Redis answers WRONGTYPE.
struct BrokenEffect;

impl Handler for BrokenEffect {
    fn handle(&mut self, event: &Envelope, effects: &mut Effects) -> Result<(), HandlerError> {
        effects
            .apply(redis::cmd("HSET").arg(STREAM).arg("f").arg(1))
            .apply_with_reply(redis::cmd("GET").arg(format!("seen:{}", event.event_id)));
        Ok(())
    }
}

#[test]
fn a_failing_effect_is_acknowledged_and_recorded_as_a_dead_letter() {
    let server = RedisServer::start().unwrap();
    let mut connection = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    append_good(&mut connection, 0, 3);
    let consumer = Consumer::new(&config(&server.url()), "c1", BrokenEffect).unwrap();
    let report = run_until(consumer, |r| r.effect_errors >= 3)
        .join()
        .unwrap();
    assert_eq!(report.effect_errors, 3, "{report:?}");
    assert_eq!(
        group_info(&mut connection),
        (0, 0),
        "acknowledged, not retried forever"
    );
    let dead: redis::streams::StreamRangeReply = connection.xrange_all("events:dlq").unwrap();
    assert_eq!(dead.ids.len(), 3);
    for entry in &dead.ids {
        assert_eq!(entry.get::<String>("dlq_reason").unwrap(), "effect_failed");
        assert!(entry
            .get::<String>("dlq_error")
            .unwrap()
            .contains("WRONGTYPE"));
    }
}

/// Issue 8: a consumer given `redis+sentinel://` follows a failover: after the primary is
/// killed, it reconnects to the promoted replica and goes on; every effect applied once.
#[test]
fn a_consumer_follows_a_sentinel_failover() {
    let mut set = evstream_testkit::SentinelSet::start_with(2).unwrap();
    let first_url = set.master().unwrap().url();
    let mut connection = redis::Client::open(first_url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut ids = append_good(&mut connection, 0, 10_000);

    // The first sentinel named accepts connections and never answers (a host that went
    // silent): each lookup moves on to the next one instead of failing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = set.url().replacen(
        "redis+sentinel://",
        &format!("redis+sentinel://{},", silent.local_addr().unwrap()),
        1,
    );
    let handler = CountingHandler::default();
    let consumer = Consumer::new(&config(&url), "c1", handler.clone()).unwrap();
    let stats = consumer.stats();
    let running = run_until(consumer, |r| r.processed >= 20_000);
    wait_until(|| stats.snapshot().processed >= 10_000);
    // Let both replicas catch up with the effects and acks before the primary dies: `WAIT`
    // after a write of ours covers every write before it.
    let _: () = connection.set("marker", 1).unwrap();
    let replicated: u64 = redis::cmd("WAIT")
        .arg(2)
        .arg(5000)
        .query(&mut connection)
        .unwrap();
    assert_eq!(replicated, 2);
    let old_port = set.master_port().unwrap();
    set.master().unwrap().kill().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while set.master_port().unwrap() == old_port {
        assert!(Instant::now() < deadline, "no failover within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let new_url = set.master().unwrap().url();
    let mut connection = redis::Client::open(new_url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    ids.extend(append_good(&mut connection, 10_000, 10_000));
    let report = running.join().unwrap();

    assert!(report.processed >= 20_000, "{report:?}");
    let applied = applied_counts(&mut connection);
    assert_eq!(
        applied.len(),
        ids.len(),
        "every event's effect, on the new master"
    );
    assert!(applied.values().all(|&n| n == 1), "none applied twice");
    assert_eq!(group_info(&mut connection), (0, 0), "(pending, lag)");
}

/// Every event's `HSET` is applied, except that of event 1, which has 10,001 arguments: more
/// than Lua can unpack. That effect fails alone; the entries around it are acknowledged and
/// their effects applied.
struct OneHugeEffect;

impl Handler for OneHugeEffect {
    fn handle(&mut self, event: &Envelope, effects: &mut Effects) -> Result<(), HandlerError> {
        let mut hset = redis::cmd("HSET");
        hset.arg(format!("huge:{}", event.event_id));
        let pairs = if event.data.contains("\"n\":1}") {
            5_000
        } else {
            1
        };
        for n in 0..pairs {
            hset.arg(n).arg(n);
        }
        effects.apply(&mut hset);
        effects.count("hset", 1);
        Ok(())
    }
}

#[test]
fn an_effect_too_long_for_lua_fails_alone() {
    let server = RedisServer::start().unwrap();
    let mut connection = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    append_good(&mut connection, 0, 3);
    let consumer = Consumer::new(&config(&server.url()), "c1", OneHugeEffect).unwrap();
    let report = run_until(consumer, |r| r.processed >= 3).join().unwrap();
    assert_eq!(
        (report.processed, report.effect_errors),
        (3, 1),
        "{report:?}"
    );
    assert_eq!(group_info(&mut connection), (0, 0), "(pending, lag)");
    let keys: Vec<String> = connection.keys("huge:*").unwrap();
    assert_eq!(keys.len(), 2, "the two other effects applied: {keys:?}");
    assert_eq!(counter(&mut connection, "hset"), 3);
}

/// Issue 18, item 6: a claimed batch spans more of this consumer's own pending entries than
/// the `XPENDING` page the consumer asked for; a poison entry at the end of the batch must
/// still get its true delivery count, and be dead-lettered at exactly `max_deliveries`.
#[test]
fn issue_18_a_poison_entry_is_dead_lettered_at_max_deliveries_however_long_the_pending_list() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut connection = redis::Client::open(url.clone())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(STREAM)
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut connection)
        .unwrap();
    // An entry a dead consumer left, long idle; 150 entries pending in c1 (failing, so they
    // stay pending, and re-read by c1 when it starts, so not idle when it first claims); then
    // the poison entry, left by the dead consumer after its second delivery, long idle.
    append_good(&mut connection, 0, 1);
    read_and_crash(&mut connection, "dead", 1);
    let mut pipe = redis::pipe();
    for n in 1..=150 {
        pipe.xadd(STREAM, "*", &envelope(n, "Tick", "v1", r#"{"fail":true}"#))
            .ignore();
    }
    pipe.query::<()>(&mut connection).unwrap();
    read_and_crash(&mut connection, "c1", 150);
    let poison: String = connection
        .xadd(
            STREAM,
            "*",
            &envelope(151, "Tick", "v1", r#"{"fail":true}"#),
        )
        .unwrap();
    read_and_crash(&mut connection, "dead", 1);
    let pending: Vec<(String, String)> = redis::cmd("XPENDING")
        .arg(STREAM)
        .arg("g")
        .arg("-")
        .arg("+")
        .arg(1000)
        .arg("dead")
        .query::<Vec<(String, String, u64, u64)>>(&mut connection)
        .unwrap()
        .into_iter()
        .map(|(id, consumer, _, _)| (id, consumer))
        .collect();
    for (id, _) in &pending {
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(STREAM)
            .arg("g")
            .arg("dead")
            .arg(0)
            .arg(id)
            .arg("IDLE")
            .arg(100_000)
            .arg("RETRYCOUNT")
            .arg(if *id == poison { 2 } else { 1 })
            .arg("JUSTID")
            .query(&mut connection)
            .unwrap();
    }

    let mut config = config(&url);
    // 20 per claim: XAUTOCLAIM looks at up to 200 pending entries, enough to reach the poison
    // entry past c1's 150, while an XPENDING page of the batch's size (with room) holds 144.
    config.consume.count = 20;
    config.consume.min_idle_ms = 1000;
    let consumer = Consumer::new(&config, "c1", CountingHandler::default()).unwrap();
    let report = run_until(consumer, |r| r.dead_lettered >= 151)
        .join()
        .unwrap();
    assert_eq!(report.dead_lettered, 151, "{report:?}");
    let dead: redis::streams::StreamRangeReply = connection.xrange_all("events:dlq").unwrap();
    let letter = dead
        .ids
        .iter()
        .find(|e| e.get::<String>("dlq_source_id").as_deref() == Some(poison.as_str()))
        .expect("the poison entry is dead-lettered");
    assert_eq!(
        letter.get::<String>("dlq_deliveries").as_deref(),
        Some("3"),
        "dead-lettered at exactly max_deliveries: {letter:?}"
    );
    for entry in &dead.ids {
        assert_eq!(
            entry.get::<String>("dlq_deliveries").as_deref(),
            Some("3"),
            "{entry:?}"
        );
    }
}

/// A registry that knows only `Tick` v1 (`{"n": integer}`).
fn tick_registry() -> evstream::schema::Registry {
    let v1 = r#"{"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}"#;
    evstream::schema::Registry::from_files([("Tick/v1.json".to_owned(), v1.to_owned())].into())
        .unwrap()
}

/// Appends two entries each of `Tick` v1, `Quote` (registered nowhere, read by the handler
/// below) and `Other` (registered nowhere, not the handler's).
fn append_mixed(connection: &mut redis::Connection) {
    let mut pipe = redis::pipe();
    for n in 0..2 {
        for event_type in ["Tick", "Quote", "Other"] {
            let fields = envelope(n, event_type, "v1", &format!("{{\"n\":{n}}}"));
            pipe.xadd(STREAM, "*", &fields).ignore();
        }
    }
    pipe.query::<()>(connection).unwrap();
}

/// Reads `Tick` and `Quote`; no other type.
struct TickAndQuote;

impl Handler for TickAndQuote {
    fn accepts(&self, event_type: &str, _version: u32) -> Accept {
        match event_type {
            "Tick" | "Quote" => Accept::Handle,
            _ => Accept::Skip,
        }
    }

    fn handle(&mut self, event: &Envelope, effects: &mut Effects) -> Result<(), HandlerError> {
        effects.count(&format!("handled_{}", event.event_type), 1);
        Ok(())
    }
}

/// Issue 19, item 2: once the registry holds anything, a type nobody registered is not
/// dead-lettered: handed over unvalidated (and counted) where the handler takes it,
/// acknowledged unhandled where it does not.
#[test]
fn issue_19_unregistered_types_are_handed_over_unvalidated_or_skipped_never_dead_lettered() {
    let server = RedisServer::start().unwrap();
    let mut connection = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    append_mixed(&mut connection);
    let consumer = Consumer::new(&config(&server.url()), "c1", TickAndQuote)
        .unwrap()
        .with_schemas(tick_registry());
    let report = run_until(consumer, |r| r.processed + r.skipped + r.dead_lettered >= 6)
        .join()
        .unwrap();
    assert_eq!(
        (report.processed, report.skipped, report.dead_lettered),
        (4, 2, 0),
        "{report:?}"
    );
    assert_eq!(counter(&mut connection, "handled_Tick"), 2);
    assert_eq!(counter(&mut connection, "handled_Quote"), 2);
    assert_eq!(counter(&mut connection, "unvalidated"), 2);
    let dead: u64 = connection.xlen("events:dlq").unwrap();
    assert_eq!(dead, 0);
}

/// Issue 19, item 2: with `consume.strict_schemas` a type nobody registered is poison
/// (`unknown_type`, naming the fix) for the handlers that read it; a handler that does not
/// read it (`Reads::Nothing`) acknowledges it unhandled, unvalidated.
#[test]
fn issue_19_strict_schemas_dead_letter_unregistered_types_a_handler_reads() {
    struct ReadsTickAndQuote;
    impl Handler for ReadsTickAndQuote {
        fn reads(&self, event_type: &str) -> evstream::consume::Reads {
            match event_type {
                "Tick" => evstream::consume::Reads::Versions(1..=1),
                "Quote" => evstream::consume::Reads::Latest,
                _ => evstream::consume::Reads::Nothing,
            }
        }

        fn handle(&mut self, event: &Envelope, effects: &mut Effects) -> Result<(), HandlerError> {
            effects.count(&format!("handled_{}", event.event_type), 1);
            Ok(())
        }
    }
    let server = RedisServer::start().unwrap();
    let mut connection = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    append_mixed(&mut connection);
    let mut config = config(&server.url());
    config.consume.strict_schemas = true;
    config.consume.max_deliveries = 1;
    let consumer = Consumer::new(&config, "c1", ReadsTickAndQuote)
        .unwrap()
        .with_schemas(tick_registry());
    let report = run_until(consumer, |r| r.processed + r.skipped + r.dead_lettered >= 6)
        .join()
        .unwrap();
    assert_eq!(
        (
            report.processed,
            report.skipped,
            report.dead_lettered,
            report.unvalidated
        ),
        (2, 2, 2, 0),
        "{report:?}"
    );
    let dead: redis::streams::StreamRangeReply = connection.xrange_all("events:dlq").unwrap();
    for letter in &dead.ids {
        assert_eq!(letter.get::<String>("event_type").unwrap(), "Quote");
        assert_eq!(letter.get::<String>("dlq_reason").unwrap(), "unknown_type");
        let error: String = letter.get("dlq_error").unwrap();
        assert!(error.contains("consume.strict_schemas"), "{error}");
    }
    assert_eq!(dead.ids.len(), 2);
}
