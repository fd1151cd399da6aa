//! The shipper: drains the ring in batches and appends them to the Redis stream, with no loss
//! and no duplicates.
//!
//! One shipper per ring runs on its own thread (a single-threaded tokio runtime), so it never
//! competes with the engine's threads for a runtime. Its loop:
//!
//! 1. **Batch**: drain up to `ship.batch_max` events; a partial batch waits up to
//!    `ship.linger_us` for more, but only while other batches are in flight (an idle pipe
//!    sends at once). Raw payloads that are not valid JSON are marked as dead letters.
//! 2. **Send**: each batch is one `MULTI`/`EXEC` (see `ship/append.rs`): a guard script
//!    checks that the producer's high-water mark is where the batch continues from and
//!    otherwise makes the batch's plain `XADD`s fail (so a retried batch never duplicates,
//!    and a batch sent after one that failed is refused: order holds when batches in flight
//!    fail out of order); the `XADD`s of the events and the dead letters; the `MAXLEN ~`
//!    trim; a script that moves the mark. Up to `ship.in_flight` batches fly at once on one
//!    multiplexed connection, each with a deadline of `ship.timeout_ms`. With
//!    `ship.append = "script"`, each batch is one call of `append.lua`, which takes the same
//!    decisions per event (a narrower ACL, twice the Redis CPU per event).
//! 3. **Confirm** in order; on a failure, stop sending, let the other in-flight batches land,
//!    back off (exponential, full jitter), reconnect if the connection broke, and resend every
//!    unconfirmed batch in order. K consecutive failures open the circuit breaker; while it is
//!    open nothing is sent and nothing is dropped: events wait in the ring.
//!
//! 4. **Spill**: with `ship.journal_dir` set, once Redis falls behind and the ring passes
//!    `ship.spill_at_percent`, batches go to the spill journal (`ship/journal.rs`) instead;
//!    while the journal holds anything, it is shipped before any newer event, so order holds.
//!    At shutdown, whatever could not be delivered in time is written to the journal, and the
//!    next start (of any producer using the same directory) replays it.
//!
//! ```no_run
//! use std::time::Duration;
//! use evstream::{publish, ship, Config};
//!
//! let mut config = Config::from_file("evstream.toml".as_ref())?;
//! config.ship.journal_dir = Some("/var/lib/evstream/journal".into());
//! let (publisher, receiver) = publish::channel(&config)?;
//! let shipper = ship::spawn(&config, receiver)?;
//!
//! publisher.publish("Signal", &serde_json::json!({"name": "momentum"}), "")?;
//!
//! let health = shipper.health(); // connected, breaker, in flight, journal backlog, errors
//! println!("{}", serde_json::to_string(&health)?);
//! let report = shipper.shutdown(Duration::from_secs(5));
//! println!("shipped {}, journaled {}, lost {}", report.shipped, report.journaled, report.undelivered);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Not yet here: the local dead-letter file for when Redis is unreachable (dead letters wait
//! in their batch, in the ring or the journal, instead).

mod append;
pub(crate) mod backoff {
    pub(crate) use crate::redis::Backoff;
}
mod breaker;
pub(crate) mod config;
pub(crate) mod journal;
mod risks;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, RedisError};
use serde::Serialize;
use tokio::sync::watch;

use crate::config::{AppendMode, Config, ShipConfig};
use crate::envelope::EventIdGenerator;
use crate::error::ShipError;
use crate::failover::FailoverWatch;
use crate::publish::{wall_clock_ns, CapturedEvent, Receiver};
use append::{AppendSettings, Checks, Keys, Outcome, Poison};
pub use breaker::BreakerState;
use breaker::{Breaker, Transition};
pub use journal::FsyncPolicy;
use journal::{AppendError, Journal};

/// How often an idle shipper looks at the ring. Producers never wake the shipper (that would
/// cost the hot path), so this bounds the added latency at low rates.
const IDLE_POLL: Duration = Duration::from_millis(1);

/// How long the final drain waits for a claim made before the shutdown to be written.
const STUCK_CLAIM: Duration = Duration::from_secs(1);

/// Starts a shipper for `receiver` on its own thread, shipping to `config.redis`.
///
/// Fails only on a configuration that can never work (an unparsable URL); an unreachable
/// Redis is retried for as long as the shipper runs.
///
/// With `redis.partitions`, one lane per partition runs on that thread: its own ring, batches,
/// connection (to the Redis Cluster primary holding the partition), breaker and journal
/// (`<journal_dir>/partition-<p>/`), so a partition whose node fails over waits alone while
/// the others keep shipping.
pub fn spawn(config: &Config, receiver: Receiver) -> Result<ShipperHandle, ShipError> {
    config.validate()?;
    let lanes = config.partition_configs();
    let receivers = receiver.split();
    if lanes.len() != receivers.len() {
        return Err(ShipError::Config(crate::error::ConfigError::Invalid {
            field: "redis.partitions",
            value: format!("{:?}", config.redis.partitions),
            reason: "differs from the configuration the publisher's ring was built with; \
                     build both from one configuration",
        }));
    }
    let partitioned = config.redis.partitions.is_some();
    risks::warn_about_config(config, &config.redis.connector()?);
    let schemas = match (&config.ship.validation, &config.ship.schemas_dir) {
        (crate::config::Validation::Off, _) | (_, None) => None,
        (_, Some(dir)) => Some(Arc::new(
            crate::schema::Registry::from_dir(dir)
                .map_err(|source| ShipError::Schemas { source })?,
        )),
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(None);
    let mut shippers = Vec::with_capacity(lanes.len());
    let mut states = Vec::with_capacity(lanes.len());
    for (lane, receiver) in lanes.iter().zip(receivers) {
        let client = lane.redis.connector()?;
        let mut ship = lane.ship.clone();
        if partitioned {
            ship.journal_dir = ship
                .journal_dir
                .map(|dir| dir.join(format!("partition-{}", receiver.partition())));
        }
        let producer_id = receiver.producer_id().to_owned();
        let settings = AppendSettings {
            keys: Keys::new(&lane.redis.stream, &producer_id),
            producer_id,
            max_len: ship.max_len,
            high_water_mark_ttl_ms: ship.dedupe_ttl_s.saturating_mul(1000),
        };
        let journals = open_journals(&ship, &settings.producer_id)?;
        let state = Arc::new(State::default());
        let mut shipper = Shipper::new(
            ship,
            settings,
            client,
            receiver,
            Arc::clone(&state),
            shutdown_rx.clone(),
            schemas.clone(),
        );
        shipper.journal = journals.own;
        shipper.replays = journals.replays;
        shipper.stale = journals.stale;
        shipper.partitioned_cluster =
            partitioned && matches!(shipper.client, crate::config::Connector::Cluster { .. });
        shipper.publish_state(Instant::now());
        shippers.push(shipper);
        states.push(state);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ShipError::Runtime { source })?;
    let thread = std::thread::Builder::new()
        .name("evstream-shipper".into())
        .spawn(move || {
            let lanes = tokio::task::LocalSet::new();
            lanes.block_on(&runtime, async move {
                let running: Vec<_> = shippers
                    .into_iter()
                    .map(|shipper| tokio::task::spawn_local(shipper.run()))
                    .collect();
                let mut total = ShutdownReport::default();
                for lane in running {
                    match lane.await {
                        Ok(report) => total.add(&report),
                        Err(_) => total.panicked = true,
                    }
                }
                total
            })
        })
        .map_err(|source| ShipError::Runtime { source })?;
    Ok(ShipperHandle {
        thread: Some(thread),
        shutdown: shutdown_tx,
        states: states.into(),
        default_timeout: Duration::from_millis(config.ship.shutdown_timeout_ms),
    })
}

/// This producer's journal and the journals earlier processes left, as found at start.
struct Journals {
    own: Option<Journal>,
    replays: VecDeque<Journal>,
    stale: Vec<StaleJournal>,
}

/// A journal of an earlier process whose oldest events are older than `ship.dedupe_ttl_s`:
/// its producer's high-water mark may have expired, and without it the append guard cannot
/// tell which events Redis already has. It is replayed only once the mark is found in Redis.
struct StaleJournal {
    journal: Journal,
    /// How old its oldest event is.
    age: Duration,
}

/// Opens this producer's journal and the journals earlier processes left to replay.
fn open_journals(ship: &ShipConfig, producer_id: &str) -> Result<Journals, ShipError> {
    let Some(root) = &ship.journal_dir else {
        tracing::warn!(
            "no ship.journal_dir: during a Redis outage longer than the ring absorbs (a few \
             seconds at full rate), publish will refuse events; set ship.journal_dir to a \
             local directory (docs/deployment.md)"
        );
        return Ok(Journals {
            own: None,
            replays: VecDeque::new(),
            stale: Vec::new(),
        });
    };
    let open = |id: &str| {
        Journal::open(
            root,
            id,
            ship.journal_budget_mb.saturating_mul(1024 * 1024),
            ship.journal_fsync,
            Duration::from_millis(ship.journal_fsync_interval_ms),
        )
    };
    let own = open(producer_id).map_err(|source| ShipError::Journal {
        dir: root.clone(),
        source,
    })?;
    let mut replays = VecDeque::new();
    let mut stale = Vec::new();
    let mark_ttl = Duration::from_secs(ship.dedupe_ttl_s);
    for id in Journal::others(root, producer_id) {
        match open(&id) {
            Ok(journal) if journal.is_empty() => {
                let _ = journal.remove_if_empty();
            }
            Ok(journal) => {
                // Unreadable: the replay reads it as it can and counts what it cannot.
                let oldest = journal.oldest_timestamp_ns().ok().flatten();
                let age = oldest.map_or(Duration::ZERO, |ns| {
                    Duration::from_nanos(wall_clock_ns().saturating_sub(ns))
                });
                let events = journal.backlog().0;
                if age <= mark_ttl {
                    tracing::info!(producer_id = %id, events, "replaying journal");
                    replays.push_back(journal);
                } else if ship.replay_stale_journals {
                    tracing::warn!(
                        producer_id = %id,
                        events,
                        age_s = age.as_secs(),
                        "replaying a journal older than ship.dedupe_ttl_s because \
                         ship.replay_stale_journals is set: events Redis already has are \
                         appended again if the producer's high-water mark has expired"
                    );
                    replays.push_back(journal);
                } else {
                    tracing::info!(
                        producer_id = %id,
                        events,
                        age_s = age.as_secs(),
                        "journal older than ship.dedupe_ttl_s: replayed only if its producer's \
                         high-water mark is still in Redis"
                    );
                    stale.push(StaleJournal { journal, age });
                }
            }
            // Held by a live process: it is that process's to ship.
            Err(error) => tracing::debug!(%error, "journal not replayed"),
        }
    }
    Ok(Journals {
        own: Some(own),
        replays,
        stale,
    })
}

pub use crate::redis::redact_url;

/// Controls a running shipper. Dropping it shuts the shipper down with the default deadline
/// (`ship.shutdown_timeout_ms`), flushing what it can, like a logger's flush guard.
#[derive(Debug)]
pub struct ShipperHandle {
    thread: Option<JoinHandle<ShutdownReport>>,
    shutdown: watch::Sender<Option<Instant>>,
    /// One per lane (partition).
    states: Arc<[Arc<State>]>,
    default_timeout: Duration,
}

impl ShipperHandle {
    /// A snapshot of the shipper's health (summed over partitions).
    pub fn health(&self) -> ShipperHealth {
        State::merged(&self.states)
    }

    /// A cloneable handle that reads [`health`](Self::health) from anywhere (metrics,
    /// `/health`, the ops loop's alerts) while the shipper runs.
    pub fn monitor(&self) -> ShipperMonitor {
        ShipperMonitor(Arc::clone(&self.states))
    }

    /// Flushes the ring and every unconfirmed batch to Redis within `timeout`, stops, and
    /// reports what could not be delivered. Events published after this starts may be refused
    /// with `PublishError::Closed` once the shipper has stopped.
    pub fn shutdown(mut self, timeout: Duration) -> ShutdownReport {
        self.stop(timeout)
    }

    fn stop(&mut self, timeout: Duration) -> ShutdownReport {
        let _ = self.shutdown.send(Some(Instant::now() + timeout));
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|_| ShutdownReport {
                panicked: true,
                ..ShutdownReport::default()
            }),
            None => ShutdownReport::default(),
        }
    }
}

impl Drop for ShipperHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let report = self.stop(self.default_timeout);
            if report.undelivered > 0 {
                tracing::error!(?report, "shipper stopped with undelivered events");
            }
        }
    }
}

/// Reads a running shipper's [`ShipperHealth`]; see [`ShipperHandle::monitor`].
#[derive(Debug, Clone)]
pub struct ShipperMonitor(Arc<[Arc<State>]>);

impl ShipperMonitor {
    /// A snapshot of the shipper's health (summed over partitions).
    pub fn health(&self) -> ShipperHealth {
        State::merged(&self.0)
    }
}

/// What a shutdown achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShutdownReport {
    /// Events appended to the stream over the shipper's life.
    pub shipped: u64,
    /// Events sent to the dead-letter stream over the shipper's life.
    pub dead_lettered: u64,
    /// Events not delivered by the deadline and in the spill journal for the next start to
    /// replay: written to its files (the OS has them; on disk too with `journal_fsync =
    /// "always"`, and after the final fsync otherwise).
    pub journaled: u64,
    /// Events not delivered by the deadline and not journaled (no journal configured, its
    /// budget used up, or its writes failed: a record that did not reach the file whole
    /// counts here): these are lost.
    pub undelivered: u64,
    /// Whether the shipper thread panicked (a bug; `undelivered` is then unknown).
    pub panicked: bool,
}

impl ShutdownReport {
    fn add(&mut self, lane: &Self) {
        self.shipped += lane.shipped;
        self.dead_lettered += lane.dead_lettered;
        self.journaled += lane.journaled;
        self.undelivered += lane.undelivered;
        self.panicked |= lane.panicked;
    }
}

/// A snapshot of the shipper, for health checks and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShipperHealth {
    /// Whether the last Redis operation succeeded on a live connection.
    pub redis_connected: bool,
    /// Circuit breaker state.
    pub breaker: BreakerState,
    /// Batches sent and not answered yet.
    pub batches_in_flight: u64,
    /// Events taken from the ring and not confirmed yet.
    pub unconfirmed_events: u64,
    /// Events appended to the stream.
    pub shipped: u64,
    /// Events found already appended when their batch was retried (duplicates prevented).
    pub duplicates_skipped: u64,
    /// Batches confirmed.
    pub batches_ok: u64,
    /// Batch attempts that failed (and were retried).
    pub batches_failed: u64,
    /// Dead letters by reason code.
    pub dead_letters: BTreeMap<String, u64>,
    /// Events waiting in the spill journal (this producer's and earlier ones' to replay).
    pub journal_events: u64,
    /// Bytes of the spill journal on disk.
    pub journal_bytes: u64,
    /// Events written to the journal since start.
    pub spilled: u64,
    /// Whether the journal's disk budget is used up (the ring fills, publish refuses).
    pub journal_full: bool,
    /// Events lost to torn or corrupt journal records.
    pub journal_lost: u64,
    /// Journals of earlier processes not replayed: their events are older than
    /// `ship.dedupe_ttl_s` and their producer's high-water mark is gone from Redis, so a
    /// replay could append again what was delivered. They stay on disk; see
    /// `docs/operations.md`, "A journal older than the mark".
    pub journals_refused: u64,
    /// Sampled events that did not match their schema (`ship.validation = "sample"`;
    /// shipped anyway).
    pub schema_violations: u64,
    /// The last error, if any since start.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    connected: AtomicBool,
    breaker_open: AtomicBool,
    breaker_half_open: AtomicBool,
    in_flight: AtomicU64,
    unconfirmed: AtomicU64,
    shipped: AtomicU64,
    skipped: AtomicU64,
    batches_ok: AtomicU64,
    batches_failed: AtomicU64,
    dead_letters: Mutex<BTreeMap<String, u64>>,
    last_error: Mutex<Option<String>>,
    journal_events: AtomicU64,
    journal_bytes: AtomicU64,
    spilled: AtomicU64,
    journal_full: AtomicBool,
    journal_lost: AtomicU64,
    journals_refused: AtomicU64,
    schema_violations: AtomicU64,
}

impl State {
    /// The lanes' health as one: sums, the worst breaker, connected only if every lane is,
    /// and the last error of a lane that has one (named by its partition when there are
    /// several).
    fn merged(lanes: &[Arc<State>]) -> ShipperHealth {
        let mut lanes = lanes.iter().map(|lane| lane.snapshot()).enumerate();
        let Some((_, mut total)) = lanes.next() else {
            return State::default().snapshot();
        };
        let several = lanes.len() > 0;
        if several {
            total.last_error = total.last_error.map(|e| format!("partition 0: {e}"));
        }
        for (partition, lane) in lanes {
            total.redis_connected &= lane.redis_connected;
            total.breaker = match (total.breaker, lane.breaker) {
                (BreakerState::Open, _) | (_, BreakerState::Open) => BreakerState::Open,
                (BreakerState::HalfOpen, _) | (_, BreakerState::HalfOpen) => BreakerState::HalfOpen,
                _ => BreakerState::Closed,
            };
            total.batches_in_flight += lane.batches_in_flight;
            total.unconfirmed_events += lane.unconfirmed_events;
            total.shipped += lane.shipped;
            total.duplicates_skipped += lane.duplicates_skipped;
            total.batches_ok += lane.batches_ok;
            total.batches_failed += lane.batches_failed;
            for (reason, count) in lane.dead_letters {
                *total.dead_letters.entry(reason).or_default() += count;
            }
            total.journal_events += lane.journal_events;
            total.journal_bytes += lane.journal_bytes;
            total.spilled += lane.spilled;
            total.journal_full |= lane.journal_full;
            total.journal_lost += lane.journal_lost;
            total.journals_refused += lane.journals_refused;
            total.schema_violations += lane.schema_violations;
            if let Some(error) = lane.last_error {
                total.last_error = Some(format!("partition {partition}: {error}"));
            }
        }
        total
    }

    fn snapshot(&self) -> ShipperHealth {
        let breaker = if self.breaker_open.load(Ordering::Relaxed) {
            BreakerState::Open
        } else if self.breaker_half_open.load(Ordering::Relaxed) {
            BreakerState::HalfOpen
        } else {
            BreakerState::Closed
        };
        ShipperHealth {
            redis_connected: self.connected.load(Ordering::Relaxed),
            breaker,
            batches_in_flight: self.in_flight.load(Ordering::Relaxed),
            unconfirmed_events: self.unconfirmed.load(Ordering::Relaxed),
            shipped: self.shipped.load(Ordering::Relaxed),
            duplicates_skipped: self.skipped.load(Ordering::Relaxed),
            batches_ok: self.batches_ok.load(Ordering::Relaxed),
            batches_failed: self.batches_failed.load(Ordering::Relaxed),
            dead_letters: lock(&self.dead_letters).clone(),
            last_error: lock(&self.last_error).clone(),
            journal_events: self.journal_events.load(Ordering::Relaxed),
            journal_bytes: self.journal_bytes.load(Ordering::Relaxed),
            spilled: self.spilled.load(Ordering::Relaxed),
            journal_full: self.journal_full.load(Ordering::Relaxed),
            journal_lost: self.journal_lost.load(Ordering::Relaxed),
            journals_refused: self.journals_refused.load(Ordering::Relaxed),
            schema_violations: self.schema_violations.load(Ordering::Relaxed),
        }
    }

    fn set_error(&self, error: String) {
        *lock(&self.last_error) = Some(error);
    }

    fn dead_lettered(&self) -> u64 {
        lock(&self.dead_letters).values().sum()
    }
}

/// Locks a mutex, ignoring poisoning: the data are counters and a message, valid either way.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether a write failed for want of room (disk or quota full, file size limit), not for a
/// failing disk: health then says `journal_full`.
fn is_disk_full(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge
    )
}

/// Why one attempt at a batch failed.
#[derive(Debug)]
enum AttemptError {
    Timeout(Duration),
    Redis(RedisError),
    /// Appended, but fewer replicas than `ship.min_replicas_ack` confirmed it in time.
    Unreplicated {
        acknowledged: u64,
        wanted: u32,
    },
}

impl AttemptError {
    fn breaks_connection(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Unreplicated { .. } => false,
            // Including a master demoted by a failover or a moved cluster slot: reconnect,
            // through Sentinel or the cluster's nodes, to the new one.
            Self::Redis(e) => crate::config::Connector::calls_for_new_server(e),
        }
    }

    fn is_noscript(&self) -> bool {
        matches!(self, Self::Redis(e) if e.code() == Some("NOSCRIPT"))
    }
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout(after) => write!(f, "batch timed out after {after:?}"),
            Self::Redis(e) => write!(f, "{e}"),
            Self::Unreplicated {
                acknowledged,
                wanted,
            } => write!(
                f,
                "WAIT: {acknowledged} of the {wanted} replicas ship.min_replicas_ack asks for \
                 confirmed the batch in time; retrying (check the replicas: INFO replication)"
            ),
        }
    }
}

type Attempt = Result<Outcome, AttemptError>;

enum Status {
    /// Built, waiting to be sent (first time or again).
    Unsent,
    InFlight(tokio::task::JoinHandle<Attempt>),
    /// Handled by Redis; waiting for the batches before it to be confirmed.
    Confirmed,
}

/// Where a batch came from, so confirming it consumes the right thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Ring,
    /// The oldest record of this producer's journal.
    Journal,
    /// The oldest record of the first journal left by an earlier process.
    Replay,
}

struct Batch {
    source: Source,
    producer_id: String,
    events: Vec<CapturedEvent>,
    poison: Vec<Option<Poison>>,
    request: Request,
    status: Status,
}

/// One batch's call, per `ship.append`.
#[derive(Clone)]
enum Request {
    Script(Arc<Cmd>),
    Transaction(Arc<append::Transaction>),
}

impl Request {
    async fn send(self, connection: &mut MultiplexedConnection) -> Result<Outcome, RedisError> {
        match self {
            Self::Script(cmd) => cmd.query_async::<Outcome>(connection).await,
            Self::Transaction(transaction) => transaction.run(connection).await,
        }
    }
}

impl Batch {
    fn first_sequence(&self) -> u64 {
        self.events.first().map_or(0, CapturedEvent::sequence)
    }
}

struct Shipper {
    config: ShipConfig,
    settings: AppendSettings,
    /// Opens connections (after a Sentinel failover, to the new master).
    client: crate::config::Connector,
    connection: Option<MultiplexedConnection>,
    sha: String,
    /// This producer's event ids (replayed journals' events get their own producer's).
    ids: EventIdGenerator,
    /// The partition of the stream this lane ships (0 without partitions): event ids depend
    /// on it, as sequences do.
    partition: u16,
    checks: Checks,
    receiver: Receiver,
    /// Events drained for the next batch, oldest first.
    forming: Vec<CapturedEvent>,
    forming_since: Option<Instant>,
    /// Built, unconfirmed batches, in sequence order.
    queue: VecDeque<Batch>,
    journal: Option<Journal>,
    /// Journals of earlier processes, replayed first, one batch at a time.
    replays: VecDeque<Journal>,
    /// Journals of earlier processes older than the high-water mark's lifetime, waiting for
    /// the mark to be checked in Redis before they join `replays` (or are refused).
    stale: Vec<StaleJournal>,
    breaker: Breaker,
    /// Sentinel's promotion announcements (started with the loop, inside its runtime).
    failovers: Option<FailoverWatch>,
    /// Whether this lane is one of several partitions on a Redis Cluster (for the server's
    /// risk checks).
    partitioned_cluster: bool,
    /// The server's risky settings were checked (once, at the first connection).
    server_checked: bool,
    /// Whether an ops loop looks after the stream.
    ops: risks::OpsWatch,
    backoff: backoff::Backoff,
    /// After a failure: send nothing until every in-flight batch answered and this passed.
    retry_at: Option<Instant>,
    recovering: bool,
    state: Arc<State>,
    shutdown: watch::Receiver<Option<Instant>>,
}

impl Shipper {
    fn new(
        config: ShipConfig,
        settings: AppendSettings,
        client: crate::config::Connector,
        receiver: Receiver,
        state: Arc<State>,
        shutdown: watch::Receiver<Option<Instant>>,
        schemas: Option<Arc<crate::schema::Registry>>,
    ) -> Self {
        let seed = wall_clock_ns() ^ u64::from(std::process::id());
        Self {
            breaker: Breaker::new(
                config.breaker_threshold,
                Duration::from_millis(config.breaker_cool_down_ms),
                Duration::from_millis(config.breaker_cool_down_max_ms),
            ),
            backoff: backoff::Backoff::new(
                Duration::from_millis(config.retry_base_ms),
                Duration::from_millis(config.retry_max_ms),
                seed,
            ),
            sha: redis::Script::new(append::SCRIPT).get_hash().to_owned(),
            ids: EventIdGenerator::for_producer(&settings.producer_id, receiver.partition()),
            partition: receiver.partition(),
            checks: Checks {
                known_types: (!config.known_event_types.is_empty())
                    .then(|| config.known_event_types.iter().cloned().collect()),
                validation: config.validation,
                sample_every: (1.0 / config.validation_sample_rate).round().max(1.0) as u64,
                registry: schemas,
                ..Checks::default()
            },
            forming: Vec::with_capacity(config.batch_max),
            forming_since: None,
            queue: VecDeque::new(),
            journal: None,
            replays: VecDeque::new(),
            stale: Vec::new(),
            connection: None,
            failovers: None,
            partitioned_cluster: false,
            server_checked: false,
            ops: risks::OpsWatch::new(&settings.keys.stream),
            retry_at: None,
            recovering: false,
            config,
            settings,
            client,
            receiver,
            state,
            shutdown,
        }
    }

    async fn run(mut self) -> ShutdownReport {
        self.failovers = Some(FailoverWatch::start(&self.client));
        loop {
            let now = Instant::now();
            let deadline = *self.shutdown.borrow();
            let ring_empty = !self.receiver.has_ready() && self.forming.is_empty();
            let journals_empty = self.replays.is_empty()
                && self.stale.is_empty()
                && self.journal.as_ref().is_none_or(Journal::is_empty);
            let flushed = self.queue.is_empty() && ring_empty && journals_empty;
            if flushed && (deadline.is_some() || self.receiver.is_finished()) {
                break;
            }
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
            self.form_batches(now, deadline.is_some());
            let send = self.may_send(now);
            // `may_send` ends a recovery whose retry time has come.
            let vet = !self.stale.is_empty() && !self.recovering;
            if send || vet {
                // Reconnecting goes on while the breaker is open, paced by the retry delay: a
                // handshake that succeeds (the server is back, or a failover reached the new
                // one) ends the cool-down, so the breaker only holds batches back from a
                // server that answers and keeps failing.
                if self.connection.is_none() {
                    self.connect().await;
                }
                if vet && self.connection.is_some() {
                    self.vet_stale_journals().await;
                }
                let now = Instant::now();
                if self.breaker.state(now) != BreakerState::Open {
                    self.send_ready(now);
                }
            }
            if self.ops.due(now) {
                let timeout = self.timeout();
                if let Some(connection) = &mut self.connection {
                    let stream = &self.settings.keys.stream;
                    let trims_itself = self.config.max_len > 0;
                    self.ops
                        .check(connection, stream, trims_itself, timeout)
                        .await;
                }
            }
            self.publish_state(now);
            self.wait(now, deadline).await;
        }
        // Let batches already on the wire answer before counting what is undelivered.
        while self.first_in_flight().is_some() {
            let deadline = *self.shutdown.borrow();
            self.wait(
                Instant::now(),
                deadline.map(|d| d.max(Instant::now() + self.timeout())),
            )
            .await;
        }
        let (journaled, undelivered) = self.leave_rest_in_journal();
        self.publish_state(Instant::now());
        ShutdownReport {
            shipped: self.state.shipped.load(Ordering::Relaxed),
            dead_lettered: self.state.dead_lettered(),
            journaled,
            undelivered,
            panicked: false,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    /// Fills the queue (at most two windows of batches): journals of earlier processes
    /// first, then this producer's journal, then the ring (only once the journal is empty,
    /// so nothing newer overtakes it); and spills the ring to the journal while Redis lags.
    fn form_batches(&mut self, now: Instant, flushing: bool) {
        let room = |queue: &VecDeque<Batch>, window: usize| queue.len() < 2 * window;
        let window = self.config.in_flight;
        if room(&self.queue, window) && !self.queue.iter().any(|b| b.source == Source::Replay) {
            while let Some(journal) = self.replays.front_mut() {
                match journal.read_next() {
                    Ok(Some(record)) => {
                        let batch =
                            self.build(Source::Replay, &record.producer_id, record.events, false);
                        self.queue.push_back(batch);
                        break;
                    }
                    Ok(None) => {
                        if let Some(done) = self.replays.pop_front() {
                            let _ = done.remove_if_empty();
                        }
                    }
                    Err(error) => {
                        self.state
                            .set_error(format!("cannot read a journal to replay: {error}"));
                        self.replays.pop_front();
                    }
                }
            }
        }
        if self.journal.as_ref().is_some_and(|j| !j.is_empty()) {
            // Several journal batches in flight at once, so a backlog drains at full speed.
            while room(&self.queue, window) {
                let Some(journal) = self.journal.as_mut() else {
                    break;
                };
                match journal.read_next() {
                    Ok(Some(record)) => {
                        let batch =
                            self.build(Source::Journal, &record.producer_id, record.events, false);
                        self.queue.push_back(batch);
                    }
                    Ok(None) => break,
                    Err(error) => {
                        self.state
                            .set_error(format!("cannot read the journal: {error}"));
                        break;
                    }
                }
            }
        } else {
            self.form_from_ring(now, flushing);
        }
        self.spill();
    }

    /// Moves events from the ring into batches while the queue has room.
    fn form_from_ring(&mut self, now: Instant, flushing: bool) {
        let max = self.config.batch_max;
        while self.queue.len() < 2 * self.config.in_flight {
            let room = max - self.forming.len();
            if room > 0 && self.receiver.drain_into(&mut self.forming, room) > 0 {
                self.forming_since.get_or_insert(now);
            }
            if self.forming.is_empty() {
                return;
            }
            let lingered = self.forming_since.is_some_and(|since| {
                now.duration_since(since) >= Duration::from_micros(self.config.linger_us)
            });
            let pipe_idle = self.first_in_flight().is_none();
            if self.forming.len() < max && !(flushing || lingered || pipe_idle) {
                return;
            }
            let events = std::mem::replace(&mut self.forming, Vec::with_capacity(max));
            self.forming_since = None;
            let producer_id = self.settings.producer_id.clone();
            let batch = self.build(Source::Ring, &producer_id, events, false);
            self.queue.push_back(batch);
        }
    }

    /// While the ring is past `spill_at_percent`, writes batches from it to the journal.
    fn spill(&mut self) {
        let Some(journal) = &mut self.journal else {
            return;
        };
        let health = self.receiver.health();
        let threshold = health.capacity * u64::from(self.config.spill_at_percent) / 100;
        let max = self.config.batch_max;
        // Bounded per loop turn, so confirmations keep being processed.
        for _ in 0..64 {
            if self.receiver.health().depth < threshold.max(1) {
                break;
            }
            let room = max - self.forming.len();
            self.receiver.drain_into(&mut self.forming, room);
            match journal.append(&self.forming) {
                Ok(()) => {
                    self.state
                        .spilled
                        .fetch_add(self.forming.len() as u64, Ordering::Relaxed);
                    self.state.journal_full.store(false, Ordering::Relaxed);
                    let events = std::mem::take(&mut self.forming);
                    self.forming_since = None;
                    self.receiver.recycle(events);
                }
                Err(AppendError::Full) => {
                    // Stop draining: the ring fills and publish refuses, counted there.
                    self.state.journal_full.store(true, Ordering::Relaxed);
                    break;
                }
                Err(AppendError::Io(error)) => {
                    // The record was cut back: the events are still in `forming`, to be
                    // journaled again or shipped, never recycled.
                    if is_disk_full(&error) {
                        self.state.journal_full.store(true, Ordering::Relaxed);
                    }
                    self.state.set_error(format!(
                        "cannot write the spill journal (its events wait in memory): {error}"
                    ));
                    break;
                }
            }
        }
    }

    /// At shutdown: writes every undelivered event to the journal, in sequence order, for the
    /// next start. Returns (journaled, lost).
    fn leave_rest_in_journal(&mut self) -> (u64, u64) {
        let mut batches: Vec<Vec<CapturedEvent>> = Vec::new();
        // Journal records Redis already confirmed (waiting behind an earlier batch) stay in
        // the journal, but are delivered: the next start will find them and skip them.
        let delivered_in_journals: u64 = self
            .queue
            .iter()
            .filter(|b| b.source != Source::Ring && matches!(b.status, Status::Confirmed))
            .map(|b| b.events.len() as u64)
            .sum();
        for batch in self.queue.drain(..) {
            // A batch read from a journal is still in it (counted in its backlog below).
            if batch.source == Source::Ring && !matches!(batch.status, Status::Confirmed) {
                batches.push(batch.events);
            }
        }
        let mut in_journals = self.journal.as_ref().map_or(0, |j| j.backlog().0);
        in_journals += self.replays.iter().map(|j| j.backlog().0).sum::<u64>();
        in_journals = in_journals.saturating_sub(delivered_in_journals);
        in_journals += self
            .stale
            .iter()
            .map(|s| s.journal.backlog().0)
            .sum::<u64>();
        batches.push(std::mem::take(&mut self.forming));
        // Refuse new events (publish returns `Closed`), then drain until every event accepted
        // before the close is out of the ring: the ring's close is a clean cut, so this
        // misses no publish that returned Ok, and waits only for claims being written.
        self.receiver.close();
        // Writing an event into its claim takes nanoseconds to microseconds; a claim still
        // open after a second belongs to a publisher that is stuck (a `Serialize` that
        // blocks): its events are counted undelivered rather than holding the shutdown.
        let give_up = Instant::now() + STUCK_CLAIM;
        let mut stuck = 0;
        loop {
            let mut rest = Vec::new();
            if self.receiver.drain_into(&mut rest, self.config.batch_max) == 0 {
                if self.receiver.is_drained() {
                    break;
                }
                if Instant::now() >= give_up {
                    stuck = self.receiver.health().depth;
                    tracing::error!(
                        events = stuck,
                        "events claimed before the shutdown are still being written after \
                         {STUCK_CLAIM:?} (a publisher blocked inside its event's Serialize?); \
                         they are counted undelivered"
                    );
                    break;
                }
                std::thread::yield_now();
                continue;
            }
            batches.push(rest);
        }
        let mut journaled = 0;
        let mut lost = stuck;
        for events in batches.into_iter().filter(|b| !b.is_empty()) {
            let count = events.len() as u64;
            let Some(journal) = self.journal.as_mut() else {
                lost += count;
                continue;
            };
            // A failed write was cut back and the next append starts a new segment: worth
            // one more try (a limit on file size holds per file; a full disk fails again).
            let appended = match journal.append(&events) {
                Err(AppendError::Io(_)) => journal.append(&events),
                other => other,
            };
            match appended {
                Ok(()) => journaled += count,
                Err(error) => {
                    let error = match error {
                        AppendError::Full => "its disk budget is used up".to_owned(),
                        AppendError::Io(error) => error.to_string(),
                    };
                    tracing::error!(
                        events = count,
                        %error,
                        "cannot journal undelivered events at shutdown; they are lost (counted undelivered)"
                    );
                    lost += count;
                }
            }
        }
        if let Some(journal) = &mut self.journal {
            // The records are in the files (the OS has them); this is for a power loss.
            if let Err(error) = journal.sync() {
                tracing::error!(%error, "cannot fsync the spill journal at shutdown; its records are written but may not survive a power loss");
            }
        }
        (journaled + in_journals, lost)
    }

    fn build(
        &mut self,
        source: Source,
        producer_id: &str,
        events: Vec<CapturedEvent>,
        accept_gap: bool,
    ) -> Batch {
        let checks = &mut self.checks;
        let poison: Vec<_> = events.iter().map(|e| checks.check(e)).collect();
        self.state
            .schema_violations
            .store(checks.violations, Ordering::Relaxed);
        let (keys, replayed_ids);
        let ids = if producer_id == self.settings.producer_id {
            keys = self.settings.keys.clone();
            &self.ids
        } else {
            // Another producer's journal: its events keep the ids their producer gave them.
            keys = Keys::new(&self.settings.keys.stream, producer_id);
            replayed_ids = EventIdGenerator::for_producer(producer_id, self.partition);
            &replayed_ids
        };
        let input = append::BatchInput {
            settings: &self.settings,
            keys: &keys,
            producer_id,
            ids,
            events: &events,
            poison: &poison,
            accept_gap,
            now_ns: wall_clock_ns(),
        };
        let request = match self.config.append {
            AppendMode::Script => Request::Script(Arc::new(append::build(&self.sha, &input))),
            AppendMode::Transaction => {
                Request::Transaction(Arc::new(append::build_transaction(&input)))
            }
        };
        Batch {
            source,
            producer_id: producer_id.to_owned(),
            events,
            poison,
            request,
            status: Status::Unsent,
        }
    }

    /// Checks, for each journal older than the high-water mark's lifetime, whether its
    /// producer's mark is still in Redis: then the append guard skips what Redis has and the
    /// journal is replayed; otherwise it is refused (left on disk, logged, counted), since a
    /// replay could append again events delivered before.
    async fn vet_stale_journals(&mut self) {
        let Some(connection) = &self.connection else {
            return;
        };
        let mut connection = connection.clone();
        let mut marks = redis::pipe();
        for stale in &self.stale {
            let keys = Keys::new(&self.settings.keys.stream, stale.journal.producer_id());
            marks.exists(keys.high_water_mark);
        }
        let timeout = self.timeout().max(Duration::from_millis(500));
        let answer = tokio::time::timeout(timeout, marks.query_async::<Vec<bool>>(&mut connection));
        let exists = match answer.await {
            Ok(Ok(exists)) => exists,
            Ok(Err(error)) => return self.failed(Instant::now(), &AttemptError::Redis(error)),
            Err(_) => return self.failed(Instant::now(), &AttemptError::Timeout(timeout)),
        };
        let ttl = self.config.dedupe_ttl_s;
        for (stale, marked) in std::mem::take(&mut self.stale).into_iter().zip(exists) {
            let producer_id = stale.journal.producer_id().to_owned();
            if marked {
                tracing::info!(
                    %producer_id,
                    events = stale.journal.backlog().0,
                    "replaying a journal older than ship.dedupe_ttl_s: its producer's \
                     high-water mark is still in Redis"
                );
                self.replays.push_back(stale.journal);
                continue;
            }
            let message = format!(
                "journal {dir} not replayed: its oldest event is {age} h old, older than \
                 ship.dedupe_ttl_s ({ttl} s), and producer {producer_id}'s high-water mark is \
                 gone from Redis, so nothing tells which of its {events} events the stream \
                 already has. If none of them reached the stream (look for producer_id \
                 {producer_id} there), start once with ship.replay_stale_journals = true; \
                 otherwise move the directory out of ship.journal_dir (docs/operations.md, \
                 \"A journal older than the mark\")",
                dir = stale.journal.dir().display(),
                age = stale.age.as_secs() / 3600,
                events = stale.journal.backlog().0,
            );
            tracing::error!(%message, "stale journal refused");
            self.state.journals_refused.fetch_add(1, Ordering::Relaxed);
            self.state.set_error(message);
            // Dropping it releases its lock; the files stay.
        }
    }

    fn may_send(&mut self, now: Instant) -> bool {
        if self.recovering {
            if self.first_in_flight().is_some() || self.retry_at.is_some_and(|at| now < at) {
                return false;
            }
            self.recovering = false;
            self.retry_at = None;
        }
        self.queue
            .iter()
            .any(|b| matches!(b.status, Status::Unsent))
    }

    /// Loads the schema registry from Redis (validation keeps the previous one on failure).
    async fn load_schemas(&mut self, connection: &mut MultiplexedConnection) {
        let loaded =
            tokio::time::timeout(self.timeout() * 10, crate::schema::load(connection)).await;
        match loaded {
            Ok(Ok(registry)) if !registry.summary().is_empty() => {
                self.checks.registry = Some(Arc::new(registry));
            }
            Ok(Ok(_)) => tracing::warn!("ship.validation is on but no schema is registered in Redis (evstream schema push); events are not validated"),
            Ok(Err(error)) => tracing::error!(%error, "cannot load the schema registry; validation uses the previous one, if any"),
            Err(_) => tracing::error!("loading the schema registry timed out; validation uses the previous one, if any"),
        }
    }

    async fn connect(&mut self) {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout().max(Duration::from_millis(500))))
            .set_response_timeout(None);
        let append_mode = self.config.append;
        let keys = self.settings.keys.clone();
        let connected = async {
            let mut connection = self
                .client
                .client()
                .await?
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            crate::config::name_connection(
                &mut connection,
                &format!("evstream-ship:{}", self.settings.producer_id),
            )
            .await;
            // Load the script on every new connection: a restarted Redis has an empty cache.
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(append::SCRIPT)
                .query_async::<String>(&mut connection)
                .await?;
            if append_mode == AppendMode::Transaction {
                append::probe_guard(&mut connection, &keys).await?;
            }
            Ok::<_, RedisError>(connection)
        };
        // The handshake and SCRIPT LOAD share one deadline: a server that stops answering
        // must not hold the loop (and a shutdown) until TCP gives up.
        let deadline =
            self.timeout().max(Duration::from_millis(500)) * 2 + self.client.lookup_budget();
        let connected = async {
            tokio::time::timeout(deadline, connected)
                .await
                .unwrap_or_else(|_| {
                    Err(RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connecting to Redis took longer than {deadline:?}"),
                    )))
                })
        };
        match connected.await {
            Ok(mut connection) => {
                self.breaker.probe_now(Instant::now());
                if !self.server_checked {
                    self.server_checked = true;
                    let cluster = self.partitioned_cluster;
                    risks::warn_about_server(&mut connection, cluster, self.timeout()).await;
                }
                if self.config.validation != crate::config::Validation::Off
                    && self.config.schemas_dir.is_none()
                {
                    self.load_schemas(&mut connection).await;
                }
                self.connection = Some(connection);
                self.state.connected.store(true, Ordering::Relaxed);
            }
            Err(error) => self.failed(Instant::now(), &AttemptError::Redis(error)),
        }
    }

    fn send_ready(&mut self, now: Instant) {
        let Some(connection) = &self.connection else {
            return;
        };
        let timeout = self.timeout();
        let mut in_flight = self
            .queue
            .iter()
            .filter(|b| matches!(b.status, Status::InFlight(_)))
            .count();
        for batch in self.queue.iter_mut() {
            if in_flight >= self.config.in_flight {
                break;
            }
            match batch.status {
                Status::Confirmed | Status::InFlight(_) => continue,
                Status::Unsent => {}
            }
            if !self.breaker.allow(now) {
                break;
            }
            let mut connection = connection.clone();
            let request = batch.request.clone();
            let replicas = self.config.min_replicas_ack;
            let mark = (replicas > 0).then(|| {
                (
                    Keys::new(&self.settings.keys.stream, &batch.producer_id).high_water_mark,
                    self.settings.high_water_mark_ttl_ms,
                )
            });
            batch.status = Status::InFlight(tokio::spawn(async move {
                let started = Instant::now();
                let attempt = async {
                    let outcome = request
                        .send(&mut connection)
                        .await
                        .map_err(AttemptError::Redis)?;
                    if let (Some((mark, ttl_ms)), Outcome::Handled { .. }) = (&mark, &outcome) {
                        // `WAIT` counts replicas that have this connection's writes. A retry
                        // that found its batch appended already wrote nothing (and a new
                        // connection has no writes): refreshing the mark's lifetime is a
                        // write after the batch's, so the `WAIT` covers the batch either way.
                        let (_, acknowledged): (i64, u64) = redis::pipe()
                            .cmd("PEXPIRE")
                            .arg(mark)
                            .arg(*ttl_ms)
                            .cmd("WAIT")
                            .arg(replicas)
                            .arg((timeout.as_millis() as u64 / 2).max(1))
                            .query_async(&mut connection)
                            .await
                            .map_err(AttemptError::Redis)?;
                        if acknowledged < u64::from(replicas) {
                            return Err(AttemptError::Unreplicated {
                                acknowledged,
                                wanted: replicas,
                            });
                        }
                    }
                    Ok(outcome)
                };
                match tokio::time::timeout(timeout, attempt).await {
                    Ok(Ok(outcome)) => {
                        crate::telemetry::batch_duration(started.elapsed());
                        Ok(outcome)
                    }
                    Ok(Err(error)) => Err(error),
                    Err(_) => Err(AttemptError::Timeout(timeout)),
                }
            }));
            in_flight += 1;
        }
    }

    fn first_in_flight(&self) -> Option<usize> {
        self.queue
            .iter()
            .position(|b| matches!(b.status, Status::InFlight(_)))
    }

    /// Waits for the oldest in-flight batch, the next poll, a retry time, or shutdown.
    async fn wait(&mut self, now: Instant, deadline: Option<Instant>) {
        // Wake at least every poll interval, even while backing off or with the breaker
        // open: the ring must keep moving to the journal during an outage.
        let mut wake = now + IDLE_POLL;
        if let Some(deadline) = deadline {
            wake = wake.min(deadline.max(now));
        }
        let index = self.first_in_flight();
        let Self {
            queue,
            shutdown,
            failovers,
            ..
        } = self;
        let promoted = async {
            match failovers {
                Some(failovers) => failovers.promoted().await,
                None => std::future::pending().await,
            }
        };
        let answer = async {
            match index.and_then(|i| queue.get_mut(i)) {
                Some(Batch {
                    status: Status::InFlight(handle),
                    ..
                }) => handle.await,
                _ => std::future::pending().await,
            }
        };
        let mut promotion = None;
        let finished = tokio::select! {
            biased;
            answer = answer => Some(answer),
            master = promoted => {
                promotion = Some(master);
                None
            }
            _ = shutdown.changed(), if deadline.is_none() => None,
            _ = tokio::time::sleep_until(wake.into()) => None,
        };
        if promotion.is_some() {
            self.promoted();
        }
        if let (Some(index), Some(joined)) = (index, finished) {
            let attempt = joined.unwrap_or_else(|join_error| {
                Err(AttemptError::Redis(RedisError::from(
                    std::io::Error::other(format!("batch task failed: {join_error}")),
                )))
            });
            self.answered(index, attempt);
        }
    }

    fn answered(&mut self, index: usize, attempt: Attempt) {
        let now = Instant::now();
        match attempt {
            Ok(Outcome::Handled {
                added,
                dead,
                skipped,
            }) => {
                self.succeeded(now);
                self.backoff.reset();
                self.state.connected.store(true, Ordering::Relaxed);
                let batch = &mut self.queue[index];
                batch.status = Status::Confirmed;
                self.account(index, added, dead, skipped);
                while matches!(
                    self.queue.front().map(|b| &b.status),
                    Some(Status::Confirmed)
                ) {
                    let Some(batch) = self.queue.pop_front() else {
                        break;
                    };
                    let consumed = match batch.source {
                        Source::Ring => Ok(()),
                        Source::Journal => self.journal.as_mut().map_or(Ok(()), Journal::consume),
                        Source::Replay => self.replays.front_mut().map_or(Ok(()), Journal::consume),
                    };
                    if let Err(error) = consumed {
                        self.state
                            .set_error(format!("cannot advance the journal: {error}"));
                    }
                    if batch.source == Source::Ring {
                        self.receiver.recycle(batch.events);
                    }
                }
            }
            Ok(Outcome::Gap { mark }) => {
                let earlier_unconfirmed = self
                    .queue
                    .iter()
                    .take(index)
                    .any(|b| !matches!(b.status, Status::Confirmed));
                let batch = &mut self.queue[index];
                batch.status = Status::Unsent;
                if !earlier_unconfirmed {
                    // Nothing earlier will fill the gap: those sequences never reached us
                    // (a bug or a lost journal). Say so loudly and move on.
                    let first = batch.first_sequence();
                    let message = format!(
                        "sequences {}..{} of producer {} are missing before this batch; \
                         appending it anyway",
                        mark + 1,
                        first.saturating_sub(1),
                        batch.producer_id
                    );
                    tracing::error!(%message, "sequence gap");
                    self.state.set_error(message);
                    let events = std::mem::take(&mut batch.events);
                    let source = batch.source;
                    let producer_id = self.producer_of(index);
                    let rebuilt = self.build(source, &producer_id, events, true);
                    self.queue[index] = rebuilt;
                }
                // Redis answered: the breaker must not stay half-open waiting for a probe.
                self.succeeded(now);
                self.recovering = true;
            }
            Ok(Outcome::Stopped { error, .. }) => {
                self.queue[index].status = Status::Unsent;
                self.failed(
                    now,
                    &AttemptError::Redis(RedisError::from(std::io::Error::other(format!(
                        "Redis refused an entry and its dead letter: {error}"
                    )))),
                );
            }
            Err(error) => {
                self.queue[index].status = Status::Unsent;
                if error.is_noscript() {
                    // Someone flushed the script cache: reload it on a fresh connection.
                    self.connection = None;
                }
                self.failed(now, &error);
            }
        }
    }

    /// Sentinel announced a new master: reconnect to it as soon as the batches in flight on
    /// the old connection have answered (they fail, or land on a master that is still
    /// writable; the guard keeps order either way), without waiting for a retry delay or the
    /// breaker's cool-down.
    fn promoted(&mut self) {
        self.connection = None;
        self.state.connected.store(false, Ordering::Relaxed);
        self.backoff.reset();
        self.recovering = true;
        self.retry_at = None;
        self.breaker.new_server(Instant::now());
    }

    fn producer_of(&self, index: usize) -> String {
        self.queue[index].producer_id.clone()
    }

    fn account(&mut self, index: usize, added: u64, dead: u64, skipped: u64) {
        let batch = &self.queue[index];
        let state = &self.state;
        state.batches_ok.fetch_add(1, Ordering::Relaxed);
        state.skipped.fetch_add(skipped, Ordering::Relaxed);
        if skipped == 0 || batch.source == Source::Replay {
            // A replayed journal's skipped events were shipped by the process that wrote it.
            state.shipped.fetch_add(added, Ordering::Relaxed);
        } else {
            // Part of this batch landed in an attempt whose answer we never got: everything
            // not dead-lettered is in the stream now.
            let poisoned = batch.poison.iter().filter(|p| p.is_some()).count() as u64;
            let in_stream = batch.events.len() as u64 - poisoned;
            state.shipped.fetch_add(in_stream, Ordering::Relaxed);
        }
        let mut letters = lock(&state.dead_letters);
        let mut poisoned = 0;
        for poison in batch.poison.iter().flatten() {
            *letters.entry(poison.reason.to_owned()).or_default() += 1;
            poisoned += 1;
        }
        if dead > poisoned {
            *letters.entry("redis_rejected".to_owned()).or_default() += dead - poisoned;
        }
    }

    /// Redis handled a batch: closes the breaker, and says so if it was open.
    fn succeeded(&mut self, now: Instant) {
        if let Transition::Closed(after) = self.breaker.on_success(now) {
            tracing::info!(
                stream = %self.settings.keys.stream,
                paused_ms = after.as_millis() as u64,
                "circuit breaker closed: shipping resumed after {after:.1?}"
            );
        }
    }

    fn failed(&mut self, now: Instant, error: &AttemptError) {
        // One line per failure while shipping; while the breaker is open (a server away for
        // long), only its transitions reach the default log level.
        if self.breaker.state(now) == BreakerState::Closed {
            tracing::warn!(%error, "batch failed; will retry");
        } else {
            tracing::debug!(%error, "batch failed; will retry");
        }
        self.state.batches_failed.fetch_add(1, Ordering::Relaxed);
        self.state.set_error(error.to_string());
        if error.breaks_connection() {
            self.connection = None;
            self.state.connected.store(false, Ordering::Relaxed);
        }
        match self.breaker.on_failure(now) {
            Transition::Opened(cool_down) => tracing::warn!(
                stream = %self.settings.keys.stream,
                %error,
                "circuit breaker opened after {} consecutive failures: shipping paused, events \
                 wait in the ring{}; next probe in {cool_down:?}, or as soon as a new \
                 connection's handshake succeeds",
                self.config.breaker_threshold,
                if self.journal.is_some() { " and the journal" } else { "" },
            ),
            Transition::Reopened(cool_down) => tracing::warn!(
                stream = %self.settings.keys.stream,
                %error,
                "circuit breaker probe failed; next probe in {cool_down:?}"
            ),
            Transition::None | Transition::Closed(_) => {}
        }
        self.recovering = true;
        self.retry_at = Some(now + self.backoff.next_delay());
    }

    fn publish_state(&self, now: Instant) {
        let state = &self.state;
        let breaker = self.breaker.state(now);
        state
            .breaker_open
            .store(breaker == BreakerState::Open, Ordering::Relaxed);
        state
            .breaker_half_open
            .store(breaker == BreakerState::HalfOpen, Ordering::Relaxed);
        let (mut in_flight, mut unconfirmed) = (0, self.forming.len() as u64);
        for batch in &self.queue {
            match batch.status {
                Status::InFlight(_) => {
                    in_flight += 1;
                    unconfirmed += batch.events.len() as u64;
                }
                Status::Unsent => unconfirmed += batch.events.len() as u64,
                Status::Confirmed => {}
            }
        }
        state.in_flight.store(in_flight, Ordering::Relaxed);
        state.unconfirmed.store(unconfirmed, Ordering::Relaxed);
        let (mut events, mut bytes, mut lost) = (0, 0, 0);
        let stale = self.stale.iter().map(|s| &s.journal);
        for journal in self.journal.iter().chain(&self.replays).chain(stale) {
            let (e, b) = journal.backlog();
            events += e;
            bytes += b;
            lost += journal.lost_events;
        }
        state.journal_events.store(events, Ordering::Relaxed);
        state.journal_bytes.store(bytes, Ordering::Relaxed);
        state.journal_lost.store(lost, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("redis://:s3cret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(redact_url("redis://user:pw@host"), "redis://user:***@host");
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        assert_eq!(
            redact_url("redis+sentinel://u:pw@h1:26379,h2:26379/main"),
            "redis+sentinel://u:***@h1:26379,h2:26379/main"
        );
    }
}
