//! Issue 8: a partitioned stream on a Redis Cluster (three primaries with a replica each, from
//! the testkit): every event once, each correlation's events in one partition and in order,
//! the partitions spread over the primaries; a primary killed while publishing and consuming
//! loses nothing and duplicates nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use evstream::audit::{audit_stream, Audit};
use evstream::config::{Config, RingConfig};
use evstream::consume::{ConsumeStats, Consumer, Effects, Envelope, Handler, HandlerError};
use evstream::keys;
use evstream::redis::key_slot;
use evstream::{publish, ship, PublishError, Publisher};
use evstream_testkit::{ClusterSet, Reply};
use redis::streams::StreamId;
use redis::Value;

/// Distinct correlation ids: enough to reach every partition.
const CORRELATIONS: u64 = 48;

fn config(url: &str, partitions: u16) -> Config {
    let mut config = Config::default();
    config.redis.url = url.to_owned();
    config.redis.partitions = Some(partitions);
    config.ring = RingConfig::default()
        .set_capacity(65_536)
        .set_slot_bytes(256);
    config.ship.max_len = 0;
    config.consume.block_ms = 100;
    config.consume.min_idle_ms = 2_000;
    config
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// Publishes `total` events `{"c":…,"n":…}` with correlation ids `c0`…`c47`, in bursts of 100
/// every `pause` (or at full speed); returns the refusals seen (full ring).
fn publish_orders(publisher: &Publisher, total: u64, pause: Option<Duration>) -> u64 {
    let mut refused = 0;
    for n in 0..total {
        let c = n % CORRELATIONS;
        let data = serde_json::json!({"c": c, "n": n});
        loop {
            match publisher.publish("Order", &data, &format!("c{c}")) {
                Ok(()) => break,
                Err(PublishError::RingFull { .. }) => {
                    refused += 1;
                    thread::sleep(Duration::from_micros(200));
                }
                Err(other) => panic!("unexpected refusal: {other}"),
            }
        }
        if let (Some(pause), 99) = (pause, n % 100) {
            thread::sleep(pause);
        }
    }
    refused
}

/// What [`audit_partitions`] found.
struct Found {
    audit: Audit,
    /// Per correlation id, the partitions it was found in.
    partitions_of: BTreeMap<u64, Vec<usize>>,
    /// Per partition, the longest time between two consecutive entries (by their ids).
    longest_gap: Vec<Duration>,
}

/// Reads every partition from the primary holding it: the audit of all of them, per
/// correlation id the partitions it was found in and whether its events were in order, and
/// each partition's longest gap between appends.
fn audit_partitions(cluster: &ClusterSet, config: &Config) -> Found {
    let mut total = Audit::default();
    let mut longest_gap = Vec::new();
    let mut found_in: BTreeMap<u64, HashSet<usize>> = BTreeMap::new();
    let mut misordered = 0;
    for (index, key) in config.redis.stream_keys().iter().enumerate() {
        let url = cluster.primary_for(key).unwrap().url();
        let mut next: HashMap<u64, u64> = HashMap::new();
        let (mut last_ms, mut gap) = (None::<u64>, 0);
        let audit = block_on(async {
            let mut connection = redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            audit_stream(&mut connection, key, 5000, |entry: &StreamId, data| {
                let ms = entry.id.split('-').next().and_then(|ms| ms.parse().ok());
                if let (Some(last), Some(ms)) = (last_ms, ms) {
                    gap = gap.max(ms - last);
                }
                last_ms = ms.or(last_ms);
                let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
                    return false;
                };
                let (Some(c), Some(n)) = (value["c"].as_u64(), value["n"].as_u64()) else {
                    return false;
                };
                found_in.entry(c).or_default().insert(index);
                let expected = next.entry(c).or_insert(c);
                if n != *expected {
                    misordered += 1;
                }
                *expected = n + CORRELATIONS;
                matches!(entry.map.get("correlation_id"), Some(Value::BulkString(id)) if *id == format!("c{c}").as_bytes())
            })
            .await
            .unwrap()
        });
        total.add_partition(audit);
        longest_gap.push(Duration::from_millis(gap));
    }
    assert_eq!(misordered, 0, "each correlation's events in publish order");
    let partitions_of = found_in
        .into_iter()
        .map(|(c, parts)| (c, parts.into_iter().collect()))
        .collect();
    Found {
        audit: total,
        partitions_of,
        longest_gap,
    }
}

fn assert_exactly_once(audit: &Audit, total: u64) {
    assert_eq!(audit.entries, total, "{audit:?}");
    assert_eq!(audit.duplicates, 0, "{audit:?}");
    assert_eq!(audit.duplicate_event_ids, 0, "{audit:?}");
    assert_eq!(audit.out_of_order, 0, "{audit:?}");
    assert_eq!(audit.corrupt, 0, "{audit:?}");
    let producer = audit.producers.values().next().unwrap();
    assert_eq!(
        (producer.distinct, producer.gaps()),
        (total, 0),
        "{audit:?}"
    );
}

#[test]
fn a_partitioned_stream_spreads_over_the_cluster_exactly_once_in_order() {
    let cluster = ClusterSet::start().unwrap();
    let config = config(&cluster.url(), 6);
    // Our slot arithmetic agrees with the cluster's own.
    for key in config.redis.stream_keys() {
        let Reply::Int(slot) = cluster.servers[0]
            .command(&["CLUSTER", "KEYSLOT", &key])
            .unwrap()
        else {
            panic!("CLUSTER KEYSLOT")
        };
        assert_eq!(i64::from(key_slot(&key)), slot, "{key}");
    }
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();
    let total = 60_000;
    assert_eq!(publish_orders(&publisher, total, None), 0);
    drop(publisher);
    let report = shipper.shutdown(Duration::from_secs(60));
    assert_eq!(
        (report.shipped, report.undelivered),
        (total, 0),
        "{report:?}"
    );

    let Found {
        audit,
        partitions_of: found_in,
        ..
    } = audit_partitions(&cluster, &config);
    assert_exactly_once(&audit, total);
    assert_eq!(found_in.len() as u64, CORRELATIONS);
    assert!(
        found_in.values().all(|parts| parts.len() == 1),
        "one partition per correlation id: {found_in:?}"
    );
    let used: HashSet<usize> = found_in.values().flatten().copied().collect();
    assert_eq!(used.len(), 6, "every partition has events: {found_in:?}");
    let primaries: HashSet<u16> = config
        .redis
        .stream_keys()
        .iter()
        .map(|key| cluster.primary_for(key).unwrap().port())
        .collect();
    assert_eq!(
        primaries.len(),
        3,
        "the partitions spread over the three primaries"
    );
}

/// Counts each event's effect in its partition's slot (`<partition>:applied`).
struct Applied {
    key: String,
}

impl Handler for Applied {
    fn handle(&mut self, event: &Envelope, effects: &mut Effects) -> Result<(), HandlerError> {
        effects.apply(
            redis::cmd("HINCRBY")
                .arg(&self.key)
                .arg(event.event_id.to_string())
                .arg(1),
        );
        Ok(())
    }
}

/// Issue 8 and issue 18, on the default settings: a primary killed while publishing and
/// consuming loses and repeats nothing; its partition resumes within a second or two of the
/// replica's promotion (a fixed 30 s breaker cool-down decided it before issue 18), and the
/// partitions on the surviving primaries pause at most while the cluster is marked failed.
#[test]
fn issue_18_a_cluster_primary_killed_on_the_defaults_costs_seconds_and_loses_nothing() {
    let mut cluster = ClusterSet::start().unwrap();
    let journal = tempfile::tempdir().unwrap();
    let mut config = config(&cluster.url(), 6);
    config.ship.min_replicas_ack = 1;
    config.ship.journal_dir = Some(journal.path().to_owned());
    let (publisher, receiver) = publish::channel(&config).unwrap();
    let shipper = ship::spawn(&config, receiver).unwrap();

    // One consumer per partition, counting together, as `evstream consume` runs them.
    let stats = Arc::new(ConsumeStats::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let consumers: Vec<_> = config
        .partition_configs()
        .into_iter()
        .map(|part| {
            let handler = Applied {
                key: format!("{}:applied", part.redis.stream),
            };
            let consumer = Consumer::new(&part, "c1", handler)
                .unwrap()
                .with_stats(Arc::clone(&stats));
            let mut stop = stop_rx.clone();
            thread::spawn(move || {
                block_on(consumer.run(async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                }))
            })
        })
        .collect();

    let rate = 20_000;
    let total = rate * 10;
    let producer = {
        let publisher = publisher.clone();
        let pause = Duration::from_secs_f64(100.0 / rate as f64);
        thread::spawn(move || publish_orders(&publisher, total, Some(pause)))
    };
    thread::sleep(Duration::from_secs(3));
    let key = keys::partition("events", 0);
    let victim = cluster
        .servers
        .iter()
        .position(|s| s.port() == cluster.primary_for(&key).unwrap().port())
        .unwrap();
    let processed_at_kill = stats.snapshot().processed;
    let victim_port = cluster.servers[victim].port();
    let on_victim: Vec<bool> = config
        .redis
        .stream_keys()
        .iter()
        .map(|key| cluster.primary_for(key).unwrap().port() == victim_port)
        .collect();
    cluster.servers[victim].kill().unwrap();
    let killed = Instant::now();
    let promoted = loop {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no failover in 30 s"
        );
        match cluster.primary_for(&key) {
            Ok(server) => break server.port(),
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    };
    let promoted_after = killed.elapsed();
    // The old primary comes back as the new one's replica, so `WAIT 1` can be met again.
    cluster.servers[victim].restart().unwrap();
    let length = |port: u16| {
        let server = cluster.servers.iter().find(|s| s.port() == port).unwrap();
        match server.command(&["XLEN", &key]).unwrap() {
            Reply::Int(n) => n,
            other => panic!("XLEN: {other:?}"),
        }
    };
    let before = length(promoted);
    let resumed = loop {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "appends did not resume"
        );
        if length(promoted) > before {
            break killed.elapsed();
        }
        thread::sleep(Duration::from_millis(5));
    };
    let refused = producer.join().unwrap();
    drop(publisher);
    let report = shipper.shutdown(Duration::from_secs(60));
    eprintln!(
        "cluster failover: primary {} of {key} killed; replica {promoted} promoted after \
         {promoted_after:?}; appends to {key} resumed after {resumed:?}; processed {processed_at_kill} \
         at the kill",
        cluster.servers[victim].port()
    );
    assert_eq!(refused, 0, "the rings and journals absorbed the failover");
    assert_eq!((report.undelivered, report.journaled), (0, 0), "{report:?}");

    let Found {
        audit,
        partitions_of,
        longest_gap,
    } = audit_partitions(&cluster, &config);
    eprintln!("longest gap between appends per partition: {longest_gap:?} (on the killed primary: {on_victim:?})");
    assert_exactly_once(&audit, total);
    assert!(partitions_of.values().all(|parts| parts.len() == 1));
    // Target: appends within 1 s of the promotion (measured: BENCHMARKS.md); the bounds leave
    // room for a loaded CI machine.
    let after_promotion = resumed.saturating_sub(promoted_after);
    assert!(
        after_promotion < Duration::from_secs(3),
        "appends to {key} resumed {after_promotion:?} after the promotion (target 1 s)"
    );
    for (partition, gap) in longest_gap.iter().enumerate() {
        let bound = if on_victim[partition] {
            promoted_after + Duration::from_secs(3)
        } else {
            // Surviving primaries answer CLUSTERDOWN while the cluster is marked failed
            // (cluster-require-full-coverage yes, Redis's default): from the failure's
            // detection to the promotion, at most.
            promoted_after + Duration::from_secs(2)
        };
        assert!(
            *gap < bound,
            "partition {partition} went {gap:?} without an append (promotion after \
             {promoted_after:?})"
        );
    }

    // The consumers kept processing every partition through the failover: each event's
    // effect applied exactly once, nothing pending, nothing unread.
    let deadline = Instant::now() + Duration::from_secs(60);
    let applied = loop {
        let mut applied: HashMap<String, u64> = HashMap::new();
        let mut settled = true;
        for part in config.partition_configs() {
            let stream = &part.redis.stream;
            let primary = cluster.primary_for(stream).unwrap();
            let mut connection = redis::Client::open(primary.url())
                .unwrap()
                .get_connection()
                .unwrap();
            let counts: HashMap<String, u64> = redis::cmd("HGETALL")
                .arg(format!("{stream}:applied"))
                .query(&mut connection)
                .unwrap();
            applied.extend(counts);
            let groups: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(stream)
                .query(&mut connection)
                .unwrap();
            // `lag` is nil when Redis cannot tell (after a failover it may not): then the
            // effects counted below decide.
            let int = |g: &HashMap<String, Value>, f: &str| match g.get(f) {
                Some(Value::Int(n)) => Some(*n),
                _ => None,
            };
            settled &= groups
                .iter()
                .all(|g| int(g, "pending") == Some(0) && int(g, "lag").unwrap_or(0) == 0);
        }
        if (settled && applied.len() as u64 == total) || Instant::now() >= deadline {
            break applied;
        }
        thread::sleep(Duration::from_millis(200));
    };
    let _ = stop_tx.send(true);
    for consumer in consumers {
        consumer.join().unwrap();
    }
    assert_eq!(applied.len() as u64, total, "every event's effect");
    assert!(applied.values().all(|&n| n == 1), "none applied twice");
    assert!(
        stats.snapshot().processed > processed_at_kill,
        "{:?}",
        stats.snapshot()
    );
}
