//! What an engineer writes by hand, for `scripts/bench-compare.sh`: one `XADD` per event
//! with the `redis` crate on tokio, each awaited before the next, the same envelope fields
//! and payload size as `evstream bench`. No batching, no retries, no duplicate protection.
//!
//! `cargo run --release -p evstream-cli --example naive_xadd -- URL EVENTS PAYLOAD_BYTES`
//! prints the events per second.

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).map_or("redis://127.0.0.1:6379", String::as_str);
    let events: u64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let payload: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(400);
    let data = format!("{{\"pad\":\"{}\"}}", "x".repeat(payload.saturating_sub(10)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = redis::Client::open(url)?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        let started = Instant::now();
        for n in 0..events {
            redis::cmd("XADD")
                .arg("naive")
                .arg("*")
                .arg("event_id")
                .arg(uuid::Uuid::now_v7().to_string())
                .arg("event_type")
                .arg("BenchEvent")
                .arg("version")
                .arg("v1")
                .arg("correlation_id")
                .arg("")
                .arg("timestamp_ns")
                .arg(1_764_130_000_123_456_789u64 + n)
                .arg("producer_id")
                .arg("naive")
                .arg("sequence")
                .arg(n + 1)
                .arg("data")
                .arg(&data)
                .query_async::<String>(&mut connection)
                .await?;
        }
        let rate = events as f64 / started.elapsed().as_secs_f64();
        println!("{rate:.0}");
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
