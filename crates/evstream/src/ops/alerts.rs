//! Alert rules, and the state that turns their findings into notifications: one on each
//! change (firing, a level change, resolved) and a reminder while an alert keeps firing,
//! never one per evaluation.
//!
//! Every rule is an [`Alert`]: its name, the levels it fires at and the function that
//! decides. [`evaluate`] runs them all, in the order of [`Alert::ALL`].
//!
//! The same rules exist for Prometheus in `deploy/prometheus/alerts.yml`; the runbook of
//! each is in `docs/operations.md` (`tests/docs.rs` ties the three together).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde::{Serialize, Serializer};

use super::analysis::AnalysisAlerts;
use super::observe::{EvictionRisk, Observation};
use crate::config::OpsConfig;
use crate::publish::CaptureHealth;
use crate::ship::{BreakerState, ShipperHealth};

/// How bad it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Look at it soon.
    Warning,
    /// Act now: events are at risk.
    Critical,
}

impl Severity {
    /// `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// One alert rule. Its [`name`](Self::name) is the runbook's heading in
/// `docs/operations.md`, the Prometheus rule's name, the `alert` label of
/// `evstream_alert_firing` and the `alert` field of notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Alert {
    /// Redis does not answer.
    RedisUnreachable,
    /// Redis uses a large part of its `maxmemory`.
    RedisMemoryHigh,
    /// Redis has no `maxmemory`, so nothing bounds it.
    RedisMaxmemoryUnset,
    /// The `maxmemory-policy` can evict high-water marks or the stream itself.
    EvictionPolicyUnsafe,
    /// The allocator's fragmentation ratio is above `ops.frag_ratio`.
    RedisFragmentationHigh,
    /// A consumer group has many entries it has not read (once per group).
    GroupLagHigh,
    /// Many dead letters per second.
    PoisonPillsHigh,
    /// An aggressive trim deleted entries a group had not finished (once per group).
    TrimLostEntries,
    /// Events of a version their consumer's handler cannot read.
    EventsUnreadable,
    /// Many events wait in this process's ring.
    RingDepthHigh,
    /// `publish` refused events.
    EventsRefused,
    /// The shipper's circuit breaker is open.
    BreakerOpen,
    /// The spill journal's disk budget is used up.
    JournalFull,
    /// The archive holds back retention: its oldest unarchived entry is old.
    ArchiveBehind,
    /// IntelliSense measured orders created or filled slower than its thresholds (once per
    /// kind: `creation_latency`, `fill_latency`).
    OrderLatencyHigh,
    /// IntelliSense saw orders above their symbol's notional limit.
    OrderRiskHigh,
}

/// A rule: adds its findings (none while all is well) through `fire`.
type Rule = fn(&OpsConfig, &Inputs<'_>, &mut Fire<'_>);

impl Alert {
    /// Every rule, in the order [`evaluate`] runs them (and so the order of the
    /// notifications of one evaluation).
    pub const ALL: [Self; 16] = [
        Self::RedisUnreachable,
        Self::RedisMemoryHigh,
        Self::RedisMaxmemoryUnset,
        Self::EvictionPolicyUnsafe,
        Self::RedisFragmentationHigh,
        Self::GroupLagHigh,
        Self::PoisonPillsHigh,
        Self::TrimLostEntries,
        Self::EventsUnreadable,
        Self::RingDepthHigh,
        Self::EventsRefused,
        Self::BreakerOpen,
        Self::JournalFull,
        Self::ArchiveBehind,
        Self::OrderLatencyHigh,
        Self::OrderRiskHigh,
    ];

    /// The rule's name, e.g. `GroupLagHigh`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::RedisUnreachable => "RedisUnreachable",
            Self::RedisMemoryHigh => "RedisMemoryHigh",
            Self::RedisMaxmemoryUnset => "RedisMaxmemoryUnset",
            Self::EvictionPolicyUnsafe => "EvictionPolicyUnsafe",
            Self::RedisFragmentationHigh => "RedisFragmentationHigh",
            Self::GroupLagHigh => "GroupLagHigh",
            Self::PoisonPillsHigh => "PoisonPillsHigh",
            Self::TrimLostEntries => "TrimLostEntries",
            Self::EventsUnreadable => "EventsUnreadable",
            Self::RingDepthHigh => "RingDepthHigh",
            Self::EventsRefused => "EventsRefused",
            Self::BreakerOpen => "BreakerOpen",
            Self::JournalFull => "JournalFull",
            Self::ArchiveBehind => "ArchiveBehind",
            Self::OrderLatencyHigh => "OrderLatencyHigh",
            Self::OrderRiskHigh => "OrderRiskHigh",
        }
    }

    /// The levels it can fire at (one `evstream_alert_firing` series each).
    pub const fn severities(self) -> &'static [Severity] {
        const WARNING: &[Severity] = &[Severity::Warning];
        const CRITICAL: &[Severity] = &[Severity::Critical];
        const BOTH: &[Severity] = &[Severity::Warning, Severity::Critical];
        match self {
            Self::RedisMaxmemoryUnset | Self::RedisFragmentationHigh => WARNING,
            Self::RedisMemoryHigh
            | Self::EvictionPolicyUnsafe
            | Self::GroupLagHigh
            | Self::PoisonPillsHigh
            | Self::RingDepthHigh
            | Self::ArchiveBehind
            | Self::OrderLatencyHigh
            | Self::OrderRiskHigh => BOTH,
            Self::RedisUnreachable
            | Self::TrimLostEntries
            | Self::EventsUnreadable
            | Self::EventsRefused
            | Self::BreakerOpen
            | Self::JournalFull => CRITICAL,
        }
    }

    /// Whether the rule is computed from what Redis reports: while Redis is unreachable its
    /// state is unknown, not resolved, so the ops loop carries its findings over.
    pub const fn reads_redis(self) -> bool {
        matches!(
            self,
            Self::RedisMemoryHigh
                | Self::RedisMaxmemoryUnset
                | Self::EvictionPolicyUnsafe
                | Self::RedisFragmentationHigh
                | Self::GroupLagHigh
                | Self::PoisonPillsHigh
                | Self::ArchiveBehind
                | Self::OrderLatencyHigh
                | Self::OrderRiskHigh
        )
    }

    /// The function that decides whether it fires.
    fn rule(self) -> Rule {
        match self {
            Self::RedisUnreachable => redis_unreachable,
            Self::RedisMemoryHigh => redis_memory_high,
            Self::RedisMaxmemoryUnset => redis_maxmemory_unset,
            Self::EvictionPolicyUnsafe => eviction_policy_unsafe,
            Self::RedisFragmentationHigh => redis_fragmentation_high,
            Self::GroupLagHigh => group_lag_high,
            Self::PoisonPillsHigh => poison_pills_high,
            Self::TrimLostEntries => trim_lost_entries,
            Self::EventsUnreadable => events_unreadable,
            Self::RingDepthHigh => ring_depth_high,
            Self::EventsRefused => events_refused,
            Self::BreakerOpen => breaker_open,
            Self::JournalFull => journal_full,
            Self::ArchiveBehind => archive_behind,
            Self::OrderLatencyHigh => order_latency_high,
            Self::OrderRiskHigh => order_risk_high,
        }
    }

    /// Runs the rule; its findings are added to `findings`.
    pub fn check(self, config: &OpsConfig, inputs: &Inputs<'_>, findings: &mut Vec<Finding>) {
        let mut fire = Fire {
            alert: self,
            findings,
        };
        self.rule()(config, inputs, &mut fire);
    }
}

impl std::fmt::Display for Alert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// As its name, in notifications, `/health` and `status --json`.
impl Serialize for Alert {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// One rule's verdict: it fires, at this level, because of this.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The rule.
    pub alert: Alert,
    /// What it is about when a rule fires once per thing (the group's name), else empty.
    pub subject: String,
    /// Its level.
    pub severity: Severity,
    /// One line for people.
    pub message: String,
    /// The measured value.
    pub value: f64,
    /// The threshold it crossed.
    pub threshold: f64,
}

impl Finding {
    fn key(&self) -> String {
        if self.subject.is_empty() {
            self.alert.name().to_owned()
        } else {
            format!("{}/{}", self.alert, self.subject)
        }
    }
}

/// What the rules look at; the parts a process does not have are `None`.
#[derive(Debug, Default)]
pub struct Inputs<'a> {
    /// The latest observation of Redis; `None` when Redis could not be reached.
    pub observation: Option<&'a Observation>,
    /// Why Redis could not be reached.
    pub redis_error: Option<&'a str>,
    /// This process's ring, when it publishes.
    pub capture: Option<&'a CaptureHealth>,
    /// Events refused by `publish` since the previous evaluation.
    pub refused_since_last: u64,
    /// This process's shipper, when it ships.
    pub shipper: Option<&'a ShipperHealth>,
    /// Dead letters per second since the previous evaluation.
    pub poison_rate: Option<f64>,
    /// Per group, entries deleted by aggressive trims in the last 10 minutes.
    pub recent_trim_losses: BTreeMap<String, u64>,
    /// Events a consumer could not read as any version its handler reads
    /// (`unreadable_version` dead letters) in the last 10 minutes.
    pub recent_unreadable: u64,
    /// The analysis services' alerts of the last `ops.analysis_alert_window_s`, by kind
    /// (`fill_latency`, `creation_latency`, `risk`).
    pub analysis_alerts: BTreeMap<String, AnalysisAlerts>,
}

/// Evaluates every rule, in the order of [`Alert::ALL`].
pub fn evaluate(config: &OpsConfig, inputs: &Inputs<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for alert in Alert::ALL {
        alert.check(config, inputs, &mut findings);
    }
    findings
}

/// What a rule fires with: the findings of its own alert only.
struct Fire<'a> {
    alert: Alert,
    findings: &'a mut Vec<Finding>,
}

impl Fire<'_> {
    fn fire(
        &mut self,
        subject: &str,
        severity: Severity,
        message: String,
        value: f64,
        threshold: f64,
    ) {
        self.findings.push(Finding {
            alert: self.alert,
            subject: subject.to_owned(),
            severity,
            message,
            value,
            threshold,
        });
    }
}

/// The level of `value` above (strictly) a warning and a critical threshold, with the
/// threshold it crossed.
fn above<T: PartialOrd + Copy>(value: T, warning: T, critical: T) -> Option<(Severity, T)> {
    if value > critical {
        Some((Severity::Critical, critical))
    } else if value > warning {
        Some((Severity::Warning, warning))
    } else {
        None
    }
}

fn redis_unreachable(_: &OpsConfig, inputs: &Inputs<'_>, fire: &mut Fire<'_>) {
    if inputs.observation.is_none() {
        fire.fire(
            "",
            Severity::Critical,
            format!(
                "Redis cannot be reached: {}",
                inputs.redis_error.unwrap_or("no answer")
            ),
            0.0,
            1.0,
        );
    }
}

fn redis_memory_high(config: &OpsConfig, inputs: &Inputs<'_>, fire: &mut Fire<'_>) {
    let Some(redis) = inputs.observation.map(|o| &o.redis) else {
        return;
    };
    let Some(ratio) = redis.used_ratio() else {
        return;
    };
    let percent = ratio * 100.0;
    let level = if percent >= config.memory_critical_percent {
        Some((Severity::Critical, config.memory_critical_percent))
    } else if percent >= config.memory_warning_percent {
        Some((Severity::Warning, config.memory_warning_percent))
    } else {
        None
    };
    if let Some((severity, threshold)) = level {
        fire.fire(
            "",
            severity,
            format!(
                "Redis uses {percent:.1}% of maxmemory ({} of {} bytes)",
                redis.used_memory, redis.maxmemory
            ),
            percent,
            threshold,
        );
    }
}

fn redis_maxmemory_unset(_: &OpsConfig, inputs: &Inputs<'_>, fire: &mut Fire<'_>) {
    let Some(redis) = inputs.observation.map(|o| &o.redis) else {
        return;
    };
    if redis.used_ratio().is_none() {
        fire.fire(
            "",
            Severity::Warning,
            "Redis has no maxmemory: nothing bounds its memory, memory alerts and the \
             aggressive trim cannot work"
                .to_owned(),
            0.0,
            0.0,
        );
    }
}

fn eviction_policy_unsafe(_: &OpsConfig, inputs: &Inputs<'_>, fire: &mut Fire<'_>) {
    let Some(redis) = inputs.observation.map(|o| &o.redis) else {
        return;
    };
    match redis.eviction_risk() {
        EvictionRisk::None => {}
        EvictionRisk::HighWaterMarks => fire.fire(
            "",
            Severity::Warning,
            format!(
                "maxmemory-policy {} can evict the producers' high-water marks, which \
                 keep retried batches from being appended twice; use noeviction",
                redis.maxmemory_policy
            ),
            1.0,
            0.0,
        ),
        EvictionRisk::Stream => fire.fire(
            "",
            Severity::Critical,
            format!(
                "maxmemory-policy {} can evict the stream itself, with its groups and \
                 pending entries; use noeviction",
                redis.maxmemory_policy
            ),
            2.0,
            0.0,
        ),
    }
}

fn redis_fragmentation_high(config: &OpsConfig, inputs: &Inputs<'_>, fire: &mut Fire<'_>) {
    let Some(redis) = inputs.observation.map(|o| &o.redis) else {
        return;
    };
    if redis.allocator_frag_ratio > config.frag_ratio {
        fire.fire(
            "",
            Severity::Warning,
            format!(
                "allocator fragmentation ratio {:.2} is above {:.2}",
                redis.allocator_frag_ratio, config.frag_ratio
            ),
            redis.allocator_frag_ratio,
            config.frag_ratio,
        );
    }
}

fn group_lag_high(config: &OpsConfig, inputs: &Inputs<'_>, fire: &mut Fire<'_>) {
    let Some(observation) = inputs.observation else {
        return;
    };
    // The archive's group lags by the entries of the files it has open, by design.
    for group in observation
        .groups
        .iter()
        .filter(|g| g.name != crate::keys::ARCHIVE_GROUP)
    {
        let Some(lag) = group.lag else { continue };
        let level = above(lag, config.group_lag_warning, config.group_lag_critical);
        if let Some((severity, threshold)) = level {
            fire.fire(
                &group.name,
                severity,
                format!("group {} has {lag} entries not read yet", group.name),
                lag as f64,
                threshold as f64,
            );
        }
    }
}

fn archive_behind(config: &OpsConfig, inputs: &Inputs<'_>, fire: &mut Fire<'_>) {
    let Some(behind_ms) = inputs.observation.and_then(|o| o.archive_behind_ms) else {
        return;
    };
    let seconds = behind_ms / 1000;
    let level = above(
        seconds,
        config.archive_behind_warning_s,
        config.archive_behind_critical_s,
    );
    if let Some((severity, threshold)) = level {
        fire.fire(
            "",
            severity,
            format!(
                "the archive is {seconds} s behind: the oldest entry it does not hold was \
                 appended {seconds} s ago, and retention keeps everything from there in Redis"
            ),
            seconds as f64,
            threshold as f64,
        );
    }
}

fn order_latency_high(config: &OpsConfig, inputs: &Inputs<'_>, fire: &mut Fire<'_>) {
    for kind in ["creation_latency", "fill_latency"] {
        let Some(alerts) = inputs.analysis_alerts.get(kind) else {
            continue;
        };
        let level = above(alerts.count, 0, config.order_latency_alerts_critical - 1);
        if let Some((severity, threshold)) = level {
            fire.fire(
                kind,
                severity,
                format!(
                    "{} {} alerts in the last {} s (latest: {})",
                    alerts.count,
                    kind.replace('_', " "),
                    config.analysis_alert_window_s,
                    alerts.latest
                ),
                alerts.count as f64,
                (threshold + 1) as f64,
            );
        }
    }
}

fn order_risk_high(config: &OpsConfig, inputs: &Inputs<'_>, fire: &mut Fire<'_>) {
    let Some(alerts) = inputs.analysis_alerts.get("risk") else {
        return;
    };
    if alerts.count == 0 {
        return;
    }
    let severity = if alerts.critical > 0 {
        Severity::Critical
    } else {
        Severity::Warning
    };
    fire.fire(
        "",
        severity,
        format!(
            "{} orders above their notional limit in the last {} s, {} of them above twice \
             the limit (latest: {})",
            alerts.count, config.analysis_alert_window_s, alerts.critical, alerts.latest
        ),
        alerts.count as f64,
        1.0,
    );
}

fn poison_pills_high(config: &OpsConfig, inputs: &Inputs<'_>, fire: &mut Fire<'_>) {
    let Some(rate) = inputs.poison_rate else {
        return;
    };
    let level = above(
        rate,
        config.poison_rate_warning,
        config.poison_rate_critical,
    );
    if let Some((severity, threshold)) = level {
        fire.fire(
            "",
            severity,
            format!("{rate:.1} dead letters per second"),
            rate,
            threshold,
        );
    }
}

fn trim_lost_entries(_: &OpsConfig, inputs: &Inputs<'_>, fire: &mut Fire<'_>) {
    for (group, lost) in &inputs.recent_trim_losses {
        fire.fire(
            group,
            Severity::Critical,
            format!(
                "critical memory: trimming deleted {lost} entries group {group} had not \
                 finished in the last 10 minutes"
            ),
            *lost as f64,
            0.0,
        );
    }
}

fn events_unreadable(_: &OpsConfig, inputs: &Inputs<'_>, fire: &mut Fire<'_>) {
    if inputs.recent_unreadable > 0 {
        fire.fire(
            "",
            Severity::Critical,
            format!(
                "{} events in the last 10 minutes were of a version newer than their consumer's \
                 handler reads and not forward-compatible with it (dead letters \
                 unreadable_version; dlq_error names the fix)",
                inputs.recent_unreadable
            ),
            inputs.recent_unreadable as f64,
            0.0,
        );
    }
}

fn ring_depth_high(config: &OpsConfig, inputs: &Inputs<'_>, fire: &mut Fire<'_>) {
    let Some(capture) = inputs.capture else {
        return;
    };
    let critical_depth = capture.capacity - capture.capacity / 10;
    // A ring smaller than twice the configured depth warns at half full instead.
    let warning_depth = config.ring_depth_warning.min(capture.capacity / 2);
    let level = if capture.depth >= critical_depth {
        Some((Severity::Critical, critical_depth))
    } else if capture.depth > warning_depth {
        Some((Severity::Warning, warning_depth))
    } else {
        None
    };
    if let Some((severity, threshold)) = level {
        fire.fire(
            "",
            severity,
            format!(
                "{} events wait in the ring (capacity {})",
                capture.depth, capture.capacity
            ),
            capture.depth as f64,
            threshold as f64,
        );
    }
}

fn events_refused(_: &OpsConfig, inputs: &Inputs<'_>, fire: &mut Fire<'_>) {
    let Some(capture) = inputs.capture else {
        return;
    };
    if inputs.refused_since_last > 0 {
        fire.fire(
            "",
            Severity::Critical,
            format!(
                "publish refused {} events since the last check (total {})",
                inputs.refused_since_last,
                capture.refused.total()
            ),
            inputs.refused_since_last as f64,
            0.0,
        );
    }
}

fn breaker_open(_: &OpsConfig, inputs: &Inputs<'_>, fire: &mut Fire<'_>) {
    let Some(shipper) = inputs.shipper else {
        return;
    };
    if shipper.breaker == BreakerState::Open {
        fire.fire(
            "",
            Severity::Critical,
            format!(
                "the shipper's circuit breaker is open: {}",
                shipper
                    .last_error
                    .as_deref()
                    .unwrap_or("Redis keeps failing")
            ),
            2.0,
            2.0,
        );
    }
}

fn journal_full(_: &OpsConfig, inputs: &Inputs<'_>, fire: &mut Fire<'_>) {
    let Some(shipper) = inputs.shipper else {
        return;
    };
    if shipper.journal_full {
        fire.fire(
            "",
            Severity::Critical,
            format!(
                "the spill journal's disk budget is used up ({} bytes, {} events): the \
                 ring fills and publish refuses",
                shipper.journal_bytes, shipper.journal_events
            ),
            shipper.journal_bytes as f64,
            0.0,
        );
    }
}

/// A change worth telling someone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    /// Started firing, or changed level.
    Firing,
    /// Still firing after `ops.reminder_interval_s`.
    Reminder,
    /// Stopped firing.
    Resolved,
}

/// One notification, as the webhook receives it (JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// The rule.
    pub alert: Alert,
    /// The group it is about, or empty.
    pub subject: String,
    /// Its level (for `resolved`, the level it had).
    pub severity: Severity,
    /// What happened.
    pub state: Transition,
    /// The stream.
    pub stream: String,
    /// One line for people.
    pub message: String,
    /// The measured value.
    pub value: f64,
    /// The threshold.
    pub threshold: f64,
    /// When it started firing (RFC 3339, UTC).
    pub since: String,
    /// Now (RFC 3339, UTC).
    pub at: String,
    /// Who sent it: `host:pid`.
    pub source: String,
}

/// An alert firing now, for `/health` and `status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FiringAlert {
    /// The rule.
    pub alert: Alert,
    /// The group it is about, or empty.
    pub subject: String,
    /// Its level.
    pub severity: Severity,
    /// One line for people.
    pub message: String,
    /// When it started (RFC 3339, UTC).
    pub since: String,
}

struct Active {
    finding: Finding,
    since: SystemTime,
    last_sent: Instant,
}

/// The alerts firing and when each was last sent.
pub struct AlertState {
    active: BTreeMap<String, Active>,
    reminder: Duration,
    stream: String,
    source: String,
}

impl std::fmt::Debug for AlertState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertState")
            .field("firing", &self.active.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl AlertState {
    /// No alert firing; reminders every `reminder`.
    pub fn new(stream: &str, reminder: Duration) -> Self {
        Self {
            active: BTreeMap::new(),
            reminder,
            stream: stream.to_owned(),
            source: format!("{}:{}", host_name(), std::process::id()),
        }
    }

    /// Takes one evaluation's findings and returns the notifications it causes.
    pub fn update(
        &mut self,
        findings: Vec<Finding>,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<Notification> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for finding in findings {
            let key = finding.key();
            seen.insert(key.clone());
            match self.active.get_mut(&key) {
                Some(active) if active.finding.severity != finding.severity => {
                    active.finding = finding;
                    active.last_sent = now;
                    out.push(self.notify(&key, Transition::Firing, wall));
                }
                Some(active) => {
                    active.finding = finding;
                    if now.duration_since(active.last_sent) >= self.reminder {
                        active.last_sent = now;
                        out.push(self.notify(&key, Transition::Reminder, wall));
                    }
                }
                None => {
                    self.active.insert(
                        key.clone(),
                        Active {
                            finding,
                            since: wall,
                            last_sent: now,
                        },
                    );
                    out.push(self.notify(&key, Transition::Firing, wall));
                }
            }
        }
        let resolved: Vec<String> = self
            .active
            .keys()
            .filter(|key| !seen.contains(*key))
            .cloned()
            .collect();
        for key in resolved {
            out.push(self.notify(&key, Transition::Resolved, wall));
            self.active.remove(&key);
        }
        out
    }

    fn notify(&self, key: &str, state: Transition, wall: SystemTime) -> Notification {
        let active = &self.active[key];
        let finding = &active.finding;
        Notification {
            alert: finding.alert,
            subject: finding.subject.clone(),
            severity: finding.severity,
            state,
            stream: self.stream.clone(),
            message: finding.message.clone(),
            value: finding.value,
            threshold: finding.threshold,
            since: rfc3339(active.since),
            at: rfc3339(wall),
            source: self.source.clone(),
        }
    }

    /// The findings firing now of the rules `keep` selects, to carry them over an
    /// evaluation that could not see their inputs (Redis unreachable: its memory did not
    /// become fine, it became unknown).
    pub fn carried_over(&self, keep: impl Fn(Alert) -> bool) -> Vec<Finding> {
        self.active
            .values()
            .filter(|active| keep(active.finding.alert))
            .map(|active| active.finding.clone())
            .collect()
    }

    /// The alerts firing now, most severe first.
    pub fn firing(&self) -> Vec<FiringAlert> {
        let mut firing: Vec<FiringAlert> = self
            .active
            .values()
            .map(|active| FiringAlert {
                alert: active.finding.alert,
                subject: active.finding.subject.clone(),
                severity: active.finding.severity,
                message: active.finding.message.clone(),
                since: rfc3339(active.since),
            })
            .collect();
        firing.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(a.alert.name().cmp(b.alert.name()))
        });
        firing
    }
}

/// The host name, for the `source` of notifications.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// `2026-11-26T09:35:14Z`: RFC 3339, UTC, whole seconds (a time before 1970 reads as
/// 1970-01-01T00:00:00Z).
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time.max(SystemTime::UNIX_EPOCH)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::observe::{GroupInfo, RedisInfo};

    fn observation(used: u64, max: u64, policy: &str, lag: u64) -> Observation {
        Observation {
            redis: RedisInfo {
                used_memory: used,
                maxmemory: max,
                maxmemory_policy: policy.to_owned(),
                allocator_frag_ratio: 1.0,
                ..RedisInfo::default()
            },
            groups: vec![GroupInfo {
                name: "g".to_owned(),
                pending: 0,
                last_delivered: Default::default(),
                lag: Some(lag),
                oldest_pending: None,
                unfinished: Some(lag),
                consumers: Vec::new(),
            }],
            ..Observation::default()
        }
    }

    fn fired(observation: Option<&Observation>) -> Vec<(&'static str, Severity)> {
        let inputs = Inputs {
            observation,
            ..Inputs::default()
        };
        evaluate(&OpsConfig::default(), &inputs)
            .into_iter()
            .map(|f| (f.alert.name(), f.severity))
            .collect()
    }

    #[test]
    fn rules_fire_at_their_thresholds() {
        assert_eq!(fired(Some(&observation(50, 100, "noeviction", 0))), vec![]);
        assert_eq!(
            fired(Some(&observation(60, 100, "noeviction", 10_001))),
            vec![
                ("RedisMemoryHigh", Severity::Warning),
                ("GroupLagHigh", Severity::Warning)
            ]
        );
        assert_eq!(
            fired(Some(&observation(80, 100, "allkeys-lru", 100_001))),
            vec![
                ("RedisMemoryHigh", Severity::Critical),
                ("EvictionPolicyUnsafe", Severity::Critical),
                ("GroupLagHigh", Severity::Critical)
            ]
        );
        assert_eq!(
            fired(Some(&observation(1, 0, "volatile-lru", 0))),
            vec![
                ("RedisMaxmemoryUnset", Severity::Warning),
                ("EvictionPolicyUnsafe", Severity::Warning)
            ]
        );
        assert_eq!(fired(None), vec![("RedisUnreachable", Severity::Critical)]);
    }

    #[test]
    fn issue_22_the_archive_alerts_by_age_not_by_its_groups_lag() {
        let mut archived = observation(50, 100, "noeviction", 0);
        archived.groups[0].name = crate::keys::ARCHIVE_GROUP.to_owned();
        archived.groups[0].lag = Some(5_000_000);
        archived.archive_behind_ms = Some(60_000);
        assert_eq!(fired(Some(&archived)), vec![], "an open file's minute");
        archived.archive_behind_ms = Some(301_000);
        assert_eq!(
            fired(Some(&archived)),
            vec![("ArchiveBehind", Severity::Warning)]
        );
        archived.archive_behind_ms = Some(1_801_000);
        assert_eq!(
            fired(Some(&archived)),
            vec![("ArchiveBehind", Severity::Critical)]
        );
    }

    #[test]
    fn notifications_on_change_and_reminders_only() {
        let finding = |severity| Finding {
            alert: Alert::RedisMemoryHigh,
            subject: String::new(),
            severity,
            message: String::new(),
            value: 0.0,
            threshold: 0.0,
        };
        let mut state = AlertState::new("events", Duration::from_secs(60));
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH;
        let states = |n: Vec<Notification>| {
            n.into_iter()
                .map(|n| (n.state, n.severity))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            states(state.update(vec![finding(Severity::Warning)], t0, wall)),
            vec![(Transition::Firing, Severity::Warning)]
        );
        let t = |s| t0 + Duration::from_secs(s);
        assert_eq!(
            states(state.update(vec![finding(Severity::Warning)], t(10), wall)),
            vec![]
        );
        assert_eq!(
            states(state.update(vec![finding(Severity::Critical)], t(20), wall)),
            vec![(Transition::Firing, Severity::Critical)]
        );
        assert_eq!(
            states(state.update(vec![finding(Severity::Critical)], t(70), wall)),
            vec![]
        );
        assert_eq!(
            states(state.update(vec![finding(Severity::Critical)], t(80), wall)),
            vec![(Transition::Reminder, Severity::Critical)]
        );
        assert_eq!(state.firing().len(), 1);
        assert_eq!(
            states(state.update(vec![], t(90), wall)),
            vec![(Transition::Resolved, Severity::Critical)]
        );
        assert_eq!(states(state.update(vec![], t(100), wall)), vec![]);
        assert!(state.firing().is_empty());
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |secs| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_685_714), "2026-11-26T09:35:14Z");
    }
}
