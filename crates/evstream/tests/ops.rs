//! The ops loop against real redis-servers: retention that spares what groups still need,
//! memory thresholds, group hygiene, and alert notifications to a webhook.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use evstream::config::Config;
use evstream::ops::alerts::Severity;
use evstream::ops::{OpsLoop, OpsSnapshot, OpsState};
use evstream_testkit::{RedisServer, WebhookSink};
use redis::Connection;

fn config(redis: &RedisServer) -> Config {
    let mut config = Config::default();
    config.redis.url = redis.url();
    config.ops.max_age_s = 0;
    config
}

fn connect(redis: &RedisServer) -> Connection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Appends `n` entries with `bytes`-byte payloads; with `ms`, explicit ids in that
/// millisecond (old entries), else Redis-generated ids.
fn append(connection: &mut Connection, n: usize, bytes: usize, ms: Option<u64>) {
    let payload = "x".repeat(bytes);
    let mut pipe = redis::pipe();
    for i in 0..n {
        let id = ms.map_or_else(|| "*".to_owned(), |ms| format!("{ms}-{}", i + 1));
        pipe.cmd("XADD")
            .arg("events")
            .arg(id)
            .arg("data")
            .arg(&payload)
            .ignore();
    }
    pipe.exec(connection).unwrap();
}

fn cmd(connection: &mut Connection, args: &[&str]) -> redis::Value {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(connection).unwrap()
}

fn length(connection: &mut Connection) -> u64 {
    redis::cmd("XLEN").arg("events").query(connection).unwrap()
}

/// Reads `count` entries for `consumer` of `group`; `ack` false leaves them pending.
fn read(connection: &mut Connection, group: &str, consumer: &str, count: usize, ack: bool) {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count);
    if ack {
        cmd.arg("NOACK");
    }
    let _: redis::Value = cmd
        .arg("STREAMS")
        .arg("events")
        .arg(">")
        .query(connection)
        .unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn evaluations(state: Arc<OpsState>, n: u64) {
    while state.snapshot().evaluations < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One pass of a fresh loop: observe, act, evaluate.
fn one_pass(config: &Config) -> OpsSnapshot {
    let ops = OpsLoop::new(config).unwrap();
    let state = ops.state();
    runtime().block_on(ops.run(evaluations(Arc::clone(&state), 1)));
    state.snapshot()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn first_id_ms(connection: &mut Connection) -> u64 {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("events")
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query(connection)
        .unwrap();
    reply.ids[0].id.split('-').next().unwrap().parse().unwrap()
}

#[test]
fn retention_keeps_the_newest_entries_by_length_and_age() {
    let redis = RedisServer::start().unwrap();
    let mut connection = connect(&redis);
    let two_days_ago = unix_ms() - 48 * 3600 * 1000;
    append(&mut connection, 1000, 100, Some(two_days_ago));
    append(&mut connection, 4000, 100, None);
    let mut config = config(&redis);
    config.ops.max_len = 2000;
    config.ops.max_age_s = 86_400;

    let snapshot = one_pass(&config);

    let left = length(&mut connection);
    // `~` removes whole macro nodes (100 entries): a node's worth more may stay.
    assert!((2000..=2100).contains(&left), "{left} entries left");
    assert!(first_id_ms(&mut connection) > two_days_ago);
    assert_eq!(snapshot.trimmed_retention, 5000 - left);
    assert!(snapshot.retention_held_back_by.is_empty());
}

#[test]
fn retention_spares_entries_a_group_has_not_read_or_acknowledged() {
    let redis = RedisServer::start().unwrap();
    let mut connection = connect(&redis);
    append(&mut connection, 5000, 100, None);
    cmd(
        &mut connection,
        &["XGROUP", "CREATE", "events", "fast", "0"],
    );
    cmd(
        &mut connection,
        &["XGROUP", "CREATE", "events", "slow", "0"],
    );
    read(&mut connection, "fast", "f1", 5000, true);
    // slow: 1000 done, the 1001st delivered and not acknowledged, 2000 more done.
    read(&mut connection, "slow", "s1", 1000, true);
    read(&mut connection, "slow", "s1", 1, false);
    read(&mut connection, "slow", "s1", 2000, true);
    let mut config = config(&redis);
    config.ops.max_len = 500;

    let snapshot = one_pass(&config);

    // Everything from the pending entry (the 1001st) on is still there.
    let left = length(&mut connection);
    assert!((4000..=4100).contains(&left), "{left} entries left");
    assert_eq!(snapshot.retention_held_back_by, vec!["slow".to_owned()]);
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg("events")
        .arg("slow")
        .query(&mut connection)
        .unwrap();
    let redis::Value::Array(summary) = pending else {
        panic!("{pending:?}")
    };
    let oldest = match &summary[1] {
        redis::Value::BulkString(id) => String::from_utf8(id.clone()).unwrap(),
        other => panic!("{other:?}"),
    };
    let still_there: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("events")
        .arg(&oldest)
        .arg(&oldest)
        .query(&mut connection)
        .unwrap();
    assert_eq!(still_there.ids.len(), 1, "the pending entry was trimmed");

    // Once slow has caught up and acknowledged, retention applies in full.
    cmd(&mut connection, &["XACK", "events", "slow", &oldest]);
    read(&mut connection, "slow", "s1", 5000, true);
    let snapshot = one_pass(&config);
    let left = length(&mut connection);
    assert!((500..=600).contains(&left), "{left} entries left");
    assert!(snapshot.retention_held_back_by.is_empty());
}

#[test]
fn appends_racing_the_trim_do_not_push_out_what_a_group_still_needs() {
    let redis = RedisServer::start().unwrap();
    let mut connection = connect(&redis);
    append(&mut connection, 5000, 100, None);
    cmd(
        &mut connection,
        &["XGROUP", "CREATE", "events", "slow", "0"],
    );
    read(&mut connection, "slow", "s1", 1000, true);
    let first_needed: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("events")
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1001)
        .query(&mut connection)
        .unwrap();
    let floor = first_needed.ids[1000].id.clone();
    let mut config = config(&redis);
    config.ops.max_len = 500;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, mut connection) = (Arc::clone(&stop), connect(&redis));
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                append(&mut connection, 200, 100, None);
            }
        })
    };
    for _ in 0..5 {
        let snapshot = one_pass(&config);
        assert_eq!(snapshot.retention_held_back_by, vec!["slow".to_owned()]);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    // Trims cut the head only: the needed entries are all there iff the first one is.
    let still_there: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("events")
        .arg(&floor)
        .arg(&floor)
        .query(&mut connection)
        .unwrap();
    assert_eq!(
        still_there.ids.len(),
        1,
        "the first entry slow needs was trimmed"
    );
}

/// Appends 1 KiB entries until Redis's used memory reaches `ratio` of maxmemory.
fn fill_to(connection: &mut Connection, ratio: f64) {
    loop {
        let info: String = redis::cmd("INFO").arg("memory").query(connection).unwrap();
        let field = |name: &str| -> f64 {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        if field("used_memory") / field("maxmemory") >= ratio {
            return;
        }
        append(connection, 20, 1024, None);
    }
}

fn firing(snapshot: &OpsSnapshot) -> Vec<(&'static str, Severity)> {
    snapshot
        .firing
        .iter()
        .map(|a| (a.alert.name(), a.severity))
        .collect()
}

#[test]
fn memory_thresholds_warn_then_trim_past_lagging_groups_only_when_critical() {
    let redis = RedisServer::builder().maxmemory("8mb").start().unwrap();
    let mut connection = connect(&redis);
    append(&mut connection, 1, 10, None);
    cmd(
        &mut connection,
        &["XGROUP", "CREATE", "events", "lagging", "0"],
    );
    let mut config = config(&redis);
    config.ops.max_len = 500;
    config.ops.aggressive_len = 100;

    fill_to(&mut connection, 0.65);
    let before = length(&mut connection);
    let snapshot = one_pass(&config);
    assert_eq!(
        length(&mut connection),
        before,
        "unread entries were trimmed"
    );
    assert_eq!(
        firing(&snapshot),
        vec![("RedisMemoryHigh", Severity::Warning)]
    );
    assert_eq!(snapshot.retention_held_back_by, vec!["lagging".to_owned()]);
    assert!(snapshot.trim_lost.is_empty());

    fill_to(&mut connection, 0.82);
    let before = length(&mut connection);
    let snapshot = one_pass(&config);
    let left = length(&mut connection);
    assert!(left <= 200, "{left} entries left after the aggressive trim");
    let lost = snapshot.trim_lost["lagging"];
    assert_eq!(
        lost,
        before - left,
        "every deleted entry was unread by the group"
    );
    assert_eq!(snapshot.trimmed_aggressive, before - left);
    assert_eq!(
        firing(&snapshot),
        vec![
            ("RedisMemoryHigh", Severity::Critical),
            ("TrimLostEntries", Severity::Critical)
        ]
    );
}

#[test]
fn idle_consumers_are_removed_only_with_nothing_pending() {
    let redis = RedisServer::builder().maxmemory("64mb").start().unwrap();
    let mut connection = connect(&redis);
    append(&mut connection, 10, 10, None);
    cmd(&mut connection, &["XGROUP", "CREATE", "events", "g", "0"]);
    read(&mut connection, "g", "idle-done", 5, true);
    read(&mut connection, "g", "idle-holding", 1, false);
    std::thread::sleep(Duration::from_millis(1100));
    read(&mut connection, "g", "active", 1, true);
    let mut config = config(&redis);
    config.ops.consumer_idle_s = 1;

    let snapshot = one_pass(&config);

    let consumers: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg("events")
        .arg("g")
        .query(&mut connection)
        .unwrap();
    let mut names: Vec<String> = consumers
        .iter()
        .map(|fields| redis::from_redis_value(fields[1].clone()).unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["active", "idle-holding"]);
    assert_eq!(snapshot.consumers_removed["g"], 1);
    // The group itself stays, and so does its pending entry.
    let pending: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg("events")
        .arg("g")
        .query(&mut connection)
        .unwrap();
    assert_eq!(pending[0], redis::Value::Int(1));
}

#[test]
fn the_webhook_gets_one_notification_per_change_then_the_resolution() {
    let redis = RedisServer::builder().maxmemory("64mb").start().unwrap();
    let sink = WebhookSink::start().unwrap();
    let mut connection = connect(&redis);
    append(&mut connection, 50, 10, None);
    cmd(&mut connection, &["XGROUP", "CREATE", "events", "g", "0"]);
    let mut config = config(&redis);
    config.ops.alert_interval_ms = 100;
    config.ops.group_lag_warning = 10;
    config.ops.group_lag_critical = 1000;
    config.ops.webhook_url = Some(sink.url());
    let ops = OpsLoop::new(&config).unwrap();
    let state = ops.state();

    let runtime = runtime();
    let running = runtime.spawn(ops.run(std::future::pending::<()>()));
    runtime.block_on(evaluations(Arc::clone(&state), 6));
    let bodies = sink.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let firing: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(firing["alert"], "GroupLagHigh");
    assert_eq!(firing["subject"], "g");
    assert_eq!(firing["severity"], "warning");
    assert_eq!(firing["state"], "firing");
    assert_eq!(firing["stream"], "events");
    assert_eq!(firing["value"], 50.0);
    assert_eq!(firing["threshold"], 10.0);
    assert!(firing["since"].as_str().unwrap().ends_with('Z'));

    read(&mut connection, "g", "c", 100, true);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.bodies().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let done = state.snapshot().evaluations;
    runtime.block_on(evaluations(Arc::clone(&state), done + 5));
    running.abort();
    let bodies = sink.bodies();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let resolved: serde_json::Value = serde_json::from_str(&bodies[1]).unwrap();
    assert_eq!(resolved["alert"], "GroupLagHigh");
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["since"], firing["since"]);
    assert!(state.snapshot().firing.is_empty());
}

#[test]
fn an_unsafe_eviction_policy_is_reported_as_critical() {
    let redis = RedisServer::builder()
        .maxmemory("64mb")
        .maxmemory_policy("allkeys-lru")
        .start()
        .unwrap();
    let snapshot = one_pass(&config(&redis));
    assert_eq!(
        firing(&snapshot),
        vec![("EvictionPolicyUnsafe", Severity::Critical)]
    );
}

#[test]
fn concurrent_replays_of_one_dead_letter_append_it_once() {
    use evstream::ops::dlq::{self, Order, Replayed, Selection};

    let redis = RedisServer::start().unwrap();
    let mut connection = connect(&redis);
    let mut ids = Vec::new();
    for n in 0..250 {
        let id: String = redis::cmd("XADD")
            .arg("events:dlq")
            .arg("*")
            .arg(&[
                ("event_id", format!("01900000-0000-7000-8000-{n:012x}")),
                ("event_type", "OrderCreated".to_owned()),
                ("version", "v1".to_owned()),
                ("correlation_id", format!("ord-{n}")),
                ("timestamp_ns", "1764000000000000000".to_owned()),
                ("producer_id", "engine:test".to_owned()),
                ("sequence", (n + 1).to_string()),
                ("data", "{}".to_owned()),
                ("dlq_reason", "handler_error".to_owned()),
                ("dlq_stage", "consume".to_owned()),
                ("dlq_group", "g".to_owned()),
            ])
            .query(&mut connection)
            .unwrap();
        ids.push(id);
    }
    let timeout = Duration::from_secs(5);
    let replay_all = |url: String, ids: Vec<String>| async move {
        let client = redis::Client::open(url).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let mut appended = 0;
        for id in &ids {
            match dlq::replay(&mut connection, "events", "events:dlq", id, timeout)
                .await
                .unwrap()
            {
                Replayed::Appended(_) => appended += 1,
                Replayed::Gone => {}
                Replayed::Refused(why) => panic!("{id} refused: {why}"),
            }
        }
        appended
    };
    let (a, b) = runtime().block_on(async {
        tokio::join!(
            tokio::spawn(replay_all(redis.url(), ids.clone())),
            tokio::spawn(replay_all(redis.url(), ids.clone())),
        )
    });
    assert_eq!(
        a.unwrap() + b.unwrap(),
        250,
        "each dead letter appended once"
    );
    assert_eq!(length(&mut connection), 250);
    let left: u64 = redis::cmd("XLEN")
        .arg("events:dlq")
        .query(&mut connection)
        .unwrap();
    assert_eq!(left, 0);
    // Replayed in the order they failed (each replayer goes oldest first, and takes the
    // next only once the previous is appended, by it or by the other).
    let sequences: Vec<u64> = redis::cmd("XRANGE")
        .arg("events")
        .arg("-")
        .arg("+")
        .query::<Vec<(String, std::collections::HashMap<String, String>)>>(&mut connection)
        .unwrap()
        .into_iter()
        .map(|(_, fields)| fields["sequence"].parse().unwrap())
        .collect();
    assert_eq!(sequences, (1..=250).collect::<Vec<_>>());
    // Scans page through a whole stream (here the replayed one) and stop at the limit.
    let scan = |order, limit| {
        runtime().block_on(async {
            let client = redis::Client::open(redis.url()).unwrap();
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            dlq::scan(
                &mut connection,
                "events",
                &Selection::default(),
                order,
                limit,
                timeout,
            )
            .await
            .unwrap()
        })
    };
    let newest = scan(Order::NewestFirst, 10);
    assert_eq!(newest.letters.len(), 10);
    assert!(newest.truncated);
    assert_eq!(newest.letters[0].field("sequence"), Some("250"));
    let all = scan(Order::OldestFirst, 1000);
    assert_eq!(all.letters.len(), 250);
    assert!(!all.truncated);
    assert_eq!(all.letters[249].field("sequence"), Some("250"));

    // Only whole ids: a dead letter named by its millisecond alone is left alone.
    let id: String = redis::cmd("XADD")
        .arg("events:dlq")
        .arg("*")
        .arg(&[("event_id", "x"), ("dlq_stage", "ship")])
        .query(&mut connection)
        .unwrap();
    let millisecond = id.split('-').next().unwrap().to_owned();
    let outcome = runtime().block_on(async {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        dlq::replay(
            &mut connection,
            "events",
            "events:dlq",
            &millisecond,
            timeout,
        )
        .await
        .unwrap()
    });
    assert!(
        matches!(&outcome, Replayed::Refused(why) if why.contains("not a whole entry id")),
        "{outcome:?}"
    );
    assert_eq!(length(&mut connection), 250);
}

#[test]
fn dead_letters_are_kept_by_count_and_age_and_what_goes_is_counted() {
    let redis = RedisServer::start().unwrap();
    let mut connection = connect(&redis);
    let dead_letter = |connection: &mut Connection, id: String| {
        redis::cmd("XADD")
            .arg("events:dlq")
            .arg(id)
            .arg(&[("dlq_reason", "handler_error"), ("dlq_stage", "consume")])
            .query::<String>(connection)
            .unwrap();
    };
    // 1,000 dead letters of two days ago, then 1,000 of now.
    let old_ms = unix_ms() - 2 * 86_400_000;
    for n in 1..=1000 {
        dead_letter(&mut connection, format!("{old_ms}-{n}"));
    }
    for _ in 0..1000 {
        dead_letter(&mut connection, "*".to_owned());
    }
    let dlq_length = |connection: &mut Connection| -> u64 {
        redis::cmd("XLEN")
            .arg("events:dlq")
            .query(connection)
            .unwrap()
    };

    // Age first: a day's limit deletes every old one (they fill whole macro nodes of 100).
    let mut config = config(&redis);
    config.ops.dlq_max_age_s = 86_400;
    config.ops.dlq_max_len = 0;
    let snapshot = one_pass(&config);
    assert_eq!(snapshot.maintenance_error, None);
    assert_eq!(dlq_length(&mut connection), 1000);
    assert_eq!(snapshot.dlq_trimmed, 1000);

    // Then by count: 300 kept (whole nodes: exactly, here), the rest counted.
    config.ops.dlq_max_len = 300;
    let snapshot = one_pass(&config);
    assert_eq!(dlq_length(&mut connection), 300);
    assert_eq!(snapshot.dlq_trimmed, 700);

    // 0 and 0: nothing is deleted.
    config.ops.dlq_max_len = 0;
    config.ops.dlq_max_age_s = 0;
    let snapshot = one_pass(&config);
    assert_eq!(snapshot.dlq_trimmed, 0);
    assert_eq!(dlq_length(&mut connection), 300);
}

/// Issue 19: an event a consumer cannot read as any version its handler reads is dead-lettered
/// (`unreadable_version`), and the ops loop says so: `EventsUnreadable`. Other dead letters do
/// not fire it.
#[test]
fn issue_19_unreadable_versions_fire_events_unreadable() {
    let redis = RedisServer::builder().maxmemory("64mb").start().unwrap();
    let mut connection = connect(&redis);
    let mut config = config(&redis);
    config.ops.interval_ms = 100;
    config.ops.alert_interval_ms = 100;
    let letter = |connection: &mut Connection, reason: &str| {
        cmd(
            connection,
            &[
                "XADD",
                "events:dlq",
                "*",
                "event_type",
                "OrderCreated",
                "version",
                "v3",
                "dlq_reason",
                reason,
                "dlq_stage",
                "consume",
            ],
        );
    };
    let ops = OpsLoop::new(&config).unwrap();
    let state = ops.state();
    let watched = Arc::clone(&state);
    let fired = runtime().block_on(async move {
        let run = tokio::spawn(ops.run(async {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }));
        evaluations(Arc::clone(&watched), 2).await;
        letter(&mut connection, "handler_error");
        let seen = watched.snapshot().evaluations;
        evaluations(Arc::clone(&watched), seen + 5).await;
        let before = firing(&watched.snapshot())
            .iter()
            .any(|(alert, _)| *alert == "EventsUnreadable");
        letter(&mut connection, "unreadable_version");
        let deadline = Instant::now() + Duration::from_secs(10);
        let fired = loop {
            let snapshot = watched.snapshot();
            if firing(&snapshot).contains(&("EventsUnreadable", Severity::Critical)) {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        run.abort();
        (before, fired)
    });
    assert_eq!(fired, (false, true), "{:?}", state.snapshot().firing);
    assert_eq!(
        state
            .snapshot()
            .dead_letters
            .get("consume/unreadable_version"),
        Some(&1)
    );
}
