//! Issue 4: `evstream consume` processes, killed and stopped as in production.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use evstream_testkit::RedisServer;
use redis::Commands;

mod common;
use common::evstream;

const GROUP_COUNTERS: &str = "events:consume:intellisense_group";

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
    let doomed_name = "name=evstream-consume:intellisense_group:doomed ";
    let client_list = |connection: &mut redis::Connection| -> String {
        redis::cmd("CLIENT").arg("LIST").query(connection).unwrap()
    };
    assert_eq!(client_list(&mut connection).matches(doomed_name).count(), 2);
    doomed.kill().unwrap(); // SIGKILL, never restarted
    doomed.wait().unwrap();
    // Commands the doomed one wrote before dying (an ack in flight) still run in Redis until
    // it reads the closed socket; only then is its pending list final.
    wait_for("Redis to drop the doomed consumer's connections", || {
        !client_list(&mut connection).contains(doomed_name)
    });
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

/// Peak resident memory of a running process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak resident memory the consumer may reach in the hostile-writer test: reads of 256
/// entries, a few of which carry 2 MB of data, plus the process's own baseline.
const HOSTILE_PEAK_RSS_MIB: u64 = 256;

#[test]
fn a_hostile_writer_cannot_stop_the_consumer_or_exhaust_its_memory() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut connection = redis::Client::open(url.clone())
        .unwrap()
        .get_connection()
        .unwrap();
    let good = |n: u64| -> Vec<(String, Vec<u8>)> {
        [
            ("event_id", format!("01900000-0000-7000-8000-{n:012x}")),
            ("event_type", "Tick".to_owned()),
            ("version", "v1".to_owned()),
            ("correlation_id", format!("c-{n}")),
            ("timestamp_ns", "1764000000000000000".to_owned()),
            ("producer_id", "engine:test".to_owned()),
            ("sequence", (n + 1).to_string()),
            ("data", format!("{{\"n\":{n}}}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_bytes()))
        .collect()
    };
    let set = |mut fields: Vec<(String, Vec<u8>)>, name: &str, value: Vec<u8>| {
        if let Some(field) = fields.iter_mut().find(|(k, _)| k == name) {
            field.1 = value;
        }
        fields
    };
    // Every kind of malformed entry, with the reason each must be dead-lettered with.
    let bad = |n: u64| -> (&'static str, Vec<(String, Vec<u8>)>) {
        let base = good(1_000_000 + n);
        match n % 8 {
            0 => ("invalid_json", set(base, "data", b"{\"n\":".to_vec())),
            1 => (
                "missing_field",
                base.into_iter().filter(|(k, _)| k != "event_id").collect(),
            ),
            2 => ("invalid_envelope", set(base, "version", b"one".to_vec())),
            3 => (
                "invalid_envelope",
                set(base, "event_type", vec![0xff, 0xfe]),
            ),
            4 => (
                "invalid_envelope",
                set(base, "event_id", b"not-a-uuid".to_vec()),
            ),
            5 => {
                let mut many = base;
                many.extend((0..70).map(|i| (format!("x{i}"), b"y".to_vec())));
                ("too_large", many)
            }
            6 => ("too_large", set(base, "correlation_id", vec![b'c'; 5000])),
            // A few entries with 2 MB of data; the rest with bad numbers.
            _ if n % 5000 == 7 => ("too_large", set(base, "data", vec![b' '; 2 << 20])),
            _ => ("invalid_envelope", set(base, "sequence", b"-1".to_vec())),
        }
    };
    let mut expected: HashMap<&str, u64> = HashMap::new();
    for chunk in 0..100u64 {
        let mut pipe = redis::pipe();
        for n in chunk * 1000..(chunk + 1) * 1000 {
            pipe.xadd("events", "*", &good(n)).ignore();
            let (reason, fields) = bad(n);
            *expected.entry(reason).or_default() += 1;
            pipe.xadd("events", "*", &fields).ignore();
        }
        pipe.query::<()>(&mut connection).unwrap();
    }

    let mut consumer = evstream()
        .args([
            "--redis-url",
            &url,
            "consume",
            "--consumer",
            "victim",
            "--handler",
            "ack-only",
            "--schemas",
            "off",
            "--max-deliveries",
            "2",
            "--min-idle",
            "200ms",
            "--exit-when-idle",
            "3s",
            "--metrics-addr",
            "off",
            "--json",
            "--count",
            "1000",
        ])
        .stdout(Stdio::piped())
        // A file, not a pipe: 100,000 poison warnings would fill a pipe nobody reads.
        .stderr(std::fs::File::create(server.dir().join("consumer.log")).unwrap())
        .spawn()
        .unwrap();
    let mut peak_kib = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    while consumer.try_wait().unwrap().is_none() && Instant::now() < deadline {
        peak_kib = peak_kib.max(peak_rss_kib(consumer.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = consumer.wait_with_output().unwrap();
    let log = std::fs::read_to_string(server.dir().join("consumer.log")).unwrap_or_default();
    assert!(
        output.status.success(),
        "{}",
        &log[log.len().saturating_sub(2000)..]
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["processed"], 100_000, "{summary}");
    assert_eq!(summary["dead_lettered"], 100_000, "{summary}");

    let mut found: HashMap<String, u64> = HashMap::new();
    let mut last = "-".to_owned();
    loop {
        let page: redis::streams::StreamRangeReply = connection
            .xrange_count("events:dlq", &last, "+", 10_000)
            .unwrap();
        let Some(tail) = page.ids.last() else { break };
        let next = format!("({}", tail.id);
        for entry in &page.ids {
            let reason: String = entry.get("dlq_reason").unwrap();
            *found.entry(reason).or_default() += 1;
        }
        if page.ids.len() < 10_000 {
            break;
        }
        last = next;
    }
    let expected: HashMap<String, u64> = expected
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    assert_eq!(
        found, expected,
        "every bad entry in the DLQ with its reason"
    );
    assert!(
        peak_kib > 0 && peak_kib < HOSTILE_PEAK_RSS_MIB * 1024,
        "peak RSS {} MiB, bound {HOSTILE_PEAK_RSS_MIB} MiB",
        peak_kib / 1024
    );
    eprintln!("hostile writer: consumer peak RSS {} MiB", peak_kib / 1024);
}

/// Runs `evstream` with `args` on `url`; returns its exit code, stdout as JSON (Null if it is
/// not JSON) and stderr.
fn run_json(url: &str, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let output = evstream()
        .args(["--redis-url", url])
        .args(args)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), json, stderr)
}

#[test]
fn dead_letters_are_listed_and_replayed_once_then_processed() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut connection = redis::Client::open(url.clone())
        .unwrap()
        .get_connection()
        .unwrap();
    // Three dead letters as consumers write them: an order a handler bug refused (fixed
    // since), an effect_failed record, and a too-large entry whose data was left out.
    let envelope = [
        ("event_id", "01900000-0000-7000-8000-00000000a001"),
        ("event_type", "OrderCreated"),
        ("version", "v1"),
        ("correlation_id", "ord-dlq"),
        ("timestamp_ns", "1764000000000000000"),
        ("producer_id", "engine:test"),
        ("sequence", "7"),
        (
            "data",
            r#"{"orderId":"o","symbol":"MSFT","quantity":10.0,"price":411.0}"#,
        ),
    ];
    let consume_fields = |reason: &str| {
        vec![
            ("dlq_reason", reason.to_owned()),
            ("dlq_stage", "consume".to_owned()),
            ("dlq_error", format!("{reason} in a test")),
            ("dlq_at_ns", "1764000000000000001".to_owned()),
            ("dlq_source_id", "1-0".to_owned()),
            ("dlq_deliveries", "5".to_owned()),
            ("dlq_group", "intellisense_group".to_owned()),
        ]
    };
    let with = |reason: &str, skip_data: bool| {
        let mut fields: Vec<(&str, String)> = envelope
            .iter()
            .filter(|(name, _)| !(skip_data && *name == "data"))
            .map(|(n, v)| (*n, (*v).to_owned()))
            .collect();
        fields.extend(consume_fields(reason));
        if skip_data {
            fields.push(("dlq_data_bytes", "20000000".to_owned()));
        }
        fields
    };
    let buggy: String = connection
        .xadd("events:dlq", "*", &with("handler_error", false))
        .unwrap();
    let _: String = connection
        .xadd("events:dlq", "*", &with("effect_failed", false))
        .unwrap();
    let _: String = connection
        .xadd("events:dlq", "*", &with("too_large", true))
        .unwrap();

    // Listed newest first, selectable by reason.
    let (code, listed, _) = run_json(&url, &["dlq", "list", "--json"]);
    assert_eq!(code, Some(0));
    let reasons: Vec<&str> = listed[0]["letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|letter| letter["fields"]["dlq_reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["too_large", "effect_failed", "handler_error"]);
    let (_, listed, _) = run_json(
        &url,
        &["dlq", "list", "--reason", "handler_error", "--json"],
    );
    assert_eq!(listed[0]["letters"].as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["letters"][0]["id"], buggy.as_str());

    // Replay asks which; a dry run changes nothing.
    let (code, _, stderr) = run_json(&url, &["dlq", "replay"]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("--reason"), "{stderr}");
    let (code, dry, _) = run_json(
        &url,
        &[
            "dlq",
            "replay",
            "--reason",
            "handler_error",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{dry}");
    assert_eq!(
        (dry["selected"].as_u64(), dry["replayed"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(connection.xlen::<_, u64>("events:dlq").unwrap(), 3);
    assert_eq!(connection.xlen::<_, u64>("events").unwrap(), 0);

    // --all: the order goes back, the other two are not replayable (exit 2) and stay.
    let (code, summary, _) = run_json(&url, &["dlq", "replay", "--all", "--json"]);
    assert_eq!(code, Some(2), "{summary}");
    assert_eq!(summary["replayed"].as_u64(), Some(1), "{summary}");
    assert_eq!(
        summary["not_replayable_count"].as_u64(),
        Some(2),
        "{summary}"
    );
    assert_eq!(connection.xlen::<_, u64>("events:dlq").unwrap(), 2);
    let stream: redis::streams::StreamRangeReply = connection.xrange_all("events").unwrap();
    assert_eq!(stream.ids.len(), 1);
    let replayed: Vec<(String, String)> = redis::cmd("XRANGE")
        .arg("events")
        .arg("-")
        .arg("+")
        .query::<Vec<(String, Vec<(String, String)>)>>(&mut connection)
        .unwrap()
        .remove(0)
        .1;
    let mut original: Vec<(String, String)> = envelope
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    original.push(("replay_for_group".into(), "intellisense_group".into()));
    assert_eq!(
        replayed, original,
        "the original fields in order, no dlq_*, for the group that gave up on it"
    );

    // Again by id: no such dead letter any more (an error), nothing appended twice.
    let (code, _, stderr) = run_json(&url, &["dlq", "replay", "--id", &buggy, "--json"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no such dead letter"), "{stderr}");
    assert_eq!(connection.xlen::<_, u64>("events").unwrap(), 1);

    // The group that gave up on it processes it; another group, which processed the
    // original entry, acknowledges it without handling it.
    let consume = |group: &str| {
        let (code, report, stderr) = run_json(
            &url,
            &[
                "consume",
                "--group",
                group,
                "--consumer",
                "c1",
                "--exit-when-idle",
                "1s",
                "--json",
            ],
        );
        assert_eq!(code, Some(0), "{stderr}");
        report
    };
    let report = consume("intellisense_group");
    assert_eq!(report["processed"].as_u64(), Some(1), "{report}");
    assert_eq!(counter(&mut connection, "orders"), 1);
    let report = consume("other_group");
    assert_eq!(report["processed"].as_u64(), Some(0), "{report}");
    let skipped: Option<u64> = connection
        .hget("events:consume:other_group", "replays_for_other_groups")
        .unwrap();
    assert_eq!(skipped, Some(1));
}

#[test]
fn with_partitions_a_dead_letter_is_named_by_its_stream_and_goes_back_to_its_partition() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut connection = redis::Client::open(url.clone())
        .unwrap()
        .get_connection()
        .unwrap();
    // A shipper's dead letter in each partition, both with entry id 5-1.
    for partition in 0..2 {
        let _: String = connection
            .xadd(
                format!("events:{{{partition}}}:dlq"),
                "5-1",
                &[
                    (
                        "event_id",
                        format!("01900000-0000-7000-8000-00000000b00{partition}"),
                    ),
                    ("event_type", "Signal".to_owned()),
                    ("version", "v1".to_owned()),
                    ("correlation_id", format!("p{partition}")),
                    ("timestamp_ns", "1764000000000000000".to_owned()),
                    ("producer_id", "engine:test".to_owned()),
                    ("sequence", "3".to_owned()),
                    ("data", "{}".to_owned()),
                    ("dlq_reason", "redis_rejected".to_owned()),
                    ("dlq_stage", "ship".to_owned()),
                ],
            )
            .unwrap();
    }
    let partitioned = |args: &[&str]| {
        let mut all = vec!["--partitions", "2"];
        all.extend_from_slice(args);
        run_json(&url, &all)
    };
    let (code, listed, _) = partitioned(&["dlq", "list", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    // A bare id is ambiguous across partitions.
    let (code, _, stderr) = partitioned(&["dlq", "replay", "--id", "5-1"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("<dlq key>/<id>"), "{stderr}");
    let (code, summary, stderr) =
        partitioned(&["dlq", "replay", "--id", "events:{1}:dlq/5-1", "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(summary["replayed"].as_u64(), Some(1), "{summary}");
    let length =
        |connection: &mut redis::Connection, key: &str| -> u64 { connection.xlen(key).unwrap() };
    assert_eq!(length(&mut connection, "events:{1}"), 1);
    assert_eq!(length(&mut connection, "events:{1}:dlq"), 0);
    assert_eq!(length(&mut connection, "events:{0}"), 0);
    assert_eq!(
        length(&mut connection, "events:{0}:dlq"),
        1,
        "the other one stays"
    );
}

/// Issue 19, item 3: a consumer's `invalid_json` dead letter is not replayable (its group
/// would dead-letter it again), and the refusal names its reason and why.
#[test]
fn issue_19_a_consumers_invalid_json_letter_is_refused_with_its_reason() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let mut connection = redis::Client::open(url.clone())
        .unwrap()
        .get_connection()
        .unwrap();
    let letter = [
        ("event_id", "01900000-0000-7000-8000-00000000b001"),
        ("event_type", "OrderCreated"),
        ("version", "v1"),
        ("correlation_id", "ord-bad"),
        ("timestamp_ns", "1764000000000000000"),
        ("producer_id", "engine:test"),
        ("sequence", "9"),
        ("data", "{not json"),
        ("dlq_reason", "invalid_json"),
        ("dlq_stage", "consume"),
        ("dlq_error", "expected a value"),
        ("dlq_at_ns", "1764000000000000001"),
        ("dlq_source_id", "1-0"),
        ("dlq_deliveries", "5"),
        ("dlq_group", "intellisense_group"),
    ];
    let id: String = connection.xadd("events:dlq", "*", &letter).unwrap();

    let (code, summary, stderr) = run_json(&url, &["dlq", "replay", "--all", "--json"]);
    assert_eq!(code, Some(2), "{summary} {stderr}");
    assert_eq!(summary["replayed"].as_u64(), Some(0), "{summary}");
    assert_eq!(
        summary["not_replayable_count"].as_u64(),
        Some(1),
        "{summary}"
    );
    let refused = &summary["not_replayable"][0];
    assert_eq!(refused["id"], id.as_str(), "{summary}");
    assert_eq!(refused["reason"], "invalid_json", "{summary}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or("")
            .contains("not JSON"),
        "{summary}"
    );
    assert_eq!(connection.xlen::<_, u64>("events").unwrap(), 0);
    assert_eq!(connection.xlen::<_, u64>("events:dlq").unwrap(), 1);

    // As text: the line names the reason, not an empty one.
    let output = evstream()
        .args([
            "--redis-url",
            &url,
            "dlq",
            "replay",
            "--reason",
            "invalid_json",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("events:dlq/{id} invalid_json: refused")),
        "{text}"
    );
    assert!(text.contains("not JSON"), "{text}");
}

/// Issue 19, item 3: a consumer reading the schemas from Redis says so when nothing is
/// registered (its events are not validated), as docs/schemas.md promises.
#[test]
fn issue_19_a_consumer_with_an_empty_registry_warns() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let output = evstream()
        .env_remove("EVSTREAM_LOG")
        .env_remove("RUST_LOG")
        .args(["--redis-url", &url, "consume", "--consumer", "c1"])
        .args(["--exit-when-idle", "1s", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("no schema"),
        "{stderr}"
    );
    assert!(stderr.contains("evstream schema push"), "{stderr}");
}
