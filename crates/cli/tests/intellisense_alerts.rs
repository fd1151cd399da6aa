//! Issue 23: IntelliSense's results in Prometheus and its alerts through the ops loop's alert
//! path. An engine fills orders slowly and sends one risky order; `evstream consume` shows
//! the latencies, the risk scores and the alerts on its `/metrics`, and `evstream ops` fires
//! `OrderLatencyHigh` and `OrderRiskHigh` to its log, its webhook and its `/metrics`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use evstream::publish::{self, OrderCreated, OrderFilled, Side};
use evstream::{ship, Config};
use evstream_testkit::{free_port, http_get, RedisServer, WebhookSink};

mod common;
use common::{evstream, Running};

/// The value of the sample `series` (name and labels exactly as rendered).
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
}

/// Polls until `check` returns `Some` or 20 s pass.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Publishes 20 orders filled after 1 ms on MSFT, 3 filled after 250 ms on AAPL (above the
/// 100 ms fill alert), and one order of 2.5 times the notional limit on TSLA, each with its
/// market data tick first.
fn trade(redis: &RedisServer) {
    let mut config = Config::default();
    config.redis.url = redis.url();
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();
    let order = |id: &str, symbol: &str, quantity: f64| {
        publisher
            .publish(
                "MarketDataUpdate",
                &serde_json::json!({"symbol": symbol, "bid": 99.9, "ask": 100.1}),
                id,
            )
            .unwrap();
        publisher
            .on_order_created(&OrderCreated {
                correlation_id: id,
                order_id: id,
                symbol,
                quantity,
                price: 100.0,
                side: Side::Buy,
            })
            .unwrap();
    };
    let fill = |id: &str| {
        publisher
            .on_order_filled(&OrderFilled {
                correlation_id: id,
                order_id: id,
                fill_id: &format!("{id}-1"),
                quantity: 10.0,
                price: 100.0,
            })
            .unwrap();
    };
    for n in 0..20 {
        let id = format!("fast-{n}");
        order(&id, "MSFT", 10.0);
        std::thread::sleep(Duration::from_millis(1));
        fill(&id);
    }
    let slow: Vec<String> = (0..3).map(|n| format!("slow-{n}")).collect();
    for id in &slow {
        order(id, "AAPL", 10.0);
    }
    std::thread::sleep(Duration::from_millis(250));
    for id in &slow {
        fill(id);
    }
    order("risky-1", "TSLA", 25_000.0);
    drop(publisher);
    let report = shipper.shutdown(Duration::from_secs(10));
    assert_eq!(report.shipped, 20 * 3 + 3 * 3 + 2, "{report:?}");
}

#[test]
fn slow_fills_and_a_risky_order_reach_metrics_the_log_and_the_webhook() {
    let redis = RedisServer::start().unwrap();
    let hook = WebhookSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ops_log = dir.path().join("ops.log");
    let consume_addr = format!("127.0.0.1:{}", free_port().unwrap());
    let ops_addr = format!("127.0.0.1:{}", free_port().unwrap());
    let _consumer = Running(
        evstream()
            .args(["consume", "--redis-url", &redis.url(), "--consumer", "c1"])
            .args(["--metrics-addr", &consume_addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut ops = Running(
        evstream()
            .env_remove("EVSTREAM_LOG")
            .env_remove("RUST_LOG")
            .args(["ops", "--redis-url", &redis.url()])
            .args(["--alert-interval", "200ms", "--interval", "200ms"])
            .args(["--webhook", &hook.url(), "--metrics-addr", &ops_addr])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&ops_log).unwrap())
            .spawn()
            .unwrap(),
    );
    // The consumer's group exists before the first event: it reads from the start either way.
    eventually("the consumer's /metrics", || {
        http_get(&consume_addr, "/metrics").ok()
    });
    trade(&redis);

    // IntelliSense's figures on the consumer's /metrics.
    let page = eventually("the fill alerts on the consumer's /metrics", || {
        let (_, page) = http_get(&consume_addr, "/metrics").ok()?;
        let fills = sample(&page, "evstream_intellisense_events_total{kind=\"fill\"}")?;
        (fills == 23.0).then_some(page)
    });
    let series = |s: &str| sample(&page, s).unwrap_or_else(|| panic!("no {s} in:\n{page}"));
    assert_eq!(
        series("evstream_intellisense_alerts_total{kind=\"fill_latency\",level=\"WARNING\"}"),
        3.0
    );
    assert_eq!(
        series("evstream_intellisense_alerts_total{kind=\"risk\",level=\"CRITICAL\"}"),
        1.0
    );
    assert_eq!(
        series("evstream_intellisense_alerts_total{kind=\"risk\",level=\"WARNING\"}"),
        0.0,
        "every alert series exists from the start"
    );
    assert_eq!(
        series("evstream_intellisense_events_total{kind=\"order\"}"),
        24.0
    );
    // Fill latency per symbol: AAPL's three above 250 ms, MSFT's twenty under 100 ms.
    assert_eq!(
        series("evstream_intellisense_latency_seconds_count{kind=\"fill\",symbol=\"AAPL\"}"),
        3.0
    );
    assert_eq!(
        series("evstream_intellisense_latency_seconds_bucket{kind=\"fill\",symbol=\"AAPL\",le=\"0.25\"}"),
        0.0
    );
    assert_eq!(
        series("evstream_intellisense_latency_seconds_bucket{kind=\"fill\",symbol=\"MSFT\",le=\"0.1\"}"),
        20.0
    );
    assert_eq!(
        series("evstream_intellisense_risk_score_bucket{symbol=\"TSLA\",le=\"2\"}"),
        0.0
    );
    assert_eq!(
        series("evstream_intellisense_risk_score_bucket{symbol=\"TSLA\",le=\"5\"}"),
        1.0
    );
    assert_eq!(series("evstream_intellisense_orders_open"), 1.0, "TSLA's");

    // The ops loop fires both alerts: /metrics, webhook, log.
    eventually(
        "OrderLatencyHigh and OrderRiskHigh on the ops loop's /metrics",
        || {
            let (_, page) = http_get(&ops_addr, "/metrics").ok()?;
            let latency = sample(
                &page,
                "evstream_alert_firing{alert=\"OrderLatencyHigh\",severity=\"warning\"}",
            )?;
            let risk = sample(
                &page,
                "evstream_alert_firing{alert=\"OrderRiskHigh\",severity=\"critical\"}",
            )?;
            (latency == 1.0 && risk == 1.0).then_some(())
        },
    );
    let notifications = eventually("both notifications at the webhook", || {
        let bodies: Vec<serde_json::Value> = hook
            .bodies()
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect();
        let has = |alert: &str| bodies.iter().any(|b| b["alert"] == alert);
        (has("OrderLatencyHigh") && has("OrderRiskHigh")).then_some(bodies)
    });
    let latency = notifications
        .iter()
        .find(|b| b["alert"] == "OrderLatencyHigh")
        .unwrap();
    assert_eq!(latency["subject"], "fill_latency", "{latency}");
    assert_eq!(latency["severity"], "warning", "{latency}");
    assert_eq!(latency["value"], 3.0, "{latency}");
    let message = latency["message"].as_str().unwrap();
    assert!(
        message.contains("3 fill latency alerts") && message.contains("AAPL order slow-"),
        "{message}"
    );
    let risk = notifications
        .iter()
        .find(|b| b["alert"] == "OrderRiskHigh")
        .unwrap();
    assert_eq!(risk["severity"], "critical", "{risk}");
    assert!(
        risk["message"]
            .as_str()
            .unwrap()
            .contains("TSLA order risky-1"),
        "{risk}"
    );
    assert!(
        notifications
            .iter()
            .all(|b| !(b["alert"] == "OrderLatencyHigh" && b["subject"] == "creation_latency")),
        "creation latencies were microseconds: {notifications:?}"
    );
    let _ = ops.0.kill();
    let _ = ops.0.wait();
    let log = std::fs::read_to_string(&ops_log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("OrderLatencyHigh") && l.contains("WARNING")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("OrderRiskHigh") && l.contains("CRITICAL")),
        "{log}"
    );
}
