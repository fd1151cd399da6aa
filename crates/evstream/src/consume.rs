//! Consumer groups: read the stream, run a [`Handler`], acknowledge with exactly-once effects.
//!
//! A [`Consumer`] is one member of a Redis consumer group. It
//!
//! 1. creates the group (`XGROUP CREATE … MKSTREAM`) if it is missing, at
//!    `consume.start_id` (default `0`, the whole stream), and again if it disappears
//!    (`NOGROUP`);
//! 2. re-reads its own pending entries first (after a start, a crash or a reconnect);
//! 3. reads new entries with `XREADGROUP … BLOCK` on a connection of its own (so the blocking
//!    read never waits behind, or times out like, the other calls; over plain TCP it is
//!    evstream's own RESP reader, which decodes replies straight into entries), a task
//!    reading up to two batches ahead while a batch is handled and the previous batch's
//!    commit is applied (see [`Handler::on_commit`]);
//! 4. every `min(min_idle / 2, 5 s)`, claims entries idle longer than `consume.min_idle_ms`
//!    in any consumer of the group with `XAUTOCLAIM` (abandoned by a crashed consumer, or its
//!    own failures waiting for a retry);
//! 5. decodes each entry into an [`Envelope`] and hands it to the [`Handler`], which
//!    describes the Redis writes it wants as [`Effects`];
//! 6. acknowledges the batch in **one** atomic call (`commit.lua`) that, per entry, runs
//!    `XACK` and applies the entry's effects only if that `XACK` removed the entry from the
//!    pending list.
//!
//! # Exactly-once effect
//!
//! An entry is acknowledged and its effects written in one atomic step, so a consumer killed
//! between its effect and its ack cannot exist: either both happened or neither. If two
//! consumers hold the same entry (one slow, the other claimed it), both commit, but only the
//! first `XACK` returns 1: the second's effects are skipped and counted as
//! `duplicates_skipped`. A commit retried after an uncertain outcome is skipped the same way.
//! The dedupe state is the group's pending list itself: it holds only unacknowledged entries,
//! so it never grows without bound and nothing is rewritten per event. On top of it the
//! consumer remembers the `event_id`s it applied recently (bounded, see
//! `consume.dedupe_capacity`), so the same event arriving as a *second entry* (a group
//! re-created from `0`) is acknowledged without running the handler again.
//!
//! Effects that live outside Redis (the handler's own memory, a log) happen when `handle` runs
//! and are therefore at-least-once; [`Handler::on_commit`] tells which entries this consumer's
//! commit actually applied.
//!
//! # Poison entries
//!
//! An entry that cannot be decoded, whose version the handler does not know, or whose handler
//! fails, is not acknowledged: it stays pending and comes back through `XAUTOCLAIM` after
//! `min_idle`. Once it has been delivered `consume.max_deliveries` times, it is written to
//! `<stream>:dlq` (original fields, `dlq_stage=consume`, `dlq_reason`, `dlq_error`,
//! `dlq_at_ns`, `dlq_source_id`, `dlq_deliveries`) and acknowledged, in the same atomic
//! commit, so it is dead-lettered exactly once and never reclaimed again.
//!
//! # Schemas
//!
//! With a registry ([`Consumer::with_schemas`], [`Consumer::with_schemas_from_redis`]) each
//! event is validated and brought to a version the handler reads, its reader schema
//! ([`Handler::reads`], [`Reads`]): older versions are migrated up, a newer version of a
//! forward-compatible type is read as the handler's, and only an unreadable one is poison
//! (`unreadable_version`). Types the handler does not read are acknowledged without
//! validation; a type nobody registered is handed over unvalidated (counted `unvalidated`)
//! unless `consume.strict_schemas` is set. A schema push thus never stops a running consumer.
//!
//! ```no_run
//! use evstream::consume::{Consumer, Effects, Envelope, Handler, HandlerError};
//!
//! struct CountFills;
//!
//! impl Handler for CountFills {
//!     fn handle(&mut self, event: &Envelope, effects: &mut Effects) -> Result<(), HandlerError> {
//!         if event.event_type == "OrderFilled" {
//!             effects.count("fills", 1); // HINCRBY events:consume:<group> fills 1, exactly once
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = evstream::Config::default();
//! let consumer = Consumer::new(&config, "worker-1", CountFills)?;
//! // Stops after a minute; `evstream consume` stops on SIGINT/SIGTERM.
//! let report = consumer.run(tokio::time::sleep(std::time::Duration::from_secs(60))).await;
//! println!("processed {}", report.processed);
//! # Ok(())
//! # }
//! ```

/// A batch from read to commit, pipelined for new entries.
mod batch;
mod commit;
pub(crate) mod config;
/// An entry's copy in the dead letters.
mod dead_letter;
pub(crate) mod decode;
mod dedupe;
/// What an application implements.
mod handler;
/// One consumer per partition, stopped together.
mod partitions;
pub(crate) mod reader;
/// The two connections and the loop that keeps them and reads from them.
mod session;
/// Live counters and their snapshot.
mod stats;
/// What becomes of one entry: its `Verdict`.
mod verdict;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use redis::RedisError;
use tokio::task::JoinHandle;

pub use batch::Batch;
pub use commit::{Effects, Outcome};
pub use decode::{
    DecodeError, Envelope, FIELD_REPLAY_FOR_GROUP, MAX_FIELDS, MAX_FIELD_BYTES,
    MAX_FIELD_NAME_BYTES,
};
pub use handler::{Accept, Handler, HandlerError, Reads};
pub use partitions::PartitionedConsumer;
pub use stats::{ConsumeReport, ConsumeStats};

use crate::config::{Config, ConsumeConfig};
use crate::error::ConsumeError;
use crate::schema::{Registry, Source};
use dedupe::RecentIds;

/// The Redis keys a consumer touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumeKeys {
    /// The stream.
    pub stream: String,
    /// Its dead letter stream, `<stream>:dlq`.
    pub dead_letters: String,
    /// The group's counters hash, `<stream>:consume:<group>`: `processed`,
    /// `duplicates_skipped`, `skipped`, `unvalidated`, `replays_for_other_groups`,
    /// `dead_lettered`, `deleted_pending`, plus the handler's own [`Effects::count`] names.
    pub counters: String,
}

impl ConsumeKeys {
    /// The keys of `group` on `stream`.
    pub fn new(stream: &str, group: &str) -> Self {
        Self {
            stream: stream.to_owned(),
            dead_letters: crate::keys::dead_letters(stream),
            counters: crate::keys::consume_counters(stream, group),
        }
    }
}

/// One member of a consumer group; see the [module documentation](self).
pub struct Consumer<H> {
    /// Opens connections (after a Sentinel failover, to the new master).
    client: crate::redis::Connector,
    config: ConsumeConfig,
    keys: ConsumeKeys,
    name: String,
    handler: H,
    stats: Arc<ConsumeStats>,
    recent: RecentIds,
    sha: String,
    /// Effects buffers kept between batches, so that their memory is reused.
    spare_effects: Vec<Effects>,
    /// Decoding scratch, reused.
    envelope: Envelope,
    /// The derived effects last sent, not yet confirmed.
    flushing: Option<JoinHandle<Result<(), RedisError>>>,
    /// Validation and migration of events before the handler: the registry and how it is
    /// followed.
    schemas: Source,
    /// Dead letters logged about so far (the log is thinned out, see `dead_letter`).
    dead_letter_logs: AtomicU64,
}

impl<H> std::fmt::Debug for Consumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.config.group)
            .field("name", &self.name)
            .field("stream", &self.keys.stream)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Consumer<H> {
    /// A consumer named `name` in `config.consume.group` on `config.redis.stream`. Nothing
    /// connects until [`run`](Self::run).
    pub fn new(config: &Config, name: &str, handler: H) -> Result<Self, ConsumeError> {
        config.consume.validate()?;
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_whitespace) {
            return Err(ConsumeError::InvalidConsumerName {
                name: name.to_owned(),
            });
        }
        let client = config.redis.connector()?;
        Ok(Self {
            client,
            keys: ConsumeKeys::new(&config.redis.stream, &config.consume.group),
            name: name.to_owned(),
            handler,
            stats: Arc::default(),
            recent: RecentIds::new(
                config.consume.dedupe_capacity,
                Duration::from_secs(config.consume.dedupe_ttl_s),
            ),
            sha: redis::Script::new(commit::SCRIPT).get_hash().to_owned(),
            spare_effects: Vec::new(),
            envelope: Envelope::default(),
            flushing: None,
            schemas: Source::None,
            dead_letter_logs: AtomicU64::new(0),
            config: config.consume.clone(),
        })
    }

    /// Counts into `stats` instead of counters of its own: the consumers of one process over
    /// a partitioned stream (one per partition, see
    /// [`Config::partition_configs`](crate::Config::partition_configs)) report as one.
    pub fn with_stats(mut self, stats: Arc<ConsumeStats>) -> Self {
        self.stats = stats;
        self
    }

    /// Validates every event against `registry` and migrates it to the newest version of its
    /// type the handler reads ([`Handler::reads`]) before the handler sees it; a newer one is
    /// read as that version when the type is forward-compatible. Unknown versions, invalid
    /// data and unreadable newer versions are poison (`unknown_version`, `invalid_schema`,
    /// `unreadable_version`); a type the registry lacks is handed over unvalidated, or is
    /// poison (`unknown_type`) with `consume.strict_schemas`.
    pub fn with_schemas(mut self, registry: Registry) -> Self {
        self.schemas = Source::Fixed(Arc::new(registry));
        self
    }

    /// Like [`with_schemas`](Self::with_schemas), with the registry stored in Redis by
    /// `evstream schema push`, reloaded whenever its revision changes (checked on every new
    /// connection and every `consume.schema_reload_ms`, default 5 s), so that a new version
    /// is learned without a restart. While nothing is registered, events are not validated.
    pub fn with_schemas_from_redis(mut self) -> Self {
        self.schemas = Source::redis(Duration::from_millis(self.config.schema_reload_ms));
        self
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<ConsumeStats> {
        Arc::clone(&self.stats)
    }

    /// The keys this consumer touches.
    pub fn keys(&self) -> &ConsumeKeys {
        &self.keys
    }
}
