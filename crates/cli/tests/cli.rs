//! The `evstream` binary, run as a user runs it.

mod common;
use common::evstream;

/// Runs `evstream` with `args`, checks that it succeeded, and parses its JSON output.
fn json_of(args: &[&str]) -> serde_json::Value {
    let output = evstream().args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Checks a `--report` page: one self-contained HTML document holding `charts` SVG charts,
/// each with drawn series, and the run's summary.
fn check_report(path: &std::path::Path, charts: usize, summary_field: &str) {
    let html = std::fs::read_to_string(path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html:.200}");
    assert!(html.trim_end().ends_with("</html>"));
    for title in [
        "Publish latency distribution",
        "Throughput over time",
        "Publish → stream latency over time",
        "Backlog and group lag over time",
    ] {
        assert!(html.contains(title), "no chart {title}");
    }
    assert_eq!(html.matches("<svg").count(), charts, "{html:.300}");
    assert_eq!(html.matches("</svg>").count(), charts);
    // Every chart draws at least one line (plotters writes series as polylines).
    assert!(html.matches("<polyline").count() >= charts, "{html:.300}");
    assert!(!html.contains("NaN"));
    assert!(!html.contains("<script"), "self-contained, nothing to run");
    assert!(html.contains(summary_field), "the summary is on the page");
}

#[test]
fn demo_json_reports_every_event_shipped_once() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("demo.html");
    let output = evstream()
        .args(["demo", "--duration", "1s", "--rate", "6000", "--json"])
        .arg("--report")
        .arg(&report)
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
    // Two IntelliSense consumers share the group; every event's effect is applied once (the
    // types IntelliSense does not read, cancels and rejects, are acknowledged unhandled).
    let handled = summary["processed"].as_u64().unwrap() + summary["skipped"].as_u64().unwrap();
    assert_eq!(handled, published, "{summary}");
    assert!(summary["skipped"].as_u64().unwrap() > 0, "{summary}");
    for (found, planned) in [("orders", "orders"), ("fills", "fills")] {
        assert_eq!(
            summary["analysis"][found], summary["market"][planned],
            "{found}: {summary}"
        );
    }
    assert_eq!(summary["analysis"]["lag"].as_u64(), Some(0));
    assert!(summary["append_latency_ms"]["count"].as_u64().unwrap() >= published);
    // The pipeline's five charts and the market's two, with the table of alerts.
    check_report(&report, 7, "&quot;processed&quot;");
    let html = std::fs::read_to_string(&report).unwrap();
    for title in [
        "Fill latency distribution per symbol",
        "IntelliSense alerts over time",
        "<th>kind and level</th>",
        "<td>risk CRITICAL</td>",
    ] {
        assert!(html.contains(title), "no {title}");
    }
}

#[test]
fn bench_duration_keeps_the_rate_counts_every_append_and_samples_memory() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("evstream.toml");
    // A stream kept far shorter than the run, as in a long soak.
    std::fs::write(&config, "[ship]\nmax_len = 5000\n").unwrap();
    let report = dir.path().join("bench.html");
    let output = evstream()
        .arg("--config")
        .arg(&config)
        .args(["bench", "--duration", "3s", "--rate", "10000", "--json"])
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let published = summary["published"].as_u64().unwrap();
    assert!((25_000..=30_000).contains(&published), "{summary}");
    assert_eq!(
        summary["soak"]["appended"].as_u64(),
        Some(published),
        "{summary}"
    );
    assert_eq!(summary["lost"].as_u64(), Some(0), "{summary}");
    assert_eq!(summary["duplicates"].as_u64(), Some(0), "{summary}");
    assert_eq!(summary["corrupt"].as_u64(), Some(0), "{summary}");
    let checked = summary["soak"]["checked_in_stream"].as_u64().unwrap();
    assert!(
        checked >= 5000 && checked < published,
        "the stream was trimmed to about 5000: {summary}"
    );
    let memory = &summary["soak"]["memory"];
    assert!(memory["rss_end_mib"].as_f64().unwrap() > 1.0, "{summary}");
    assert!(memory["growth_percent"].as_f64().is_some(), "{summary}");
    check_report(&report, 5, "&quot;soak&quot;");
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

/// Runs `evstream bench` with `args` on a private Redis and checks that each of the 20,000
/// events came back once, intact; returns the summary.
fn bench_20000_events(args: &[&str]) -> serde_json::Value {
    let output = evstream()
        .args(["bench", "--events", "20000", "--producers", "2", "--json"])
        .args(args)
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
    summary
}

#[test]
fn bench_reads_back_and_checks_every_event() {
    let summary = bench_20000_events(&["--payload-bytes", "300"]);
    assert!(summary["throughput_eps"].as_f64().unwrap() > 0.0);
    assert_eq!(summary["payload_bytes"].as_u64(), Some(300));
    assert_eq!(summary["event_kind"], "payload", "{summary}");
    for p in ["p50", "p99", "p999", "max"] {
        assert!(
            summary["publish_ns"][p].as_u64().is_some(),
            "{p}: {summary}"
        );
    }
}

#[test]
fn bench_publishes_typed_orders_and_checks_each_one_byte_for_byte() {
    let summary = bench_20000_events(&["--event-kind", "orders"]);
    assert_eq!(summary["event_kind"], "orders", "{summary}");
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

/// Issue 8: with `--partitions`, every command works over all partitions of the stream:
/// bench ships and audits them, consume reads them all, status, report and ops add them up.
#[test]
fn a_partitioned_stream_is_shipped_consumed_and_reported_over_every_partition() {
    let redis = evstream_testkit::RedisServer::start().unwrap();
    let url = redis.url();
    let run = |args: &[&str]| {
        let mut all = vec!["--redis-url", &url, "--partitions", "3"];
        all.extend_from_slice(args);
        json_of(&all)
    };
    let bench = run(&["bench", "--events", "30000", "--json"]);
    for (field, expected) in [
        ("published", 30_000),
        ("delivered", 30_000),
        ("lost", 0),
        ("duplicates", 0),
        ("corrupt", 0),
    ] {
        assert_eq!(bench[field].as_u64(), Some(expected), "{field}: {bench}");
    }
    let status = run(&["status", "--json"]);
    assert_eq!(status["length"].as_u64(), Some(30_000), "{status}");
    let partitions = status["partitions"].as_array().unwrap();
    let streams: Vec<&str> = partitions
        .iter()
        .map(|p| p["stream_key"].as_str().unwrap())
        .collect();
    assert_eq!(streams, ["events:{0}", "events:{1}", "events:{2}"]);
    for partition in partitions {
        // The bench's 1,024 correlation ids reach every partition.
        assert!(
            partition["stream"]["length"].as_u64().unwrap() > 5_000,
            "{partition}"
        );
    }
    let consumed = run(&[
        "consume",
        "--consumer",
        "c1",
        "--handler",
        "ack-only",
        "--exit-when-idle",
        "2s",
        "--json",
    ]);
    assert_eq!(consumed["processed"].as_u64(), Some(30_000), "{consumed}");
    let report = run(&["report", "--json"]);
    assert_eq!(report["processed"].as_u64(), Some(30_000), "{report}");
    assert_eq!(report["lag"].as_u64(), Some(0), "{report}");
    assert_eq!(report["pending"].as_u64(), Some(0), "{report}");
    let ops = run(&["ops", "--once", "--json"]);
    assert_eq!(ops.as_array().map(Vec::len), Some(3), "{ops}");
}

/// On a Redis Cluster, `status` names each partition's slot and the primary holding it.
#[test]
fn status_on_a_cluster_names_each_partitions_slot_and_primary() {
    let cluster = evstream_testkit::ClusterSet::start().unwrap();
    let url = cluster.url();
    let status = json_of(&["--redis-url", &url, "--partitions", "6", "status", "--json"]);
    let partitions = status["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 6, "{status}");
    for partition in partitions {
        let key = partition["stream_key"].as_str().unwrap();
        let primary = cluster.primary_for(key).unwrap();
        assert_eq!(
            partition["cluster"]["primary"].as_str(),
            Some(primary.addr().as_str()),
            "{partition}"
        );
        let evstream_testkit::Reply::Int(slot) =
            primary.command(&["CLUSTER", "KEYSLOT", key]).unwrap()
        else {
            panic!("CLUSTER KEYSLOT")
        };
        assert_eq!(partition["cluster"]["slot"].as_i64(), Some(slot));
    }
}

/// The whole system on a Redis Cluster: the demo's engine, shipper lanes, two IntelliSense
/// consumers and ops loops over six partitions spread on three primaries.
#[test]
fn the_demo_runs_on_a_cluster_over_six_partitions() {
    let cluster = evstream_testkit::ClusterSet::start().unwrap();
    let url = cluster.url();
    let summary = json_of(&[
        "--redis-url",
        &url,
        "--partitions",
        "6",
        "demo",
        "--duration",
        "2s",
        "--rate",
        "3000",
        "--json",
    ]);
    let published = summary["published"].as_u64().unwrap();
    assert!(published >= 3000, "about 6000 events in 2 s: {summary}");
    for (field, expected) in [
        ("shipped", published),
        ("lost", 0),
        ("duplicates", 0),
        ("out_of_order", 0),
    ] {
        assert_eq!(
            summary[field].as_u64(),
            Some(expected),
            "{field}: {summary}"
        );
    }
    let handled = summary["processed"].as_u64().unwrap() + summary["skipped"].as_u64().unwrap();
    assert_eq!(handled, published, "{summary}");
    let orders = summary["analysis"]["orders"].as_u64().unwrap();
    assert!(orders > 0, "{summary}");
    assert_eq!(summary["analysis"]["orders"], summary["market"]["orders"]);
    assert_eq!(summary["analysis"]["fills"], summary["market"]["fills"]);
    assert_eq!(summary["analysis"]["lag"].as_u64(), Some(0));
    // Every partition received events (on the primary that holds it).
    for p in 0..6 {
        let key = format!("events:{{{p}}}");
        let primary = cluster.primary_for(&key).unwrap();
        let evstream_testkit::Reply::Int(length) = primary.command(&["XLEN", &key]).unwrap() else {
            panic!("XLEN {key}")
        };
        assert!(length > 0, "{key} is empty");
    }
}

/// Issue 18, item 8: a TOML error in the configuration file never prints the password it
/// quotes, and no cause is printed twice.
#[test]
fn issue_18_a_toml_error_does_not_print_the_password_or_repeat_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evstream.toml");
    std::fs::write(
        &path,
        "[redis]\nurl = \"redis://:hunter2@127.0.0.1:6379\" x\n",
    )
    .unwrap();
    let output = evstream()
        .arg("--config")
        .arg(&path)
        .arg("status")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the password is printed: {stderr}"
    );
    assert!(stderr.contains("line 2"), "says where: {stderr}");
    assert_eq!(
        stderr.matches("expected").count(),
        1,
        "the parser's complaint once: {stderr}"
    );
}

/// Issue 18, item 8: an unreachable Redis prints the operating system's error once.
#[test]
fn issue_18_a_refused_connection_prints_its_cause_once() {
    let port = evstream_testkit::free_port().unwrap();
    let output = evstream()
        .args([
            "--redis-url",
            &format!("redis://127.0.0.1:{port}"),
            "status",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("Connection refused").count(),
        1,
        "the cause once: {stderr}"
    );
}

/// Issue 19, item 3: a missing password file is named as such, not as the configuration
/// file.
#[test]
fn issue_19_a_missing_password_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("redis.password");
    let output = evstream()
        .args([
            "--redis-url",
            "redis://127.0.0.1:1",
            "--redis-password-file",
        ])
        .arg(&missing)
        .arg("status")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        !stderr.contains("configuration file"),
        "it is not the configuration file: {stderr}"
    );
    assert!(stderr.contains("password file"), "{stderr}");
    assert!(stderr.contains(&*missing.to_string_lossy()), "{stderr}");
}

/// Issue 19, item 3: `dlq replay --help` gives the exit status it exits with (2 when some
/// were refused; 1 is an error).
#[test]
fn issue_19_dlq_replay_help_gives_its_exit_statuses() {
    let output = evstream()
        .args(["dlq", "replay", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(!help.contains("Exits 1 if any was refused"), "{help}");
    assert!(help.contains("2 if some were refused"), "{help}");
}

/// Issue 19, item 3: with `ship.known_event_types` the shipper dead-letters the other types;
/// the demo counts them as handled (never reaching the consumers) and reports them instead of
/// waiting 60 s for the consumers and failing.
#[test]
fn issue_19_the_demo_reports_the_shippers_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("evstream.toml");
    std::fs::write(
        &config,
        "[ship]\nknown_event_types = [\"OrderCreated\", \"OrderFilled\"]\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let output = evstream()
        .arg("--config")
        .arg(&config)
        .args(["demo", "--duration", "1s", "--rate", "3000", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let published = summary["published"].as_u64().unwrap();
    let shipped = summary["shipped"].as_u64().unwrap();
    let dead = summary["dead_letters"].as_u64().unwrap();
    assert!(dead > 0 && shipped > 0, "{summary}");
    assert_eq!(shipped + dead, published, "{summary}");
    assert_eq!(summary["lost"].as_u64(), Some(0), "{summary}");
    assert_eq!(summary["processed"].as_u64(), Some(shipped), "{summary}");
    assert_eq!(
        summary["dead_letters_by_reason"]["unknown_type"].as_u64(),
        Some(dead),
        "{summary}"
    );
}

/// One demo run's stream, read back: each event as `type correlation_id data`, sorted (a
/// multiset), and the set of `(kind, correlation_id)` of the alerts IntelliSense raised.
/// The market data's `exchangeTsNs` is the wall clock at publish (less a seeded feed delay),
/// so it is left out of the comparison; everything else in `data` comes from the seed.
fn market_of(url: &str) -> (Vec<String>, std::collections::BTreeSet<(String, String)>) {
    use redis::Commands;
    let mut connection = redis::Client::open(url).unwrap().get_connection().unwrap();
    let read = |connection: &mut redis::Connection, key: &str| {
        let reply: redis::streams::StreamRangeReply = connection.xrange_all(key).unwrap();
        reply.ids
    };
    let field = |entry: &redis::streams::StreamId, name: &str| -> String {
        entry.get(name).unwrap_or_default()
    };
    let mut events: Vec<String> = read(&mut connection, "events")
        .iter()
        .map(|entry| {
            let mut data: serde_json::Value = serde_json::from_str(&field(entry, "data")).unwrap();
            if let Some(data) = data.as_object_mut() {
                data.remove("exchangeTsNs");
            }
            format!(
                "{} {} {data}",
                field(entry, "event_type"),
                field(entry, "correlation_id")
            )
        })
        .collect();
    events.sort_unstable();
    let alerts = read(&mut connection, "events:alerts")
        .iter()
        .map(|entry| (field(entry, "kind"), field(entry, "correlation_id")))
        .collect();
    (events, alerts)
}

/// Runs `evstream demo --seed <seed>` for 2 s at 3,000 events/s on a fresh Redis; returns
/// its summary and what it left in Redis.
fn demo_with_seed(
    seed: &str,
) -> (
    serde_json::Value,
    Vec<String>,
    std::collections::BTreeSet<(String, String)>,
) {
    let redis = evstream_testkit::RedisServer::start().unwrap();
    let url = redis.url();
    let summary = json_of(&[
        "--redis-url",
        &url,
        "demo",
        "--seed",
        seed,
        "--duration",
        "2s",
        "--rate",
        "3000",
        "--json",
    ]);
    let (events, alerts) = market_of(&url);
    (summary, events, alerts)
}

/// Issue 23: the demo simulates a market (partial fills, cancels, rejects, orders left open,
/// a slow venue, risky orders) that trips IntelliSense's latency and risk alerts, and
/// `--seed` replays it: the same events and the same alerts, whatever the machine's timing.
#[test]
fn issue_23_the_demo_market_trips_the_alerts_and_its_seed_replays_it() {
    let (summary, events, alerts) = demo_with_seed("1");
    let (_, events_again, alerts_again) = demo_with_seed("1");
    assert_eq!(summary["seed"].as_u64(), Some(1), "{summary}");
    assert_eq!(summary["published"].as_u64(), Some(6000), "{summary}");
    assert_eq!(summary["lost"].as_u64(), Some(0), "{summary}");
    assert_eq!(events.len(), 6000);
    assert!(
        events == events_again,
        "the same seed published other events"
    );
    assert_eq!(alerts, alerts_again, "the same seed raised other alerts");

    // What the market holds, from the stream itself.
    let count = |prefix: &str| events.iter().filter(|e| e.starts_with(prefix)).count();
    let (quotes, orders) = (count("MarketDataUpdate "), count("OrderCreated "));
    assert!(
        quotes >= 4 * orders && orders > 500,
        "{quotes} quotes, {orders} orders"
    );
    assert!(count("OrderCancelled ") > 0 && count("OrderRejected ") > 0);
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("OrderFilled ") && e.contains("-2\"")),
        "no second fill of an order"
    );
    let ended: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| !e.starts_with("OrderCreated ") && !e.starts_with("MarketDataUpdate "))
        .filter_map(|e| e.split(' ').nth(1))
        .collect();
    let open = events
        .iter()
        .filter(|e| e.starts_with("OrderCreated "))
        .filter_map(|e| e.split(' ').nth(1))
        .filter(|id| !ended.contains(id))
        .count();
    assert!(open > 0, "every order got an answer");
    let market = &summary["market"];
    for field in [
        "partial_fills",
        "cancelled",
        "rejected",
        "open",
        "slow_venue",
    ] {
        assert!(market[field].as_u64().unwrap() > 0, "{field}: {summary}");
    }
    assert_eq!(market["open"].as_u64(), Some(open as u64), "{summary}");

    // The alerts: latency ones from the slow venue, risk ones of both levels.
    let kinds: std::collections::BTreeSet<&str> = alerts.iter().map(|a| a.0.as_str()).collect();
    assert!(
        kinds.contains("fill_latency") && kinds.contains("risk"),
        "{alerts:?}"
    );
    assert!(!kinds.contains("creation_latency"), "{alerts:?}");
    let fired = &summary["intellisense_alerts"]["by_kind"];
    assert!(
        fired["fill_latency"]["WARNING"].as_u64().unwrap() >= 1,
        "{summary}"
    );
    assert!(fired["risk"]["WARNING"].as_u64().unwrap() >= 1, "{summary}");
    assert!(
        fired["risk"]["CRITICAL"].as_u64().unwrap() >= 1,
        "{summary}"
    );
    assert!(!summary["intellisense_alerts"]["examples"]
        .as_array()
        .unwrap()
        .is_empty());
    // The latency distribution per symbol.
    let symbols = summary["latency_by_symbol"].as_object().unwrap();
    assert!(symbols.len() >= 3, "{summary}");
    for (symbol, latency) in symbols {
        let fill = &latency["fill"];
        let p = |q: &str| fill[q].as_f64().unwrap();
        assert!(fill["count"].as_u64().unwrap() > 0, "{symbol}: {latency}");
        assert!(
            p("p50_ms") > 0.1 && p("p50_ms") < 20.0,
            "{symbol}: {latency}"
        );
        assert!(p("p50_ms") <= p("p90_ms") && p("p90_ms") <= p("p99_ms"));
        assert!(p("p99_ms") <= p("max_ms"), "{symbol}: {latency}");
        assert!(
            latency["creation"]["p50_ms"].as_f64().unwrap() < 5.0,
            "{latency}"
        );
    }

    // One fill latency per order with a fill (its first fill), not one per fill: the two
    // consumers once paired a later partial fill again.
    let filled_orders: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| e.starts_with("OrderFilled "))
        .filter_map(|e| e.split(' ').nth(1))
        .collect();
    let fill_latencies: u64 = symbols
        .values()
        .map(|latency| latency["fill"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(fill_latencies, filled_orders.len() as u64, "{summary}");

    // Another seed, another market.
    let (_, other_events, _) = demo_with_seed("2");
    assert!(other_events != events, "seed 2 published what seed 1 did");
}
