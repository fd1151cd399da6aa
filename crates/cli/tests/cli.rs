//! The `evstream` binary, run as a user runs it.
use std::process::Command;

fn evstream() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_evstream"));
    command.env_remove("EVSTREAM_REDIS_URL");
    command
}

#[test]
fn demo_json_reports_every_event_shipped_once() {
    let output = evstream()
        .args(["demo", "--duration", "1s", "--rate", "6000", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let published = summary["published"].as_u64().unwrap();
    assert!(published >= 3000, "about 6000 events in 1 s: {summary}");
    assert_eq!(summary["shipped"].as_u64(), Some(published), "{summary}");
    assert_eq!(summary["lost"].as_u64(), Some(0));
    assert_eq!(summary["duplicates"].as_u64(), Some(0));
    assert!(summary["publish_ns"]["p99"].as_u64().unwrap() > 0);
    // Two IntelliSense consumers share the group; every event's effect is applied once.
    assert_eq!(summary["processed"].as_u64(), Some(published), "{summary}");
    let orders = summary["analysis"]["orders"].as_u64().unwrap();
    assert_eq!(summary["analysis"]["fills"].as_u64(), Some(orders));
    assert_eq!(summary["analysis"]["lag"].as_u64(), Some(0));
}

#[test]
fn bad_config_file_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("evstream-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[ring]\ncapacity = 1000\n").unwrap();
    let output = evstream()
        .args([
            "--config",
            file.to_str().unwrap(),
            "demo",
            "--duration",
            "1s",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ring.capacity = 1000"), "{stderr}");
    assert!(stderr.contains("power of two"), "{stderr}");

    std::fs::write(&file, "[ring]\nslots = 8\n").unwrap();
    let output = evstream()
        .args(["--config", file.to_str().unwrap(), "demo"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown field `slots`"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bench_reads_back_and_checks_every_event() {
    let output = evstream()
        .args([
            "bench",
            "--events",
            "20000",
            "--producers",
            "2",
            "--payload-bytes",
            "300",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for (field, expected) in [
        ("published", 20_000),
        ("delivered", 20_000),
        ("lost", 0),
        ("duplicates", 0),
        ("corrupt", 0),
    ] {
        assert_eq!(
            summary[field].as_u64(),
            Some(expected),
            "{field}: {summary}"
        );
    }
    assert!(summary["throughput_eps"].as_f64().unwrap() > 0.0);
    assert_eq!(summary["payload_bytes"].as_u64(), Some(300));
    for p in ["p50", "p99", "p999", "max"] {
        assert!(
            summary["publish_ns"][p].as_u64().is_some(),
            "{p}: {summary}"
        );
    }
}

#[test]
fn unreachable_redis_is_a_clear_error_not_a_hang_and_hides_the_password() {
    let port = evstream_testkit::free_port().unwrap();
    let started = std::time::Instant::now();
    let output = evstream()
        .args([
            "--redis-url",
            &format!("redis://:s3cret@127.0.0.1:{port}"),
            "bench",
            "--events",
            "10",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect to Redis"), "{stderr}");
    assert!(
        !stderr.contains("s3cret"),
        "the password must not be shown: {stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
