//! `evstream top` as an operator runs it: one frame for scripts (`--once`, `--once --json`),
//! frames one after the other through a pipe while Redis goes away and comes back, and the
//! live view in a real terminal (tmux) that refreshes and gives the terminal back on Ctrl-C.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evstream_testkit::RedisServer;

mod common;
use common::{evstream, Running};

/// Appends `n` entries of `event_type` to `key` in one call (one `EVAL`).
fn append(redis: &RedisServer, key: &str, event_type: &str, n: u32) {
    const SCRIPT: &str = "for i = 1, tonumber(ARGV[2]) do \
        redis.call('XADD', KEYS[1], '*', 'event_type', ARGV[1], 'data', '{}') end";
    let reply = redis
        .command(&["EVAL", SCRIPT, "1", key, event_type, &n.to_string()])
        .unwrap();
    assert!(
        !matches!(reply, evstream_testkit::Reply::Error(_)),
        "{reply:?}"
    );
}

/// The `events` stream with 30 `OrderCreated` entries, the group `analysis` that was given 12
/// of them (not acknowledged) and 3 dead letters: pending 12, lag 18.
fn seed(redis: &RedisServer) {
    append(redis, "events", "OrderCreated", 30);
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
            "12",
            "STREAMS",
            "events",
            ">",
        ])
        .unwrap();
    append(
        redis,
        &evstream::keys::dead_letters("events"),
        "OrderFilled",
        3,
    );
}

/// How many times Redis ran `XINFO STREAM` (a reading of `top` runs it twice: the stream,
/// then its dead letters, last).
fn xinfo_stream_calls(redis: &RedisServer) -> u64 {
    let stats = redis
        .command(&["INFO", "commandstats"])
        .unwrap()
        .as_text()
        .unwrap();
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_xinfo|stream:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// Runs `evstream top --once --interval 3s` (with `extra` flags) on `redis`, seeded, and
/// between its two readings appends 200 `OrderCreated`, 100 `OrderFilled` and 40 dead letters.
/// Returns its output.
fn once_with_a_burst(redis: &RedisServer, extra: &[&str]) -> Output {
    seed(redis);
    let child = evstream()
        .args([
            "--redis-url",
            &redis.url(),
            "top",
            "--once",
            "--interval",
            "3s",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while xinfo_stream_calls(redis) < 2 {
        assert!(Instant::now() < deadline, "top never read the stream");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first reading is done; the second comes 3 s after it.
    append(redis, "events", "OrderCreated", 200);
    append(redis, "events", "OrderFilled", 100);
    append(
        redis,
        &evstream::keys::dead_letters("events"),
        "OrderFilled",
        40,
    );
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(xinfo_stream_calls(redis), 4, "two readings, no more");
    output
}

/// The figures of the line of `text` that starts with `start`, as whitespace-separated words.
fn words_of<'a>(text: &'a str, start: &str) -> Vec<&'a str> {
    text.lines()
        .find(|line| line.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting with {start:?} in\n{text}"))
        .split_whitespace()
        .collect()
}

#[test]
fn once_prints_one_frame_with_rates_types_groups_dead_letters_and_alerts() {
    let redis = RedisServer::start().unwrap();
    let output = once_with_a_burst(&redis, &[]);
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(!text.contains('\x1b'), "no escape codes: {text:?}");
    for line in text.lines() {
        assert!(line.chars().count() <= 100, "wider than 100: {line:?}");
    }
    assert!(
        text.starts_with(&format!(
            "evstream top   stream events   redis {}",
            redis.url()
        )),
        "{text}"
    );
    // 300 events in the 3 s (and a little more) between the readings.
    let events = words_of(&text, "events ");
    let rate: f64 = events[1].trim_end_matches("/s").parse().unwrap();
    assert!((80.0..=100.0).contains(&rate), "{rate}: {text}");
    assert_eq!(events[2..4], ["length", "330"], "{text}");
    assert_eq!(events[4..7], ["dead", "letters", "43"], "{text}");
    let dead_letter_rate: f64 = events[7]
        .trim_matches(|c| c == '(' || c == ')')
        .trim_end_matches("/s")
        .parse()
        .unwrap();
    assert!((10.5..=13.4).contains(&dead_letter_rate), "{text}");
    assert!(
        words_of(&text, "memory ").contains(&"maxmemory),"),
        "{text}"
    );
    // Two thirds and one third of what was appended, every entry read (no sampling).
    assert_eq!(words_of(&text, "OrderCreated")[2], "66.7%", "{text}");
    assert_eq!(words_of(&text, "OrderFilled")[2], "33.3%", "{text}");
    assert!(!text.contains("sampled"), "{text}");
    // Pending 12 (never acknowledged), lag 18 + 300, growing by the burst's rate.
    let group = words_of(&text, "analysis ");
    assert_eq!(group[1..4], ["1", "12", "318"], "{text}");
    assert!(group[4].starts_with('+'), "falling behind: {text}");
    // No maxmemory on the test server; 40 dead letters in about 3 s is above 10/s.
    let alerts = &text[text.find("\nALERTS\n").expect("alerts firing")..];
    assert!(
        alerts.contains("\nWARNING   RedisMaxmemoryUnset      Redis has no maxmemory"),
        "{text}"
    );
    assert!(
        alerts.contains("\nWARNING   PoisonPillsHigh          1"),
        "{text}"
    );
}

#[test]
fn once_json_has_the_frames_figures() {
    let redis = RedisServer::start().unwrap();
    let output = once_with_a_burst(&redis, &["--json"]);
    let frame: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(frame["stream"], "events", "{frame}");
    assert_eq!(frame["redis"], redis.url().as_str(), "{frame}");
    assert_eq!(frame["length"], 330, "{frame}");
    assert_eq!(frame["appended"], 300, "{frame}");
    assert_eq!(frame["sampled"], 300, "{frame}");
    assert_eq!(frame["dead_letters"], 43, "{frame}");
    let rate = frame["events_per_s"].as_f64().unwrap();
    assert!((80.0..=100.0).contains(&rate), "{frame}");
    let types = frame["event_types"].as_array().unwrap();
    assert_eq!(types.len(), 2, "{frame}");
    assert_eq!(types[0]["event_type"], "OrderCreated", "{frame}");
    assert!((types[0]["share"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    assert!((types[0]["per_s"].as_f64().unwrap() - rate * 2.0 / 3.0).abs() < 1e-6);
    assert_eq!(types[1]["event_type"], "OrderFilled", "{frame}");
    let groups = frame["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{frame}");
    assert_eq!(groups[0]["name"], "analysis");
    assert_eq!(groups[0]["consumers"], 1);
    assert_eq!(groups[0]["pending"], 12);
    assert_eq!(groups[0]["lag"], 318);
    assert!(groups[0]["lag_per_s"].as_f64().unwrap() > 80.0, "{frame}");
    assert_eq!(frame["memory"][0]["max_bytes"], 0, "{frame}");
    assert!(frame["memory"][0]["used_bytes"].as_u64().unwrap() > 0);
    let alerts: Vec<&str> = frame["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["alert"].as_str().unwrap())
        .collect();
    assert!(alerts.contains(&"RedisMaxmemoryUnset"), "{frame}");
    assert!(alerts.contains(&"PoisonPillsHigh"), "{frame}");
    assert_eq!(frame["unreachable"], serde_json::json!([]), "{frame}");
}

/// What a child writes to stdout, collected by a thread as it comes.
fn collect_stdout(child: &mut Child) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = Arc::clone(&text);
    std::thread::spawn(move || {
        let mut buffer = [0; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buffer) {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    text
}

/// Waits until `check` holds of the text, or panics with it after `seconds`.
fn wait_for(text: &Mutex<String>, seconds: u64, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let now = text.lock().unwrap().clone();
        if check(&now) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}; output so far:\n{now}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn through_a_pipe_frames_follow_each_other_and_redis_going_away_is_shown_not_fatal() {
    let mut redis = RedisServer::start().unwrap();
    seed(&redis);
    let mut child = Running(
        evstream()
            .args(["--redis-url", &redis.url(), "top", "--interval", "200ms"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let text = collect_stdout(&mut child.0);
    wait_for(&text, 10, "two frames", |t| {
        t.matches("evstream top   stream events").count() >= 2
    });
    redis.kill().unwrap();
    wait_for(&text, 10, "Redis unreachable in a frame", |t| {
        t.contains("\nRedis unreachable: cannot")
    });
    assert!(text.lock().unwrap().contains("CRITICAL  RedisUnreachable"));
    assert_eq!(child.0.try_wait().unwrap(), None, "still running");
    redis.restart().unwrap();
    append(&redis, "events", "OrderFilled", 5);
    wait_for(&text, 10, "a frame read after the restart", |t| {
        let after = &t[t.rfind("Redis unreachable").unwrap_or(0)..];
        after.contains("length 5 ")
    });
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.0.wait().unwrap();
    assert!(exit.success(), "SIGTERM is a clean exit: {exit:?}");
    assert!(!text.lock().unwrap().contains('\x1b'), "no escape codes");
}

/// A tmux server of the test's own (its socket in a directory of its own), killed when the
/// test ends, passing or not.
struct Tmux {
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux is installed (scripts/test.sh installs it)");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn capture(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    /// Whether the pane shows the alternate screen, and whether its cursor is visible.
    fn state(&self) -> String {
        let format = "alternate_on=#{alternate_on} cursor_flag=#{cursor_flag}";
        self.run(&["display", "-p", "-t", "top", format])
            .trim()
            .to_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// The value after `length ` in a captured frame.
fn length_of(screen: &str) -> Option<u64> {
    let words = screen.lines().find(|l| l.starts_with("events "))?;
    let mut words = words.split_whitespace();
    words.find(|w| *w == "length")?;
    words.next()?.replace(',', "").parse().ok()
}

#[test]
fn in_a_terminal_the_frame_is_redrawn_in_place_and_ctrl_c_gives_the_terminal_back() {
    let redis = RedisServer::start().unwrap();
    seed(&redis);
    let dir = tempfile::tempdir().unwrap();
    let tmux = Tmux {
        socket: dir.path().join("tmux"),
        _dir: dir,
    };
    // bash runs the view, then says how it exited and stays, so that the terminal can be
    // looked at after it: bash waits out the Ctrl-C its child handles.
    let script = format!(
        "{} --redis-url {} top --interval 300ms; echo \"top exited with $?\"; exec sleep 600",
        env!("CARGO_BIN_EXE_evstream"),
        redis.url()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "110",
        "-y",
        "40",
        "bash",
        "-c",
        &script,
    ]);
    // The shipper publishes OrderCreated/OrderFilled pairs while the view is open.
    let _bench = Running(
        evstream()
            .args([
                "--redis-url",
                &redis.url(),
                "bench",
                "--event-kind",
                "orders",
            ])
            .args(["--duration", "20s", "--rate", "500", "--json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        let screen = tmux.capture();
        if screen.contains("OrderFilled") && screen.contains("OrderCreated") {
            break screen;
        }
        assert!(
            Instant::now() < deadline,
            "no frame with the types:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        first.matches("evstream top   stream events").count(),
        1,
        "one frame on the screen, redrawn in place:\n{first}"
    );
    assert!(first.contains("analysis"), "{first}");
    assert!(first.contains("RedisMaxmemoryUnset"), "{first}");
    let before = length_of(&first).expect("a length");
    let later = loop {
        std::thread::sleep(Duration::from_millis(300));
        let screen = tmux.capture();
        if length_of(&screen).is_some_and(|n| n > before) {
            break screen;
        }
        assert!(Instant::now() < deadline, "never refreshed:\n{screen}");
    };
    assert_eq!(later.matches("evstream top").count(), 1, "{later}");
    assert_eq!(
        tmux.state(),
        "alternate_on=1 cursor_flag=0",
        "drawn on the alternate screen, cursor hidden"
    );
    tmux.run(&["send-keys", "-t", "top", "C-c"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let screen = tmux.capture();
        if screen.contains("top exited with") {
            break screen;
        }
        assert!(
            Instant::now() < deadline,
            "still running after Ctrl-C:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(after.contains("top exited with 0"), "{after}");
    assert_eq!(
        tmux.state(),
        "alternate_on=0 cursor_flag=1",
        "main screen back, cursor shown"
    );
    assert!(
        !after.contains("evstream top"),
        "the frame went with the alternate screen:\n{after}"
    );
}
