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
    let fields = [
        ("event_id", uuid::Uuid::now_v7().to_string()),
        ("event_type", event_type.to_owned()),
        ("version", "v1".to_owned()),
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
        assert!((aapl.fill_latency.p50_ms - 148.0).abs() < 0.2, "{aapl:?}");
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
