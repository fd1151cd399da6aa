//! The C ABI from C++ and from Rust: the C++ example built with the system g++ against the
//! static library, run against a private redis-server, and the stream read back; and every
//! refusal the boundary promises (null and foreign pointers, bad strings, closed handles).

use std::ffi::{c_char, CStr};
use std::process::Command;
use std::ptr;

use evstream_ffi::*;
use evstream_testkit::RedisServer;

mod common;
use common::{compile, last_error, s, static_library, workspace};

#[test]
fn the_cpp_example_publishes_every_event_with_the_documented_envelope() {
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("order_flow");
    compile("examples/cpp/order_flow.cpp", &binary);
    let output = Command::new(&binary)
        .args([&redis.url(), "500", "3"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["published"], 4500, "{summary}");
    assert_eq!(summary["shipped"], 4500, "{summary}");
    assert_eq!(summary["undelivered"], 0, "{summary}");

    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("events")
        .arg("-")
        .arg("+")
        .query(&mut connection)
        .unwrap();
    assert_eq!(reply.ids.len(), 4500);
    let mut ids = std::collections::HashSet::new();
    let mut per_correlation = std::collections::HashMap::<String, Vec<String>>::new();
    let mut last_sequence = 0u64;
    for entry in &reply.ids {
        let field = |name: &str| -> String {
            redis::from_redis_value(
                entry
                    .map
                    .get(name)
                    .unwrap_or_else(|| panic!("no {name} in {entry:?}"))
                    .clone(),
            )
            .unwrap()
        };
        assert!(ids.insert(field("event_id")), "duplicate event id");
        assert_eq!(field("version"), "v1");
        assert!(field("producer_id").starts_with("cpp-engine:"));
        assert!(field("timestamp_ns").parse::<u64>().unwrap() > 1_700_000_000_000_000_000);
        let sequence: u64 = field("sequence").parse().unwrap();
        assert_eq!(
            sequence,
            last_sequence + 1,
            "one producer: consecutive sequences"
        );
        last_sequence = sequence;
        let data: serde_json::Value = serde_json::from_str(&field("data")).unwrap();
        let event_type = field("event_type");
        match event_type.as_str() {
            "OrderCreated" => {
                assert!(data["orderId"].as_str().unwrap().starts_with('O'));
                assert!(matches!(data["side"].as_str(), Some("BUY" | "SELL")));
            }
            "OrderFilled" => assert!(data["fillId"].as_str().unwrap().ends_with("-F1")),
            "MarketDataUpdate" => assert!(data["bid"].as_f64().unwrap() > 0.0),
            other => panic!("unexpected event type {other}"),
        }
        per_correlation
            .entry(field("correlation_id"))
            .or_default()
            .push(event_type);
    }
    assert_eq!(per_correlation.len(), 1500);
    for (correlation, types) in per_correlation {
        assert_eq!(
            types,
            ["MarketDataUpdate", "OrderCreated", "OrderFilled"],
            "{correlation}"
        );
    }
}

#[test]
fn the_cmake_project_builds_and_runs_the_example() {
    let build = tempfile::tempdir().unwrap();
    let dir = build.path();
    let source = workspace().join("examples/cpp");
    let lib_dir = static_library().parent().unwrap().to_owned();
    let run = |command: &mut Command| {
        let output = command
            .output()
            .expect("cmake (Debian: apt-get install cmake)");
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(Command::new("cmake")
        .arg("-S")
        .arg(&source)
        .arg("-B")
        .arg(dir)
        .arg(format!("-DEVSTREAM_LIB_DIR={}", lib_dir.display())));
    run(Command::new("cmake").arg("--build").arg(dir));
    let redis = RedisServer::start().unwrap();
    let output = Command::new(dir.join("order_flow"))
        .args([&redis.url(), "20", "2"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["shipped"], 120, "{summary}");
}

#[test]
fn the_latency_harness_builds_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    compile("examples/cpp/latency.cpp", &dir.path().join("latency"));
}

#[test]
fn the_boundary_refuses_bad_arguments_with_a_code_and_a_message() {
    let redis = RedisServer::start().unwrap();
    let url = std::ffi::CString::new(redis.url()).unwrap();
    let options = evstream_options {
        stream: c"ffi-events".as_ptr(),
        ring_capacity: 1024,
        slot_bytes: 256,
        max_event_bytes: 512,
        journal_dir: ptr::null(),
        producer_name: ptr::null(),
    };
    let mut status = -1;
    // SAFETY: valid strings, options and status.
    let handle = unsafe { evstream_create(url.as_ptr(), &options, &mut status) };
    assert_eq!(status, EVSTREAM_OK);
    assert!(!handle.is_null());
    let json = br#"{"orderId":"1"}"#;

    // SAFETY: every pointer below is valid, or deliberately null or foreign, which the
    // boundary must refuse without dereferencing beyond the handle's tag.
    unsafe {
        assert_eq!(
            evstream_publish(
                handle,
                s("OrderCreated"),
                s("c-1"),
                json.as_ptr(),
                json.len()
            ),
            EVSTREAM_OK
        );
        assert_eq!(
            evstream_publish(
                ptr::null(),
                s("OrderCreated"),
                s(""),
                json.as_ptr(),
                json.len()
            ),
            EVSTREAM_NULL_ARGUMENT
        );
        assert_eq!(last_error(), "handle is null");
        let null_json = evstream_publish(handle, s("OrderCreated"), s(""), ptr::null(), 5);
        assert_eq!(null_json, EVSTREAM_NULL_ARGUMENT);
        assert!(last_error().contains("json is null"), "{}", last_error());
        assert_eq!(
            evstream_publish(handle, s("Bad Type!"), s(""), json.as_ptr(), json.len()),
            EVSTREAM_INVALID
        );
        assert!(last_error().contains("event type"), "{}", last_error());
        let not_utf8 = evstream_str {
            ptr: b"\xff\xfe".as_ptr().cast(),
            len: 2,
        };
        assert_eq!(
            evstream_publish(handle, s("T"), not_utf8, json.as_ptr(), json.len()),
            EVSTREAM_INVALID
        );
        assert_eq!(last_error(), "correlation_id is not UTF-8");
        let big = vec![b' '; 600];
        assert_eq!(
            evstream_publish(handle, s("T"), s(""), big.as_ptr(), big.len()),
            EVSTREAM_TOO_LARGE
        );
        assert!(last_error().contains("600 bytes"), "{}", last_error());

        let mut order = evstream_order_created {
            correlation_id: s("c-2"),
            order_id: s("2"),
            symbol: s("AAPL"),
            quantity: 10.0,
            price: 1.5,
            side: 7,
        };
        assert_eq!(evstream_on_order_created(handle, &order), EVSTREAM_INVALID);
        assert!(last_error().contains("side is 7"), "{}", last_error());
        order.side = EVSTREAM_SIDE_SELL;
        assert_eq!(evstream_on_order_created(handle, &order), EVSTREAM_OK);
        assert_eq!(
            evstream_on_order_created(handle, ptr::null()),
            EVSTREAM_NULL_ARGUMENT
        );
        let fill = evstream_order_filled {
            correlation_id: s("c-2"),
            order_id: s("2"),
            fill_id: s("2-1"),
            quantity: 10.0,
            price: 1.5,
        };
        assert_eq!(evstream_on_order_filled(handle, &fill), EVSTREAM_OK);
        let mut update = evstream_market_data {
            correlation_id: s(""),
            symbol: not_utf8,
            bid: 1.5,
            ask: 1.6,
            last: 1.55,
            bid_size: 100.0,
            ask_size: 200.0,
            exchange_ts_ns: 1_764_000_000_000_000_000,
        };
        assert_eq!(evstream_on_market_data(handle, &update), EVSTREAM_INVALID);
        assert_eq!(last_error(), "symbol is not UTF-8");
        update.symbol = s("AAPL");
        assert_eq!(evstream_on_market_data(handle, &update), EVSTREAM_OK);
        assert_eq!(
            evstream_on_market_data(handle, ptr::null()),
            EVSTREAM_NULL_ARGUMENT
        );
        assert_eq!(
            evstream_publish_versioned(
                handle,
                s("OrderCreated"),
                2,
                s("c-3"),
                json.as_ptr(),
                json.len()
            ),
            EVSTREAM_OK
        );
        assert_eq!(
            evstream_publish_versioned(
                handle,
                s("OrderCreated"),
                0,
                s("c-3"),
                json.as_ptr(),
                json.len()
            ),
            EVSTREAM_INVALID
        );
        assert!(last_error().contains("version 0"), "{}", last_error());

        // A struct that is not a handle is refused by its tag.
        let foreign = [0u64; 16];
        assert_eq!(
            evstream_publish(
                foreign.as_ptr().cast(),
                s("T"),
                s(""),
                json.as_ptr(),
                json.len()
            ),
            EVSTREAM_BAD_HANDLE
        );

        let mut health = evstream_health::default();
        assert_eq!(evstream_health_snapshot(handle, &mut health), EVSTREAM_OK);
        assert_eq!(health.published, 5);
        assert_eq!(health.refused, 3); // the invalid type and version, the too large payload
        assert_eq!(health.ring_capacity, 1024);
        assert_eq!(
            evstream_health_snapshot(handle, ptr::null_mut()),
            EVSTREAM_NULL_ARGUMENT
        );

        let mut report = evstream_shutdown_report::default();
        assert_eq!(evstream_shutdown(handle, 5000, &mut report), EVSTREAM_OK);
        assert_eq!((report.shipped, report.undelivered), (5, 0));
        assert_eq!(
            evstream_publish(handle, s("T"), s(""), json.as_ptr(), json.len()),
            EVSTREAM_CLOSED
        );
        assert_eq!(evstream_shutdown(handle, 0, &mut report), EVSTREAM_OK);
        assert_eq!(report.shipped, 5, "a second shutdown reports the first");
        assert_eq!(evstream_health_snapshot(handle, &mut health), EVSTREAM_OK);
        assert_eq!((health.shut_down, health.shipped), (1, 5));
        evstream_destroy(handle);

        let mut status = -1;
        let bad = evstream_create(c"not a url".as_ptr(), ptr::null(), &mut status);
        assert!(bad.is_null());
        assert_eq!(status, EVSTREAM_CONFIG);
        assert!(
            last_error().contains("URL did not parse"),
            "{}",
            last_error()
        );
        let missing =
            evstream_create_from_file(c"/nonexistent/evstream.toml".as_ptr(), &mut status);
        assert!(missing.is_null());
        assert_eq!(status, EVSTREAM_CONFIG);
        assert!(
            last_error().contains("/nonexistent/evstream.toml"),
            "{}",
            last_error()
        );
        assert!(evstream_create(ptr::null(), ptr::null(), ptr::null_mut()).is_null());
        assert_eq!(last_error(), "redis_url is null");
        evstream_destroy(ptr::null_mut());
        assert_eq!(
            last_error(),
            "redis_url is null",
            "destroy(NULL) leaves the last error alone"
        );
        assert_eq!(
            CStr::from_ptr(evstream_status_name(EVSTREAM_FULL)),
            c"ring full"
        );
    }
    let entries = redis::cmd("XRANGE")
        .arg("ffi-events")
        .arg("-")
        .arg("+")
        .query::<Vec<(String, std::collections::HashMap<String, String>)>>(
            &mut redis::Client::open(redis.url())
                .unwrap()
                .get_connection()
                .unwrap(),
        )
        .unwrap();
    let versions: Vec<&str> = entries
        .iter()
        .map(|(_, fields)| fields["version"].as_str())
        .collect();
    assert_eq!(versions, ["v1", "v1", "v1", "v1", "v2"]);
    // The typed calls' JSON, written by the shipper from the binary copy.
    let data: Vec<&str> = entries[1..4]
        .iter()
        .map(|(_, fields)| fields["data"].as_str())
        .collect();
    assert_eq!(
        data,
        [
            r#"{"orderId":"2","symbol":"AAPL","quantity":10.0,"price":1.5,"side":"SELL"}"#,
            r#"{"orderId":"2","fillId":"2-1","quantity":10.0,"price":1.5}"#,
            r#"{"symbol":"AAPL","bid":1.5,"ask":1.6,"last":1.55,"bidSize":100.0,"askSize":200.0,"exchangeTsNs":1764000000000000000}"#,
        ]
    );
}

#[test]
fn a_long_message_is_cut_to_the_buffer_and_its_length_reported() {
    // SAFETY: a null handle is refused; buffers are valid for their stated sizes.
    unsafe {
        evstream_publish(ptr::null(), s("T"), s(""), ptr::null(), 0);
        let full = evstream_last_error(ptr::null_mut(), 0);
        assert_eq!(full, "handle is null".len());
        let mut small = [0x7f as c_char; 7];
        assert_eq!(evstream_last_error(small.as_mut_ptr(), small.len()), full);
        assert_eq!(CStr::from_ptr(small.as_ptr()), c"handle");
    }
}

/// Issue 19, item 3: the C++ snippets of docs/cpp.md compile (and link) as they are written.
#[test]
fn issue_19_the_cpp_snippets_in_the_docs_compile() {
    let doc = std::fs::read_to_string(workspace().join("docs/cpp.md")).unwrap();
    let mut snippets = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```cpp" | "```c++") => current = Some(String::new()),
            (Some(_), "```") => snippets.extend(current.take()),
            (Some(text), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(!snippets.is_empty(), "no ```cpp block in docs/cpp.md");
    let dir = tempfile::tempdir().unwrap();
    for (n, snippet) in snippets.iter().enumerate() {
        let source = dir.path().join(format!("snippet_{n}.cpp"));
        std::fs::write(&source, snippet).unwrap();
        compile(
            source.to_str().unwrap(),
            &dir.path().join(format!("snippet_{n}")),
        );
    }
}
