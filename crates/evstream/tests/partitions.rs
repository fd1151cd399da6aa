//! Issue 20: what the CLI does over every partition of a stream, done by the library against
//! a real redis-server: the status and its totals, dead letters listed and replayed, one
//! consumer and one ops loop per partition, and the audit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use evstream::config::Config;
use evstream::consume::{Effects, Envelope, Handler, HandlerError, PartitionedConsumer};
use evstream::ops::dlq::{Order, Replayed, Selection};
use evstream::ops::replay;
use evstream::ops::PartitionedOpsLoop;
use evstream::status::StreamStatus;
use evstream::DlqError;
use evstream_testkit::RedisServer;
use redis::Commands;

/// `events` in two partitions, `events:{0}` and `events:{1}`.
fn config(redis: &RedisServer) -> Config {
    let mut config = Config::default();
    config.redis.url = redis.url();
    config.redis.partitions = Some(2);
    config.consume.group = "g".to_owned();
    config.consume.block_ms = 100;
    config.ops.max_age_s = 0;
    config
}

fn connect(redis: &RedisServer) -> redis::Connection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn envelope(n: u64) -> Vec<(String, String)> {
    vec![
        ("event_id".into(), uuid::Uuid::now_v7().to_string()),
        ("event_type".into(), "Tick".into()),
        ("version".into(), "v1".into()),
        ("correlation_id".into(), format!("ord-{n}")),
        (
            "timestamp_ns".into(),
            (1_764_000_000_000_000_000 + n).to_string(),
        ),
        ("producer_id".into(), "test:1".into()),
        ("sequence".into(), (n + 1).to_string()),
        ("data".into(), format!("{{\"n\":{n}}}")),
    ]
}

/// Appends `count` envelopes to `stream`, sequences 1 to `count`.
fn append(connection: &mut redis::Connection, stream: &str, count: u64) {
    let mut pipe = redis::pipe();
    for n in 0..count {
        pipe.xadd(stream, "*", &envelope(n)).ignore();
    }
    pipe.query::<()>(connection).unwrap();
}

/// A consumer's dead letter of group `g` in `dlq`; returns its id.
fn dead_letter(connection: &mut redis::Connection, dlq: &str, n: u64) -> String {
    let mut fields = envelope(n);
    fields.extend([
        ("dlq_reason".into(), "handler_error".into()),
        ("dlq_stage".into(), "consume".into()),
        ("dlq_error".into(), "failed in a test".into()),
        ("dlq_group".into(), "g".into()),
    ]);
    connection.xadd(dlq, "*", &fields).unwrap()
}

#[test]
fn status_reads_every_partition_and_adds_them_up() {
    let redis = RedisServer::start().unwrap();
    let mut connection = connect(&redis);
    append(&mut connection, "events:{0}", 3);
    append(&mut connection, "events:{1}", 5);
    dead_letter(&mut connection, "events:{1}:dlq", 9);

    let status = runtime()
        .block_on(StreamStatus::read(&config(&redis)))
        .unwrap();

    assert_eq!(status.stream, "events");
    assert_eq!(status.length, 8);
    assert_eq!(status.dlq_length, 1);
    let streams: Vec<&str> = status
        .partitions
        .iter()
        .map(|p| p.stream.as_str())
        .collect();
    assert_eq!(streams, ["events:{0}", "events:{1}"]);
    let lengths: Vec<u64> = status
        .partitions
        .iter()
        .map(|p| p.observation.stream.as_ref().unwrap().length)
        .collect();
    assert_eq!(lengths, [3, 5]);
    let second = &status.partitions[1];
    assert_eq!(
        second.dead_letters_by_reason.get("consume/handler_error"),
        Some(&1)
    );
    assert!(second.dead_letters_all_counted);
    assert!(second.cluster.is_none(), "not on a cluster");
    assert!(!second.redis.is_empty());

    // The JSON `evstream status --json` prints.
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["length"], 8);
    assert_eq!(json["partitions"][1]["stream_key"], "events:{1}");
    assert_eq!(json["partitions"][1]["dlq"]["length"], 1);
}

#[test]
fn a_dead_letter_is_listed_and_replayed_into_its_own_partition() {
    let redis = RedisServer::start().unwrap();
    let mut connection = connect(&redis);
    let config = config(&redis);
    let first = dead_letter(&mut connection, "events:{0}:dlq", 1);
    let second = dead_letter(&mut connection, "events:{1}:dlq", 2);
    let runtime = runtime();

    // Listed: every partition, each named.
    let listed = runtime
        .block_on(replay::list_dead_letters(
            &config,
            &Selection::default(),
            Order::NewestFirst,
            100,
        ))
        .unwrap();
    let found: Vec<(&str, &str)> = listed
        .iter()
        .flat_map(|l| {
            l.scan
                .letters
                .iter()
                .map(|d| (l.dlq.as_str(), d.id.as_str()))
        })
        .collect();
    assert_eq!(
        found,
        [
            ("events:{0}:dlq", first.as_str()),
            ("events:{1}:dlq", second.as_str())
        ]
    );

    // A bare id is ambiguous with partitions.
    let bare = Selection {
        ids: vec![second.clone()],
        ..Selection::default()
    };
    let error = runtime
        .block_on(replay::replay_dead_letters(&config, &bare, 100, false))
        .unwrap_err();
    assert!(matches!(error, DlqError::AmbiguousId { .. }), "{error}");

    // A dry run selects and changes nothing.
    let one = Selection {
        ids: vec![format!("events:{{1}}:dlq/{second}")],
        ..Selection::default()
    };
    let dry = runtime
        .block_on(replay::replay_dead_letters(&config, &one, 100, true))
        .unwrap();
    assert_eq!((dry.selected, dry.replayed), (1, 0));
    assert_eq!(dry.outcomes[0].replayed, None);
    let length: u64 = connection.xlen("events:{1}:dlq").unwrap();
    assert_eq!(length, 1);

    // Replayed: back into events:{1} for group g only, gone from its dead letters, the
    // other partition's untouched.
    let summary = runtime
        .block_on(replay::replay_dead_letters(&config, &one, 100, false))
        .unwrap();
    assert_eq!(
        (summary.selected, summary.replayed, summary.refused),
        (1, 1, 0)
    );
    assert!(!summary.has_refusals());
    assert!(summary.error.is_none());
    let Some(Replayed::Appended(new_id)) = &summary.outcomes[0].replayed else {
        panic!("{summary:?}");
    };
    let entries: redis::streams::StreamRangeReply = connection.xrange_all("events:{1}").unwrap();
    assert_eq!(entries.ids.len(), 1);
    assert_eq!(&entries.ids[0].id, new_id);
    assert_eq!(
        entries.ids[0].get::<String>("replay_for_group").as_deref(),
        Some("g")
    );
    let (left_0, left_1): (u64, u64) = (
        connection.xlen("events:{0}:dlq").unwrap(),
        connection.xlen("events:{1}:dlq").unwrap(),
    );
    assert_eq!((left_0, left_1), (1, 0));

    // Again: no such dead letter any more.
    let again = runtime
        .block_on(replay::replay_dead_letters(&config, &one, 100, false))
        .unwrap();
    assert_eq!(again.selected, 0);
    assert_eq!(again.missing, [format!("events:{{1}}:dlq/{second}")]);
}

/// Counts the events it handles.
struct Counting(Arc<AtomicU64>);

impl Handler for Counting {
    fn handle(&mut self, _: &Envelope, _: &mut Effects) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[test]
fn one_consumer_per_partition_counts_together_and_stops_together() {
    let redis = RedisServer::start().unwrap();
    let mut connection = connect(&redis);
    append(&mut connection, "events:{0}", 300);
    append(&mut connection, "events:{1}", 200);
    let handled = Arc::new(AtomicU64::new(0));
    let consumers =
        PartitionedConsumer::new(&config(&redis), "c1", |_| Counting(Arc::clone(&handled)))
            .unwrap();
    assert_eq!(
        consumers.streams().collect::<Vec<_>>(),
        ["events:{0}", "events:{1}"]
    );
    let stats = consumers.stats();
    let report = runtime()
        .block_on(consumers.run(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while stats.snapshot().processed < 500 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }))
        .unwrap();
    assert_eq!(report.processed, 500, "{report:?}");
    assert_eq!(handled.load(Ordering::Relaxed), 500);
    for (stream, n) in [("events:{0}", 300), ("events:{1}", 200)] {
        let processed: Option<u64> = connection
            .hget(format!("{stream}:consume:g"), "processed")
            .unwrap();
        assert_eq!(processed, Some(n), "{stream}");
    }
}

#[test]
fn one_ops_loop_per_partition_watches_its_own_key() {
    let redis = RedisServer::start().unwrap();
    let mut connection = connect(&redis);
    append(&mut connection, "events:{0}", 4);
    append(&mut connection, "events:{1}", 6);
    let loops = PartitionedOpsLoop::new(&config(&redis)).unwrap();
    assert_eq!(loops.states().len(), 2);
    let snapshots = runtime().block_on(loops.run_once());
    let lengths: Vec<u64> = snapshots
        .iter()
        .map(|s| {
            assert!(s.redis_up, "{s:?}");
            s.observation
                .as_ref()
                .unwrap()
                .stream
                .as_ref()
                .unwrap()
                .length
        })
        .collect();
    assert_eq!(lengths, [4, 6]);

    // Run until stopped: both loops evaluate, then stop together.
    let loops = PartitionedOpsLoop::new(&config(&redis)).unwrap();
    let states = loops.states();
    let watched = states.clone();
    runtime()
        .block_on(loops.run(async move {
            while watched.iter().any(|s| s.snapshot().evaluations == 0) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }))
        .unwrap();
    assert!(states.iter().all(|s| s.snapshot().evaluations > 0));
}

#[test]
fn the_audit_and_the_appended_count_add_up_the_partitions() {
    let redis = RedisServer::start().unwrap();
    let mut connection = connect(&redis);
    append(&mut connection, "events:{0}", 7);
    append(&mut connection, "events:{1}", 3);
    let config = config(&redis);
    let runtime = runtime();

    let audit = runtime
        .block_on(evstream::audit::audit_partitions(&config, 4, |_, _| true))
        .unwrap();
    assert_eq!(audit.entries, 10);
    assert_eq!(
        (audit.duplicates, audit.out_of_order, audit.corrupt),
        (0, 0, 0)
    );
    assert_eq!(audit.producers["test:1"].distinct, 10);
    let added = runtime
        .block_on(evstream::audit::entries_added(&config))
        .unwrap();
    assert_eq!(added, 10);

    // A partition that does not exist yet counts 0.
    let mut wider = config.clone();
    wider.redis.partitions = Some(3);
    let added = runtime
        .block_on(evstream::audit::entries_added(&wider))
        .unwrap();
    assert_eq!(added, 10);
}

#[test]
fn an_unreachable_partition_is_a_connect_error_that_hides_the_password() {
    let port = evstream_testkit::free_port().unwrap();
    let mut config = Config::default();
    config.redis.url = format!("redis://:s3cret@127.0.0.1:{port}");
    config.redis.partitions = Some(2);
    let error = runtime().block_on(StreamStatus::read(&config)).unwrap_err();
    assert!(
        matches!(error, evstream::PartitionError::Connect { .. }),
        "{error}"
    );
    let text = error.to_string();
    assert!(text.contains("cannot connect to Redis"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}
