//! Issue 5: `evstream schema check|push|list|migrate`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use evstream_testkit::RedisServer;

mod common;
use common::evstream;

fn shipped() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas")
        .to_string_lossy()
        .into_owned()
}

fn with_stdin(mut command: Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let written = child.stdin.take().unwrap().write_all(input.as_bytes());
    // The command may refuse its arguments and exit before reading stdin.
    if let Err(error) = written {
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
    }
    child.wait_with_output().unwrap()
}

#[test]
fn check_accepts_the_shipped_schemas_and_lists_every_problem_of_broken_ones() {
    let output = evstream()
        .args(["schema", "check", &shipped()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("A")).unwrap();
    std::fs::write(dir.path().join("A/v1.json"), r#"{"type":"object"}"#).unwrap();
    std::fs::write(dir.path().join("A/v2.json"), "{not json").unwrap();
    std::fs::write(dir.path().join("A/v3.json"), r#"{"type":"object"}"#).unwrap();
    let output = evstream()
        .args(["schema", "check", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("A/v2.json: not valid JSON"), "{stderr}");
}

#[test]
fn migrate_reads_stdin_and_prints_the_latest_version() {
    let mut command = evstream();
    command.args([
        "schema",
        "migrate",
        "--type",
        "OrderCreated",
        "--version",
        "v1",
        "--schemas",
        &shipped(),
    ]);
    let output = with_stdin(command, r#"{"orderId":"42","symbol":"AAPL"}"#);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let migrated: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        migrated,
        serde_json::json!({"orderId": "42", "symbol": "AAPL", "quantity": 0})
    );

    for (version, input, message) in [
        ("v3", "{}", "OrderCreated v3 is not registered"),
        ("v1", "{oops", "not valid JSON"),
        ("v1", r#"{"symbol":"AAPL"}"#, "does not match the schema"),
        ("one", "{}", "not of the form v1"),
    ] {
        let mut command = evstream();
        command.args([
            "schema",
            "migrate",
            "--type",
            "OrderCreated",
            "--version",
            version,
            "--schemas",
            &shipped(),
        ]);
        let output = with_stdin(command, input);
        assert_eq!(output.status.code(), Some(2), "{version} {input}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{version} {input}: {stderr}");
    }
}

#[test]
fn push_then_list_from_redis() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let output = evstream()
        .args(["--redis-url", &url, "schema", "push", &shipped()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("registered OrderCreated/v2.json"));
    let output = evstream()
        .args(["--redis-url", &url, "schema", "list", "--json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(list[1]["event_type"], "OrderCreated");
    assert_eq!(list[1]["latest"], 2);
    assert_eq!(list[1]["compatibility"], "BACKWARD");
}
