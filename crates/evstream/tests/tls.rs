//! TLS to a real redis-server (`--tls-port`, certificates made in the test): shipping over
//! `rediss://` with the server's CA, mutual TLS with a client certificate, and clear
//! refusals: no client certificate where one is required, a wrong CA, TLS files with a
//! plain-text URL.

use std::time::Duration;

use evstream::config::Config;
use evstream::{publish, ship};
use evstream_testkit::RedisServer;

fn tls_config(redis: &RedisServer, ca: &RedisServer, client_cert: bool) -> Config {
    let mut config = Config::default();
    config.redis.url = redis.tls_url().unwrap();
    config.redis.tls_ca = Some(ca.tls_file("ca.pem"));
    if client_cert {
        config.redis.tls_cert = Some(redis.tls_file("client.pem"));
        config.redis.tls_key = Some(redis.tls_file("client-key.pem"));
    }
    config
}

fn ship_over(config: &Config, events: u64) -> ship::ShutdownReport {
    let (publisher, receiver) = publish::channel(config).unwrap();
    let shipper = ship::spawn(config, receiver).unwrap();
    for n in 0..events {
        publisher
            .publish("Tick", &serde_json::json!({ "n": n }), "")
            .unwrap();
    }
    drop(publisher);
    shipper.shutdown(Duration::from_secs(20))
}

/// Connects once and returns the error, if any.
fn connect(config: &Config) -> Result<(), String> {
    let client = config.redis.client().map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
}

#[test]
fn events_are_shipped_over_tls_with_the_servers_ca() {
    let redis = RedisServer::builder().tls(false).start().unwrap();
    let report = ship_over(&tls_config(&redis, &redis, false), 1000);
    assert_eq!(
        (report.shipped, report.undelivered),
        (1000, 0),
        "{report:?}"
    );
    assert_eq!(
        redis.command(&["XLEN", "events"]).unwrap().as_int(),
        Some(1000)
    );
}

/// Counts events through the consumer's exactly-once commit.
struct CountAll;

impl evstream::consume::Handler for CountAll {
    fn handle(
        &mut self,
        _event: &evstream::consume::Envelope,
        effects: &mut evstream::consume::Effects,
    ) -> Result<(), evstream::consume::HandlerError> {
        effects.count("seen", 1);
        Ok(())
    }
}

/// A consumer over TLS reads with the redis crate's connection (evstream's own reader is
/// plain TCP only): the same results.
#[test]
fn a_consumer_reads_and_commits_over_tls() {
    let redis = RedisServer::builder().tls(false).start().unwrap();
    let mut config = tls_config(&redis, &redis, false);
    let report = ship_over(&config, 3000);
    assert_eq!(report.shipped, 3000, "{report:?}");

    config.consume.block_ms = 100;
    let consumer = evstream::consume::Consumer::new(&config, "c1", CountAll).unwrap();
    let stats = consumer.stats();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(consumer.run(async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while stats.snapshot().processed < 3000 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }));
    assert_eq!(
        (report.processed, report.redis_errors),
        (3000, 0),
        "{report:?}"
    );
    let seen = redis
        .command(&["HGET", "events:consume:intellisense_group", "seen"])
        .unwrap()
        .as_text();
    assert_eq!(seen.as_deref(), Some("3000"));
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let redis = RedisServer::builder().tls(true).start().unwrap();
    let report = ship_over(&tls_config(&redis, &redis, true), 500);
    assert_eq!((report.shipped, report.undelivered), (500, 0), "{report:?}");

    let error = connect(&tls_config(&redis, &redis, false)).unwrap_err();
    assert!(!error.is_empty());
}

#[test]
fn a_wrong_ca_or_a_plain_url_is_refused_clearly() {
    let redis = RedisServer::builder().tls(false).start().unwrap();
    let other = RedisServer::builder().tls(false).start().unwrap();
    let error = connect(&tls_config(&redis, &other, false)).unwrap_err();
    assert!(
        error.to_ascii_lowercase().contains("certificate"),
        "a wrong CA: {error}"
    );

    let mut plain = tls_config(&redis, &redis, false);
    plain.redis.url = redis.url();
    let error = plain.redis.client().unwrap_err().to_string();
    assert!(error.contains("use rediss://"), "{error}");
}

#[test]
fn a_password_file_authenticates_and_never_shows() {
    let redis = RedisServer::builder()
        .password("s3cr/et:pw@1")
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "s3cr/et:pw@1\n").unwrap();
    let mut config = Config::default();
    config.redis.url = format!("redis://127.0.0.1:{}", redis.port());
    config.redis.password_file = Some(file.clone());
    connect(&config).unwrap();

    std::fs::write(&file, "wrong\n").unwrap();
    let error = connect(&config).unwrap_err();
    assert!(
        !error.contains("s3cr") && !error.contains("wrong"),
        "{error}"
    );
}

#[test]
fn issue_22_the_archive_reads_over_tls_through_redis_rs() {
    // Over rediss:// the archiver's lean reader (plain TCP only) steps aside: the entries are
    // read through redis-rs, and arrive the same.
    let redis = RedisServer::builder().tls(false).start().unwrap();
    let mut config = tls_config(&redis, &redis, false);
    ship_over(&config, 12_345);
    let archive = tempfile::tempdir().unwrap();
    config.archive.dir = Some(archive.path().to_owned());
    config.archive.batch = 1_000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let archiver = evstream::archive::Archiver::new(&config).unwrap();
    let report = runtime
        .block_on(async { tokio::spawn(archiver.run_once()).await })
        .unwrap()
        .unwrap();
    assert_eq!(report.events, 12_345);
    let reader = evstream::archive::read::ArchiveReader::open(archive.path()).unwrap();
    let records = reader.read_where(|_| true).unwrap();
    let sequences: Vec<i64> = records.iter().map(|r| r.sequence.unwrap()).collect();
    assert_eq!(sequences, (1..=12_345).collect::<Vec<i64>>());
}
