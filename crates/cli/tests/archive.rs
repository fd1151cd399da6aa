//! `evstream archive` as an operator runs it, against real `redis-server`s: exact across
//! `kill -9`, while events are published, and read back through the archive's reader.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evstream::archive::read::ArchiveReader;
use evstream::archive::Kind;
use evstream_testkit::{RedisServer, Reply};

mod common;
use common::{evstream, Running};

impl Running {
    /// Waits until the child exits, `what` failing the test past `limit`; returns what it
    /// wrote to its piped `stdout` or `stderr`.
    fn output_within(&mut self, limit: Duration, what: &str) -> String {
        let deadline = Instant::now() + limit;
        while self.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut text = String::new();
        if let Some(out) = self.0.stdout.as_mut() {
            std::io::Read::read_to_string(out, &mut text).unwrap();
        }
        if let Some(err) = self.0.stderr.as_mut() {
            std::io::Read::read_to_string(err, &mut text).unwrap();
        }
        text
    }
}

fn integer(reply: Reply) -> i64 {
    match reply {
        Reply::Int(n) => n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// The archive group's `last-delivered-id` and `lag` on `key`.
fn archive_group(redis: &RedisServer, key: &str) -> (String, String) {
    let Reply::Array(Some(groups)) = redis.command(&["XINFO", "GROUPS", key]).unwrap() else {
        panic!("XINFO GROUPS {key}");
    };
    for group in groups {
        let Reply::Array(Some(fields)) = group else {
            continue;
        };
        let text = |r: &Reply| match r {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Int(n) => n.to_string(),
            other => format!("{other:?}"),
        };
        let map: HashMap<String, String> = fields
            .chunks(2)
            .map(|pair| (text(&pair[0]), text(&pair[1])))
            .collect();
        if map.get("name").map(String::as_str) == Some("evstream-archive") {
            return (map["last-delivered-id"].clone(), map["lag"].clone());
        }
    }
    panic!("no evstream-archive group on {key}");
}

/// The last entry id of `key`.
fn last_id(redis: &RedisServer, key: &str) -> String {
    let Reply::Array(Some(entries)) = redis
        .command(&["XREVRANGE", key, "+", "-", "COUNT", "1"])
        .unwrap()
    else {
        panic!("XREVRANGE");
    };
    let Some(Reply::Array(Some(entry))) = entries.first() else {
        panic!("{key} is empty");
    };
    let Reply::Bulk(Some(id)) = &entry[0] else {
        panic!("entry id");
    };
    String::from_utf8_lossy(id).into_owned()
}

fn archiver(url: &str, config: &Path, dir: &Path) -> Running {
    Running(
        evstream()
            .args(["archive", "--redis-url", url, "--config"])
            .arg(config)
            .arg("--dir")
            .arg(dir)
            .args(["--metrics-addr", "off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn issue_22_a_million_events_archived_while_published_each_in_exactly_one_file_across_three_kill_9s(
) {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("archive");
    let config = work.path().join("evstream.toml");
    // Small files, closed every second: many files, many moments for a kill to hit.
    std::fs::write(
        &config,
        "[archive]\nmax_file_bytes = 65536\nmax_file_age_s = 1\nbatch = 2000\n",
    )
    .unwrap();
    // A few dead letters too: they are archived beside the events.
    for i in 0..50 {
        let n = i.to_string();
        redis
            .command(&[
                "XADD",
                "events:dlq",
                "*",
                "event_type",
                "Bad",
                "data",
                "{",
                "dlq_reason",
                "invalid_json",
                "n",
                &n,
            ])
            .unwrap();
    }
    let events = 1_000_000;
    let mut publisher = Running(
        evstream()
            .args(["bench", "--redis-url", &url, "--event-kind", "orders"])
            .args([
                "--events",
                &events.to_string(),
                "--rate",
                "150000",
                "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for round in 0..3u64 {
        let mut running = archiver(&url, &config, &dir);
        std::thread::sleep(Duration::from_millis(1_300 + 700 * round));
        running.0.kill().unwrap(); // SIGKILL
        running.0.wait().unwrap();
    }
    let publishing = publisher.0.wait().unwrap();
    assert!(publishing.success(), "the bench failed");
    let mut bench = String::new();
    std::io::Read::read_to_string(publisher.0.stdout.as_mut().unwrap(), &mut bench).unwrap();
    let bench: serde_json::Value = serde_json::from_str(&bench).unwrap();
    assert_eq!(bench["lost"], 0, "{bench}");
    assert_eq!(integer(redis.command(&["XLEN", "events"]).unwrap()), events);

    let before = ArchiveReader::open(&dir).unwrap().files().len();
    assert!(before > 3, "the killed archivers recorded {before} files");
    let started = Instant::now();
    let output = evstream()
        .args(["archive", "--redis-url", &url, "--config"])
        .arg(&config)
        .arg("--dir")
        .arg(&dir)
        .args(["--once", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("the last run took {:?}", started.elapsed());

    let reader = ArchiveReader::open(&dir).unwrap();
    let mut seen: HashMap<(Kind, String), u32> = HashMap::new();
    let mut event_ids = std::collections::HashSet::new();
    let mut on_disk: Vec<String> = Vec::new();
    for file in reader.files() {
        on_disk.push(file.file.clone());
        let records = reader.read(file).unwrap();
        assert_eq!(records.len() as u64, file.rows, "{}", file.file);
        assert_eq!(records.first().unwrap().entry_id, file.first_id);
        assert_eq!(records.last().unwrap().entry_id, file.last_id);
        for record in records {
            *seen
                .entry((record.kind, record.entry_id.to_string()))
                .or_default() += 1;
            if record.kind == Kind::Events {
                event_ids.insert(record.event_id.unwrap());
            }
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).take(5).collect();
    assert!(twice.is_empty(), "archived more than once: {twice:?}");
    let archived_events = seen.keys().filter(|(k, _)| *k == Kind::Events).count();
    let archived_dead = seen.keys().filter(|(k, _)| *k == Kind::DeadLetters).count();
    assert_eq!(archived_events as i64, events, "every event once");
    assert_eq!(event_ids.len() as i64, events, "distinct event ids");
    assert_eq!(archived_dead, 50, "every dead letter once");
    // The files on disk are exactly the recorded ones: what a kill left was cleaned up.
    let mut files: Vec<String> = Vec::new();
    for kind in ["events", "dlq"] {
        let root = dir.join(kind);
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let relative = path.strip_prefix(&dir).unwrap();
                    files.push(relative.to_string_lossy().replace('\\', "/"));
                }
            }
        }
    }
    files.sort();
    on_disk.sort();
    assert_eq!(files, on_disk);
    // Retention's view: the group holds everything, nothing left to archive.
    assert_eq!(
        archive_group(&redis, "events"),
        (last_id(&redis, "events"), "0".to_owned())
    );
    assert_eq!(
        archive_group(&redis, "events:dlq").0,
        last_id(&redis, "events:dlq")
    );
}

#[test]
fn issue_22_one_archiver_per_directory_and_a_missing_directory_is_named() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let work = tempfile::tempdir().unwrap();
    let output = evstream()
        .args(["archive", "--redis-url", &url, "--once"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--dir DIR or set archive.dir"), "{stderr}");

    let config = work.path().join("evstream.toml");
    std::fs::write(&config, "").unwrap();
    let _first = archiver(&url, &config, work.path());
    std::thread::sleep(Duration::from_millis(500));
    let output = evstream()
        .args(["archive", "--redis-url", &url, "--once", "--dir"])
        .arg(work.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another archiver"), "{stderr}");
}

/// `evstream <args…>` against `url`; its stdout, after checking it succeeded.
fn run(url: &str, args: &[&str]) -> String {
    let output = evstream()
        .args(args)
        .args(["--redis-url", url])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "evstream {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// 20,000 typed orders (10,000 created/filled pairs over 1,024 correlation ids) into `url`.
fn publish_orders(url: &str) {
    run(
        url,
        &[
            "bench",
            "--event-kind",
            "orders",
            "--events",
            "20000",
            "--json",
        ],
    );
}

#[test]
fn issue_22_trace_finds_an_order_after_the_stream_was_trimmed() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let archive = tempfile::tempdir().unwrap();
    let dir = archive.path().to_str().unwrap();
    publish_orders(&url);
    let before: serde_json::Value =
        serde_json::from_str(&run(&url, &["trace", "b17", "--json"])).unwrap();
    let steps = before["events"].as_array().unwrap().clone();
    assert!(steps.len() >= 4, "{before}");
    assert!(steps.iter().all(|s| s["correlation_id"] == "b17"));
    let times: Vec<i64> = steps
        .iter()
        .map(|s| s["timestamp_ns"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
    assert_eq!(steps[0]["since_previous_ns"], serde_json::Value::Null);
    assert_eq!(
        steps[1]["since_previous_ns"].as_i64().unwrap(),
        times[1] - times[0]
    );

    run(&url, &["archive", "--dir", dir, "--once"]);
    redis.command(&["XTRIM", "events", "MAXLEN", "0"]).unwrap();
    let from_stream: serde_json::Value =
        serde_json::from_str(&run(&url, &["trace", "b17", "--json"])).unwrap();
    assert_eq!(from_stream["events"].as_array().unwrap().len(), 0);
    let after: serde_json::Value =
        serde_json::from_str(&run(&url, &["trace", "b17", "--archive", dir, "--json"])).unwrap();
    let found = after["events"].as_array().unwrap();
    let ids = |steps: &[serde_json::Value]| -> Vec<String> {
        steps.iter().map(|s| s["event_id"].to_string()).collect()
    };
    assert_eq!(ids(found), ids(&steps), "the same events, from the archive");
    assert!(found.iter().all(|s| s["source"] == "archive"));
    assert_eq!(found[0]["data"], steps[0]["data"]);

    // Readable lines: one per step, then the span.
    let text = run(&url, &["trace", "b17", "--archive", dir]);
    assert_eq!(text.lines().count(), steps.len() + 1, "{text}");
    assert!(
        text.contains("[archive]") && text.contains("OrderFilled"),
        "{text}"
    );
    // An unknown order is said so, with exit status 1.
    let output = evstream()
        .args(["trace", "nope", "--redis-url", &url])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("no event with correlation id nope"));
}

#[test]
fn issue_22_export_takes_the_archive_and_the_stream_together_each_event_once() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let archive = tempfile::tempdir().unwrap();
    let dir = archive.path().to_str().unwrap();
    publish_orders(&url);
    run(&url, &["archive", "--dir", dir, "--once"]);
    // Half the stream trimmed (archived), and new events not archived yet.
    redis
        .command(&["XTRIM", "events", "MAXLEN", "10000"])
        .unwrap();
    publish_orders(&url);
    let jsonl = run(&url, &["export", "--from", "1h", "--archive", dir]);
    let lines: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 40_000);
    let distinct: std::collections::HashSet<&str> = lines
        .iter()
        .map(|l| l["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(distinct.len(), 40_000);
    // Nothing before --from, nothing from --to on.
    let none = run(
        &url,
        &["export", "--from", "3h", "--to", "2h", "--archive", dir],
    );
    assert_eq!(none, "");

    let out = archive.path().join("handover.parquet");
    run(
        &url,
        &[
            "export",
            "--from",
            "1h",
            "--archive",
            dir,
            "--format",
            "parquet",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    let records = evstream::archive::read::read_file(&out, Kind::Events).unwrap();
    assert_eq!(records.len(), 40_000);
    assert_eq!(
        records[123].event_id.as_deref(),
        lines[123]["event_id"].as_str()
    );
    // Parquet needs a file.
    let output = evstream()
        .args([
            "export",
            "--from",
            "1h",
            "--format",
            "parquet",
            "--redis-url",
            &url,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--output FILE"));
}

#[test]
fn issue_22_tail_filters_history_and_follows_new_events() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    publish_orders(&url);
    let filled = run(
        &url,
        &[
            "tail",
            "--since",
            "10m",
            "--no-follow",
            "--type",
            "OrderFilled",
            "--json",
        ],
    );
    assert_eq!(filled.lines().count(), 10_000);
    assert!(filled
        .lines()
        .all(|l| l.contains("\"event_type\":\"OrderFilled\"")));
    let one_order = run(
        &url,
        &[
            "tail",
            "--since",
            "10m",
            "--no-follow",
            "--correlation-id",
            "b3",
        ],
    );
    assert!(one_order.lines().count() >= 4);
    assert!(
        one_order.lines().all(|l| l.contains("  b3  ")),
        "{one_order}"
    );

    // Live: only what is appended after it started.
    let mut follower = Running(
        evstream()
            .args(["tail", "--count", "2", "--json", "--redis-url", &url])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(700));
    for n in ["1", "2"] {
        redis
            .command(&[
                "XADD",
                "events",
                "*",
                "event_type",
                "Live",
                "correlation_id",
                n,
                "data",
                "{}",
            ])
            .unwrap();
    }
    let out = follower.output_within(Duration::from_secs(10), "tail did not stop after --count 2");
    let live: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(live.len(), 2, "{out}");
    assert!(live.iter().all(|l| l["event_type"] == "Live"));
}

#[test]
fn issue_22_evstream_ops_archives_when_archive_dir_is_set_and_closes_its_files_on_sigterm() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("archive");
    let config = work.path().join("evstream.toml");
    std::fs::write(
        &config,
        format!(
            "[ops]\nalert_interval_ms = 200\ninterval_ms = 200\n[archive]\ndir = {:?}\n",
            dir.to_str().unwrap()
        ),
    )
    .unwrap();
    publish_orders(&url);
    // One pass: archives what is there, then observes and trims as usual.
    let output = evstream()
        .args(["ops", "--once", "--redis-url", &url, "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("archived 20000 events"), "{stderr}");
    assert_eq!(
        archive_group(&redis, "events"),
        (last_id(&redis, "events"), "0".to_owned())
    );

    // Following: new events are archived, the open file closed and recorded on SIGTERM.
    let mut ops = Running(
        evstream()
            .args([
                "ops",
                "--redis-url",
                &url,
                "--metrics-addr",
                "off",
                "--config",
            ])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    publish_orders(&url);
    std::thread::sleep(Duration::from_secs(2));
    let pid = ops.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let stderr = ops.output_within(
        Duration::from_secs(15),
        "evstream ops did not stop on SIGTERM",
    );
    assert!(stderr.contains("archived 20000 events"), "{stderr}");
    let reader = ArchiveReader::open(&dir).unwrap();
    let rows: u64 = reader
        .files()
        .iter()
        .filter(|f| f.kind == Kind::Events)
        .map(|f| f.rows)
        .sum();
    assert_eq!(rows, 40_000);
    assert_eq!(archive_group(&redis, "events").0, last_id(&redis, "events"));
}
