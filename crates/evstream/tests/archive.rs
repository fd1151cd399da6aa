//! The archive against real `redis-server`s: retention waits for it (stream and dead
//! letters, by length and by age), and a restart cleans up what a crash left.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use evstream::archive::read::ArchiveReader;
use evstream::archive::{Archiver, Kind};
use evstream::config::Config;
use evstream::ops::{OpsLoop, OpsSnapshot, OpsState};
use evstream_testkit::RedisServer;
use redis::Connection;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn connect(redis: &RedisServer) -> Connection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Appends `n` envelope-like entries to `key`; with `ms`, explicit ids in that millisecond.
fn append(connection: &mut Connection, key: &str, n: usize, ms: Option<u64>) {
    let mut pipe = redis::pipe();
    for i in 0..n {
        let id = ms.map_or_else(|| "*".to_owned(), |ms| format!("{ms}-{}", i + 1));
        pipe.cmd("XADD")
            .arg(key)
            .arg(id)
            .arg("event_type")
            .arg("OrderCreated")
            .arg("correlation_id")
            .arg(format!("o{i}"))
            .arg("data")
            .arg(format!("{{\"n\":{i}}}"))
            .ignore();
    }
    pipe.exec(connection).unwrap();
}

fn length(connection: &mut Connection, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query(connection).unwrap()
}

/// The ids of `key`, oldest first.
fn ids(connection: &mut Connection, key: &str) -> Vec<String> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(connection)
        .unwrap();
    reply.ids.into_iter().map(|e| e.id).collect()
}

async fn evaluations(state: Arc<OpsState>, n: u64) {
    while state.snapshot().evaluations < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One pass of a fresh ops loop.
fn one_pass(config: &Config) -> OpsSnapshot {
    let ops = OpsLoop::new(config).unwrap();
    let state = ops.state();
    runtime().block_on(ops.run(evaluations(Arc::clone(&state), 1)));
    state.snapshot()
}

fn archive_once(config: &Config) -> evstream::archive::ArchiveReport {
    runtime()
        .block_on(Archiver::new(config).unwrap().run_once())
        .unwrap()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The default configuration on `redis`, archiving into `dir`.
fn archive_config(redis: &RedisServer, dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.redis.url = redis.url();
    config.archive.dir = Some(dir.to_owned());
    config
}

/// Every entry id the archive holds for `kind`.
fn archived(dir: &std::path::Path, kind: Kind) -> Vec<String> {
    let reader = ArchiveReader::open(dir).unwrap();
    reader
        .read_where(|f| f.kind == kind)
        .unwrap()
        .into_iter()
        .map(|r| r.entry_id.to_string())
        .collect()
}

#[test]
fn issue_22_retention_with_archiving_on_never_trims_an_unarchived_entry() {
    let redis = RedisServer::start().unwrap();
    let mut connection = connect(&redis);
    let archive = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.redis.url = redis.url();
    config.ops.max_len = 100;
    config.ops.max_age_s = 3600;
    config.ops.dlq_max_len = 10;
    config.ops.dlq_max_age_s = 3600;
    config.archive.dir = Some(archive.path().to_owned());
    let two_hours_ago = unix_ms() - 2 * 3600 * 1000;
    append(&mut connection, "events", 1000, Some(two_hours_ago));
    append(&mut connection, "events", 1000, None);
    append(&mut connection, "events:dlq", 300, Some(two_hours_ago));

    // Nothing archived yet: by length (2,000 > 100) and by age (1,000 are two hours old)
    // retention would trim; it keeps everything, the dead letters too.
    for _ in 0..2 {
        let snapshot = one_pass(&config);
        assert_eq!(snapshot.retention_held_back_by, ["evstream-archive"]);
        assert_eq!(length(&mut connection, "events"), 2000);
        assert_eq!(length(&mut connection, "events:dlq"), 300);
    }

    let report = archive_once(&config);
    assert_eq!((report.events, report.dead_letters), (2000, 300));
    append(&mut connection, "events", 500, None);
    append(&mut connection, "events:dlq", 20, None);
    let unarchived = ids(&mut connection, "events")[2000..].to_vec();
    let unarchived_dlq = ids(&mut connection, "events:dlq")[300..].to_vec();

    let snapshot = one_pass(&config);
    let left = ids(&mut connection, "events");
    // Trimmed the archived entries (whole macro nodes of 100), kept the 500 new ones.
    assert!(left.len() < 700, "{} entries left", left.len());
    assert!(snapshot.trimmed_retention >= 1300, "{snapshot:?}");
    assert!(
        unarchived.iter().all(|id| left.contains(id)),
        "an unarchived entry was trimmed"
    );
    let left_dlq = ids(&mut connection, "events:dlq");
    assert!(left_dlq.len() < 120, "{} dead letters left", left_dlq.len());
    assert!(unarchived_dlq.iter().all(|id| left_dlq.contains(id)));

    // What was trimmed is in the archive, once.
    let mut all = archived(archive.path(), Kind::Events);
    archive_once(&config);
    all = [all, archived(archive.path(), Kind::Events)].concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 2500);
}

#[test]
fn issue_22_without_archiving_retention_does_not_wait_for_an_archive() {
    let redis = RedisServer::start().unwrap();
    let mut connection = connect(&redis);
    let mut config = Config::default();
    config.redis.url = redis.url();
    config.ops.max_len = 100;
    append(&mut connection, "events", 1000, None);
    let snapshot = one_pass(&config);
    assert!(snapshot.retention_held_back_by.is_empty());
    assert!(length(&mut connection, "events") < 300);
}

#[test]
fn issue_22_a_restart_removes_what_a_crash_left_and_resumes_after_the_last_record() {
    let redis = RedisServer::start().unwrap();
    let mut connection = connect(&redis);
    let archive = tempfile::tempdir().unwrap();
    let mut config = archive_config(&redis, archive.path());
    append(&mut connection, "events", 100, None);
    archive_once(&config);
    append(&mut connection, "events", 50, None);
    archive_once(&config);
    let manifest = archive.path().join("manifest.jsonl");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    // A crash after the second file's rename, its record half written: the file is in
    // place, the manifest ends in a torn line.
    std::fs::write(&manifest, format!("{}\n{}", lines[0], &lines[1][..20])).unwrap();
    let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    let orphan = archive.path().join(second["file"].as_str().unwrap());
    assert!(orphan.exists());
    std::fs::write(archive.path().join(".staging/x.parquet.tmp"), b"half").unwrap();

    let report = archive_once(&config);
    assert_eq!(report.unrecorded_removed, 1);
    assert_eq!(
        report.events, 50,
        "the second file's entries, archived again"
    );
    assert!(!archive.path().join(".staging/x.parquet.tmp").exists());
    let mut all = archived(archive.path(), Kind::Events);
    assert_eq!(all.len(), 150);
    all.dedup();
    assert_eq!(all.len(), 150);
    assert_eq!(all, ids(&mut connection, "events"));

    // Another stream's archive is refused, not mixed.
    config.redis.stream = "other".to_owned();
    let error = Archiver::new(&config).unwrap_err().to_string();
    assert!(
        error.contains("holds the stream events, not other"),
        "{error}"
    );
}

#[test]
fn issue_22_an_archive_that_falls_behind_raises_archive_behind_not_group_lag() {
    let redis = RedisServer::builder().maxmemory("1gb").start().unwrap();
    let mut connection = connect(&redis);
    let archive = tempfile::tempdir().unwrap();
    let config = archive_config(&redis, archive.path());
    // 200,000 entries appended ten minutes ago, none archived.
    append(
        &mut connection,
        "events",
        200_000,
        Some(unix_ms() - 600_000),
    );
    one_pass(&config); // creates the archive's group
    let snapshot = one_pass(&config);
    let behind = snapshot.observation.as_ref().unwrap().archive_behind_ms;
    assert!(behind.is_some_and(|ms| ms >= 600_000), "{behind:?}");
    let firing: Vec<(String, String)> = snapshot
        .firing
        .iter()
        .map(|a| (a.alert.to_string(), a.severity.as_str().to_owned()))
        .collect();
    assert_eq!(
        firing,
        [("ArchiveBehind".to_owned(), "warning".to_owned())],
        "no GroupLagHigh for the archive's 200,000 entries"
    );
    archive_once(&config);
    let snapshot = one_pass(&config);
    assert_eq!(
        snapshot.observation.as_ref().unwrap().archive_behind_ms,
        Some(0)
    );
    assert!(snapshot.firing.is_empty(), "{:?}", snapshot.firing);
}

#[test]
fn issue_22_files_roll_at_the_hour_and_at_their_size_and_say_what_they_hold() {
    let redis = RedisServer::start().unwrap();
    let mut connection = connect(&redis);
    let archive = tempfile::tempdir().unwrap();
    let mut config = archive_config(&redis, archive.path());
    config.archive.max_file_bytes = 65_536;
    // 07:59:59.999 and 08:00:00.000 UTC of one day: two hours, two directories.
    let eight = 1_764_921_600_000; // 2025-12-05T08:00:00Z
    append(&mut connection, "events", 10, Some(eight - 1));
    append(&mut connection, "events", 10, Some(eight));
    let report = archive_once(&config);
    assert_eq!((report.events, report.files), (20, 2));
    let reader = ArchiveReader::open(archive.path()).unwrap();
    let files: Vec<&str> = reader.files().iter().map(|f| f.file.as_str()).collect();
    assert_eq!(
        files,
        [
            format!(
                "events/date=2025-12-05/hour=07/p0_{}-1_{}-10.parquet",
                eight - 1,
                eight - 1
            ),
            format!("events/date=2025-12-05/hour=08/p0_{eight}-1_{eight}-10.parquet"),
        ]
    );
    assert_eq!(reader.files()[1].rows, 10);
    // By size: 60,000 entries of ~40 bytes do not fit one 64 KiB file.
    append(&mut connection, "events", 60_000, None);
    let report = archive_once(&config);
    assert_eq!(report.events, 60_000);
    assert!(report.files >= 2, "{report:?}");
    let reader = ArchiveReader::open(archive.path()).unwrap();
    let recent = &reader.files()[2..];
    assert_eq!(recent.iter().map(|f| f.rows).sum::<u64>(), 60_000);
    for pair in recent.windows(2) {
        assert!(
            pair[0].last_id < pair[1].first_id,
            "files in order, not overlapping"
        );
    }
}

#[test]
fn issue_22_a_partitioned_stream_is_archived_partition_by_partition_and_traced() {
    let redis = RedisServer::start().unwrap();
    let mut connection = connect(&redis);
    let archive = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.redis.url = redis.url();
    config.redis.partitions = Some(3);
    config.archive.dir = Some(archive.path().to_owned());
    let key_of = |id: &str| {
        let p = evstream::keys::partition_of(id, 3);
        (p, evstream::keys::partition("events", p as u16))
    };
    // Each order's events in the partition its correlation id hashes to, as shippers put them.
    let mut time = 1_000_000_000_000_000_000_i64;
    for order in 0..300 {
        let id = format!("o{order}");
        for step in ["OrderCreated", "OrderFilled"] {
            time += 1_000;
            let _: String = redis::cmd("XADD")
                .arg(key_of(&id).1)
                .arg("*")
                .arg("event_type")
                .arg(step)
                .arg("correlation_id")
                .arg(&id)
                .arg("timestamp_ns")
                .arg(time)
                .arg("data")
                .arg("{}")
                .query(&mut connection)
                .unwrap();
        }
    }
    let report = archive_once(&config);
    assert_eq!(report.events, 600);
    let reader = ArchiveReader::open(archive.path()).unwrap();
    let partitions: std::collections::BTreeSet<u16> =
        reader.files().iter().map(|f| f.partition).collect();
    assert_eq!(partitions, [0, 1, 2].into());
    for file in reader.files() {
        assert_eq!(
            file.key,
            evstream::keys::partition("events", file.partition)
        );
        for record in reader.read(file).unwrap() {
            let id = record.correlation_id.unwrap();
            assert_eq!(key_of(&id).0, usize::from(file.partition), "{id}");
        }
    }
    for p in 0..3 {
        let _: u64 = redis::cmd("XTRIM")
            .arg(evstream::keys::partition("events", p))
            .arg("MAXLEN")
            .arg(0)
            .query(&mut connection)
            .unwrap();
    }
    let steps = runtime()
        .block_on(evstream::history::trace(
            &config,
            "o42",
            Some(archive.path()),
        ))
        .unwrap();
    let types: Vec<&str> = steps
        .iter()
        .map(|s| s.record.event_type.as_deref().unwrap())
        .collect();
    assert_eq!(types, ["OrderCreated", "OrderFilled"]);
    assert_eq!(steps[1].since_previous_ns, Some(1_000));
}
