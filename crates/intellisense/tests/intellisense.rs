//! Issue 4: IntelliSense against a real `redis-server` from the testkit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use evstream::config::Config;
use evstream::consume::{ConsumeReport, ConsumeStats, Consumer};
use evstream_intellisense::{read_report, IntelliSense, IntelliSenseConfig};
use evstream_testkit::RedisServer;
use redis::Commands;

const T0: u64 = 1_764_000_000_000_000_000;
const MS: u64 = 1_000_000;

fn config(url: &str, count: usize) -> Config {
    let mut config = Config::default();
    config.redis.url = url.to_owned();
    config.consume.count = count;
    config.consume.block_ms = 50;
    config
}

fn append(
    connection: &mut redis::Connection,
    event_type: &str,
    correlation: &str,
    ts: u64,
    data: &str,
) {
    append_versioned(connection, event_type, 1, correlation, ts, data);
}

fn append_versioned(
    connection: &mut redis::Connection,
    event_type: &str,
    version: u32,
    correlation: &str,
    ts: u64,
    data: &str,
) {
    let fields = [
        ("event_id", uuid::Uuid::now_v7().to_string()),
        ("event_type", event_type.to_owned()),
        ("version", format!("v{version}")),
        ("correlation_id", correlation.to_owned()),
        ("timestamp_ns", ts.to_string()),
        ("producer_id", "engine:test".to_owned()),
        ("sequence", "1".to_owned()),
        ("data", data.to_owned()),
    ];
    let _: String = connection.xadd("events", "*", &fields).unwrap();
}

fn signal(c: &mut redis::Connection, corr: &str, ts: u64) {
    append(
        c,
        "MarketDataUpdate",
        corr,
        ts,
        r#"{"symbol":"AAPL","bid":1.0,"ask":1.1}"#,
    );
}

fn created(c: &mut redis::Connection, corr: &str, ts: u64) {
    append(
        c,
        "OrderCreated",
        corr,
        ts,
        r#"{"orderId":"o","symbol":"AAPL","quantity":100.0,"price":190.0,"side":"BUY"}"#,
    );
}

fn filled(c: &mut redis::Connection, corr: &str, ts: u64) {
    append(
        c,
        "OrderFilled",
        corr,
        ts,
        r#"{"orderId":"o","fillId":"f","quantity":100.0,"price":190.0}"#,
    );
}

/// Runs one IntelliSense consumer until it has processed `events` in total (group-wide
/// counters), then stops it.
fn consume(url: &str, name: &str, count: usize, events: u64) -> ConsumeReport {
    let consumer = Consumer::new(
        &config(url, count),
        name,
        IntelliSense::new("events", IntelliSenseConfig::default()),
    )
    .unwrap();
    let stats = consumer.stats();
    let url = url.to_owned();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(consumer.run(wait_for_group(url, stats, events)))
}

async fn wait_for_group(url: String, stats: Arc<ConsumeStats>, events: u64) {
    let mut connection = redis::Client::open(url).unwrap().get_connection().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let processed: Option<u64> = connection
            .hget("events:consume:intellisense_group", "processed")
            .unwrap();
        if processed.unwrap_or(0) >= events && stats.snapshot().processed > 0
            || Instant::now() > deadline
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every latency recorded in `<stream>:analysis` for `kind` (`fill_latency`, …) and AAPL.
fn analysed(connection: &mut redis::Connection, kind: &str) -> Vec<u64> {
    let reply: redis::streams::StreamRangeReply = connection.xrange_all("events:analysis").unwrap();
    reply
        .ids
        .iter()
        .filter_map(|entry| entry.get::<String>(&format!("{kind}:AAPL")))
        .flat_map(|text| {
            text.split(',')
                .map(|n| n.parse::<u64>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn an_order_and_its_fill_are_both_processed_and_latencies_match_the_timestamps() {
    // Regression of the original design's bug: dedupe by correlation id dropped the fill.
    for count in [256, 1] {
        let server = RedisServer::start().unwrap();
        let mut connection = redis::Client::open(server.url())
            .unwrap()
            .get_connection()
            .unwrap();
        signal(&mut connection, "ord-1", T0);
        created(&mut connection, "ord-1", T0 + 2 * MS);
        filled(&mut connection, "ord-1", T0 + 150 * MS);

        // count 1: every event in its own batch, so the pairs go through Redis.
        let report = consume(&server.url(), "c1", count, 3);
        assert_eq!(report.processed, 3, "count {count}: {report:?}");
        assert_eq!(
            analysed(&mut connection, "creation_latency"),
            vec![2 * MS],
            "count {count}"
        );
        assert_eq!(
            analysed(&mut connection, "fill_latency"),
            vec![148 * MS],
            "count {count}"
        );

        let alerts: redis::streams::StreamRangeReply =
            connection.xrange_all("events:alerts").unwrap();
        assert_eq!(
            alerts.ids.len(),
            1,
            "148 ms fill is above 100 ms; 2 ms creation is not 10"
        );
        assert_eq!(alerts.ids[0].get::<String>("kind").unwrap(), "fill_latency");
        assert_eq!(
            alerts.ids[0].get::<String>("correlation_id").unwrap(),
            "ord-1"
        );

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let report = runtime.block_on(async {
            let client = redis::Client::open(server.url()).unwrap();
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            read_report(&mut connection, "events", "intellisense_group")
                .await
                .unwrap()
        });
        assert_eq!(
            (
                report.processed,
                report.orders,
                report.fills,
                report.signals
            ),
            (3, 1, 1, 1)
        );
        assert_eq!(report.alerts, 1);
        assert_eq!((report.lag, report.pending), (Some(0), Some(0)));
        let aapl = &report.symbols["AAPL"];
        assert_eq!(aapl.fill_latency.count, 1);
        let p50_ms = evstream_intellisense::percentiles::ms(aapl.fill_latency.p50);
        assert!((p50_ms - 148.0).abs() < 0.2, "{aapl:?}");
    }
}

#[test]
fn halves_handled_by_different_consumers_are_paired_exactly_once() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut connection = redis::Client::open(url.clone())
        .unwrap()
        .get_connection()
        .unwrap();
    // Order first at consumer A, its fill later at consumer B; for a second order, the fill
    // (arriving before its order) at A and the order at B.
    created(&mut connection, "ord-1", T0 + 10 * MS);
    filled(&mut connection, "ord-2", T0 + 40 * MS);
    consume(&url, "a", 256, 2);
    filled(&mut connection, "ord-1", T0 + 30 * MS);
    created(&mut connection, "ord-2", T0 + 35 * MS);
    consume(&url, "b", 256, 4);

    let mut fills = analysed(&mut connection, "fill_latency");
    fills.sort_unstable();
    assert_eq!(fills, vec![5 * MS, 20 * MS]);
}

/// Issue 23 (found by the demo's partial fills): an order's first fill paired at the
/// consumer holding the order, and a second fill of the same order at another consumer, gave
/// two fill latencies. Only the first fill counts, whichever consumer handles it.
#[test]
fn issue_23_a_later_fill_at_another_consumer_is_not_a_second_fill_latency() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut connection = redis::Client::open(url.clone())
        .unwrap()
        .get_connection()
        .unwrap();
    // Consumer A handles the order in one batch (its fill is missing: the order's half goes
    // to Redis), then the first fill in a later batch (paired locally) and stops.
    created(&mut connection, "ord-1", T0 + 10 * MS);
    let a = {
        let url = url.clone();
        std::thread::spawn(move || consume(&url, "a", 1, 2))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let processed: Option<u64> = connection
            .hget("events:consume:intellisense_group", "processed")
            .unwrap();
        if processed == Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "consumer A did not take the order"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    filled(&mut connection, "ord-1", T0 + 30 * MS);
    a.join().unwrap();
    // Consumer B handles the second, partial fill of the same order.
    filled(&mut connection, "ord-1", T0 + 50 * MS);
    consume(&url, "b", 256, 3);

    assert_eq!(analysed(&mut connection, "fill_latency"), vec![20 * MS]);
}

/// The same with the order and its first fill in one batch of consumer A: the order's half
/// still goes to Redis (its market data is missing), so the first fill must be recorded there.
#[test]
fn issue_23_a_first_fill_in_the_orders_batch_is_recorded_for_other_consumers() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut connection = redis::Client::open(url.clone())
        .unwrap()
        .get_connection()
        .unwrap();
    created(&mut connection, "ord-1", T0 + 10 * MS);
    filled(&mut connection, "ord-1", T0 + 30 * MS);
    consume(&url, "a", 256, 2);
    filled(&mut connection, "ord-1", T0 + 50 * MS);
    consume(&url, "b", 256, 3);

    assert_eq!(analysed(&mut connection, "fill_latency"), vec![20 * MS]);
}

/// Issue 23: `evstream_intellisense_orders_unmatched_total` counts the orders whose other
/// half never came, not those another consumer completed through Redis, nor a completed
/// order's later partial fill.
#[test]
fn issue_23_unmatched_orders_are_the_ones_redis_cannot_pair_either() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut connection = redis::Client::open(url.clone())
        .unwrap()
        .get_connection()
        .unwrap();
    let handler = IntelliSense::new(
        "events",
        IntelliSenseConfig {
            tracker_ttl_s: 1,
            ..IntelliSenseConfig::default()
        },
    );
    let analysis = handler.analysis();
    let consumer = Consumer::new(&config(&url, 256), "a", handler).unwrap();
    let stats = consumer.stats();
    let a = {
        let url = url.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(consumer.run(wait_for_group(url, stats, 7)))
        })
    };
    let processed = |connection: &mut redis::Connection, n: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while connection
            .hget::<_, _, Option<u64>>("events:consume:intellisense_group", "processed")
            .unwrap()
            .unwrap_or(0)
            < n
        {
            assert!(Instant::now() < deadline, "consumer A is stuck below {n}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    // ord-1 is filled at another consumer (its pairing hash gets filled_ns, as that
    // consumer's commit writes it); ord-2 is never filled; ord-3 is filled here, then gets a
    // second, partial fill.
    created(&mut connection, "ord-1", T0 + 10 * MS);
    created(&mut connection, "ord-2", T0 + 10 * MS);
    created(&mut connection, "ord-3", T0 + 10 * MS);
    filled(&mut connection, "ord-3", T0 + 20 * MS);
    processed(&mut connection, 4);
    let _: i64 = connection
        .hset("events:pairing:ord-1", "filled_ns", T0 + 30 * MS)
        .unwrap();
    filled(&mut connection, "ord-3", T0 + 40 * MS);
    processed(&mut connection, 5);
    // After the tracker's TTL, two more events: the first evicts, the second (no
    // correlation id) carries the lookups.
    std::thread::sleep(Duration::from_millis(1_100));
    signal(&mut connection, "ord-9", T0 + 50 * MS);
    append(
        &mut connection,
        "MarketDataUpdate",
        "",
        T0 + 60 * MS,
        r#"{"symbol":"AAPL","bid":1.0,"ask":1.1}"#,
    );
    a.join().unwrap();
    let analysis = analysis.lock().unwrap();
    assert_eq!(analysis.unmatched, 1, "ord-2 only");
    assert_eq!(analysed(&mut connection, "fill_latency"), vec![10 * MS]);
}

#[test]
fn a_risky_order_raises_a_risk_alert() {
    let server = RedisServer::start().unwrap();
    let mut connection = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    append(
        &mut connection,
        "OrderCreated",
        "big",
        T0,
        r#"{"orderId":"o","symbol":"AAPL","quantity":10000.0,"price":190.0}"#,
    );
    consume(&server.url(), "c1", 256, 1);
    let alerts: redis::streams::StreamRangeReply = connection.xrange_all("events:alerts").unwrap();
    assert_eq!(alerts.ids.len(), 1);
    let alert = &alerts.ids[0];
    assert_eq!(alert.get::<String>("kind").unwrap(), "risk");
    // 10,000 × 190 = 1.9M against the default 1M limit.
    assert_eq!(alert.get::<String>("level").unwrap(), "WARNING");
    assert!((alert.get::<f64>("value").unwrap() - 1.9).abs() < 1e-9);
}

// Issue 19: readers never stop.

/// `OrderCreated` v3: v2 plus an optional `venue`.
const CREATED_V3: &str = r#"{
  "type": "object",
  "required": ["orderId", "symbol", "quantity"],
  "properties": {
    "orderId": {"type": "string", "minLength": 1},
    "symbol": {"type": "string", "minLength": 1},
    "quantity": {"type": "number", "minimum": 0},
    "price": {"type": "number"},
    "side": {"enum": ["BUY", "SELL"]},
    "venue": {"type": "string"}
  }
}"#;

/// Pushes the shipped `schemas/` plus `extra` files to the server, as `evstream schema push`
/// does.
fn push_schemas(url: &str, extra: &[(&str, &str)]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let mut files = evstream::schema::Registry::from_dir(&dir)
        .unwrap()
        .files()
        .clone();
    for (path, text) in extra {
        files.insert((*path).to_owned(), (*text).to_owned());
    }
    let registry = evstream::schema::Registry::from_files(files).unwrap();
    let client = redis::Client::open(url).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            evstream::schema::push(&mut connection, &registry)
                .await
                .unwrap();
        });
}

/// Runs IntelliSense with the registry from Redis on its own thread until the group's
/// counters satisfy `until` (or 45 s pass).
fn run_intellisense(
    config: Config,
    until: impl Fn(&std::collections::HashMap<String, u64>) -> bool + Send + 'static,
) -> std::thread::JoinHandle<ConsumeReport> {
    let url = config.redis.url.clone();
    let consumer = Consumer::new(
        &config,
        "c1",
        IntelliSense::new("events", IntelliSenseConfig::default()),
    )
    .unwrap()
    .with_schemas_from_redis();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(consumer.run(async move {
                let mut connection = redis::Client::open(url).unwrap().get_connection().unwrap();
                let deadline = Instant::now() + Duration::from_secs(45);
                loop {
                    let counters: std::collections::HashMap<String, u64> = connection
                        .hgetall("events:consume:intellisense_group")
                        .unwrap();
                    if until(&counters) || Instant::now() > deadline {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }))
    })
}

fn dead_letters(connection: &mut redis::Connection) -> Vec<redis::streams::StreamId> {
    let reply: redis::streams::StreamRangeReply = connection.xrange_all("events:dlq").unwrap();
    reply.ids
}

/// Issue 19, items 1 and 2: a running IntelliSense consumer keeps processing every order and
/// fill while `OrderCreated` v3 (an optional field more, `FULL`) is pushed and v3 events
/// arrive; a type nobody registered is handed over where IntelliSense reads it (`Signal`,
/// counted `unvalidated`) and acknowledged unhandled where it does not (`PositionUpdated`).
/// Nothing is dead-lettered.
#[test]
fn issue_19_intellisense_keeps_reading_while_order_created_v3_is_pushed() {
    let server = RedisServer::start().unwrap();
    let mut connection = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let full = r#"{"compatibility": "FULL"}"#;
    push_schemas(&server.url(), &[("OrderCreated/config.json", full)]);

    let mut config = config(&server.url(), 16);
    // An event read before the consumer learns of v3 is retried (every 200 ms), never
    // dead-lettered while the registry reloads.
    config.consume.min_idle_ms = 200;
    config.consume.max_deliveries = 200;
    let consumer = run_intellisense(config, |counters| {
        let get = |name: &str| counters.get(name).copied().unwrap_or(0);
        get("orders") >= 12 && get("fills") >= 9 && get("signals") >= 5 && get("skipped") >= 2
    });

    let order = |n: u32, venue: bool| {
        let venue = if venue { r#","venue":"XNAS""# } else { "" };
        format!(r#"{{"orderId":"o{n}","symbol":"AAPL","quantity":10.0,"price":190.0{venue}}}"#)
    };
    let mut n: u32 = 0;
    let mut next = || {
        n += 1;
        (format!("ord-{n}"), T0 + u64::from(n) * MS)
    };
    // Before v3: v1 orders, fills, market data.
    for _ in 0..3 {
        let (corr, ts) = next();
        signal(&mut connection, &corr, ts);
        created(&mut connection, &corr, ts + MS);
        filled(&mut connection, &corr, ts + 2 * MS);
    }
    // v3 is pushed while the consumer runs; producers start writing v3 at once.
    push_schemas(
        &server.url(),
        &[
            ("OrderCreated/config.json", full),
            ("OrderCreated/v3.json", CREATED_V3),
            // A new field with a default for older data, as Avro wants for FULL.
            (
                "OrderCreated/v2-to-v3.json",
                r#"{"ops": [{"op": "add", "path": "/venue", "value": "XNAS"}]}"#,
            ),
        ],
    );
    for i in 0..3 {
        let (corr, ts) = next();
        append_versioned(
            &mut connection,
            "OrderCreated",
            2,
            &corr,
            ts,
            &order(i, false),
        );
        append_versioned(
            &mut connection,
            "OrderCreated",
            3,
            &corr,
            ts,
            &order(i, true),
        );
        filled(&mut connection, &corr, ts + 2 * MS);
    }
    for _ in 0..2 {
        let (corr, ts) = next();
        append(&mut connection, "Signal", &corr, ts, r#"{"symbol":"AAPL"}"#);
        append(
            &mut connection,
            "PositionUpdated",
            &corr,
            ts,
            r#"{"qty":1}"#,
        );
    }
    // After the consumer has certainly reloaded the registry (every 5 s).
    std::thread::sleep(Duration::from_secs(6));
    for i in 0..3 {
        let (corr, ts) = next();
        append_versioned(
            &mut connection,
            "OrderCreated",
            3,
            &corr,
            ts,
            &order(i, true),
        );
        filled(&mut connection, &corr, ts + 2 * MS);
    }

    let report = consumer.join().unwrap();
    let counters: std::collections::HashMap<String, u64> = connection
        .hgetall("events:consume:intellisense_group")
        .unwrap();
    let letters = dead_letters(&mut connection);
    assert!(letters.is_empty(), "dead letters: {letters:?}");
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    let get = |name: &str| counters.get(name).copied().unwrap_or(0);
    assert_eq!(get("orders"), 12, "{counters:?}");
    assert_eq!(get("fills"), 9, "{counters:?}");
    assert_eq!(get("signals"), 5, "{counters:?}");
    assert_eq!(
        get("skipped"),
        2,
        "PositionUpdated is not IntelliSense's: {counters:?}"
    );
    assert_eq!(
        get("unvalidated"),
        2,
        "Signal is registered nowhere: {counters:?}"
    );
    let pending: redis::streams::StreamPendingReply =
        connection.xpending("events", "intellisense_group").unwrap();
    assert_eq!(pending.count(), 0);
}

/// Issue 19, item 1: a version newer than IntelliSense reads, in a type not registered as
/// forward-compatible, is dead-lettered with a reason that names the fix, and feeds the
/// dead letter alert (`PoisonPillsHigh` reads the dead letter stream's entries-added).
/// The versions IntelliSense reads keep flowing.
#[test]
fn issue_19_an_unreadable_version_is_dead_lettered_with_the_fix_and_alerts() {
    let server = RedisServer::start().unwrap();
    let mut connection = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    // BACKWARD (the default): v3 adds a required venue with a default for older data, which
    // a v2 reader was never checked to read.
    let v3 = CREATED_V3.replace(
        r#""required": ["orderId", "symbol", "quantity"]"#,
        r#""required": ["orderId", "symbol", "quantity", "venue"]"#,
    );
    push_schemas(
        &server.url(),
        &[
            ("OrderCreated/v3.json", &v3),
            (
                "OrderCreated/v2-to-v3.json",
                r#"{"ops": [{"op": "add", "path": "/venue", "value": "XNAS"}]}"#,
            ),
        ],
    );
    let mut config = config(&server.url(), 16);
    config.consume.max_deliveries = 1;
    let consumer = run_intellisense(config.clone(), |counters| {
        let get = |name: &str| counters.get(name).copied().unwrap_or(0);
        get("orders") >= 2 && get("dead_lettered") >= 1
    });
    created(&mut connection, "ord-1", T0);
    append_versioned(
        &mut connection,
        "OrderCreated",
        3,
        "ord-2",
        T0 + MS,
        r#"{"orderId":"o2","symbol":"AAPL","quantity":1.0,"venue":"XNAS"}"#,
    );
    append_versioned(
        &mut connection,
        "OrderCreated",
        2,
        "ord-3",
        T0 + 2 * MS,
        r#"{"orderId":"o3","symbol":"AAPL","quantity":1.0}"#,
    );
    let report = consumer.join().unwrap();
    assert_eq!(report.dead_lettered, 1, "{report:?}");
    let orders: Option<u64> = connection
        .hget("events:consume:intellisense_group", "orders")
        .unwrap();
    assert_eq!(orders, Some(2));
    let letters = dead_letters(&mut connection);
    assert_eq!(letters.len(), 1);
    let field = |name: &str| letters[0].get::<String>(name).unwrap_or_default();
    assert_eq!(field("dlq_reason"), "unreadable_version");
    assert_eq!(field("version"), "v3");
    let error = field("dlq_error");
    assert!(
        error.contains(
            "OrderCreated v3 is not forward-compatible with v2, which this handler reads"
        ) && error.contains("upgrade the handler")
            && error.contains("FORWARD or FULL"),
        "{error}"
    );
    // The counter PoisonPillsHigh reads moved; at a rate above the threshold it fires.
    let info: std::collections::HashMap<String, redis::Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg("events:dlq")
        .query(&mut connection)
        .unwrap();
    let added = redis::from_redis_value::<u64>(info["entries-added"].clone()).ok();
    assert_eq!(added, Some(1));
    let mut ops = config.ops.clone();
    ops.poison_rate_warning = 0.5;
    let inputs = evstream::ops::alerts::Inputs {
        poison_rate: Some(1.0),
        ..Default::default()
    };
    let findings = evstream::ops::alerts::evaluate(&ops, &inputs);
    assert!(
        findings
            .iter()
            .any(|f| f.alert == evstream::ops::alerts::Alert::PoisonPillsHigh),
        "{findings:?}"
    );
}

/// The report over a partitioned stream is read by the library (`read_partitions`), each
/// partition from its server, and adds the partitions up: what `evstream report` prints.
#[test]
fn the_report_of_a_partitioned_stream_adds_every_partition_up() {
    let redis = RedisServer::start().unwrap();
    let mut config = config(&redis.url(), 64);
    config.redis.partitions = Some(2);
    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let orders = 20u64;
    for n in 0..orders {
        let corr = format!("ord-{n}");
        let key =
            evstream::keys::partition("events", evstream::keys::partition_of(&corr, 2) as u16);
        let data_created =
            r#"{"orderId":"o","symbol":"AAPL","quantity":1.0,"price":1.0,"side":"BUY"}"#;
        let data_filled = r#"{"orderId":"o","fillId":"f","quantity":1.0,"price":1.0}"#;
        for (event_type, ts, data) in [
            ("OrderCreated", T0 + n * MS, data_created),
            ("OrderFilled", T0 + n * MS + 2 * MS, data_filled),
        ] {
            let fields = [
                ("event_id", uuid::Uuid::now_v7().to_string()),
                ("event_type", event_type.to_owned()),
                ("version", "v1".to_owned()),
                ("correlation_id", corr.clone()),
                ("timestamp_ns", ts.to_string()),
                ("producer_id", "engine:test".to_owned()),
                ("sequence", "1".to_owned()),
                ("data", data.to_owned()),
            ];
            let _: String = connection.xadd(&key, "*", &fields).unwrap();
        }
    }
    let used: Vec<u64> = (0..2u16)
        .map(|p| {
            connection
                .xlen(evstream::keys::partition("events", p))
                .unwrap()
        })
        .collect();
    assert!(
        used.iter().all(|&n| n > 0),
        "both partitions hold events: {used:?}"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let consumers = evstream::consume::PartitionedConsumer::new(&config, "c1", |part| {
        IntelliSense::new(&part.redis.stream, IntelliSenseConfig::default())
    })
    .unwrap();
    let stats = consumers.stats();
    let consumed = runtime
        .block_on(consumers.run(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while stats.snapshot().processed < 2 * orders && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }))
        .unwrap();
    assert_eq!(consumed.processed, 2 * orders);

    let report = runtime
        .block_on(evstream_intellisense::read_partitions(
            &config,
            "intellisense_group",
        ))
        .unwrap();
    assert_eq!(
        (report.processed, report.orders, report.fills),
        (2 * orders, orders, orders)
    );
    let fill = &report.symbols["AAPL"].fill_latency;
    assert_eq!(fill.count, orders);
    // 2 ms between every order and its fill, within the histogram's 3 significant digits.
    assert!(
        fill.p50.abs_diff(Duration::from_millis(2)) < Duration::from_micros(10),
        "{fill:?}"
    );

    // A server that is not there: the error names the URL, without its password.
    let mut gone = config.clone();
    gone.redis.url = format!(
        "redis://:s3cret@127.0.0.1:{}",
        evstream_testkit::free_port().unwrap()
    );
    let error = runtime
        .block_on(evstream_intellisense::read_partitions(
            &gone,
            "intellisense_group",
        ))
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("cannot connect to Redis at"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
}
