//! Issue 5: the schema registry: the shipped schemas, problems reported, migrations proven
//! by property tests, and the registry stored in a real Redis.

use std::collections::BTreeMap;
use std::path::PathBuf;

use evstream::schema::{self, Compatibility, Registry};
use evstream::SchemaError;
use evstream_testkit::RedisServer;
use proptest::prelude::*;
use serde_json::{json, Value};

fn shipped_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn shipped() -> Registry {
    Registry::from_dir(&shipped_dir()).unwrap()
}

fn files(pairs: &[(&str, Value)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(path, value)| ((*path).to_owned(), value.to_string()))
        .collect()
}

fn problems(result: Result<Registry, SchemaError>) -> Vec<String> {
    match result {
        Err(SchemaError::Invalid { problems }) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn the_shipped_schemas_load_and_migrate_order_created_to_v2() {
    let registry = shipped();
    let summary: Vec<(String, u32)> = registry
        .summary()
        .into_iter()
        .map(|t| (t.event_type, t.latest))
        .collect();
    assert_eq!(
        summary,
        [
            ("MarketDataUpdate".to_owned(), 1),
            ("OrderCreated".to_owned(), 2),
            ("OrderFilled".to_owned(), 1)
        ]
    );
    let mut v1 = json!({"orderId": "42", "symbol": "AAPL"});
    assert_eq!(registry.upgrade("OrderCreated", 1, &mut v1), Ok(2));
    assert_eq!(
        v1,
        json!({"orderId": "42", "symbol": "AAPL", "quantity": 0})
    );
    let mut with_quantity = json!({"orderId": "42", "symbol": "AAPL", "quantity": 7});
    registry
        .upgrade("OrderCreated", 1, &mut with_quantity)
        .unwrap();
    assert_eq!(with_quantity["quantity"], 7, "a present field is kept");

    let failure = registry
        .upgrade("OrderCreated", 3, &mut json!({}))
        .unwrap_err();
    assert_eq!(failure.code(), "unknown_version");
    assert!(failure.to_string().contains("OrderCreated v3"), "{failure}");
    let failure = registry
        .validate("OrderCreated", 2, &json!({"orderId": "1", "symbol": "X"}))
        .unwrap_err();
    assert_eq!(failure.code(), "invalid_schema");
    assert!(failure.to_string().contains("quantity"), "{failure}");
    assert_eq!(
        registry.validate("Nope", 1, &json!({})).unwrap_err().code(),
        "unknown_type"
    );
}

#[test]
fn every_problem_of_a_broken_directory_is_listed() {
    let object = json!({"type": "object"});
    let found = problems(Registry::from_files(files(&[
        ("A/v1.json", object.clone()),
        ("A/v2.json", object.clone()), // no A/v1-to-v2.json
        ("B/v1.json", object.clone()),
        ("B/v3.json", object.clone()), // no v2
        ("C/v1.json", json!({"type": 12})),
        ("D/v1.json", object.clone()),
        ("D/v1-to-v3.json", json!({"ops": []})),
        ("E/notes.txt", json!("hello")),
    ])));
    let expect = [
        "A: v2 needs the migration A/v1-to-v2.json",
        "B: versions must be consecutive from v1; missing v2",
        "C/v1.json: not a usable JSON Schema",
        "D/v1-to-v3.json: migrations go from vN to vN+1",
        "E/notes.txt: not a .json file",
    ];
    for text in expect {
        assert!(
            found.iter().any(|p| p.contains(text)),
            "missing {text:?} in {found:#?}"
        );
    }
}

#[test]
fn an_incompatible_version_is_refused_naming_type_versions_and_field() {
    let v1 = json!({"type": "object", "required": ["orderId"], "properties": {"orderId": {"type": "string"}}});
    let v2 = json!({"type": "object", "required": ["orderId"], "properties": {"orderId": {"type": "integer"}}});
    let found = problems(Registry::from_files(files(&[
        ("OrderCreated/v1.json", v1.clone()),
        ("OrderCreated/v2.json", v2.clone()),
        ("OrderCreated/v1-to-v2.json", json!({"ops": []})),
    ])));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("OrderCreated v2 cannot read v1 data (BACKWARD)"),
        "{found:?}"
    );
    assert!(found[0].contains("\"orderId\""), "{found:?}");

    // The same change with a migration that converts the field, or under NONE, is accepted.
    Registry::from_files(files(&[
        ("OrderCreated/v1.json", v1.clone()),
        ("OrderCreated/v2.json", v2.clone()),
        (
            "OrderCreated/v1-to-v2.json",
            json!({"ops": [{"op": "convert", "path": "/orderId", "to": "integer"}]}),
        ),
    ]))
    .unwrap();
    let none = Registry::from_files(files(&[
        ("OrderCreated/config.json", json!({"compatibility": "NONE"})),
        ("OrderCreated/v1.json", v1),
        ("OrderCreated/v2.json", v2),
        ("OrderCreated/v1-to-v2.json", json!({"ops": []})),
    ]))
    .unwrap();
    assert_eq!(none.summary()[0].compatibility, Compatibility::None);
}

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![(0u32..1_000_000).prop_map(f64::from), (0.0f64..1e9)]
}

/// Payloads valid under `OrderCreated` v1: required fields, optional typed ones, and extra
/// fields of any name and value.
fn order_created_v1() -> impl Strategy<Value = Value> {
    let extra = prop::collection::btree_map(
        "[a-z]{1,8}".prop_filter("not a defined field", |k| {
            !["orderId", "symbol", "quantity", "price", "side"].contains(&k.as_str())
        }),
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ],
        0..4,
    );
    (
        "[A-Za-z0-9-]{1,12}",
        "[A-Z]{1,5}",
        prop::option::of(finite()),
        prop::option::of(finite()),
        prop::option::of(prop_oneof![Just("BUY"), Just("SELL")]),
        extra,
    )
        .prop_map(|(order_id, symbol, quantity, price, side, extra)| {
            let mut data = json!({"orderId": order_id, "symbol": symbol});
            let object = data.as_object_mut().unwrap();
            if let Some(quantity) = quantity {
                object.insert("quantity".into(), quantity.into());
            }
            if let Some(price) = price {
                object.insert("price".into(), price.into());
            }
            if let Some(side) = side {
                object.insert("side".into(), side.into());
            }
            object.extend(extra);
            data
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_valid_v1_payload_migrates_to_a_valid_latest_payload(mut data in order_created_v1()) {
        let registry = shipped();
        registry.validate("OrderCreated", 1, &data).unwrap();
        let latest = registry.upgrade("OrderCreated", 1, &mut data).unwrap();
        prop_assert_eq!(latest, 2);
        prop_assert!(registry.validate("OrderCreated", 2, &data).is_ok(), "{}", data);
    }
}

#[test]
fn the_registry_is_pushed_to_redis_and_registered_versions_never_change() {
    let server = RedisServer::start().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = redis::Client::open(server.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let registry = shipped();
        let added = schema::push(&mut connection, &registry).await.unwrap();
        assert_eq!(added.len(), registry.files().len());
        assert!(
            schema::push(&mut connection, &registry)
                .await
                .unwrap()
                .is_empty(),
            "idempotent"
        );
        let loaded = schema::load(&mut connection).await.unwrap();
        assert_eq!(loaded.summary(), registry.summary());

        // Changing a registered version is refused, naming the file.
        let mut changed = registry.files().clone();
        changed.insert(
            "OrderFilled/v1.json".into(),
            json!({"type": "object", "required": ["orderId"]}).to_string(),
        );
        let changed = Registry::from_files(changed).unwrap();
        let error = schema::push(&mut connection, &changed)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("OrderFilled/v1.json differs"), "{error}");

        // A new compatible version is added; the revision counter moves.
        let mut grown = registry.files().clone();
        grown.insert(
            "OrderFilled/v2.json".into(),
            std::fs::read_to_string(shipped_dir().join("OrderFilled/v1.json")).unwrap(),
        );
        grown.insert("OrderFilled/v1-to-v2.json".into(), r#"{"ops": []}"#.into());
        let grown = Registry::from_files(grown).unwrap();
        assert_eq!(
            schema::push(&mut connection, &grown).await.unwrap().len(),
            2
        );
        let revision: u64 = redis::cmd("GET")
            .arg(schema::REDIS_REVISION_KEY)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(revision, 2);
        assert_eq!(
            schema::load(&mut connection)
                .await
                .unwrap()
                .latest("OrderFilled"),
            Some(2)
        );
    });
}

/// Keeps what the handler was given.
struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<(String, u32, Value)>>>);

impl evstream::consume::Handler for Recorder {
    fn handle(
        &mut self,
        event: &evstream::consume::Envelope,
        _: &mut evstream::consume::Effects,
    ) -> Result<(), evstream::consume::HandlerError> {
        self.0.lock().unwrap().push((
            event.event_type.clone(),
            event.version,
            serde_json::from_str(&event.data)?,
        ));
        Ok(())
    }
}

#[test]
fn consumers_get_events_migrated_to_the_latest_version_and_unknown_ones_are_dead_lettered() {
    use redis::Commands;
    let server = RedisServer::start().unwrap();
    let mut connection = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let append = |connection: &mut redis::Connection, version: &str, data: &str| {
        let id: String = connection
            .xadd(
                "events",
                "*",
                &[
                    ("event_id", uuid::Uuid::now_v7().to_string()),
                    ("event_type", "OrderCreated".to_owned()),
                    ("version", version.to_owned()),
                    ("correlation_id", "ord-1".to_owned()),
                    ("timestamp_ns", "1764000000000000000".to_owned()),
                    ("producer_id", "engine:test".to_owned()),
                    ("sequence", "1".to_owned()),
                    ("data", data.to_owned()),
                ],
            )
            .unwrap();
        id
    };
    append(&mut connection, "v1", r#"{"orderId":"1","symbol":"AAPL"}"#);
    let v3 = append(
        &mut connection,
        "v3",
        r#"{"orderId":"2","symbol":"AAPL","quantity":5}"#,
    );
    let invalid = append(&mut connection, "v2", r#"{"orderId":"3","symbol":"AAPL"}"#);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = redis::Client::open(server.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        schema::push(&mut connection, &shipped()).await.unwrap();
    });

    let mut config = evstream::Config::default();
    config.redis.url = server.url();
    config.consume.group = "g".into();
    config.consume.min_idle_ms = 100;
    config.consume.block_ms = 50;
    config.consume.max_deliveries = 2;
    let seen = std::sync::Arc::default();
    let consumer =
        evstream::consume::Consumer::new(&config, "c1", Recorder(std::sync::Arc::clone(&seen)))
            .unwrap()
            .with_schemas_from_redis();
    let stats = consumer.stats();
    let report = runtime.block_on(consumer.run(async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while stats.snapshot().dead_lettered < 2 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }));
    assert_eq!(
        (report.processed, report.dead_lettered),
        (1, 2),
        "{report:?}"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(
        *seen,
        vec![(
            "OrderCreated".to_owned(),
            2,
            json!({"orderId": "1", "symbol": "AAPL", "quantity": 0})
        )]
    );
    let dead: redis::streams::StreamRangeReply = connection.xrange_all("events:dlq").unwrap();
    let reasons: BTreeMap<String, String> = dead
        .ids
        .iter()
        .map(|e| {
            (
                e.get("dlq_source_id").unwrap(),
                e.get("dlq_reason").unwrap(),
            )
        })
        .collect();
    assert_eq!(reasons[&v3], "unknown_version");
    assert_eq!(reasons[&invalid], "invalid_schema");
}

#[test]
fn the_shipper_validates_strictly_or_by_sample_off_the_publish_path() {
    use evstream::config::Validation;
    use redis::Commands;
    for mode in [Validation::Strict, Validation::Sample] {
        let server = RedisServer::start().unwrap();
        let mut config = evstream::Config::default();
        config.redis.url = server.url();
        config.ship.validation = mode;
        config.ship.validation_sample_rate = 1.0;
        config.ship.schemas_dir = Some(shipped_dir());
        let (publisher, receiver) = evstream::publish::channel(&config).unwrap();
        let shipper = evstream::ship::spawn(&config, receiver).unwrap();
        publisher
            .publish_raw(
                "OrderCreated",
                br#"{"orderId":"1","symbol":"AAPL"}"#,
                "ord-1",
            )
            .unwrap();
        publisher
            .publish_raw("OrderCreated", br#"{"orderId":"2"}"#, "ord-2")
            .unwrap();
        publisher.publish_raw("Mystery", b"{}", "ord-3").unwrap();
        // Versioned: valid as v2 (which requires quantity), and a version nobody declared.
        publisher
            .publish_raw_versioned(
                "OrderCreated",
                2,
                br#"{"orderId":"4","symbol":"AAPL","quantity":5}"#,
                "ord-4",
            )
            .unwrap();
        publisher
            .publish_raw_versioned(
                "OrderCreated",
                9,
                br#"{"orderId":"5","symbol":"AAPL"}"#,
                "ord-5",
            )
            .unwrap();
        drop(publisher);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let health = loop {
            let health = shipper.health();
            let dead: u64 = health.dead_letters.values().sum();
            if health.shipped + dead >= 5 || std::time::Instant::now() > deadline {
                break health;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let report = shipper.shutdown(std::time::Duration::from_secs(10));
        assert_eq!(report.undelivered, 0);

        let mut connection = redis::Client::open(server.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let shipped: usize = connection.xlen("events").unwrap();
        let dead: redis::streams::StreamRangeReply = connection.xrange_all("events:dlq").unwrap();
        let reasons: Vec<String> = dead
            .ids
            .iter()
            .map(|e| e.get("dlq_reason").unwrap())
            .collect();
        let stream: redis::streams::StreamRangeReply = connection.xrange_all("events").unwrap();
        let versions: Vec<String> = stream
            .ids
            .iter()
            .map(|e| e.get("version").unwrap())
            .collect();
        match mode {
            Validation::Strict => {
                assert_eq!(shipped, 2);
                assert_eq!(versions, ["v1", "v2"]);
                assert_eq!(
                    reasons,
                    ["invalid_schema", "unknown_type", "unknown_version"]
                );
                let v9: Vec<String> = dead.ids.iter().map(|e| e.get("version").unwrap()).collect();
                assert_eq!(v9[2], "v9", "the dead letter keeps the version published");
            }
            _ => {
                assert_eq!(shipped, 5, "sample mode ships everything");
                assert_eq!(versions, ["v1", "v1", "v1", "v2", "v9"]);
                assert!(reasons.is_empty());
                assert_eq!(health.schema_violations, 3, "{health:?}");
            }
        }
    }
}

#[test]
fn a_running_consumer_learns_a_version_pushed_after_it_started() {
    use redis::Commands;
    let server = RedisServer::start().unwrap();
    let mut connection = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let push = |files: BTreeMap<String, String>| {
        runtime.block_on(async {
            let client = redis::Client::open(server.url()).unwrap();
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            schema::push(&mut connection, &Registry::from_files(files).unwrap())
                .await
                .unwrap();
        })
    };
    let v1 = json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}});
    push(files(&[("Tick/v1.json", v1.clone())]));

    let mut config = evstream::Config::default();
    config.redis.url = server.url();
    config.consume.group = "g".into();
    config.consume.block_ms = 50;
    config.consume.min_idle_ms = 200;
    // Until the registry is re-read (every 5 s), the v2 event fails and is retried.
    config.consume.max_deliveries = 1000;
    let seen = std::sync::Arc::default();
    let consumer =
        evstream::consume::Consumer::new(&config, "c1", Recorder(std::sync::Arc::clone(&seen)))
            .unwrap()
            .with_schemas_from_redis();
    let stats = consumer.stats();
    let running = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(consumer.run(async move {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                while stats.snapshot().processed < 1 && std::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }))
    });
    // v2 is pushed after the consumer started; then an event of v2 arrives.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let v2 = json!({"type": "object", "required": ["n", "m"],
                    "properties": {"n": {"type": "integer"}, "m": {"type": "integer"}}});
    push(files(&[
        ("Tick/v1.json", v1),
        ("Tick/v2.json", v2),
        (
            "Tick/v1-to-v2.json",
            json!({"ops": [{"op": "add", "path": "/m", "value": 0}]}),
        ),
    ]));
    let _: String = connection
        .xadd(
            "events",
            "*",
            &[
                ("event_id", uuid::Uuid::now_v7().to_string()),
                ("event_type", "Tick".to_owned()),
                ("version", "v2".to_owned()),
                ("correlation_id", String::new()),
                ("timestamp_ns", "1".to_owned()),
                ("producer_id", "p".to_owned()),
                ("sequence", "1".to_owned()),
                ("data", r#"{"n":1,"m":2}"#.to_owned()),
            ],
        )
        .unwrap();
    let report = running.join().unwrap();
    assert_eq!(
        report.processed, 1,
        "v2 learned without a restart: {report:?}"
    );
    assert_eq!(seen.lock().unwrap()[0].1, 2);
}

/// Issue 20, move 7: the shipper follows the registry in Redis as the consumer does (its
/// revision checked every 5 s), so a version pushed while it runs is learned without a
/// reconnect. Before, it re-read the registry only when it connected again.
#[test]
fn a_running_shipper_learns_a_version_pushed_after_it_started() {
    use evstream::config::Validation;
    use redis::Commands;
    let server = RedisServer::start().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let push = |files: BTreeMap<String, String>| {
        runtime.block_on(async {
            let client = redis::Client::open(server.url()).unwrap();
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            schema::push(&mut connection, &Registry::from_files(files).unwrap())
                .await
                .unwrap();
        })
    };
    let v1 = json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}});
    push(files(&[("Tick/v1.json", v1.clone())]));

    let mut config = evstream::Config::default();
    config.redis.url = server.url();
    config.ship.validation = Validation::Strict;
    let (publisher, receiver) = evstream::publish::channel(&config).unwrap();
    let shipper = evstream::ship::spawn(&config, receiver).unwrap();
    let wait_for = |what: &str, done: &dyn Fn(&evstream::ship::ShipperHealth) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let health = shipper.health();
            if done(&health) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{what}: {health:?}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    // The shipper connects (and reads the registry) when it has a first batch to send, which
    // is checked without a registry (as before): a valid v1 event first.
    publisher
        .publish_raw_versioned("Tick", 1, br#"{"n":0}"#, "t-0")
        .unwrap();
    wait_for("the v1 event shipped", &|h| h.shipped == 1);
    // v2 is not registered yet: dead-lettered as an unknown version.
    publisher
        .publish_raw_versioned("Tick", 2, br#"{"n":1,"m":2}"#, "t-1")
        .unwrap();
    wait_for("the first v2 dead-lettered", &|h| {
        h.dead_letters.get("unknown_version") == Some(&1)
    });
    let v2 = json!({"type": "object", "required": ["n", "m"],
                    "properties": {"n": {"type": "integer"}, "m": {"type": "integer"}}});
    push(files(&[
        ("Tick/v1.json", v1),
        ("Tick/v2.json", v2),
        (
            "Tick/v1-to-v2.json",
            json!({"ops": [{"op": "add", "path": "/m", "value": 0}]}),
        ),
    ]));
    // The revision is checked every 5 s.
    std::thread::sleep(std::time::Duration::from_millis(5500));
    publisher
        .publish_raw_versioned("Tick", 2, br#"{"n":2,"m":3}"#, "t-2")
        .unwrap();
    wait_for("the second v2 shipped", &|h| h.shipped == 2);
    drop(publisher);
    let report = shipper.shutdown(std::time::Duration::from_secs(5));
    assert_eq!((report.shipped, report.undelivered), (2, 0), "{report:?}");
    let mut connection = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let shipped: usize = connection.xlen("events").unwrap();
    assert_eq!(shipped, 2, "learned v2 without a reconnect");
}
