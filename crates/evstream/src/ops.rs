//! The ops loop: keeps Redis healthy and tells people when something is wrong.
//!
//! Every `ops.alert_interval_ms` (10 s) it observes Redis ([`observe::observe`]: `INFO`,
//! `XINFO`, `XPENDING`), evaluates the [alert rules](alerts) and sends what changed to the log
//! and the webhook. Every `ops.interval_ms` (30 s) it also acts:
//!
//! - **retention** ([`trim`]): the last `ops.max_len` entries or the last `ops.max_age_s`,
//!   whichever is fewer, never deleting entries a consumer group has not read or has pending,
//!   nor, with `archive.dir` set, entries the [archive](crate::archive) does not hold yet,
//!   unless memory is critical (then down to `ops.aggressive_len`, losses counted per group);
//! - **group hygiene**: consumers idle for `ops.consumer_idle_s` with nothing pending are
//!   removed, atomically checked in a script; groups are never destroyed;
//! - **fragmentation**: above `ops.frag_ratio`, `activedefrag` is switched on when
//!   `ops.allow_activedefrag` allows it.
//!
//! It is what `evstream ops` runs; any process can run it next to its publisher or consumer:
//!
//! ```no_run
//! use evstream::{ops::OpsLoop, publish, ship, Config};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::default();
//! let (publisher, receiver) = publish::channel(&config)?;
//! let shipper = ship::spawn(&config, receiver)?;
//! let ops = OpsLoop::new(&config)?
//!     .with_capture(publisher.monitor())
//!     .with_shipper(shipper.monitor());
//! let state = ops.state(); // health and firing alerts, from any thread
//! ops.run(tokio::time::sleep(std::time::Duration::from_secs(3600))).await;
//! # drop(state);
//! # Ok(())
//! # }
//! ```

pub mod alerts;
pub mod analysis;
pub(crate) mod config;
pub mod dlq;
/// The `/health` document.
mod health;
/// Retention, group hygiene, defragmentation: what the loop does to Redis.
mod maintenance;
pub mod observe;
/// One loop per partition, stopped together.
mod partitions;
pub mod replay;
/// The loop: observe, heartbeat, act, evaluate, notify.
mod run;
pub mod trim;
pub mod webhook;

pub use partitions::PartitionedOpsLoop;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, OpsConfig};
use crate::error::OpsError;
use crate::publish::CaptureMonitor;
use crate::ship::ShipperMonitor;
use alerts::FiringAlert;
pub use health::{Health, HealthStatus, RedisHealth};
use observe::Observation;
use trim::MemoryLevel;

/// Deadline of every Redis call of the loop.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs [`OpsConfig`]'s duties against one stream; see the [module documentation](self).
#[derive(Debug)]
pub struct OpsLoop {
    /// Opens connections (after a Sentinel failover, to the new master).
    client: crate::redis::Connector,
    config: OpsConfig,
    stream: String,
    capture: Option<CaptureMonitor>,
    shipper: Option<ShipperMonitor>,
    state: Arc<OpsState>,
    observe_only: bool,
    /// Where notifications are posted (`ops.webhook_url`), if anywhere.
    webhook: Option<webhook::Endpoint>,
    /// `archive.dir` is set: retention waits for the archive's group.
    archive: bool,
}

/// What the loop knows, shared with `/health`, metrics and `status`.
#[derive(Debug, Default)]
pub struct OpsState {
    snapshot: Mutex<OpsSnapshot>,
}

impl OpsState {
    /// The latest state.
    pub fn snapshot(&self) -> OpsSnapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut OpsSnapshot)) {
        f(&mut self.snapshot.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// The ops loop's view, as of its last evaluation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpsSnapshot {
    /// Evaluations done (0 before the first one).
    pub evaluations: u64,
    /// Whether the last observation of Redis succeeded.
    pub redis_up: bool,
    /// The error of the last evaluation (reading Redis), if any.
    pub last_error: Option<String>,
    /// The error of the last maintenance pass (trims, hygiene), if it failed.
    pub maintenance_error: Option<String>,
    /// The last observation of Redis.
    pub observation: Option<Observation>,
    /// Memory against the thresholds.
    pub memory_level: Option<MemoryLevel>,
    /// Groups holding retention back at the last trim.
    pub retention_held_back_by: Vec<String>,
    /// Entries trimmed by retention since start.
    pub trimmed_retention: u64,
    /// Entries trimmed at critical memory since start.
    pub trimmed_aggressive: u64,
    /// Dead letters deleted by `ops.dlq_max_len` / `ops.dlq_max_age_s` since start.
    pub dlq_trimmed: u64,
    /// Per group, entries it still needed that aggressive trims deleted since start.
    pub trim_lost: BTreeMap<String, u64>,
    /// Per group, idle consumers removed since start.
    pub consumers_removed: BTreeMap<String, u64>,
    /// Dead letters counted by `stage/reason` since start.
    pub dead_letters: BTreeMap<String, u64>,
    /// Dead letters per second over the last evaluation interval.
    pub poison_rate: Option<f64>,
    /// Whether this loop switched `activedefrag` on.
    pub activedefrag_enabled: bool,
    /// Alerts firing now, most severe first.
    pub firing: Vec<FiringAlert>,
    /// Webhook deliveries that failed (or were dropped because the queue was full).
    pub webhook_failures: u64,
    /// When the last evaluation ended (Unix milliseconds).
    pub last_evaluation_ms: u64,
    /// `ops.alert_interval_ms`, to tell a stalled loop from a quiet one.
    pub alert_interval_ms: u64,
}

impl OpsLoop {
    /// A loop over `config.redis.stream` with `config.ops`.
    pub fn new(config: &Config) -> Result<Self, OpsError> {
        config.ops.validate()?;
        let client = config.redis.connector()?;
        let webhook = config
            .ops
            .webhook_url
            .as_deref()
            .map(|url| webhook::Endpoint::new(url, config.ops.webhook_ca_file.as_deref()))
            .transpose()?;
        Ok(Self {
            client,
            config: config.ops.clone(),
            stream: config.redis.stream.clone(),
            capture: None,
            shipper: None,
            state: Arc::default(),
            observe_only: false,
            webhook,
            archive: config.archive.dir.is_some(),
        })
    }

    /// Observes, reports and alerts, but never trims, removes consumers or changes Redis's
    /// configuration: for a process that should watch a Redis it does not manage.
    pub fn observe_only(mut self) -> Self {
        self.observe_only = true;
        self
    }

    /// Watches this process's ring too (`RingDepthHigh`, `EventsRefused`).
    pub fn with_capture(mut self, capture: CaptureMonitor) -> Self {
        self.capture = Some(capture);
        self
    }

    /// Watches this process's shipper too (`BreakerOpen`, `JournalFull`).
    pub fn with_shipper(mut self, shipper: ShipperMonitor) -> Self {
        self.shipper = Some(shipper);
        self
    }

    /// The shared state, readable while the loop runs.
    pub fn state(&self) -> Arc<OpsState> {
        Arc::clone(&self.state)
    }
}

/// The `tracing` target of alert transitions (fired, escalated, resolved), so that a
/// subscriber can show them all, resolutions (at info) included, without the rest of the
/// library's info events: the `evstream` binary logs
/// `warn,evstream::alerts=info,evstream::ship=info,evstream::failover=info` by default.
pub const ALERT_LOG_TARGET: &str = "evstream::alerts";

pub(crate) use crate::redis::unix_ms;
