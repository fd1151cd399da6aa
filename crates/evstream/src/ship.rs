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
/// A batch on its way: origin, prepared call, status, why an attempt failed.
mod batch;
mod breaker;
pub(crate) mod config;
/// The shipper's health and its shutdown report.
mod health;
pub(crate) mod journal;
/// One lane (ring or partition): the loop that forms, sends, confirms and spills batches.
mod lane;
mod risks;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::{Config, Validation};
use crate::error::ShipError;
use crate::publish::Receiver;
use crate::schema::Source;
pub use breaker::BreakerState;
pub use config::FsyncPolicy;
use health::State;
pub use health::{ShipperHealth, ShutdownReport};
use lane::Lane;

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
        (Validation::Off, _) => Source::None,
        (_, Some(dir)) => Source::from_dir(dir).map_err(|source| ShipError::Schemas { source })?,
        (_, None) => Source::redis(Duration::from_millis(config.ship.schema_reload_ms)),
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(None);
    let mut shippers = Vec::with_capacity(lanes.len());
    let mut states = Vec::with_capacity(lanes.len());
    for (lane, receiver) in lanes.iter().zip(receivers) {
        let state = Arc::new(State::default());
        let shipper = Lane::open(
            lane,
            receiver,
            partitioned,
            Arc::clone(&state),
            shutdown_rx.clone(),
            schemas.clone(),
        )?;
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
