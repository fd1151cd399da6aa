//! Each role of docs/security.md with exactly its ACL rules on a real redis-server: the
//! publisher ships but cannot read or delete, the IntelliSense consumer processes but cannot
//! append to the stream, the ops loop observes and trims but cannot append or delete.
//! The rules here are the ones the document gives; change both together.

use std::sync::Arc;
use std::time::{Duration, Instant};

use evstream::config::Config;
use evstream::consume::{ConsumeStats, Consumer};
use evstream::ops::alerts::Alert;
use evstream::ops::OpsLoop;
use evstream::publish::{self, OrderCreated, OrderFilled, Side};
use evstream::ship;
use evstream_intellisense::{IntelliSense, IntelliSenseConfig};
use evstream_testkit::{RedisServer, Reply};

/// `ACL SETUSER` arguments per role, for the stream `events` (docs/security.md).
const PUBLISHER: &[&str] = &[
    "publisher",
    "on",
    ">publisher-secret-1",
    "resetkeys",
    "resetchannels",
    "-@all",
    "+ping",
    "+script|load",
    "+evalsha",
    "+eval",
    "+xadd",
    "+xtrim",
    "+get",
    "+set",
    "+multi",
    "+exec",
    "+type",
    "+exists",
    "+rename",
    "+del",
    "+xdel",
    "~events",
    "~events:dlq",
    "~events:hwm:*",
    "~events:evstream-parked",
    "~events:dlq:evstream-parked",
    "%R~events:ops",
];
/// The publisher of `ship.append = "script"`: no `RENAME`, no `DEL`, no transaction.
const PUBLISHER_SCRIPT: &[&str] = &[
    "publisher-script",
    "on",
    ">publisher-secret-2",
    "resetkeys",
    "resetchannels",
    "-@all",
    "+ping",
    "+script|load",
    "+evalsha",
    "+eval",
    "+xadd",
    "+xtrim",
    "+get",
    "+set",
    "~events",
    "~events:dlq",
    "~events:hwm:*",
    "%R~events:ops",
];
const CONSUMER: &[&str] = &[
    "consumer",
    "on",
    ">consumer-secret-1",
    "resetkeys",
    "resetchannels",
    "-@all",
    "+ping",
    "+script|load",
    "+evalsha",
    "+eval",
    "+client|id",
    "+client|unblock",
    "+xreadgroup",
    "+xack",
    "+xautoclaim",
    "+xpending",
    "+xgroup|create",
    "+hset",
    "+hsetnx",
    "+hget",
    "+hmget",
    "+hgetall",
    "+hincrby",
    "+pexpire",
    "+get",
    "~events",
    "~events:consume:*",
    "~events:pairing:*",
    "%R~evstream:schemas*",
    "(+xadd ~events:dlq ~events:analysis ~events:alerts)",
];
const OPS: &[&str] = &[
    "ops",
    "on",
    ">ops-secret-1",
    "resetkeys",
    "resetchannels",
    "-@all",
    "+ping",
    "+info",
    "+config|get",
    "+xinfo",
    "+xpending",
    "+xrange",
    "+xlen",
    "+xtrim",
    "+eval",
    "+xgroup|delconsumer",
    "~events",
    "~events:dlq",
    "%R~events:alerts",
    "(+set ~events:ops)",
];

const ARCHIVER: &[&str] = &[
    "archiver",
    "on",
    ">archiver-secret-1",
    "resetkeys",
    "resetchannels",
    "-@all",
    "+ping",
    "+multi",
    "+exec",
    "+xrange",
    "+xinfo",
    "+xgroup|create",
    "+xgroup|setid",
    "~events",
    "~events:dlq",
];

fn url(redis: &RedisServer, user: &str, password: &str) -> String {
    format!("redis://{user}:{password}@127.0.0.1:{}", redis.port())
}

fn config(url: String) -> Config {
    let mut config = Config::default();
    config.redis.url = url;
    config.consume.block_ms = 100;
    config
}

/// Waits until the shipper has shipped `expected` events (20 s at most), shuts it down, and
/// checks that everything was shipped.
fn ship_all(shipper: ship::ShipperHandle, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while shipper.health().shipped < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let health = shipper.health();
    let report = shipper.shutdown(Duration::from_secs(5));
    assert_eq!(
        (report.shipped, report.undelivered),
        (expected, 0),
        "{report:?} {:?}",
        health.last_error
    );
}

/// Runs `args` as `user` and returns the error message, if the command was refused.
fn refused(redis: &RedisServer, user: &str, password: &str, args: &[&str]) -> Option<String> {
    let mut connection = redis::Client::open(url(redis, user, password))
        .unwrap()
        .get_connection()
        .unwrap();
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query::<redis::Value>(&mut connection)
        .err()
        .map(|e| e.to_string())
}

#[test]
fn every_role_works_with_exactly_its_rules() {
    let redis = RedisServer::start().unwrap();
    for rules in [PUBLISHER, CONSUMER, OPS] {
        let mut args = vec!["SETUSER"];
        args.extend_from_slice(rules);
        let mut command = vec!["ACL"];
        command.extend(args);
        let reply = redis.command(&command).unwrap();
        assert!(
            reply.as_text().as_deref() == Some("OK"),
            "{rules:?}: {reply:?}"
        );
    }

    // The publisher ships 200 order lifecycles.
    let config_publisher = config(url(&redis, "publisher", "publisher-secret-1"));
    let (publisher, receiver) = publish::channel(&config_publisher).unwrap();
    let shipper = ship::spawn(&config_publisher, receiver).unwrap();
    for n in 0..200u64 {
        let correlation = format!("ord-{n}");
        let order = n.to_string();
        publisher
            .on_order_created(&OrderCreated {
                correlation_id: &correlation,
                order_id: &order,
                symbol: "AAPL",
                // The first order is 1.5 times the notional limit: a risk alert, which the
                // ops loop reads back from events:alerts.
                quantity: if n == 0 { 15_000.0 } else { 10.0 },
                price: 100.0,
                side: Side::Buy,
            })
            .unwrap();
        publisher
            .on_order_filled(&OrderFilled {
                correlation_id: &correlation,
                order_id: &order,
                fill_id: "f",
                quantity: 10.0,
                price: 100.0,
            })
            .unwrap();
    }
    drop(publisher);
    ship_all(shipper, 400);
    for forbidden in [
        &["XRANGE", "events", "-", "+"][..],
        &["XLEN", "events"],
        &["HGETALL", "events:consume:intellisense_group"],
    ] {
        let error = refused(&redis, "publisher", "publisher-secret-1", forbidden);
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.to_ascii_lowercase().contains("noperm")),
            "publisher {forbidden:?}: {error:?}"
        );
    }

    // The consumer processes all of it with IntelliSense (results, counters, pairing).
    let config_consumer = config(url(&redis, "consumer", "consumer-secret-1"));
    let handler = IntelliSense::new("events", IntelliSenseConfig::default());
    let consumer = Consumer::new(&config_consumer, "worker-1", handler)
        .unwrap()
        .with_schemas_from_redis();
    let stats = consumer.stats();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let done = runtime.block_on(consumer.run(until_processed(Arc::clone(&stats), 400)));
    assert_eq!(done.processed, 400, "{done:?}");
    assert_eq!(done.dead_lettered, 0, "{done:?}");
    for forbidden in [
        &["XADD", "events", "*", "k", "v"][..],
        &["DEL", "events"],
        &["XTRIM", "events", "MAXLEN", "0"],
    ] {
        let error = refused(&redis, "consumer", "consumer-secret-1", forbidden);
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.to_ascii_lowercase().contains("noperm")),
            "consumer {forbidden:?}: {error:?}"
        );
    }

    // The ops loop observes, trims and evaluates.
    let mut config_ops = config(url(&redis, "ops", "ops-secret-1"));
    config_ops.ops.max_len = 100;
    config_ops.ops.max_age_s = 0;
    let ops = OpsLoop::new(&config_ops).unwrap();
    let state = ops.state();
    let watched = Arc::clone(&state);
    runtime.block_on(ops.run(async move {
        while watched.snapshot().evaluations == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }));
    let snapshot = state.snapshot();
    assert!(snapshot.redis_up, "{:?}", snapshot.last_error);
    assert_eq!(snapshot.maintenance_error, None);
    assert!(snapshot.trimmed_retention > 0, "{snapshot:?}");
    // It reads IntelliSense's alerts (issue 23): the risky order fires OrderRiskHigh.
    assert!(
        snapshot
            .firing
            .iter()
            .any(|f| f.alert == Alert::OrderRiskHigh),
        "{:?}",
        snapshot.firing
    );
    // Its heartbeat, which the publishers may read (issue 18: no ops loop is said aloud).
    assert!(
        matches!(
            redis.command(&["GET", "events:ops"]).unwrap(),
            Reply::Bulk(Some(_))
        ),
        "the ops loop's heartbeat"
    );
    let error = refused(
        &redis,
        "publisher",
        "publisher-secret-1",
        &["GET", "events:ops"],
    );
    assert_eq!(error, None, "the publisher reads the heartbeat");
    for forbidden in [
        &["XADD", "events", "*", "k", "v"][..],
        &["DEL", "events"],
        &["SET", "events", "x"],
    ] {
        let error = refused(&redis, "ops", "ops-secret-1", forbidden);
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.to_ascii_lowercase().contains("noperm")),
            "ops {forbidden:?}: {error:?}"
        );
    }
}

/// An ops user set up before dead-letter retention (read-only on the dead letters) still
/// gets its passes done: only the dead-letter trim is skipped, with a warning.
#[test]
fn an_ops_acl_read_only_on_the_dead_letters_still_runs_its_passes() {
    let redis = RedisServer::start().unwrap();
    let mut command = vec!["ACL", "SETUSER"];
    command.extend(OPS.iter().map(|rule| match *rule {
        "~events:dlq" => "%R~events:dlq",
        other => other,
    }));
    assert_eq!(
        redis.command(&command).unwrap().as_text().as_deref(),
        Some("OK")
    );
    redis
        .command(&["XADD", "events:dlq", "*", "dlq_reason", "x"])
        .unwrap();
    let mut config = config(url(&redis, "ops", "ops-secret-1"));
    config.ops.dlq_max_len = 0;
    config.ops.dlq_max_age_s = 1; // everything older than a second: an XTRIM it may not do
    let ops = OpsLoop::new(&config).unwrap();
    let state = ops.state();
    let watched = Arc::clone(&state);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(ops.run(async move {
            while watched.snapshot().evaluations < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    let snapshot = state.snapshot();
    assert!(snapshot.redis_up, "{:?}", snapshot.last_error);
    assert_eq!(snapshot.maintenance_error, None);
    assert_eq!(snapshot.dlq_trimmed, 0);
}

async fn until_processed(stats: Arc<ConsumeStats>, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.snapshot().processed < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The publisher's rules plus what docs/security.md adds for `ship.min_replicas_ack`
/// (`+pexpire +wait`), through Sentinel and without `+role`: evstream takes the sentinel's
/// word for the master and every batch is confirmed by the replica.
#[test]
fn the_publisher_role_ships_through_sentinel_with_replica_acks() {
    let set = evstream_testkit::SentinelSet::start().unwrap();
    for server in &set.servers {
        let mut command = vec!["ACL", "SETUSER"];
        command.extend_from_slice(PUBLISHER);
        command.extend(["+pexpire", "+wait"]);
        let reply = server.command(&command).unwrap();
        assert_eq!(reply.as_text().as_deref(), Some("OK"), "{reply:?}");
    }
    let url = set.url().replacen(
        "redis+sentinel://",
        "redis+sentinel://publisher:publisher-secret-1@",
        1,
    );
    let mut config = config(url);
    config.ship.min_replicas_ack = 1;
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();
    for n in 0..500u64 {
        publisher.publish("Tick", &n, "").unwrap();
    }
    drop(publisher);
    ship_all(shipper, 500);
    // On the replica too: `WAIT 1` confirmed every batch before it counted as shipped.
    let replica = &set.servers[1];
    let length = replica.command(&["XLEN", "events"]).unwrap();
    assert_eq!(length, evstream_testkit::Reply::Int(500), "{length:?}");
}

/// The script mode's narrower publisher ships and cannot delete or rename the stream.
#[test]
fn the_script_mode_publisher_ships_and_cannot_delete_the_stream() {
    let redis = RedisServer::start().unwrap();
    let mut command = vec!["ACL", "SETUSER"];
    command.extend_from_slice(PUBLISHER_SCRIPT);
    let reply = redis.command(&command).unwrap();
    assert_eq!(reply.as_text().as_deref(), Some("OK"), "{reply:?}");
    let mut config = config(url(&redis, "publisher-script", "publisher-secret-2"));
    config.ship.append = evstream::config::AppendMode::Script;
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();
    for n in 0..300u64 {
        publisher.publish("Tick", &n, "").unwrap();
    }
    drop(publisher);
    ship_all(shipper, 300);
    for forbidden in [
        &["DEL", "events"][..],
        &["RENAME", "events", "events:dlq"],
        &["XRANGE", "events", "-", "+"],
    ] {
        let error = refused(&redis, "publisher-script", "publisher-secret-2", forbidden);
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.to_ascii_lowercase().contains("noperm")),
            "publisher {forbidden:?}: {error:?}"
        );
    }
}

/// The archiver's role (docs/security.md): it archives the stream and its dead letters and
/// moves its group, and may not append, trim or delete.
#[test]
fn issue_22_the_archiver_role_archives_and_cannot_append_trim_or_delete() {
    let redis = RedisServer::start().unwrap();
    let mut command = vec!["ACL", "SETUSER"];
    command.extend_from_slice(ARCHIVER);
    assert_eq!(
        redis.command(&command).unwrap().as_text().as_deref(),
        Some("OK")
    );
    for n in 0..500 {
        let n = n.to_string();
        redis
            .command(&["XADD", "events", "*", "event_type", "T", "data", &n])
            .unwrap();
    }
    redis
        .command(&["XADD", "events:dlq", "*", "dlq_reason", "invalid_json"])
        .unwrap();
    let archive = tempfile::tempdir().unwrap();
    let mut config = config(url(&redis, "archiver", "archiver-secret-1"));
    config.archive.dir = Some(archive.path().to_owned());
    let archiver = evstream::archive::Archiver::new(&config).unwrap();
    let report = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { tokio::spawn(archiver.run_once()).await })
        .unwrap()
        .unwrap();
    assert_eq!((report.events, report.dead_letters), (500, 1));
    for forbidden in [
        &["XADD", "events", "*", "a", "b"][..],
        &["XTRIM", "events", "MAXLEN", "0"],
        &["DEL", "events"],
        &["XGROUP", "DESTROY", "events", "evstream-archive"],
    ] {
        let error = refused(&redis, "archiver", "archiver-secret-1", forbidden);
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.to_ascii_lowercase().contains("noperm")),
            "archiver {forbidden:?}: {error:?}"
        );
    }
}
