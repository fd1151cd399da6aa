//! The ops loop itself: every `ops.alert_interval_ms` it observes Redis, refreshes its
//! heartbeat, acts when `ops.interval_ms` has passed ([maintenance](super::maintenance)),
//! evaluates the alert rules and sends what changed to the log and the webhook.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use redis::aio::MultiplexedConnection;

use super::alerts::{self, Alert, AlertState, Inputs, Notification, Severity, Transition};
use super::analysis::RecentAnalysisAlerts;
use super::observe::{self, EntryId, Observation};
use super::trim::MemoryLevel;
use super::{unix_ms, webhook, OpsLoop, ALERT_LOG_TARGET, CALL_TIMEOUT};
use crate::error::OpsError;
use crate::publish::CaptureMonitor;
use crate::redis::FailoverWatch;
use crate::ship::ShipperMonitor;

/// How long aggressive-trim losses keep `TrimLostEntries` firing.
const LOSS_WINDOW: Duration = Duration::from_secs(600);

/// Loop-private memory between ticks.
pub(super) struct Memory {
    pub(super) alerts: AlertState,
    pub(super) last_refused: Option<u64>,
    pub(super) last_dlq: Option<(u64, Instant)>,
    pub(super) dlq_cursor: Option<EntryId>,
    pub(super) recent_losses: VecDeque<(Instant, String, u64)>,
    /// `unreadable_version` dead letters counted, for `EventsUnreadable` (10 minutes).
    pub(super) recent_unreadable: VecDeque<(Instant, u64)>,
    pub(super) last_act: Option<Instant>,
    /// Notifications for the webhook task (which delivers them without holding the loop).
    pub(super) webhook: Option<tokio::sync::mpsc::Sender<Notification>>,
    pub(super) defrag_refused: bool,
    /// The ACL refused trimming the dead letters (said once).
    pub(super) dlq_trim_refused: bool,
    /// The ACL refused the heartbeat (said once).
    pub(super) heartbeat_refused: bool,
    /// The analysis services' alerts of the window, for `OrderLatencyHigh` and
    /// `OrderRiskHigh`.
    pub(super) analysis_alerts: RecentAnalysisAlerts,
    /// The last read of the analysis alerts failed (said once).
    pub(super) analysis_read_failed: bool,
}

impl OpsLoop {
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
            analysis_alerts: RecentAnalysisAlerts::default(),
            analysis_read_failed: false,
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
            if let (Ok(_), Some(conn)) = (&observed, connection.as_mut()) {
                self.read_analysis_alerts(conn, &mut memory).await;
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

    /// Reads the analysis services' new alerts (`<stream>:alerts`). A failure is logged and
    /// leaves the window as it was: the next tick reads from the same place.
    async fn read_analysis_alerts(&self, conn: &mut MultiplexedConnection, memory: &mut Memory) {
        let window = self.config.analysis_alert_window_s;
        if window == 0 {
            return;
        }
        let key = crate::keys::alerts(&self.stream);
        let read = memory
            .analysis_alerts
            .read(
                conn,
                &key,
                Duration::from_secs(window),
                unix_ms(),
                CALL_TIMEOUT,
            )
            .await;
        match read {
            Ok(()) => memory.analysis_read_failed = false,
            Err(error) => {
                if !std::mem::replace(&mut memory.analysis_read_failed, true) {
                    tracing::warn!(%error, key = %key, "ops: cannot read the analysis alerts: OrderLatencyHigh and OrderRiskHigh can only resolve until it can (the ops user needs XRANGE on this key: docs/security.md); said once until a read succeeds");
                }
                memory
                    .analysis_alerts
                    .forget_older_than(Duration::from_secs(window), unix_ms());
            }
        }
    }

    /// Tells shippers that an ops loop looks after the stream: `<stream>:ops`, refreshed
    /// every tick, expiring after three missed ticks (at least a minute).
    async fn heartbeat(&self, conn: &mut MultiplexedConnection, memory: &mut Memory) {
        let ttl_ms = (self.config.alert_interval_ms * 3).max(60_000);
        let mut set = redis::cmd("SET");
        set.arg(crate::keys::ops_heartbeat(&self.stream))
            .arg(unix_ms())
            .arg("PX")
            .arg(ttl_ms);
        match tokio::time::timeout(CALL_TIMEOUT, set.query_async::<()>(conn)).await {
            Ok(Err(error)) if error.code() == Some("NOPERM") && !memory.heartbeat_refused => {
                memory.heartbeat_refused = true;
                let key = crate::keys::ops_heartbeat(&self.stream);
                tracing::warn!(
                    %error,
                    "ops: the ACL refuses the heartbeat (SET {key}); shippers will warn that \
                     no ops loop looks after the stream. Add \"(+set ~{key})\" to the ops \
                     user (docs/security.md)",
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
            capture.record();
        }
        if let Some(shipper) = &shipper {
            shipper.record();
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
            observation.record(&self.stream, now_ms);
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
                analysis_alerts: memory.analysis_alerts.by_kind(),
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
