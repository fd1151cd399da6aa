//! Issue 18: the spill journal on a full disk. Every figure must stay true: an event counted
//! as journaled is in the journal file and replays; what could not be written is counted
//! undelivered (or was refused by `publish`); nothing is lost uncounted.
//!
//! The disk limit is `RLIMIT_FSIZE` (with `SIGXFSZ` ignored, a write past it returns
//! `EFBIG`), which needs no privileges. It applies to the whole process, so the first phase
//! runs in a child process: this test binary, run again with an environment variable.

use std::process::Command;
use std::thread;
use std::time::Duration;

use evstream::config::{Config, RingConfig};
use evstream::{publish, ship, PublishError};
use evstream_testkit::RedisServer;

/// Set in the child: the journal directory to fill.
const CHILD: &str = "EVSTREAM_TEST_JOURNAL_DISK_FULL_DIR";
/// Set in the child: the largest file it may write, in bytes.
const CHILD_LIMIT: &str = "EVSTREAM_TEST_JOURNAL_DISK_FULL_LIMIT";
const EVENTS: u64 = 40_000;

fn config(url: &str) -> Config {
    let mut config = Config::default();
    config.redis.url = url.to_owned();
    config.ring = RingConfig::default().set_capacity(4096).set_slot_bytes(256);
    config.ship.retry_max_ms = 200;
    config
}

/// The child: Redis unreachable, a journal limited to `limit` bytes per file.
fn child(dir: &str, limit: u64) {
    // SAFETY: called before this process starts any other thread of its own (the test
    // harness runs this test alone, `--test-threads=1`); both calls only set process state.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: limit as libc::rlim_t,
            rlim_max: limit as libc::rlim_t,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    // A port nothing listens on: connections are refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = config(&format!("redis://127.0.0.1:{port}"));
    config.ship.journal_dir = Some(dir.into());
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();
    let (mut accepted, mut refused) = (0u64, 0u64);
    for n in 0..EVENTS {
        let payload = serde_json::json!({"n": n, "pad": "x".repeat(120)});
        match publisher.publish("Tick", &payload, "c") {
            Ok(()) => accepted += 1,
            Err(PublishError::RingFull { .. }) => refused += 1,
            Err(other) => panic!("unexpected refusal: {other}"),
        }
        if n % 200 == 199 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    let spilled = shipper.health().spilled;
    let report = shipper.shutdown(Duration::from_millis(500));
    println!(
        "RESULT {}",
        serde_json::json!({
            "accepted": accepted,
            "refused": refused,
            "spilled": spilled,
            "shipped": report.shipped,
            "journaled": report.journaled,
            "undelivered": report.undelivered,
        })
    );
}

/// A limit that every segment reaches (256 KiB, a few thousand events): writes fail mid-record
/// again and again; each is cut back, and the next segment takes the events.
#[test]
fn issue_18_a_journal_on_a_full_disk_counts_only_what_is_on_disk() {
    run(
        "issue_18_a_journal_on_a_full_disk_counts_only_what_is_on_disk",
        256 * 1024,
        true,
    );
}

/// A limit below one batch's record (4 KiB): no batch can be journaled, the ring fills and
/// `publish` refuses; at shutdown what is in the ring cannot be journaled either and is
/// counted undelivered, not journaled.
#[test]
fn issue_18_a_journal_that_can_write_nothing_counts_the_rest_undelivered() {
    run(
        "issue_18_a_journal_that_can_write_nothing_counts_the_rest_undelivered",
        4 * 1024,
        false,
    );
}

fn run(name: &str, limit: u64, spills: bool) {
    if let Ok(dir) = std::env::var(CHILD) {
        let limit = std::env::var(CHILD_LIMIT).unwrap().parse().unwrap();
        child(&dir, limit);
        return;
    }
    let journal = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, journal.path())
        .env(CHILD_LIMIT, limit.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    let result: serde_json::Value = stdout
        .lines()
        .find_map(|line| line.split_once("RESULT ").map(|(_, json)| json))
        .map(|json| serde_json::from_str(json).unwrap())
        .unwrap_or_else(|| panic!("no result from the child:\n{stdout}\n{stderr}"));
    eprintln!("with the disk limit: {result}");
    let figure = |name: &str| result[name].as_u64().unwrap();
    assert_eq!(figure("accepted") + figure("refused"), EVENTS, "{result}");
    assert_eq!(figure("shipped"), 0, "Redis was unreachable: {result}");
    assert_eq!(
        figure("journaled") + figure("undelivered"),
        figure("accepted"),
        "every accepted event is journaled or counted undelivered: {result}"
    );
    if spills {
        assert!(
            figure("spilled") > 4096,
            "the journal took more than the ring holds, across the file limit: {result}"
        );
    } else {
        assert!(figure("refused") > 0, "{result}");
        assert!(figure("undelivered") > 0, "{result}");
    }

    // Redis back, no limit: the journal replays exactly what was counted journaled.
    let redis = RedisServer::start().unwrap();
    let mut config = config(&redis.url());
    config.ship.journal_dir = Some(journal.path().to_owned());
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();
    let found = shipper.health();
    let monitor = shipper.monitor();
    drop(publisher);
    let report = shipper.shutdown(Duration::from_secs(60));
    let after = monitor.health();
    assert_eq!(
        (found.journal_events, found.journal_lost),
        (figure("journaled"), 0),
        "the journal holds what the report said, whole: {found:?}"
    );
    assert_eq!(
        (report.shipped, report.undelivered, after.journal_lost),
        (figure("journaled"), 0, 0),
        "{report:?} {after:?}"
    );
    let sequences = redis.command(&["XLEN", "events"]).unwrap();
    eprintln!("replayed: {report:?}; XLEN {sequences:?}");
    let audit = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
            let mut connection = redis::Client::open(redis.url())
                .unwrap()
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .unwrap();
            evstream::audit::audit_stream(&mut connection, "events", 2000, |_, _| true)
                .await
                .unwrap()
        });
    assert_eq!(
        (audit.entries, audit.duplicates, audit.corrupt),
        (figure("journaled"), 0, 0),
        "{audit:?}"
    );
}
