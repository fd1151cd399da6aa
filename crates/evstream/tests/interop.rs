//! Issue 3: a Python `redis` client reads the stream and the dead-letter stream by the
//! documented field names alone (`tests/interop/read_stream.py`).
//!
//! Needs `python3` with the `redis` package; `scripts/test.sh` installs it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use evstream::config::Config;
use evstream::publish::{self, OrderCreated, OrderFilled, Side};
use evstream::ship;
use evstream_testkit::RedisServer;

#[test]
fn python_redis_client_reads_stream_and_dead_letters_by_the_documented_fields() {
    let redis = RedisServer::start().unwrap();
    let mut config = Config::default();
    config.redis.url = redis.url();
    config.redis.stream = "interop".into();
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();
    for n in 0..200 {
        let order_id = format!("o-{n}");
        let correlation_id = format!("c-{n}");
        publisher
            .on_order_created(&OrderCreated {
                correlation_id: &correlation_id,
                order_id: &order_id,
                symbol: "AAPL",
                quantity: 10.0,
                price: 189.5,
                side: Side::Sell,
            })
            .unwrap();
        publisher
            .on_order_filled(&OrderFilled {
                correlation_id: &correlation_id,
                order_id: &order_id,
                fill_id: "f-1",
                quantity: 10.0,
                price: 189.5,
            })
            .unwrap();
        if n % 50 == 0 {
            publisher
                .publish_raw("Garbled", b"{not json", &correlation_id)
                .unwrap();
        }
    }
    let report = shipper.shutdown(Duration::from_secs(30));
    assert_eq!(
        (report.shipped, report.dead_lettered, report.undelivered),
        (400, 4, 0)
    );

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/read_stream.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(redis.url())
        .arg("interop")
        .output()
        .expect("python3 must be installed (scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python reader found problems (needs `pip install redis`; scripts/test.sh does):\n{stdout}\n{stderr}"
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["entries"], 400);
    assert_eq!(summary["dead_letters"], 4);
    assert_eq!(summary["reasons"]["invalid_json"], 4);
    assert_eq!(summary["problems"].as_array().map(Vec::len), Some(0));
}
