//! Issue 23: the capture side's figures from inside the engine's process, through the C ABI:
//! `/metrics` and `/health` served by the C++ example while it publishes, and the same
//! figures read as a struct (`evstream_metrics_snapshot`).

use std::ffi::{c_char, CStr, CString};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::ptr;
use std::time::{Duration, Instant};

use evstream_ffi::*;
use evstream_testkit::{http_get, http_get_with_token, RedisServer};

mod common;
use common::{compile, last_error, s};

/// The value of a sample line `name value` (no labels) in a Prometheus text page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series == name).then(|| value.parse().ok())?
        })
}

#[test]
fn the_cpp_example_serves_its_metrics_while_it_publishes() {
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("order_flow");
    compile("examples/cpp/order_flow.cpp", &binary);
    // 2 threads × 2,000 orders at 1,000 orders/s each: about 2 s of publishing.
    let mut child = Command::new(&binary)
        .args([&redis.url(), "2000", "2", "--metrics", "127.0.0.1:0"])
        .args(["--rate", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address on stderr: {line:?}"))
        .to_owned();

    // Scraped while it publishes: the count grows between two scrapes.
    let (status, first) = http_get(&addr, "/metrics").unwrap();
    assert_eq!(status, 200, "{first}");
    let published_first = sample(&first, "evstream_events_published_total").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let (_, second) = http_get(&addr, "/metrics").unwrap();
    let published_second = sample(&second, "evstream_events_published_total").unwrap();
    assert!(
        published_second > published_first && published_second < 12_000.0,
        "published {published_first} then {published_second}: not scraped while publishing"
    );
    for name in [
        "evstream_ring_capacity",
        "evstream_ring_depth",
        "evstream_events_shipped_total",
        "evstream_breaker_state",
        "evstream_journal_full",
    ] {
        assert!(sample(&second, name).is_some(), "{name} missing:\n{second}");
    }
    assert_eq!(sample(&second, "evstream_ring_capacity"), Some(65_536.0));
    assert!(
        second.contains("evstream_events_refused_total{reason=\"ring_full\"}"),
        "{second}"
    );
    assert!(
        second.contains("evstream_publish_duration_seconds_bucket"),
        "the timed publish calls are a histogram:\n{second}"
    );
    let (status, health) = http_get(&addr, "/health").unwrap();
    assert_eq!(status, 200, "{health}");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["ring"]["capacity"], 65_536, "{health}");
    assert!(health["shipper"]["redis_connected"].as_bool().unwrap());
    assert!(
        health["ring"]["producer_id"]
            .as_str()
            .unwrap()
            .starts_with("cpp-engine:"),
        "{health}"
    );

    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["published"], 12_000, "{summary}");
    assert_eq!(summary["shipped"], 12_000, "{summary}");
    assert!(summary["publish_timed"].as_u64().unwrap() > 0, "{summary}");
    assert!(
        summary["publish_p50_ns"].as_u64().unwrap() <= summary["publish_p99_ns"].as_u64().unwrap(),
        "{summary}"
    );
}

/// A live handle on a private Redis, destroyed on drop.
struct Handle(*mut evstream_handle);

impl Handle {
    fn new(redis: &RedisServer) -> Self {
        let url = CString::new(redis.url()).unwrap();
        let options = evstream_options {
            stream: c"metrics-events".as_ptr(),
            ring_capacity: 1024,
            slot_bytes: 256,
            max_event_bytes: 512,
            journal_dir: ptr::null(),
            producer_name: c"ffi-metrics".as_ptr(),
        };
        let mut status = -1;
        // SAFETY: valid strings, options and status.
        let handle = unsafe { evstream_create(url.as_ptr(), &options, &mut status) };
        assert_eq!(status, EVSTREAM_OK, "{}", last_error());
        Self(handle)
    }

    fn metrics(&self) -> evstream_metrics {
        let mut out = evstream_metrics::default();
        // SAFETY: a live handle and a whole struct.
        let status = unsafe {
            evstream_metrics_snapshot(self.0, &mut out, std::mem::size_of::<evstream_metrics>())
        };
        assert_eq!(status, EVSTREAM_OK, "{}", last_error());
        out
    }

    fn serve(&self, addr: &CStr, public: u8, token_file: Option<&CStr>) -> (i32, String) {
        let options = evstream_metrics_options {
            addr: addr.as_ptr(),
            public,
            token_file: token_file.map_or(ptr::null(), CStr::as_ptr),
        };
        let mut served = [0 as c_char; 64];
        // SAFETY: a live handle, valid options and a 64-byte buffer.
        let status =
            unsafe { evstream_serve_metrics(self.0, &options, served.as_mut_ptr(), served.len()) };
        // SAFETY: NUL-terminated by the call (or all zeros).
        let served = unsafe { CStr::from_ptr(served.as_ptr()) };
        (status, served.to_string_lossy().into_owned())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created by evstream_create, destroyed once.
        unsafe { evstream_destroy(self.0) };
    }
}

#[test]
fn the_metrics_struct_reads_what_metrics_shows() {
    let redis = RedisServer::start().unwrap();
    let handle = Handle::new(&redis);
    let before = handle.metrics();
    assert_eq!((before.published, before.ring_capacity), (0, 1024));
    assert_eq!(before.publish_timed, 0);

    let payload = br#"{"symbol":"AAPL"}"#;
    for n in 0..1_000 {
        let correlation = format!("m-{n}");
        // SAFETY: a live handle and valid strings.
        let status = unsafe {
            evstream_publish(
                handle.0,
                s("Signal"),
                s(&correlation),
                payload.as_ptr(),
                payload.len(),
            )
        };
        assert_eq!(status, EVSTREAM_OK, "{}", last_error());
    }
    let too_large = vec![b'x'; 600];
    // SAFETY: as above.
    let status = unsafe {
        evstream_publish(
            handle.0,
            s("Signal"),
            s(""),
            too_large.as_ptr(),
            too_large.len(),
        )
    };
    assert_eq!(status, EVSTREAM_TOO_LARGE);

    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = handle.metrics();
        if metrics.shipped == 1_000 || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(metrics.published, 1_000);
    assert_eq!(metrics.shipped, 1_000);
    assert_eq!(metrics.refused_too_large, 1);
    assert_eq!(metrics.refused_ring_full, 0);
    assert_eq!(metrics.ring_depth, 0);
    assert_eq!(metrics.redis_connected, 1);
    assert_eq!((metrics.breaker_state, metrics.shut_down), (0, 0));
    assert!(metrics.batches_ok >= 1);
    // One call in 64 is timed (ring.publish_timing_sample): 1,000 calls time 15 or 16.
    assert!(
        (15..=16).contains(&metrics.publish_timed),
        "{}",
        metrics.publish_timed
    );
    assert!(
        0 < metrics.publish_p50_ns
            && metrics.publish_p50_ns <= metrics.publish_p99_ns
            && metrics.publish_p99_ns <= metrics.publish_p999_ns
            && metrics.publish_p999_ns <= metrics.publish_max_ns,
        "{metrics:?}"
    );

    // The same figures on /metrics, served by the handle.
    let (status, served) = handle.serve(c"127.0.0.1:0", 0, None);
    assert_eq!(status, EVSTREAM_OK, "{}", last_error());
    let (code, page) = http_get(&served, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        sample(&page, "evstream_events_published_total"),
        Some(1_000.0)
    );
    assert_eq!(
        sample(&page, "evstream_events_shipped_total"),
        Some(1_000.0)
    );
    assert!(
        page.contains("evstream_events_refused_total{reason=\"too_large\"} 1"),
        "{page}"
    );
    assert_eq!(sample(&page, "evstream_ring_capacity"), Some(1024.0));

    // A struct from an older, shorter header gets only the fields it knows.
    let mut short = [u64::MAX; 3];
    // SAFETY: 16 writable bytes at `short`; the struct's first two fields are u64.
    let status = unsafe { evstream_metrics_snapshot(handle.0, short.as_mut_ptr().cast(), 16) };
    assert_eq!(status, EVSTREAM_OK);
    assert_eq!(short, [1024, 0, u64::MAX], "only 16 bytes written");

    // After shutdown the struct says so and keeps the final counts.
    // SAFETY: a live handle; no report asked for.
    let status = unsafe { evstream_shutdown(handle.0, 5_000, ptr::null_mut()) };
    assert_eq!(status, EVSTREAM_OK);
    let after = handle.metrics();
    assert_eq!((after.shut_down, after.shipped), (1, 1_000));
    drop(handle);

    // In the same test, not a test of its own: the metrics registry is the process's, and
    // a second handle scraped at the same time would write its figures over these.
    serving_refuses_what_the_command_refuses(&redis);
}

fn serving_refuses_what_the_command_refuses(redis: &RedisServer) {
    let handle = Handle::new(redis);

    let (status, _) = handle.serve(c"0.0.0.0:0", 0, None);
    assert_eq!(status, EVSTREAM_CONFIG);
    assert!(
        last_error().contains("reachable from the network"),
        "{}",
        last_error()
    );

    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "secret\n").unwrap();
    let short = CString::new(short.to_str().unwrap()).unwrap();
    let (status, _) = handle.serve(c"127.0.0.1:0", 0, Some(&short));
    assert_eq!(status, EVSTREAM_CONFIG);
    assert!(last_error().contains("shorter than 16"), "{}", last_error());

    let token = "0123456789abcdef0123456789abcdef";
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let file = CString::new(file.to_str().unwrap()).unwrap();
    let (status, served) = handle.serve(c"127.0.0.1:0", 0, Some(&file));
    assert_eq!(status, EVSTREAM_OK, "{}", last_error());
    assert_eq!(http_get(&served, "/metrics").unwrap().0, 401);
    let (code, page) = http_get_with_token(&served, "/metrics", Some(token)).unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("evstream_ring_capacity"), "{page}");

    let (status, _) = handle.serve(c"127.0.0.1:0", 0, None);
    assert_eq!(status, EVSTREAM_INVALID);
    assert!(last_error().contains(&served), "{}", last_error());
    // Nor a second handle of the process: the registry is shared.
    let other = Handle::new(redis);
    let (status, _) = other.serve(c"127.0.0.1:0", 0, None);
    assert_eq!(status, EVSTREAM_INVALID);
    assert!(last_error().contains("another handle"), "{}", last_error());
    // Once the serving handle is destroyed, another may serve.
    drop(handle);
    let (status, _) = other.serve(c"127.0.0.1:0", 0, None);
    assert_eq!(status, EVSTREAM_OK, "{}", last_error());
}
