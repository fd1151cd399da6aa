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

mod commit;
pub(crate) mod config;
pub(crate) mod decode;
mod dedupe;
mod partitions;
pub(crate) mod reader;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, RedisError, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use commit::{Effects, Outcome};
pub use decode::{
    DecodeError, Envelope, FIELD_REPLAY_FOR_GROUP, MAX_FIELDS, MAX_FIELD_BYTES,
    MAX_FIELD_NAME_BYTES,
};
pub use partitions::PartitionedConsumer;

use crate::config::{Config, ConsumeConfig};
use crate::error::ConsumeError;
use crate::failover::FailoverWatch;
use crate::publish::wall_clock_ns;
use crate::schema::Registry;
use crate::ship::backoff::Backoff;
use commit::CommitBuilder;
use decode::RawEntry;
use dedupe::{RecentIds, Seen};

/// What a handler's failure carries: any error, shown in `dlq_error`.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Whether a handler takes events of a type and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Handle it.
    Handle,
    /// Not of interest to this handler: acknowledge without handling (counted as `skipped`).
    Skip,
    /// A type the handler knows in a version it does not: poison (`unknown_version`),
    /// retried, since a newer consumer may know it, then dead-lettered.
    UnknownVersion,
}

/// Which versions of an event type a handler reads: its reader schema, as in Avro and
/// Confluent's registry. With a schema registry, an older event is validated and migrated up
/// to the newest version the handler reads; a newer one is handed over *as* that version if
/// the type is registered as forward-compatible and its data passes that version's schema
/// (fields the reader does not know are left in `data`); anything else is poison
/// (`unreadable_version`). So pushing a new version never stops a running handler that does
/// not know it yet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reads {
    /// Not this type: its events are acknowledged unhandled (counted `skipped`) without
    /// validation, registered or not.
    Nothing,
    /// Whatever the registry's latest version is; every event is migrated to it. The default,
    /// for handlers that declare nothing; such a handler must know every version pushed.
    Latest,
    /// These versions; events are read as the newest of them. Without a registry (or for a
    /// type nobody registered) an event outside them is poison (`unknown_version`), retried
    /// since a newer consumer may read it.
    Versions(std::ops::RangeInclusive<u32>),
}

/// The application logic of a consumer.
pub trait Handler: Send {
    /// Which versions of `event_type` this handler reads; [`Reads::Nothing`] for a type it
    /// does not handle. Asked before any validation. Default: [`Reads::Latest`] for every
    /// type.
    fn reads(&self, event_type: &str) -> Reads {
        let _ = event_type;
        Reads::Latest
    }

    /// Whether to handle events of this type and version, as handed over (after migration,
    /// see [`reads`](Self::reads)). Default: all.
    fn accepts(&self, event_type: &str, version: u32) -> Accept {
        let _ = (event_type, version);
        Accept::Handle
    }

    /// Handles one event. Redis writes go into `effects` and are applied atomically with the
    /// entry's acknowledgement, exactly once. An error leaves the entry pending, to be retried
    /// and, after `max_deliveries`, dead-lettered; effects added before it are discarded.
    fn handle(&mut self, event: &Envelope, effects: &mut Effects) -> Result<(), HandlerError>;

    /// Called once per batch, after `handle` saw every entry of it and before the commit:
    /// effects that depend on the whole batch can still be added to each entry.
    fn end_batch(&mut self, batch: &mut Batch<'_>) {
        let _ = batch;
    }

    /// Called after each commit with what it did for every handled entry, in order: once
    /// per batch that reached [`end_batch`](Self::end_batch), batches in order. New entries
    /// are processed pipelined, one commit in flight: a batch's `on_commit` may come after
    /// the next batch's `handle` and `end_batch` calls (never later than that).
    fn on_commit(&mut self, outcomes: &[Outcome]) {
        let _ = outcomes;
    }

    /// Called after [`on_commit`](Self::on_commit): effects derived from the outcomes (results
    /// computed from the replies). They are written right away, in one atomic call, but not
    /// as part of any entry's acknowledgement: if that call fails they are lost (logged), never
    /// applied twice.
    fn flush(&mut self, effects: &mut Effects) {
        let _ = effects;
    }
}

/// Live counters of a consumer, readable from any thread while it runs.
#[derive(Debug, Default)]
pub struct ConsumeStats {
    read: AtomicU64,
    processed: AtomicU64,
    duplicates_skipped: AtomicU64,
    skipped: AtomicU64,
    unvalidated: AtomicU64,
    dead_lettered: AtomicU64,
    failed_attempts: AtomicU64,
    claimed: AtomicU64,
    deleted: AtomicU64,
    effect_errors: AtomicU64,
    redis_errors: AtomicU64,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
}

/// A snapshot of [`ConsumeStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ConsumeReport {
    /// Entries read (new, own pending and claimed), redeliveries included.
    pub read: u64,
    /// Entries whose handler succeeded and whose commit this consumer applied.
    pub processed: u64,
    /// Entries acknowledged without effect because they were already applied (by another
    /// consumer, an earlier try, or as the same event in another entry).
    pub duplicates_skipped: u64,
    /// Entries acknowledged without handling: types the handler does not take.
    pub skipped: u64,
    /// Processed entries (counted in `processed` too) whose type the schema registry in use
    /// does not know, handed over without validation (see `consume.strict_schemas`).
    pub unvalidated: u64,
    /// Entries this consumer wrote to the dead letter queue.
    pub dead_lettered: u64,
    /// Deliveries that failed and were left pending for a retry.
    pub failed_attempts: u64,
    /// Entries claimed from the pending list with `XAUTOCLAIM`.
    pub claimed: u64,
    /// Pending entries found deleted from the stream (trimmed before anyone acked them).
    pub deleted: u64,
    /// Entries acknowledged whose effects failed in Redis (each also dead-lettered with
    /// reason `effect_failed`).
    pub effect_errors: u64,
    /// Failed Redis calls (each retried).
    pub redis_errors: u64,
    /// Whether the last Redis call succeeded.
    pub connected: bool,
    /// The last Redis error, if any.
    pub last_error: Option<String>,
}

impl ConsumeStats {
    /// The current values.
    pub fn snapshot(&self) -> ConsumeReport {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ConsumeReport {
            read: load(&self.read),
            processed: load(&self.processed),
            duplicates_skipped: load(&self.duplicates_skipped),
            skipped: load(&self.skipped),
            unvalidated: load(&self.unvalidated),
            dead_lettered: load(&self.dead_lettered),
            failed_attempts: load(&self.failed_attempts),
            claimed: load(&self.claimed),
            deleted: load(&self.deleted),
            effect_errors: load(&self.effect_errors),
            redis_errors: load(&self.redis_errors),
            connected: self.connected.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

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
            dead_letters: format!("{stream}:dlq"),
            counters: format!("{stream}:consume:{group}"),
        }
    }
}

/// The two connections of a running consumer.
struct Session {
    /// Only for `XREADGROUP … BLOCK`.
    reader: reader::Reader,
    /// Its `CLIENT ID`, to unblock it at shutdown.
    reader_id: Option<i64>,
    /// Everything else, each call with the `consume.timeout_ms` deadline.
    writer: MultiplexedConnection,
}

/// One member of a consumer group; see the [module documentation](self).
pub struct Consumer<H> {
    /// Opens connections (after a Sentinel failover, to the new master).
    client: crate::config::Connector,
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
    /// Validation and migration of events before the handler.
    schemas: Schemas,
    /// Dead letters logged about so far (the log is thinned out, see `dead_letter`).
    dead_letter_logs: AtomicU64,
}

/// Where a consumer's schema registry comes from.
enum Schemas {
    Off,
    Fixed(Arc<Registry>),
    Redis {
        registry: Option<Arc<Registry>>,
        revision: Option<u64>,
        checked_at: Option<Instant>,
    },
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

/// Where reading stands.
enum Source {
    /// Own pending entries after this id (`0` from the start).
    OwnPending(String),
    /// `XAUTOCLAIM` from this cursor.
    Claim(String),
    /// New entries.
    New,
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
            schemas: Schemas::Off,
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
        self.schemas = Schemas::Fixed(Arc::new(registry));
        self
    }

    /// Like [`with_schemas`](Self::with_schemas), with the registry stored in Redis by
    /// `evstream schema push`, reloaded whenever its revision changes (checked every
    /// `consume.schema_reload_ms`, default 5 s), so
    /// that a new version is learned without a restart. While nothing is registered, events
    /// are not validated.
    pub fn with_schemas_from_redis(mut self) -> Self {
        self.schemas = Schemas::Redis {
            registry: None,
            revision: None,
            checked_at: None,
        };
        self
    }

    /// Reloads the registry from Redis if it is time and its revision moved.
    async fn refresh_schemas(
        &mut self,
        writer: &mut MultiplexedConnection,
    ) -> Result<(), RedisError> {
        let Schemas::Redis {
            registry,
            revision,
            checked_at,
        } = &mut self.schemas
        else {
            return Ok(());
        };
        let every = Duration::from_millis(self.config.schema_reload_ms);
        if checked_at.is_some_and(|at| at.elapsed() < every) {
            return Ok(());
        }
        let first = checked_at.replace(Instant::now()).is_none();
        let current: Option<u64> = redis::cmd("GET")
            .arg(crate::schema::REDIS_REVISION_KEY)
            .query_async(writer)
            .await?;
        if current == *revision {
            if first && current.is_none() {
                tracing::warn!(
                    "no schema is registered in Redis: events are handed over without \
                     validation (register them with `evstream schema push DIR`)"
                );
            }
            return Ok(());
        }
        match crate::schema::load(writer).await {
            Ok(loaded) => {
                tracing::info!(revision = ?current, types = loaded.summary().len(), "schema registry loaded from Redis");
                *registry = current.map(|_| Arc::new(loaded));
                *revision = current;
            }
            Err(error) => {
                tracing::error!(%error, "cannot load the schema registry from Redis; keeping the previous one");
            }
        }
        Ok(())
    }

    fn registry(&self) -> Option<&Arc<Registry>> {
        match &self.schemas {
            Schemas::Off => None,
            Schemas::Fixed(registry) => Some(registry),
            Schemas::Redis { registry, .. } => registry.as_ref(),
        }
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<ConsumeStats> {
        Arc::clone(&self.stats)
    }

    /// The keys this consumer touches.
    pub fn keys(&self) -> &ConsumeKeys {
        &self.keys
    }

    /// Runs until `shutdown` completes, then stops reading, finishes and acknowledges the
    /// entries in hand, and returns the final counters. Redis errors never end the run: every
    /// call is retried with backoff (and the connections re-made) until it succeeds or the
    /// shutdown comes; entries not acknowledged by then stay pending for the group.
    pub async fn run<F>(mut self, shutdown: F) -> ConsumeReport
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop_tx, mut stop) = watch::channel(false);
        let watcher = tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        // Retries within a second at most: a restarted server or a new master is found
        // within a second of coming up (at once when Sentinel announces it).
        let mut backoff = Backoff::new(
            Duration::from_millis(10),
            Duration::from_secs(1),
            wall_clock_ns() ^ u64::from(std::process::id()),
        );
        let mut failovers = FailoverWatch::start(&self.client);
        let claim_every =
            (self.min_idle() / 2).clamp(Duration::from_millis(10), Duration::from_secs(5));
        let mut session: Option<Session> = None;
        let mut source = Source::OwnPending("0".to_owned());
        let mut claim_at = Instant::now();

        while !*stop.borrow() {
            let Some(connected) = session.as_mut() else {
                match self.connect().await {
                    Ok(connected) => {
                        session = Some(connected);
                        // After any reconnect, what this consumer was given before comes first.
                        source = Source::OwnPending("0".to_owned());
                    }
                    Err(error) => {
                        self.failed(&error);
                        if retry_after(backoff.next_delay(), &mut stop, &mut failovers).await {
                            backoff.reset();
                        }
                    }
                }
                continue;
            };
            if let Err(error) = self.refresh_schemas(&mut connected.writer).await {
                self.failed(&error);
            }
            let reading_new = matches!(source, Source::New);
            let step = match &source {
                Source::OwnPending(after) => {
                    let after = after.clone();
                    self.read_own_pending(connected, &after)
                        .await
                        .map(|(entries, next)| {
                            source = next.map_or(Source::New, Source::OwnPending);
                            entries
                        })
                }
                Source::Claim(cursor) => {
                    let cursor = cursor.clone();
                    self.claim(connected, &cursor).await.map(|(entries, next)| {
                        if next == "0-0" {
                            claim_at = Instant::now() + claim_every;
                            source = Source::New;
                        } else {
                            source = Source::Claim(next);
                        }
                        entries
                    })
                }
                Source::New if Instant::now() >= claim_at => {
                    source = Source::Claim("0-0".to_owned());
                    continue;
                }
                Source::New => {
                    let block = claim_at.saturating_duration_since(Instant::now());
                    self.read_new(connected, block, &mut stop).await
                }
            };
            let result = match step {
                Ok(entries) if entries.is_empty() => Ok(()),
                Ok(entries) if reading_new => {
                    let processed = self
                        .process_new(connected, entries, claim_at, &mut stop)
                        .await;
                    if processed.is_err() {
                        // Batches read ahead were given up: they are this consumer's own
                        // pending entries now; take them first, in order.
                        source = Source::OwnPending("0".to_owned());
                    }
                    processed
                }
                Ok(entries) => self.process(connected, entries).await,
                Err(error) => Err(error),
            };
            match result {
                Ok(()) => {
                    backoff.reset();
                    self.stats.connected.store(true, Ordering::Relaxed);
                }
                Err(error) => {
                    self.failed(&error);
                    if error.code() == Some("NOGROUP") {
                        if let Err(error) = self.ensure_group(&mut connected.writer).await {
                            self.failed(&error);
                        }
                    } else if breaks_session(&error) {
                        session = None;
                    }
                    if retry_after(backoff.next_delay(), &mut stop, &mut failovers).await {
                        // A new master: whatever failed on the old one, start afresh.
                        session = None;
                        backoff.reset();
                    }
                }
            }
        }
        self.wait_for_flush().await;
        watcher.abort();
        self.stats.snapshot()
    }

    fn min_idle(&self) -> Duration {
        Duration::from_millis(self.config.min_idle_ms)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    fn failed(&self, error: &RedisError) {
        ConsumeStats::add(&self.stats.redis_errors, 1);
        if breaks_session(error) {
            self.stats.connected.store(false, Ordering::Relaxed);
        }
        tracing::warn!(group = %self.config.group, consumer = %self.name, %error, "redis call failed; retrying");
        *self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
    }

    async fn connect(&self) -> Result<Session, RedisError> {
        let timeout = self.timeout();
        let block = Duration::from_millis(self.config.block_ms);
        let setup = async {
            // Both connections to the same server (the master Sentinel names now).
            let client = self.client.client().await?;
            let name = format!("evstream-consume:{}:{}", self.config.group, self.name);
            // A blocking read answers after up to `block`; only a dead server takes longer.
            let (reader, reader_id) =
                reader::Reader::open(&client, timeout, block + timeout, &name).await?;
            let mut writer = client
                .get_multiplexed_async_connection_with_config(
                    &AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(timeout))
                        .set_response_timeout(Some(timeout)),
                )
                .await?;
            crate::config::name_connection(&mut writer, &name).await;
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(commit::SCRIPT)
                .query_async::<String>(&mut writer)
                .await?;
            self.ensure_group(&mut writer).await?;
            Ok(Session {
                reader,
                reader_id,
                writer,
            })
        };
        tokio::time::timeout(timeout * 3 + self.client.lookup_budget(), setup)
            .await
            .unwrap_or_else(|_| {
                Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to Redis took longer than {:?}", timeout * 3),
                )))
            })
    }

    /// Creates the group (and the stream) unless it exists.
    async fn ensure_group(&self, writer: &mut MultiplexedConnection) -> Result<(), RedisError> {
        let created = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys.stream)
            .arg(&self.config.group)
            .arg(&self.config.start_id)
            .arg("MKSTREAM")
            .query_async::<()>(writer)
            .await;
        match created {
            Ok(()) => {
                tracing::info!(group = %self.config.group, stream = %self.keys.stream, start_id = %self.config.start_id, "consumer group created");
                Ok(())
            }
            Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn read_own_pending(
        &self,
        session: &mut Session,
        after: &str,
    ) -> Result<(Vec<RawEntry>, Option<String>), RedisError> {
        let reply: Value = self
            .read_command(after, None)
            .query_async(&mut session.writer)
            .await?;
        let mut entries = decode::read_reply(reply).map_err(shape_error)?;
        let next = (entries.len() >= self.config.count)
            .then(|| entries.last().map(|e| e.id.clone()))
            .flatten();
        self.fill_deliveries(&mut session.writer, &mut entries, 1)
            .await?;
        Ok((entries, next))
    }

    async fn claim(
        &self,
        session: &mut Session,
        cursor: &str,
    ) -> Result<(Vec<RawEntry>, String), RedisError> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.keys.stream)
            .arg(&self.config.group)
            .arg(&self.name)
            .arg(self.config.min_idle_ms)
            .arg(cursor)
            .arg("COUNT")
            .arg(self.config.count)
            .query_async(&mut session.writer)
            .await?;
        let (next, mut entries, deleted) = decode::autoclaim_reply(reply).map_err(shape_error)?;
        if !deleted.is_empty() {
            // Redis already dropped these from the pending list: they were trimmed away
            // before anyone acknowledged them.
            ConsumeStats::add(&self.stats.deleted, deleted.len() as u64);
            tracing::warn!(count = deleted.len(), group = %self.config.group, "pending entries were deleted from the stream before being processed");
        }
        ConsumeStats::add(&self.stats.claimed, entries.len() as u64);
        // A claimed entry was delivered at least once before this claim.
        self.fill_deliveries(&mut session.writer, &mut entries, 2)
            .await?;
        Ok((entries, next))
    }

    async fn read_new(
        &self,
        session: &mut Session,
        block: Duration,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Vec<RawEntry>, RedisError> {
        let block = block.clamp(
            Duration::from_millis(1),
            Duration::from_millis(self.config.block_ms),
        );
        let command = self.read_command(">", Some(block));
        let Session {
            reader,
            reader_id,
            writer,
        } = session;
        let read = reader.read(&command);
        tokio::pin!(read);
        let mut unblocked = false;
        loop {
            tokio::select! {
                entries = &mut read => break entries,
                _ = stop.changed(), if !unblocked => {
                    unblocked = true;
                    // Wake the blocked read (it returns what it has, possibly nothing);
                    // without the right, it ends at its BLOCK timeout.
                    if let Some(id) = reader_id {
                        let _ = redis::cmd("CLIENT").arg("UNBLOCK").arg(*id)
                            .query_async::<i64>(writer).await;
                    }
                }
            }
        }
    }

    fn read_command(&self, after: &str, block: Option<Duration>) -> Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.config.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(self.config.count);
        if let Some(block) = block {
            cmd.arg("BLOCK")
                .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX));
        }
        cmd.arg("STREAMS").arg(&self.keys.stream).arg(after);
        cmd
    }

    /// Sets each entry's delivery count from `XPENDING`; an entry not found there
    /// (acknowledged meanwhile) gets `at_least`.
    ///
    /// One call covers the batch's id range, with room, but this consumer's own pending
    /// entries between the first and the last that are not in the batch (failures waiting
    /// for a retry, fresh ones `XAUTOCLAIM` stepped over) come back too, and there may be any
    /// number of them: a page that came back full is followed by another, from the first
    /// entry of the batch past it, until every entry is found or the range is exhausted. A
    /// count read short would let a poison entry escape `max_deliveries` (issue 18).
    async fn fill_deliveries(
        &self,
        writer: &mut MultiplexedConnection,
        entries: &mut [RawEntry],
        at_least: u64,
    ) -> Result<(), RedisError> {
        let Some(last) = entries.last().map(|e| e.id.clone()) else {
            return Ok(());
        };
        let page = entries.len() * 4 + 64;
        let mut counts: std::collections::HashMap<String, u64> =
            std::collections::HashMap::with_capacity(entries.len());
        // Entries before `next` are settled: found, or not pending.
        let mut next = 0;
        while let Some(start) = entries.get(next) {
            let reply: Value = redis::cmd("XPENDING")
                .arg(&self.keys.stream)
                .arg(&self.config.group)
                .arg(&start.id)
                .arg(&last)
                .arg(page)
                .arg(&self.name)
                .query_async(writer)
                .await?;
            let rows = decode::pending_reply(reply).map_err(shape_error)?;
            let full = rows.len() >= page;
            let reached = rows.last().map(|(id, _)| decode::parse_id(id));
            counts.extend(rows);
            match reached {
                Some(Some(reached)) if full => {
                    next += entries[next..].partition_point(|e| {
                        decode::parse_id(&e.id).is_some_and(|id| id <= reached)
                    });
                }
                _ => break,
            }
        }
        for entry in entries {
            entry.deliveries = counts
                .get(&entry.id)
                .copied()
                .unwrap_or(at_least)
                .max(at_least);
        }
        Ok(())
    }

    /// Decodes, handles and commits one batch.
    async fn process(
        &mut self,
        session: &mut Session,
        entries: Vec<RawEntry>,
    ) -> Result<(), RedisError> {
        let Some(prepared) = self.prepare(entries) else {
            return Ok(());
        };
        let reply = prepared
            .command
            .query_async::<Value>(&mut session.writer)
            .await;
        self.finish(&mut session.writer, prepared, reply).await
    }

    /// Processes new entries, pipelined: a task reads ahead (up to two batches: one read
    /// waiting to be taken, one under way) while a batch is handled, and the previous
    /// batch's commit is being applied by Redis, so that the handler's work and Redis's
    /// overlap. The previous commit's outcome is given to the handler (`on_commit`) after the
    /// current batch's `end_batch`: one commit in flight. Returns when a read comes back
    /// empty, when it is time to claim, or when the shutdown is asked for, with every entry
    /// read handled and every commit finished.
    async fn process_new(
        &mut self,
        session: &mut Session,
        mut entries: Vec<RawEntry>,
        claim_at: Instant,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), RedisError> {
        // Only wait for more if some came: a quiet stream ends the pipeline at once.
        let command = self.read_command(">", Some(Duration::from_millis(1)));
        let keep_reading = Arc::new(AtomicBool::new(true));
        let (batches, mut read) = tokio::sync::mpsc::channel(1);
        let reader = session.reader.clone();
        let keep = Arc::clone(&keep_reading);
        tokio::spawn(async move {
            while keep.load(Ordering::Relaxed) {
                let batch = reader.read(&command).await;
                let last = !matches!(&batch, Ok(entries) if !entries.is_empty());
                if batches.send(batch).await.is_err() || last {
                    break;
                }
            }
        });
        let stop_reading = || keep_reading.store(false, Ordering::Relaxed);
        let mut in_flight: Option<(Prepared, JoinHandle<Result<Value, RedisError>>)> = None;
        loop {
            let mut prepared = self.prepare(entries);
            let commit = prepared.as_mut().map(|prepared| {
                let mut writer = session.writer.clone();
                // Moved to the task, not copied: `finish` does not need it.
                let command = std::mem::replace(&mut prepared.command, Cmd::new());
                tokio::spawn(async move { command.query_async::<Value>(&mut writer).await })
            });
            let previous = std::mem::replace(&mut in_flight, prepared.zip(commit));
            if let Some((prepared, commit)) = previous {
                let reply = join_redis(commit).await;
                if let Err(error) = self.finish(&mut session.writer, prepared, reply).await {
                    stop_reading();
                    self.drain(session, in_flight.take()).await;
                    return Err(error);
                }
            }
            if *stop.borrow() || Instant::now() >= claim_at {
                // What is read already is handled; nothing more is asked for.
                stop_reading();
            }
            let received = read.recv().await;
            if received.is_none() && keep_reading.load(Ordering::Relaxed) {
                // The reading task ended without a last (empty) batch: it panicked.
                self.drain(session, in_flight.take()).await;
                return Err(RedisError::from(std::io::Error::other(
                    "the reading task stopped unexpectedly",
                )));
            }
            entries = match received {
                Some(Ok(entries)) if !entries.is_empty() => entries,
                // The stream is quiet, or reading was stopped: done once the commit lands.
                Some(Ok(_)) | None => {
                    return match in_flight.take() {
                        Some((prepared, commit)) => {
                            let reply = join_redis(commit).await;
                            self.finish(&mut session.writer, prepared, reply).await
                        }
                        None => Ok(()),
                    };
                }
                Some(Err(error)) => {
                    stop_reading();
                    self.drain(session, in_flight.take()).await;
                    return Err(error);
                }
            };
        }
    }

    /// Finishes a commit in flight when the pipeline stops on an error: the handler still
    /// learns its outcome (every batch it handled gets exactly one `on_commit`).
    async fn drain(
        &mut self,
        session: &mut Session,
        in_flight: Option<(Prepared, JoinHandle<Result<Value, RedisError>>)>,
    ) {
        if let Some((prepared, commit)) = in_flight {
            let reply = join_redis(commit).await;
            if let Err(error) = self.finish(&mut session.writer, prepared, reply).await {
                self.failed(&error);
            }
        }
    }

    /// Decodes and handles a batch, and builds its commit (`None` when nothing is to be
    /// committed: every entry failed and waits for a retry).
    fn prepare(&mut self, entries: Vec<RawEntry>) -> Option<Prepared> {
        ConsumeStats::add(&self.stats.read, entries.len() as u64);
        // Per entry that will be part of the commit: what it stands for and its effects.
        let mut planned: Vec<(usize, Record, Effects)> = Vec::with_capacity(entries.len());
        // One envelope for the whole batch, its strings reused entry after entry.
        let mut event = std::mem::take(&mut self.envelope);
        for (index, entry) in entries.iter().enumerate() {
            let mut effects = self.spare_effects.pop().unwrap_or_default();
            effects.clear();
            let Some(fields) = &entry.fields else {
                effects.count("deleted_pending", 1);
                planned.push((index, Record::Other, effects));
                continue;
            };
            if entry.deliveries > self.config.max_deliveries {
                // Delivered more often than allowed without ever failing here: earlier
                // consumers died on it. Do not hand it to the handler again.
                let message = format!(
                    "delivered {} times (consume.max_deliveries = {}) without being acknowledged",
                    entry.deliveries, self.config.max_deliveries
                );
                self.dead_letter(&mut effects, entry, "max_deliveries", &message);
                planned.push((index, Record::DeadLetter, effects));
                continue;
            }
            // With a registry, `read_as_handler` parses (and so checks) the JSON itself.
            let decoded = decode::decode_into(
                &mut event,
                &entry.id,
                fields,
                entry.deliveries,
                self.config.max_data_bytes,
                self.registry().is_none(),
            )
            .map_err(|error| (error.code(), error.to_string()))
            .and_then(|()| self.read_as_handler(&mut event))
            .map(|reading| (&event, reading, self.recent.seen(&event.event_id)));
            let failure = match decoded {
                Err(failure) => Some(failure),
                Ok((_, Reading::NotRead, _)) => {
                    // A type this handler does not read: not validated, so a type nobody
                    // registered does not stop the groups that do not care about it.
                    effects.count("skipped", 1);
                    planned.push((index, Record::Skipped, effects));
                    continue;
                }
                Ok((event, _, _))
                    if event
                        .replay_for_group
                        .as_ref()
                        .is_some_and(|group| *group != self.config.group) =>
                {
                    // A dead letter of another group put back for that group only: this
                    // group processed the original entry already.
                    effects.count("replays_for_other_groups", 1);
                    planned.push((index, Record::Skipped, effects));
                    continue;
                }
                Ok((event, _, Seen::Held)) => {
                    // The same event in the batch whose commit is in flight: wait for its
                    // outcome. Left pending, this entry comes back by a claim, when it is
                    // known whether that event was applied.
                    tracing::debug!(id = %entry.id, event_id = %event.event_id, "the same event is in the commit in flight; left pending");
                    self.spare_effects.push(effects);
                    continue;
                }
                Ok((_, _, Seen::Applied)) => {
                    effects.count("duplicates_skipped", 1);
                    planned.push((index, Record::Duplicate, effects));
                    continue;
                }
                Ok((event, reading, Seen::No)) => {
                    match self.handler.accepts(&event.event_type, event.version) {
                        Accept::Skip => {
                            effects.count("skipped", 1);
                            planned.push((index, Record::Skipped, effects));
                            continue;
                        }
                        Accept::UnknownVersion => Some((
                            "unknown_version",
                            format!(
                                "{} version v{} is not known to this consumer",
                                event.event_type, event.version
                            ),
                        )),
                        Accept::Handle => {
                            match catch_panic(|| self.handler.handle(event, &mut effects)) {
                                Ok(()) => {
                                    self.recent.hold(event.event_id);
                                    effects.count("processed", 1);
                                    let unvalidated = reading == Reading::Unvalidated;
                                    if unvalidated {
                                        effects.count("unvalidated", 1);
                                    }
                                    let record = Record::Handled {
                                        event_id: event.event_id,
                                        unvalidated,
                                    };
                                    planned.push((index, record, effects));
                                    continue;
                                }
                                Err(error) => Some(("handler_error", error.to_string())),
                            }
                        }
                    }
                }
            };
            let (reason, message) = failure.expect("every other case continued");
            effects.clear();
            if entry.deliveries >= self.config.max_deliveries {
                self.dead_letter(&mut effects, entry, reason, &message);
                planned.push((index, Record::DeadLetter, effects));
            } else {
                ConsumeStats::add(&self.stats.failed_attempts, 1);
                tracing::debug!(id = %entry.id, deliveries = entry.deliveries, reason, %message, "entry failed; left pending for a retry");
                self.spare_effects.push(effects);
            }
        }
        self.envelope = event;
        if planned.is_empty() {
            return None;
        }
        {
            let mut batch = Batch {
                entries: planned
                    .iter_mut()
                    .filter_map(|(_, record, effects)| match record {
                        Record::Handled { event_id, .. } => Some((*event_id, effects)),
                        _ => None,
                    })
                    .collect(),
            };
            self.handler.end_batch(&mut batch);
        }
        let mut builder = CommitBuilder::new(
            &self.sha,
            &self.keys.stream,
            &self.keys.counters,
            &self.config.group,
        );
        let mut records = Vec::with_capacity(planned.len());
        for (index, record, effects) in planned {
            builder.record(&entries[index].id, &effects);
            records.push((index, record));
            self.spare_effects.push(effects);
        }
        let (command, wanted) = builder.finish();
        Some(Prepared {
            command,
            wanted,
            records,
            entries,
        })
    }

    /// Brings `event` to a version the handler reads ([`Handler::reads`]): validated and
    /// migrated up to the newest version it reads, or a newer version read as that one (see
    /// [`Registry::read_as`]). A type the registry lacks is handed over as it is (counted
    /// `unvalidated`) unless `consume.strict_schemas` is set.
    fn read_as_handler(&self, event: &mut Envelope) -> Result<Reading, (&'static str, String)> {
        let reads = self.handler.reads(&event.event_type);
        let range = match &reads {
            Reads::Nothing => return Ok(Reading::NotRead),
            Reads::Latest => None,
            Reads::Versions(range) => Some(range),
        };
        let unread = |event: &Envelope| {
            let version = event.version;
            let range = range.filter(|range| !range.contains(&version))?;
            Some((
                "unknown_version",
                format!(
                    "{} v{version} is not read by this handler (it reads v{} to v{})",
                    event.event_type,
                    range.start(),
                    range.end()
                ),
            ))
        };
        let Some(registry) = self.registry() else {
            // No registry in use: handed over as it is, as before there were registries.
            return unread(event).map_or(Ok(Reading::Handle), Err);
        };
        let Some(latest) = registry.latest(&event.event_type) else {
            if self.config.strict_schemas {
                return Err((
                    "unknown_type",
                    format!(
                        "event type {:?} has no registered schema and consume.strict_schemas is \
                         on: register it (evstream schema push) or turn strict_schemas off",
                        event.event_type
                    ),
                ));
            }
            // `decode_into` left the JSON check to the registry, which has nothing to say.
            serde_json::from_str::<serde::de::IgnoredAny>(&event.data)
                .map_err(|e| ("invalid_json", format!("data is not valid JSON: {e}")))?;
            return unread(event).map_or(Ok(Reading::Unvalidated), Err);
        };
        let failed = |failure: crate::schema::SchemaFailure| (failure.code(), failure.to_string());
        let mut data: serde_json::Value = serde_json::from_str(&event.data)
            .map_err(|e| ("invalid_json", format!("data is not valid JSON: {e}")))?;
        let target = range.map_or(latest, |range| (*range.end()).min(latest));
        if event.version > target {
            // Newer than the handler reads: its data, unchanged, read as `target`.
            registry
                .read_as(&event.event_type, event.version, target, &data)
                .map_err(failed)?;
            event.version = target;
        } else {
            let version = registry
                .upgrade_to(&event.event_type, event.version, target, &mut data)
                .map_err(failed)?;
            if version != event.version {
                event.data = data.to_string();
                event.version = version;
            }
        }
        unread(event).map_or(Ok(Reading::Handle), Err)
    }

    /// Reads the commit's reply, tells the handler, and writes what follows from it.
    async fn finish(
        &mut self,
        writer: &mut MultiplexedConnection,
        prepared: Prepared,
        reply: Result<Value, RedisError>,
    ) -> Result<(), RedisError> {
        let Prepared {
            wanted,
            records,
            entries,
            ..
        } = prepared;
        let results =
            reply.and_then(|reply| commit::parse_reply(reply, &wanted).map_err(shape_error));
        let results = match results {
            Ok(results) => results,
            Err(error) => {
                // Outcome unknown: whatever this commit did, it did atomically, and the
                // entries it did not acknowledge stay pending. The handler learns that
                // none of them is known to be applied by this consumer.
                let now = Instant::now();
                let outcomes: Vec<Outcome> = records
                    .iter()
                    .filter_map(|(index, record)| match record {
                        Record::Handled { event_id, .. } => Some(Outcome {
                            event_id: *event_id,
                            stream_id: entries[*index].id.clone(),
                            applied: false,
                            replies: Vec::new(),
                        }),
                        _ => None,
                    })
                    .collect();
                for outcome in &outcomes {
                    self.recent.settle(outcome.event_id, false, now);
                }
                self.handler.on_commit(&outcomes);
                return Err(error);
            }
        };
        let now = Instant::now();
        let mut outcomes = Vec::with_capacity(results.len());
        let mut effect_failures = Vec::new();
        for ((index, record), result) in records.iter().zip(results) {
            let applied = result.status != 0;
            if !applied {
                ConsumeStats::add(&self.stats.duplicates_skipped, 1);
            }
            if result.status == 2 {
                effect_failures.push((*index, result.error));
            }
            match record {
                Record::Handled {
                    event_id,
                    unvalidated,
                } => {
                    if applied {
                        ConsumeStats::add(&self.stats.processed, 1);
                        if *unvalidated {
                            ConsumeStats::add(&self.stats.unvalidated, 1);
                        }
                    }
                    self.recent.settle(*event_id, applied, now);
                    outcomes.push(Outcome {
                        event_id: *event_id,
                        stream_id: entries[*index].id.clone(),
                        applied,
                        replies: result.replies,
                    });
                }
                Record::DeadLetter if applied => ConsumeStats::add(&self.stats.dead_lettered, 1),
                Record::Skipped if applied => ConsumeStats::add(&self.stats.skipped, 1),
                Record::Duplicate if applied => {
                    ConsumeStats::add(&self.stats.duplicates_skipped, 1);
                }
                _ => {}
            }
        }
        self.handler.on_commit(&outcomes);
        if !effect_failures.is_empty() {
            self.record_effect_failures(writer, &entries, effect_failures)
                .await?;
        }
        let mut effects = self.spare_effects.pop().unwrap_or_default();
        effects.clear();
        self.handler.flush(&mut effects);
        let derived = (!effects.is_empty()).then(|| {
            let mut builder = CommitBuilder::new(
                &self.sha,
                &self.keys.stream,
                &self.keys.counters,
                &self.config.group,
            );
            builder.record("", &effects);
            builder.finish().0
        });
        self.spare_effects.push(effects);
        if let Some(derived) = derived {
            // Not waited for here (the pipeline goes on); the previous one is, and its error
            // is reported.
            let mut connection = writer.clone();
            let flushing =
                tokio::spawn(async move { derived.query_async::<()>(&mut connection).await });
            if let Some(previous) = self.flushing.replace(flushing) {
                join_redis(previous).await?;
            }
        }
        Ok(())
    }

    /// Waits for the last derived effects sent by [`finish`](Self::finish).
    async fn wait_for_flush(&mut self) {
        if let Some(flushing) = self.flushing.take() {
            if let Err(error) = join_redis(flushing).await {
                self.failed(&error);
            }
        }
    }

    /// Effects that failed inside a commit cannot be undone (the entry is acknowledged):
    /// each gets a dead letter (`effect_failed`) so that an operator sees it.
    async fn record_effect_failures(
        &self,
        writer: &mut MultiplexedConnection,
        entries: &[RawEntry],
        failures: Vec<(usize, String)>,
    ) -> Result<(), RedisError> {
        ConsumeStats::add(&self.stats.effect_errors, failures.len() as u64);
        let mut pipe = redis::pipe();
        for (index, error) in failures {
            tracing::error!(id = %entries[index].id, %error, "an effect failed after its entry was acknowledged");
            pipe.add_command(self.dead_letter_command(&entries[index], "effect_failed", &error))
                .ignore();
        }
        pipe.query_async::<()>(writer).await
    }

    /// Adds the dead letter of `entry` to `effects`: its fields (without an oversized
    /// `data`) plus the `dlq_*` fields of `docs/envelope.md`.
    fn dead_letter(&self, effects: &mut Effects, entry: &RawEntry, reason: &str, message: &str) {
        effects.apply(&mut self.dead_letter_command(entry, reason, message));
        effects.count("dead_lettered", 1);
        // A hostile writer must not flood the log: the first ten, then every power of two
        // (every one is in the dead letter stream and the metrics).
        let n = self.dead_letter_logs.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= 10 || n.is_power_of_two() {
            tracing::warn!(id = %entry.id, reason, deliveries = entry.deliveries, error = message, dead_lettered_so_far = n, "entry dead-lettered");
        }
    }

    fn dead_letter_command(&self, entry: &RawEntry, reason: &str, message: &str) -> Cmd {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&self.keys.dead_letters).arg("*");
        // What a hostile entry can make the dead letter copy is bounded like what it can
        // make the consumer decode: oversized fields and fields past the limit are left out
        // and counted.
        let mut dropped = 0;
        let fields = entry.fields.iter().flat_map(decode::Fields::iter);
        for (index, (name, value)) in fields.enumerate() {
            let is_data = name == crate::envelope::FIELD_DATA.as_bytes();
            if is_data && value.len() > self.config.max_data_bytes {
                xadd.arg("dlq_data_bytes").arg(value.len());
            } else if name.starts_with(b"dlq_") {
                continue;
            } else if index >= decode::MAX_FIELDS
                || decode::oversized_field(name, value, self.config.max_data_bytes)
            {
                dropped += 1;
            } else {
                xadd.arg(name).arg(value);
            }
        }
        if dropped > 0 {
            xadd.arg("dlq_fields_dropped").arg(dropped);
        }
        xadd.arg("dlq_reason")
            .arg(reason)
            .arg("dlq_stage")
            .arg("consume")
            .arg("dlq_error")
            .arg(message)
            .arg("dlq_at_ns")
            .arg(wall_clock_ns())
            .arg("dlq_source_id")
            .arg(&entry.id)
            .arg("dlq_deliveries")
            .arg(entry.deliveries)
            .arg("dlq_group")
            .arg(&self.config.group)
            .arg("dlq_consumer")
            .arg(&self.name);
        xadd
    }
}

/// A batch handled and ready to commit.
struct Prepared {
    command: Cmd,
    /// Replies wanted per record.
    wanted: Vec<usize>,
    /// Per record: the entry's index in `entries` and what it stands for.
    records: Vec<(usize, Record)>,
    entries: Vec<RawEntry>,
}

/// The effects of every entry of a batch, for [`Handler::end_batch`].
#[derive(Debug)]
pub struct Batch<'a> {
    entries: Vec<(uuid::Uuid, &'a mut Effects)>,
}

impl Batch<'_> {
    /// The effects of the entry holding `event_id`, if it was handled in this batch.
    pub fn effects(&mut self, event_id: &uuid::Uuid) -> Option<&mut Effects> {
        self.entries
            .iter_mut()
            .find(|(id, _)| id == event_id)
            .map(|(_, effects)| &mut **effects)
    }

    /// Number of entries handled in this batch.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry was handled.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What [`Consumer::read_as_handler`] made of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Validated (when a registry is in use) and in a version the handler reads.
    Handle,
    /// Of a type the registry does not know: handed over without validation, counted.
    Unvalidated,
    /// Of a type the handler does not read: acknowledged unhandled.
    NotRead,
}

/// What one record of a commit stands for.
enum Record {
    Handled {
        event_id: uuid::Uuid,
        /// Handed over without validation: a type the registry does not know.
        unvalidated: bool,
    },
    DeadLetter,
    Skipped,
    /// An event applied before, in another entry.
    Duplicate,
    Other,
}

/// Whether an error means the connections must be made again.
fn breaks_session(error: &RedisError) -> bool {
    // Including a master demoted by a failover or a moved cluster slot: reconnect, through
    // Sentinel or the cluster's nodes, to the new one.
    crate::config::Connector::calls_for_new_server(error)
        || error.is_timeout()
        || error.code() == Some("NOSCRIPT")
}

/// Runs a handler call, turning a panic into an error: a poison entry that makes the handler
/// panic is retried and dead-lettered like any failure instead of killing the consumer (and,
/// after a restart, the next one).
fn catch_panic(call: impl FnOnce() -> Result<(), HandlerError>) -> Result<(), HandlerError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        Err(format!("the handler panicked: {message}").into())
    })
}

/// The result of a spawned Redis call (a panicked task reads as an I/O error).
async fn join_redis<T>(
    task: tokio::task::JoinHandle<Result<T, RedisError>>,
) -> Result<T, RedisError> {
    task.await.unwrap_or_else(|error| {
        Err(RedisError::from(std::io::Error::other(format!(
            "redis call task failed: {error}"
        ))))
    })
}

fn shape_error(error: decode::ReplyShapeError) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        error.to_string(),
    ))
}

/// Waits `delay` before a retry, less if the consumer is stopped or Sentinel announces a new
/// master (then returns true: reconnect now).
async fn retry_after(
    delay: Duration,
    stop: &mut watch::Receiver<bool>,
    failovers: &mut FailoverWatch,
) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stop.changed() => false,
        _ = failovers.promoted() => true,
    }
}
