//! `evstream ops` and `evstream status` as an operator runs them: /metrics parses as
//! Prometheus text with the named series, /health follows Redis going away and coming back.

use std::process::Stdio;
use std::time::{Duration, Instant};

use evstream_testkit::{free_port, http_get, http_get_with_token, RedisServer};

mod common;
use common::{evstream, Running};

fn seed(redis: &RedisServer) {
    for i in 0..30 {
        let n = i.to_string();
        redis
            .command(&["XADD", "events", "*", "event_type", "Test", "data", &n])
            .unwrap();
    }
    redis
        .command(&["XGROUP", "CREATE", "events", "analysis", "0"])
        .unwrap();
    redis
        .command(&[
            "XREADGROUP",
            "GROUP",
            "analysis",
            "worker-1",
            "COUNT",
            "10",
            "STREAMS",
            "events",
            ">",
        ])
        .unwrap();
}

/// Polls `path` until `accept` likes the answer or 15 s pass; returns the last answer.
fn wait_for(addr: &str, path: &str, accept: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = http_get(addr, path).unwrap_or((0, String::new()));
        if accept(answer.0, &answer.1) || Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Checks every line of a Prometheus text exposition and returns the samples.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            assert!(
                matches!(words.first(), Some(&"HELP" | &"TYPE")),
                "bad comment line {line:?}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels in {line:?}");
        }
        samples.push((series.to_owned(), value));
    }
    samples
}

#[test]
fn ops_serves_metrics_and_health_that_follow_redis() {
    let mut redis = RedisServer::builder().maxmemory("64mb").start().unwrap();
    seed(&redis);
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let _ops = Running(
        evstream()
            .args([
                "ops",
                "--redis-url",
                &redis.url(),
                "--alert-interval",
                "200ms",
                "--interval",
                "200ms",
                "--metrics-addr",
                &addr,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let (status, text) = wait_for(&addr, "/metrics", |status, body| {
        status == 200 && body.contains("evstream_group_lag")
    });
    assert_eq!(status, 200, "{text}");
    let samples = parse_prometheus(&text);
    let value = |series: &str| {
        samples
            .iter()
            .find(|(s, _)| s == series)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(value("evstream_redis_up"), 1.0);
    assert_eq!(value("evstream_stream_length{stream=\"events\"}"), 30.0);
    assert_eq!(
        value("evstream_stream_entries_added_total{stream=\"events\"}"),
        30.0
    );
    assert_eq!(
        value("evstream_group_lag{stream=\"events\",group=\"analysis\"}"),
        20.0
    );
    assert_eq!(
        value("evstream_group_pending{stream=\"events\",group=\"analysis\"}"),
        10.0
    );
    assert_eq!(
        value(
            "evstream_consumer_pending{stream=\"events\",group=\"analysis\",consumer=\"worker-1\"}"
        ),
        10.0
    );
    assert_eq!(
        value("evstream_redis_memory_max_bytes"),
        64.0 * 1024.0 * 1024.0
    );
    assert!(value("evstream_redis_memory_used_bytes") > 0.0);
    assert!(value("evstream_redis_memory_used_ratio") > 0.0);
    assert_eq!(value("evstream_redis_eviction_policy_safe"), 1.0);
    assert_eq!(value("evstream_dlq_length{stream=\"events\"}"), 0.0);
    assert!(text.contains("# TYPE evstream_stream_entries_added_total counter"));

    let (status, body) = wait_for(&addr, "/health", |status, _| status == 200);
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["redis"]["stream_length"], 30);

    redis.kill().unwrap();
    let (status, body) = wait_for(&addr, "/health", |status, _| status == 503);
    assert_eq!(status, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "failing");
    assert_eq!(health["alerts"][0]["alert"], "RedisUnreachable", "{health}");
    let (_, text) = wait_for(&addr, "/metrics", |_, body| {
        body.lines().any(|l| l == "evstream_redis_up 0")
    });
    assert!(text.lines().any(|l| l == "evstream_redis_up 0"), "{text}");

    redis.restart().unwrap();
    let (status, body) = wait_for(&addr, "/health", |status, _| status == 200);
    assert_eq!(status, 200, "{body}");
    assert_eq!(http_get(&addr, "/nothing").unwrap().0, 404);
}

#[test]
fn status_shows_groups_consumers_and_alerts() {
    let redis = RedisServer::builder()
        .maxmemory("64mb")
        .maxmemory_policy("allkeys-lru")
        .start()
        .unwrap();
    seed(&redis);
    redis
        .command(&[
            "XADD",
            "events:dlq",
            "*",
            "dlq_stage",
            "ship",
            "dlq_reason",
            "invalid_json",
        ])
        .unwrap();

    let output = evstream()
        .args(["status", "--json", "--redis-url", &redis.url()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["stream"]["length"], 30, "{status}");
    assert_eq!(status["groups"][0]["name"], "analysis");
    assert_eq!(status["groups"][0]["lag"], 20);
    assert_eq!(status["groups"][0]["pending"], 10);
    assert_eq!(status["groups"][0]["consumers"][0]["name"], "worker-1");
    assert_eq!(status["dlq"]["length"], 1);
    assert_eq!(status["dead_letters_by_reason"]["ship/invalid_json"], 1);
    assert_eq!(status["eviction_risk"], "stream");
    assert_eq!(status["alerts"][0]["alert"], "EvictionPolicyUnsafe");
    assert_eq!(status["alerts"][0]["severity"], "critical");

    let output = evstream()
        .args(["status", "--redis-url", &redis.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("UNSAFE: can evict the stream"), "{text}");
    assert!(text.contains("analysis"), "{text}");
    assert!(text.contains("worker-1"), "{text}");
    assert!(text.contains("ship/invalid_json"), "{text}");
}

#[test]
fn endpoints_stay_on_loopback_unless_asked_and_can_require_a_token() {
    let redis = RedisServer::start().unwrap();
    let port = free_port().unwrap().to_string();
    let output = evstream()
        .args(["ops", "--redis-url", &redis.url(), "--metrics-addr"])
        .arg(format!("0.0.0.0:{port}"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--metrics-public"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let token = "3f9c2a7e5b1d4e8fa6c0123456789abc";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let addr = format!("127.0.0.1:{port}");
    let _ops = Running(
        evstream()
            .args(["ops", "--redis-url", &redis.url(), "--metrics-addr", &addr])
            .arg("--metrics-token-file")
            .arg(&token_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (status, _) = wait_for(&addr, "/health", |status, _| status != 0);
    assert_eq!(status, 401, "no token");
    assert_eq!(
        http_get_with_token(&addr, "/metrics", Some("wrong-token-0000000"))
            .unwrap()
            .0,
        401
    );
    let (status, body) = http_get_with_token(&addr, "/metrics", Some(token)).unwrap();
    assert_eq!(status, 200, "{body}");
}

#[test]
fn status_over_tls_and_a_clear_error_for_a_wrong_ca() {
    let redis = RedisServer::builder().tls(true).start().unwrap();
    let other = RedisServer::builder().tls(false).start().unwrap();
    let tls_args = |ca: &std::path::Path| {
        vec![
            "--redis-url".to_owned(),
            redis.tls_url().unwrap(),
            "--tls-ca".to_owned(),
            ca.display().to_string(),
            "--tls-cert".to_owned(),
            redis.tls_file("client.pem").display().to_string(),
            "--tls-key".to_owned(),
            redis.tls_file("client-key.pem").display().to_string(),
        ]
    };
    let output = evstream()
        .arg("status")
        .args(tls_args(&redis.tls_file("ca.pem")))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("rediss://"));

    let output = evstream()
        .arg("status")
        .args(tls_args(&other.tls_file("ca.pem")))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.to_ascii_lowercase().contains("certificate"),
        "{stderr}"
    );
    eprintln!("wrong CA: {stderr}");
}

/// Issue 19, item 3: at the default log level an alert's resolution reaches the log as its
/// firing did.
#[test]
fn issue_19_a_resolved_alert_reaches_the_log_at_the_default_level() {
    let mut redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ops.log");
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let mut ops = Running(
        evstream()
            .env_remove("EVSTREAM_LOG")
            .env_remove("RUST_LOG")
            .args(["ops", "--redis-url", &redis.url()])
            .args(["--alert-interval", "200ms", "--interval", "200ms"])
            .args(["--metrics-addr", &addr])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let (status, body) = wait_for(&addr, "/health", |status, _| status == 200);
    assert_eq!(status, 200, "{body}");
    redis.kill().unwrap();
    let (status, body) = wait_for(&addr, "/health", |status, _| status == 503);
    assert_eq!(status, 503, "{body}");
    redis.restart().unwrap();
    let (status, body) = wait_for(&addr, "/health", |status, _| status == 200);
    assert_eq!(status, 200, "{body}");
    // The log line follows the evaluation that /health reflects.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = std::fs::read_to_string(&log).unwrap();
        if text.contains("alert resolved") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = ops.0.kill();
    assert!(text.contains("RedisUnreachable"), "the firing: {text}");
    assert!(
        text.lines()
            .any(|l| l.contains("alert resolved") && l.contains("RedisUnreachable")),
        "the resolution: {text}"
    );
}

/// Issue 19, item 3: `status --json` is one JSON object with each key once (the Redis URL
/// and the observation of the server were both `"redis"`).
#[test]
fn issue_19_status_json_has_each_key_once() {
    let redis = RedisServer::start().unwrap();
    seed(&redis);
    let output = evstream()
        .args(["status", "--json", "--redis-url", &redis.url()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    // Pretty-printed: the top-level keys are the lines indented by two spaces.
    let mut keys: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("  \"") && !l.starts_with("   "))
        .filter_map(|l| l.trim_start().split('"').nth(1))
        .collect();
    let all = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), all, "a key given twice: {text}");
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status["redis_url"], redis.url().as_str(), "{status}");
    assert!(status["redis"].is_object(), "the observation: {status}");
}
