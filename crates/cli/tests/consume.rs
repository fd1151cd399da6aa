//! Issue 4: `evstream consume` processes, killed and stopped as in production.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use evstream_testkit::RedisServer;
use redis::Commands;

const GROUP_COUNTERS: &str = "events:consume:intellisense_group";

fn evstream() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_evstream"));
    command.env_remove("EVSTREAM_REDIS_URL");
    command
}

/// Appends `orders` order lifecycles (signal, order, fill): `3 × orders` events.
fn append_orders(connection: &mut redis::Connection, orders: u64) {
    let t0 = 1_764_000_000_000_000_000u64;
    for chunk in (0..orders).collect::<Vec<_>>().chunks(5000) {
        let mut pipe = redis::pipe();
        for &n in chunk {
            let corr = format!("ord-{n}");
            let events = [
                (
                    "MarketDataUpdate",
                    r#"{"symbol":"MSFT","bid":1.0,"ask":1.1}"#.to_owned(),
                ),
                (
                    "OrderCreated",
                    r#"{"orderId":"o","symbol":"MSFT","quantity":10.0,"price":411.0}"#.to_owned(),
                ),
                (
                    "OrderFilled",
                    r#"{"orderId":"o","fillId":"f","quantity":10.0,"price":411.0}"#.to_owned(),
                ),
            ];
            for (step, (event_type, data)) in events.into_iter().enumerate() {
                let ts = t0 + n * 1_000_000 + step as u64 * 100_000;
                pipe.xadd(
                    "events",
                    "*",
                    &[
                        ("event_id", uuid_like(n, step)),
                        ("event_type", event_type.to_owned()),
                        ("version", "v1".to_owned()),
                        ("correlation_id", corr.clone()),
                        ("timestamp_ns", ts.to_string()),
                        ("producer_id", "engine:test".to_owned()),
                        ("sequence", (n * 3 + step as u64 + 1).to_string()),
                        ("data", data),
                    ],
                )
                .ignore();
            }
        }
        pipe.query::<()>(connection).unwrap();
    }
}

/// A distinct, valid UUIDv7 text per event.
fn uuid_like(n: u64, step: usize) -> String {
    format!("01900000-0000-7000-8000-{:012x}", n * 3 + step as u64)
}

fn spawn_consumer(url: &str, name: &str, extra: &[&str]) -> Child {
    evstream()
        .args([
            "--redis-url",
            url,
            "consume",
            "--consumer",
            name,
            "--min-idle",
            "1s",
            "--json",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn counter(connection: &mut redis::Connection, name: &str) -> u64 {
    connection
        .hget::<_, _, Option<u64>>(GROUP_COUNTERS, name)
        .unwrap()
        .unwrap_or(0)
}

fn pending_of(connection: &mut redis::Connection, consumer: &str) -> u64 {
    let consumers: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg("events")
        .arg("intellisense_group")
        .query(connection)
        .unwrap();
    consumers
        .iter()
        .find(|c| c.get("name") == Some(&redis::Value::BulkString(consumer.as_bytes().to_vec())))
        .and_then(|c| match c.get("pending") {
            Some(redis::Value::Int(n)) => Some(*n as u64),
            _ => None,
        })
        .unwrap_or(0)
}

fn group_lag_and_pending(connection: &mut redis::Connection) -> (i64, i64) {
    let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg("events")
        .query(connection)
        .unwrap();
    let int = |v: &redis::Value| match v {
        redis::Value::Int(i) => *i,
        other => panic!("not an int: {other:?}"),
    };
    (int(&groups[0]["lag"]), int(&groups[0]["pending"]))
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_consumer_killed_mid_batch_loses_nothing_and_applies_nothing_twice() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut connection = redis::Client::open(url.clone())
        .unwrap()
        .get_connection()
        .unwrap();
    let orders = 66_667; // 200,001 events
    append_orders(&mut connection, orders);

    let mut doomed = spawn_consumer(&url, "doomed", &[]);
    let survivor = spawn_consumer(&url, "survivor", &["--exit-when-idle", "3s"]);
    wait_for("both consumers to make progress", || {
        counter(&mut connection, "processed") >= 50_000 && pending_of(&mut connection, "doomed") > 0
    });
    doomed.kill().unwrap(); // SIGKILL, never restarted
    doomed.wait().unwrap();
    let held_at_death = pending_of(&mut connection, "doomed");

    let output = survivor.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    // Every event's effect applied exactly once, group-wide.
    assert_eq!(counter(&mut connection, "processed"), orders * 3);
    assert_eq!(counter(&mut connection, "orders"), orders);
    assert_eq!(counter(&mut connection, "fills"), orders);
    assert_eq!(counter(&mut connection, "signals"), orders);
    assert_eq!(
        group_lag_and_pending(&mut connection),
        (0, 0),
        "(lag, pending)"
    );
    assert!(
        summary["claimed"].as_u64().unwrap() >= held_at_death,
        "the survivor claimed the {held_at_death} entries the dead one held: {summary}"
    );
    assert_eq!(pending_of(&mut connection, "doomed"), 0);
    // Pairs completed by either consumer are all there, once: one fill latency per order.
    let report = evstream()
        .args(["--redis-url", &url, "report", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["processed"].as_u64(), Some(orders * 3), "{report}");
    let fills_measured = report["symbols"]["MSFT"]["fill_latency"]["count"]
        .as_u64()
        .unwrap();
    assert!(
        fills_measured <= orders && fills_measured >= orders - held_at_death,
        "{fills_measured} fill latencies for {orders} orders (at most once each)"
    );
}

#[test]
fn sigterm_finishes_the_entries_in_hand_and_exits_zero() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut connection = redis::Client::open(url.clone())
        .unwrap()
        .get_connection()
        .unwrap();
    append_orders(&mut connection, 40_000);

    let consumer = spawn_consumer(&url, "c1", &[]);
    wait_for("progress", || {
        counter(&mut connection, "processed") >= 20_000
    });
    let stopped = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &consumer.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = consumer.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "exit code 0 on SIGTERM: {:?}",
        output.status
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        stopped.elapsed()
    );
    assert_eq!(
        pending_of(&mut connection, "c1"),
        0,
        "nothing left unacknowledged"
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        summary["processed"].as_u64(),
        Some(counter(&mut connection, "processed"))
    );
}
