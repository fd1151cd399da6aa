//! A stream's status as Redis tells it now: the stream and its dead letters, Redis memory,
//! groups and consumers, what retention would trim, and the alert rules evaluated on it;
//! for a partitioned stream, every partition's (each read from the server holding it) and
//! the totals. What `evstream status` prints.
//!
//! ```no_run
//! # async fn run() -> Result<(), evstream::PartitionError> {
//! let mut config = evstream::Config::default();
//! config.redis.partitions = Some(3);
//! let status = evstream::status::StreamStatus::read(&config).await?;
//! println!("{} entries, {} dead letters", status.length, status.dlq_length);
//! for partition in &status.partitions {
//!     println!("{}: {} alert(s)", partition.stream, partition.alerts.len());
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use redis::aio::MultiplexedConnection;
use serde::Serialize;

use crate::config::Config;
use crate::error::{OpsError, PartitionError};
use crate::ops::alerts::{self, Finding, Inputs};
use crate::ops::observe::{self, EvictionRisk, Observation};
use crate::ops::trim::{self, MemoryLevel, TrimPlan};
use crate::partitions::CALL_TIMEOUT;

/// Dead letters read to count them by reason; beyond, the counts are of the oldest this many
/// ([`Status::dead_letters_all_counted`] is false).
pub const DLQ_SCAN_LIMIT: u64 = 100_000;

/// The status of one stream key (the stream, or one partition of it).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Status {
    /// The stream's key (`stream` in JSON is the observation of it).
    #[serde(rename = "stream_key")]
    pub stream: String,
    /// The Redis URL, password hidden (`redis` in JSON is the observation of the server).
    #[serde(rename = "redis_url")]
    pub redis: String,
    /// With Redis Cluster: the partition's slot and the primary that holds it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterPlace>,
    /// What Redis says of the server, the stream, its groups and dead letters.
    #[serde(flatten)]
    pub observation: Observation,
    /// Redis memory use against the configured thresholds.
    pub memory_level: MemoryLevel,
    /// What Redis's eviction policy could evict.
    pub eviction_risk: EvictionRisk,
    /// Age of the oldest entry, in seconds (none in an empty or missing stream).
    pub first_entry_age_s: Option<f64>,
    /// Age of the newest entry, in seconds.
    pub last_entry_age_s: Option<f64>,
    /// What retention would trim now (the ops loop does it).
    pub retention: TrimPlan,
    /// Dead letters by `stage/reason`.
    pub dead_letters_by_reason: BTreeMap<String, u64>,
    /// Whether every dead letter was counted (false beyond [`DLQ_SCAN_LIMIT`]).
    pub dead_letters_all_counted: bool,
    /// Alert rules evaluated on this observation (Redis-side rules only: a process's ring
    /// and shipper are seen by its own ops loop and /health).
    pub alerts: Vec<Finding>,
}

impl Status {
    /// Reads the status of `config.redis.stream` over `connection` (to the server holding
    /// it); [`cluster`](Self::cluster) is left empty.
    pub async fn read(
        config: &Config,
        connection: &mut MultiplexedConnection,
    ) -> Result<Self, OpsError> {
        let stream = &config.redis.stream;
        let count_above = Some(config.ops.max_len).filter(|&n| n > 0);
        let observation = observe::observe(connection, stream, count_above, CALL_TIMEOUT).await?;
        let (counts, _) = observe::dead_letters_by_reason(
            connection,
            &crate::keys::dead_letters(stream),
            None,
            DLQ_SCAN_LIMIT,
            CALL_TIMEOUT,
        )
        .await?;
        let counted: u64 = counts.values().sum();
        let now_ms = crate::ops::unix_ms();
        let age = |id: Option<observe::EntryId>| {
            id.map(|id| now_ms.saturating_sub(id.ms) as f64 / 1000.0)
        };
        let memory_level = MemoryLevel::of(observation.redis.used_ratio(), &config.ops);
        let alerts = alerts::evaluate(
            &config.ops,
            &Inputs {
                observation: Some(&observation),
                ..Inputs::default()
            },
        );
        Ok(Self {
            stream: stream.clone(),
            redis: crate::redis::redact_url(&config.redis.url),
            cluster: None,
            memory_level,
            eviction_risk: observation.redis.eviction_risk(),
            first_entry_age_s: age(observation.stream.as_ref().and_then(|s| s.first_id)),
            last_entry_age_s: age(observation.stream.as_ref().and_then(|s| s.last_id)),
            retention: trim::plan(&config.ops, &observation, memory_level, now_ms),
            dead_letters_by_reason: counts
                .into_iter()
                .map(|((stage, reason), n)| (format!("{stage}/{reason}"), n))
                .collect(),
            dead_letters_all_counted: counted >= observation.dlq.length,
            alerts,
            observation,
        })
    }
}

/// Where a partition lives in a Redis Cluster.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ClusterPlace {
    /// The slot of the partition's key.
    pub slot: u16,
    /// `host:port` of the primary.
    pub primary: String,
}

/// A whole stream's status: each partition's (one without partitions), each read from the
/// server holding it, and the totals.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct StreamStatus {
    /// The stream's name (`redis.stream`; the partitions' keys derive from it).
    pub stream: String,
    /// Entries in all partitions.
    pub length: u64,
    /// Dead letters in all partitions' dead letter streams.
    pub dlq_length: u64,
    /// Alert rules firing, over all partitions.
    pub alerts: usize,
    /// Every partition's status, in partition order.
    pub partitions: Vec<Status>,
}

impl StreamStatus {
    /// Reads the status of every partition of `config.redis.stream`, one after the other,
    /// each over a connection of its own to the server holding it; with Redis Cluster each
    /// names its slot and primary.
    pub async fn read(config: &Config) -> Result<Self, PartitionError> {
        let mut partitions = Vec::new();
        for part in &config.partition_configs() {
            let (mut connection, client) =
                crate::partitions::connect(part, &redis::AsyncConnectionConfig::new()).await?;
            let mut status = Status::read(part, &mut connection)
                .await
                .map_err(|source| PartitionError::Read {
                    stream: part.redis.stream.clone(),
                    source,
                })?;
            if part.redis.url.starts_with("redis+cluster://") {
                status.cluster = Some(ClusterPlace {
                    slot: crate::redis::key_slot(&part.redis.stream),
                    primary: client.get_connection_info().addr().to_string(),
                });
            }
            partitions.push(status);
        }
        Ok(Self {
            stream: config.redis.stream.clone(),
            length: partitions
                .iter()
                .filter_map(|s| s.observation.stream.as_ref().map(|s| s.length))
                .sum(),
            dlq_length: partitions.iter().map(|s| s.observation.dlq.length).sum(),
            alerts: partitions.iter().map(|s| s.alerts.len()).sum(),
            partitions,
        })
    }
}
