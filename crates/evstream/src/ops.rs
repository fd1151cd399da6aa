//! The ops loop: keeps Redis healthy and tells people when something is wrong.
//!
//! Every `ops.alert_interval_ms` (10 s) it observes Redis ([`observe::observe`]: `INFO`,
//! `XINFO`, `XPENDING`), evaluates the [alert rules](alerts) and sends what changed to the log
//! and the webhook. Every `ops.interval_ms` (30 s) it also acts:
//!
//! - **retention** ([`trim`]): the last `ops.max_len` entries or the last `ops.max_age_s`,
//!   whichever is fewer, never deleting entries a consumer group has not read or has pending,
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
pub(crate) mod config;
pub mod dlq;
pub mod observe;
mod partitions;
pub mod replay;
pub mod trim;
pub mod webhook;

pub use partitions::PartitionedOpsLoop;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use redis::aio::MultiplexedConnection;
use redis::Cmd;
use serde::Serialize;

use crate::config::{Config, OpsConfig};
use crate::consume::ConsumeReport;
use crate::error::OpsError;
use crate::failover::FailoverWatch;
use crate::publish::{CaptureHealth, CaptureMonitor};
use crate::ship::{BreakerState, ShipperHealth, ShipperMonitor};
use alerts::{Alert, AlertState, FiringAlert, Inputs, Notification, Severity, Transition};
use observe::{EntryId, Observation};
use trim::MemoryLevel;

/// Deadline of every Redis call of the loop.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long aggressive-trim losses keep `TrimLostEntries` firing.
const LOSS_WINDOW: Duration = Duration::from_secs(600);
/// Dead letters read per poll to count them by reason.
const DLQ_SCAN_PER_TICK: u64 = 10_000;

const HYGIENE_SCRIPT: &str = include_str!("ops/hygiene.lua");

/// Runs [`OpsConfig`]'s duties against one stream; see the [module documentation](self).
#[derive(Debug)]
pub struct OpsLoop {
    /// Opens connections (after a Sentinel failover, to the new master).
    client: crate::config::Connector,
    config: OpsConfig,
    stream: String,
    capture: Option<CaptureMonitor>,
    shipper: Option<ShipperMonitor>,
    state: Arc<OpsState>,
    observe_only: bool,
    /// Where notifications are posted (`ops.webhook_url`), if anywhere.
    webhook: Option<webhook::Endpoint>,
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

/// Loop-private memory between ticks.
struct Memory {
    alerts: AlertState,
    last_refused: Option<u64>,
    last_dlq: Option<(u64, Instant)>,
    dlq_cursor: Option<EntryId>,
    recent_losses: VecDeque<(Instant, String, u64)>,
    /// `unreadable_version` dead letters counted, for `EventsUnreadable` (10 minutes).
    recent_unreadable: VecDeque<(Instant, u64)>,
    last_act: Option<Instant>,
    /// Notifications for the webhook task (which delivers them without holding the loop).
    webhook: Option<tokio::sync::mpsc::Sender<Notification>>,
    defrag_refused: bool,
    /// The ACL refused trimming the dead letters (said once).
    dlq_trim_refused: bool,
    /// The ACL refused the heartbeat (said once).
    heartbeat_refused: bool,
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

    /// Runs until `shutdown` completes. Errors never stop the loop: Redis being away is one
    /// of the things it reports.
    pub async fn run<F: Future>(self, shutdown: F) {
        let mut memory = Memory {
            alerts: AlertState::new(
                &self.stream,
                Duration::from_secs(self.config.reminder_interval_s),
            ),
            last_refused: None,
            last_dlq: None,
            dlq_cursor: None,
            recent_losses: VecDeque::new(),
            recent_unreadable: VecDeque::new(),
            last_act: None,
            defrag_refused: false,
            dlq_trim_refused: false,
            heartbeat_refused: false,
            webhook: self
                .webhook
                .clone()
                .map(|endpoint| self.spawn_webhook(endpoint)),
        };
        let mut connection = None;
        let mut warned_policy = false;
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.alert_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failovers = FailoverWatch::start(&self.client);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {}
                // A new master: look at it now rather than at the next tick.
                _ = failovers.promoted() => connection = None,
            }
            let act = memory
                .last_act
                .is_none_or(|at| at.elapsed() >= Duration::from_millis(self.config.interval_ms));
            let observed = self.observe(&mut connection, act).await;
            if let Ok(observation) = &observed {
                if !warned_policy {
                    warned_policy = true;
                    self.warn_about_policy(observation);
                }
            }
            if let (Ok(_), Some(conn), false) = (&observed, connection.as_mut(), self.observe_only)
            {
                self.heartbeat(conn, &mut memory).await;
            }
            if let (Ok(observation), Some(conn)) = (&observed, connection.as_mut()) {
                if act && !self.observe_only {
                    memory.last_act = Some(Instant::now());
                    let result = self.act(conn, observation, &mut memory).await;
                    if let Err(error) = &result {
                        tracing::warn!(%error, "ops: maintenance failed; retrying next tick");
                        memory.last_act = None;
                        connection = None;
                    }
                    self.state
                        .update(|s| s.maintenance_error = result.err().map(|e| e.to_string()));
                }
            }
            self.evaluate(observed, &mut connection, &mut memory).await;
        }
    }

    async fn observe(
        &self,
        connection: &mut Option<MultiplexedConnection>,
        act: bool,
    ) -> Result<Observation, OpsError> {
        if connection.is_none() {
            let connect = async {
                self.client
                    .client()
                    .await?
                    .get_multiplexed_async_connection()
                    .await
            };
            let deadline = CALL_TIMEOUT + self.client.lookup_budget();
            *connection = Some(match tokio::time::timeout(deadline, connect).await {
                Ok(Ok(c)) => c,
                Ok(Err(source)) => {
                    return Err(OpsError::Redis {
                        what: "connecting".to_owned(),
                        source,
                    })
                }
                Err(_) => {
                    return Err(OpsError::Timeout {
                        what: "connecting".to_owned(),
                        timeout: CALL_TIMEOUT,
                    })
                }
            });
        }
        let Some(conn) = connection.as_mut() else {
            unreachable!("connected above")
        };
        // What groups still need is counted only for a pass that trims by length.
        let count_above = (act && self.config.max_len > 0).then_some(self.config.max_len);
        let result = observe::observe(conn, &self.stream, count_above, CALL_TIMEOUT).await;
        if result.is_err() {
            *connection = None;
        }
        result
    }

    /// Tells shippers that an ops loop looks after the stream: `<stream>:ops`, refreshed
    /// every tick, expiring after three missed ticks (at least a minute).
    async fn heartbeat(&self, conn: &mut MultiplexedConnection, memory: &mut Memory) {
        let ttl_ms = (self.config.alert_interval_ms * 3).max(60_000);
        let mut set = redis::cmd("SET");
        set.arg(crate::config::ops_heartbeat_key(&self.stream))
            .arg(unix_ms())
            .arg("PX")
            .arg(ttl_ms);
        match tokio::time::timeout(CALL_TIMEOUT, set.query_async::<()>(conn)).await {
            Ok(Err(error)) if error.code() == Some("NOPERM") && !memory.heartbeat_refused => {
                memory.heartbeat_refused = true;
                tracing::warn!(
                    %error,
                    "ops: the ACL refuses the heartbeat (SET {}:ops); shippers will warn that \
                     no ops loop looks after the stream. Add \"(+set ~{}:ops)\" to the ops \
                     user (docs/security.md)",
                    self.stream,
                    self.stream
                );
            }
            Ok(Err(error)) => tracing::debug!(%error, "ops: heartbeat not recorded"),
            Ok(Ok(())) | Err(_) => {}
        }
    }

    fn warn_about_policy(&self, observation: &Observation) {
        let redis = &observation.redis;
        match redis.eviction_risk() {
            observe::EvictionRisk::Stream => tracing::error!(
                policy = %redis.maxmemory_policy,
                "Redis's maxmemory-policy can EVICT THE STREAM with its consumer groups and \
                 pending entries; set maxmemory-policy noeviction (deploy/redis.conf)"
            ),
            observe::EvictionRisk::HighWaterMarks => tracing::warn!(
                policy = %redis.maxmemory_policy,
                "Redis's maxmemory-policy can evict the producers' high-water marks (duplicate \
                 protection); set maxmemory-policy noeviction (deploy/redis.conf)"
            ),
            observe::EvictionRisk::None => {}
        }
        if redis.maxmemory == 0 {
            tracing::warn!(
                "Redis has no maxmemory: memory thresholds and aggressive trims are off"
            );
        }
    }

    /// Retention, hygiene and defragmentation. What each step did reaches the state and the
    /// metrics even when a later step fails.
    async fn act(
        &self,
        conn: &mut MultiplexedConnection,
        observation: &Observation,
        memory: &mut Memory,
    ) -> Result<(), OpsError> {
        let level = MemoryLevel::of(observation.redis.used_ratio(), &self.config);
        let plan = trim::plan(&self.config, observation, level, unix_ms());
        let (trimmed, result) =
            trim::execute(conn, &self.stream, &plan, observation, CALL_TIMEOUT).await;
        self.record_trim(&plan, &trimmed, memory);
        result?;
        let removed = self.remove_idle_consumers(conn, observation).await;
        self.state.update(|s| {
            for (group, n) in &removed.0 {
                *s.consumers_removed.entry(group.clone()).or_default() += n;
            }
        });
        removed.1?;
        self.defragment(conn, observation, memory).await;
        if memory.dlq_cursor.is_none() {
            // Count the dead letters that arrive from now on; the history is in `status`,
            // and counting it here would show as a burst on every restart.
            memory.dlq_cursor = Some(observation.dlq.last_id.unwrap_or_default());
        }
        let (by_reason, cursor) = observe::dead_letters_by_reason(
            conn,
            &format!("{}:dlq", self.stream),
            memory.dlq_cursor,
            DLQ_SCAN_PER_TICK,
            CALL_TIMEOUT,
        )
        .await?;
        memory.dlq_cursor = cursor.or(memory.dlq_cursor);
        let unreadable: u64 = by_reason
            .iter()
            .filter(|((_, reason), _)| reason == crate::schema::UNREADABLE_VERSION)
            .map(|(_, n)| n)
            .sum();
        if unreadable > 0 {
            memory
                .recent_unreadable
                .push_back((Instant::now(), unreadable));
        }
        for ((stage, reason), n) in &by_reason {
            metrics::counter!("evstream_dlq_entries_total", "stream" => self.stream.clone(), "stage" => stage.clone(), "reason" => reason.clone())
                .increment(*n);
        }
        self.state.update(|s| {
            for ((stage, reason), n) in &by_reason {
                *s.dead_letters
                    .entry(format!("{stage}/{reason}"))
                    .or_default() += n;
            }
        });
        // After counting: what is trimmed was counted first (unless more than a pass's
        // count arrived since the last pass).
        let dlq = format!("{}:dlq", self.stream);
        let deleted = match trim::dead_letters(conn, &dlq, &self.config, unix_ms(), CALL_TIMEOUT)
            .await
        {
            Ok(deleted) => deleted,
            // An ACL from before dead-letter retention (read-only on the dead letters):
            // everything else of the pass still works; say what to change, once.
            Err(OpsError::Redis { source, .. }) if source.code() == Some("NOPERM") => {
                if !std::mem::replace(&mut memory.dlq_trim_refused, true) {
                    tracing::warn!(dlq = %dlq, error = %source, "ops: this user may not trim the dead letters, so ops.dlq_max_len and ops.dlq_max_age_s are not applied; grant it write access to the dead-letter stream (docs/security.md, ops role)");
                }
                0
            }
            Err(error) => return Err(error),
        };
        if deleted > 0 {
            metrics::counter!("evstream_dlq_trimmed_entries_total", "stream" => self.stream.clone())
                .increment(deleted);
            tracing::warn!(
                deleted,
                dlq = %dlq,
                "ops: dead letters past ops.dlq_max_len / ops.dlq_max_age_s deleted (a shipper's \
                 dead letter is the only copy of its event)"
            );
            self.state.update(|s| s.dlq_trimmed += deleted);
        }
        Ok(())
    }

    fn record_trim(&self, plan: &trim::TrimPlan, trimmed: &trim::Trimmed, memory: &mut Memory) {
        let mode = if plan.aggressive {
            "aggressive"
        } else {
            "retention"
        };
        if trimmed.entries > 0 {
            metrics::counter!("evstream_trimmed_entries_total", "stream" => self.stream.clone(), "mode" => mode)
                .increment(trimmed.entries);
            tracing::info!(
                entries = trimmed.entries,
                mode,
                length = trimmed.length_after,
                "ops: trimmed"
            );
        }
        for (group, lost) in &trimmed.lost {
            tracing::error!(
                group = %group, lost,
                "ops: critical memory: trimming deleted entries this group had not finished"
            );
            metrics::counter!("evstream_trim_lost_entries_total", "stream" => self.stream.clone(), "group" => group.clone())
                .increment(*lost);
            memory
                .recent_losses
                .push_back((Instant::now(), group.clone(), *lost));
        }
        self.state.update(|s| {
            s.retention_held_back_by.clone_from(&plan.held_back_by);
            if plan.aggressive {
                s.trimmed_aggressive += trimmed.entries;
            } else {
                s.trimmed_retention += trimmed.entries;
            }
            for (group, lost) in &trimmed.lost {
                *s.trim_lost.entry(group.clone()).or_default() += lost;
            }
        });
    }

    /// Group hygiene; returns the consumers removed per group, and the first failure.
    async fn remove_idle_consumers(
        &self,
        conn: &mut MultiplexedConnection,
        observation: &Observation,
    ) -> (Vec<(String, u64)>, Result<(), OpsError>) {
        let mut removed = Vec::new();
        if self.config.consumer_idle_s == 0 {
            return (removed, Ok(()));
        }
        let idle_ms = self.config.consumer_idle_s.saturating_mul(1000);
        for group in &observation.groups {
            if !group
                .consumers
                .iter()
                .any(|c| c.pending == 0 && c.idle_ms > idle_ms)
            {
                continue;
            }
            let cmd = Cmd::new()
                .arg("EVAL")
                .arg(HYGIENE_SCRIPT)
                .arg(1)
                .arg(&self.stream)
                .arg(&group.name)
                .arg(idle_ms)
                .clone();
            let what = format!("removing idle consumers of {}", group.name);
            let names: Vec<String> = match call(conn, &what, &cmd, CALL_TIMEOUT).await {
                Ok(names) => names,
                Err(error) => return (removed, Err(error)),
            };
            for name in &names {
                tracing::info!(group = %group.name, consumer = %name, "ops: removed an idle consumer with nothing pending");
            }
            if !names.is_empty() {
                metrics::counter!("evstream_consumers_removed_total", "stream" => self.stream.clone(), "group" => group.name.clone())
                    .increment(names.len() as u64);
                removed.push((group.name.clone(), names.len() as u64));
            }
        }
        (removed, Ok(()))
    }

    async fn defragment(
        &self,
        conn: &mut MultiplexedConnection,
        observation: &Observation,
        memory: &mut Memory,
    ) {
        let redis = &observation.redis;
        if !self.config.allow_activedefrag
            || memory.defrag_refused
            || redis.allocator_frag_ratio <= self.config.frag_ratio
            || redis.activedefrag != Some(false)
        {
            return;
        }
        let cmd = Cmd::new()
            .arg("CONFIG")
            .arg("SET")
            .arg("activedefrag")
            .arg("yes")
            .clone();
        match call::<()>(conn, "CONFIG SET activedefrag yes", &cmd, CALL_TIMEOUT).await {
            Ok(()) => {
                self.state.update(|s| s.activedefrag_enabled = true);
                tracing::warn!(
                    ratio = redis.allocator_frag_ratio,
                    "ops: fragmentation high; activedefrag switched on"
                );
            }
            Err(error) => {
                // Not retried: a Redis built without jemalloc's defragmentation support
                // (Debian's, for one) refuses it every time.
                memory.defrag_refused = true;
                tracing::warn!(%error, "ops: fragmentation high; Redis refused to switch activedefrag on");
            }
        }
    }

    /// Starts the task that posts notifications, in order, each tried for about 5 s.
    fn spawn_webhook(
        &self,
        endpoint: webhook::Endpoint,
    ) -> tokio::sync::mpsc::Sender<Notification> {
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Notification>(256);
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            while let Some(notification) = receiver.recv().await {
                if let Err(error) = send(&endpoint, &notification).await {
                    tracing::warn!(%error, alert = notification.alert.name(), "ops: webhook delivery failed; the notification is in this log");
                    state.update(|s| s.webhook_failures += 1);
                }
            }
        });
        sender
    }

    async fn evaluate(
        &self,
        observed: Result<Observation, OpsError>,
        connection: &mut Option<MultiplexedConnection>,
        memory: &mut Memory,
    ) {
        let now = Instant::now();
        let now_ms = unix_ms();
        let capture = self.capture.as_ref().map(CaptureMonitor::health);
        let shipper = self.shipper.as_ref().map(ShipperMonitor::health);
        if let Some(capture) = &capture {
            crate::telemetry::record_capture(capture);
        }
        if let Some(shipper) = &shipper {
            crate::telemetry::record_shipper(shipper);
        }
        let refused = capture.as_ref().map(|c| c.refused.total());
        let refused_since_last = match (refused, memory.last_refused) {
            (Some(now), Some(before)) => now.saturating_sub(before),
            _ => 0,
        };
        memory.last_refused = refused;
        let (observation, error) = match observed {
            Ok(observation) => (Some(observation), None),
            Err(error) => (None, Some(error.to_string())),
        };
        metrics::gauge!("evstream_redis_up").set(if observation.is_some() { 1.0 } else { 0.0 });
        let mut poison_rate = None;
        if let Some(observation) = &observation {
            crate::telemetry::record_observation(&self.stream, observation, now_ms);
            let added = observation.dlq.entries_added;
            if let Some((before, at)) = memory.last_dlq {
                let secs = now.duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    poison_rate = Some(added.saturating_sub(before) as f64 / secs);
                }
            }
            memory.last_dlq = Some((added, now));
        }
        while memory
            .recent_losses
            .front()
            .is_some_and(|(at, _, _)| now.duration_since(*at) > LOSS_WINDOW)
        {
            memory.recent_losses.pop_front();
        }
        while memory
            .recent_unreadable
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > LOSS_WINDOW)
        {
            memory.recent_unreadable.pop_front();
        }
        let recent_unreadable = memory.recent_unreadable.iter().map(|(_, n)| n).sum();
        let mut recent_losses = BTreeMap::new();
        for (_, group, lost) in &memory.recent_losses {
            *recent_losses.entry(group.clone()).or_insert(0) += lost;
        }
        let mut findings = alerts::evaluate(
            &self.config,
            &Inputs {
                observation: observation.as_ref(),
                redis_error: error.as_deref(),
                capture: capture.as_ref(),
                refused_since_last,
                shipper: shipper.as_ref(),
                poison_rate,
                recent_trim_losses: recent_losses,
                recent_unreadable,
            },
        );
        if observation.is_none() {
            findings.extend(memory.alerts.carried_over(Alert::reads_redis));
        }
        let notifications = memory.alerts.update(findings, now, SystemTime::now());
        let firing = memory.alerts.firing();
        for alert in Alert::ALL {
            for &severity in alert.severities() {
                let on = firing
                    .iter()
                    .any(|f| f.alert == alert && f.severity == severity);
                metrics::gauge!("evstream_alert_firing", "alert" => alert.name(), "severity" => severity.as_str())
                    .set(if on { 1.0 } else { 0.0 });
            }
        }
        let mut webhook_failures = 0;
        for notification in notifications {
            log(&notification);
            if let Some(webhook) = &memory.webhook {
                if webhook.try_send(notification).is_err() {
                    webhook_failures += 1;
                    tracing::warn!("ops: webhook queue full (the receiver is slow or down); notification dropped, it is in this log");
                }
            }
        }
        let level = observation
            .as_ref()
            .map(|o| MemoryLevel::of(o.redis.used_ratio(), &self.config));
        let alert_interval_ms = self.config.alert_interval_ms;
        self.state.update(|s| {
            s.evaluations += 1;
            s.last_evaluation_ms = unix_ms();
            s.alert_interval_ms = alert_interval_ms;
            s.redis_up = observation.is_some();
            // The error of the last evaluation only: a recovered Redis shows none.
            s.last_error.clone_from(&error);
            if observation.is_some() {
                s.observation = observation;
            }
            s.memory_level = level.or(s.memory_level);
            s.poison_rate = poison_rate;
            s.firing = firing;
            s.webhook_failures += webhook_failures;
        });
        if error.is_some() {
            *connection = None;
        }
    }
}

/// The `tracing` target of alert transitions (fired, escalated, resolved), so that a
/// subscriber can show them all, resolutions (at info) included, without the rest of the
/// library's info events: the `evstream` binary logs
/// `warn,evstream::alerts=info,evstream::ship=info,evstream::failover=info` by default.
pub const ALERT_LOG_TARGET: &str = "evstream::alerts";

fn log(notification: &Notification) {
    let Notification {
        alert,
        subject,
        severity,
        state,
        message,
        ..
    } = notification;
    match (state, severity) {
        (Transition::Resolved, _) => {
            tracing::info!(
                target: ALERT_LOG_TARGET,
                alert = alert.name(),
                subject = %subject,
                "alert resolved: {message}"
            );
        }
        (_, Severity::Critical) => {
            tracing::error!(
                target: ALERT_LOG_TARGET,
                alert = alert.name(),
                subject = %subject,
                state = ?state,
                "CRITICAL: {message}"
            );
        }
        (_, Severity::Warning) => {
            tracing::warn!(
                target: ALERT_LOG_TARGET,
                alert = alert.name(),
                subject = %subject,
                state = ?state,
                "WARNING: {message}"
            );
        }
    }
}

/// Posts one notification, three tries within about 5 s.
async fn send(endpoint: &webhook::Endpoint, notification: &Notification) -> Result<(), String> {
    let body = serde_json::to_vec(notification).map_err(|e| e.to_string())?;
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        match endpoint.post(&body, Duration::from_secs(1)).await {
            Ok(()) => return Ok(()),
            Err(error) => last = error,
        }
    }
    Err(last)
}

pub(crate) use crate::redis::call;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Overall state for `/health`, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// All well.
    Ok,
    /// Warnings firing, or a component reconnecting: still serving.
    Degraded,
    /// Redis unreachable, breaker open, journal full, or a critical alert: HTTP 503.
    Failing,
}

/// The `/health` document: what this process has, and its overall status.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Overall.
    pub status: HealthStatus,
    /// Why it is not `ok`, one line per reason.
    pub reasons: Vec<String>,
    /// The ops loop's view of Redis, when this process runs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisHealth>,
    /// The ring, when this process publishes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring: Option<CaptureHealth>,
    /// The shipper, when this process ships.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipper: Option<ShipperHealth>,
    /// The consumer, when this process consumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<ConsumeReport>,
    /// Alerts firing (from the ops loop).
    pub alerts: Vec<FiringAlert>,
}

/// Redis as the ops loop last saw it.
#[derive(Debug, Clone, Serialize)]
pub struct RedisHealth {
    /// Whether the last poll succeeded.
    pub up: bool,
    /// The last error of the loop.
    pub last_error: Option<String>,
    /// Used memory in bytes.
    pub used_memory: Option<u64>,
    /// `maxmemory` in bytes (0: unbounded).
    pub maxmemory: Option<u64>,
    /// Memory against the thresholds.
    pub memory_level: Option<MemoryLevel>,
    /// `maxmemory-policy`.
    pub maxmemory_policy: Option<String>,
    /// Entries in the stream.
    pub stream_length: Option<u64>,
}

impl Health {
    /// Assembles the document from what this process has.
    pub fn assemble(
        ops: Option<&OpsSnapshot>,
        ring: Option<CaptureHealth>,
        shipper: Option<ShipperHealth>,
        consumer: Option<ConsumeReport>,
    ) -> Self {
        let mut failing = Vec::new();
        let mut degraded = Vec::new();
        let redis = ops.map(|ops| {
            let observation = ops.observation.as_ref();
            // Redis being unreachable is reported by its alert, below.
            let age_ms = unix_ms().saturating_sub(ops.last_evaluation_ms);
            if ops.evaluations > 0 && age_ms > 3 * ops.alert_interval_ms.max(1000) {
                failing.push(format!(
                    "the ops loop has not evaluated for {:.0} s (stalled or stopped)",
                    age_ms as f64 / 1000.0
                ));
            }
            RedisHealth {
                up: ops.redis_up,
                last_error: ops.last_error.clone(),
                used_memory: observation.map(|o| o.redis.used_memory),
                maxmemory: observation.map(|o| o.redis.maxmemory),
                memory_level: ops.memory_level,
                maxmemory_policy: observation.map(|o| o.redis.maxmemory_policy.clone()),
                stream_length: observation.and_then(|o| o.stream.as_ref().map(|s| s.length)),
            }
        });
        if let Some(shipper) = &shipper {
            if shipper.breaker == BreakerState::Open {
                failing.push("the shipper's circuit breaker is open".to_owned());
            } else if !shipper.redis_connected {
                degraded.push("the shipper is not connected to Redis".to_owned());
            }
            if shipper.journal_full {
                failing.push("the spill journal is full".to_owned());
            }
        }
        if let Some(consumer) = &consumer {
            if !consumer.connected {
                failing.push(format!(
                    "the consumer cannot reach Redis: {}",
                    consumer
                        .last_error
                        .as_deref()
                        .unwrap_or("not connected yet")
                ));
            }
        }
        let alerts = ops.map(|ops| ops.firing.clone()).unwrap_or_default();
        for alert in &alerts {
            if shipper.is_some() && matches!(alert.alert, Alert::BreakerOpen | Alert::JournalFull) {
                continue; // said above, from the shipper itself
            }
            let line = format!(
                "{} ({}): {}",
                alert.alert,
                alert.severity.as_str(),
                alert.message
            );
            match alert.severity {
                Severity::Critical => failing.push(line),
                Severity::Warning => degraded.push(line),
            }
        }
        failing.dedup();
        let status = if !failing.is_empty() {
            HealthStatus::Failing
        } else if !degraded.is_empty() {
            HealthStatus::Degraded
        } else {
            HealthStatus::Ok
        };
        failing.extend(degraded);
        Self {
            status,
            reasons: failing,
            redis,
            ring,
            shipper,
            consumer,
            alerts,
        }
    }

    /// 200 unless failing (503).
    pub fn http_status(&self) -> u16 {
        if self.status == HealthStatus::Failing {
            503
        } else {
            200
        }
    }
}
