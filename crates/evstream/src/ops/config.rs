//! `[ops]`: the ops loop's retention, memory, group hygiene and alert thresholds.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// `[ops]`: the ops loop (`evstream ops`, or [`crate::ops::OpsLoop`] in any process).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    /// How often Redis is polled (`INFO`, `XINFO`) and retention applied, in milliseconds.
    /// Default 30,000.
    pub interval_ms: u64,
    /// Retention by length: entries beyond the newest `max_len` are trimmed. 0: no length
    /// limit. Default 1,000,000.
    pub max_len: u64,
    /// Retention by age: entries older than this many seconds are trimmed. 0: no age limit.
    /// Default 86,400 (24 h).
    pub max_age_s: u64,
    /// Length the stream is cut to when memory is critical, even past entries a group has
    /// not read (those are counted and alerted); `max_len` when that is smaller.
    /// Default 100,000.
    pub aggressive_len: u64,
    /// Dead letters kept in `<stream>:dlq` at most (the newest); 0: no limit by count.
    /// Default 100,000. What this and [`dlq_max_age_s`](Self::dlq_max_age_s) delete is
    /// counted (`evstream_dlq_trimmed_entries_total`).
    pub dlq_max_len: u64,
    /// Dead letters older than this many seconds are deleted; 0: no age limit.
    /// Default 604,800 (7 days).
    pub dlq_max_age_s: u64,
    /// Used memory, in percent of `maxmemory`, that raises a WARNING. Default 60.
    pub memory_warning_percent: f64,
    /// Used memory, in percent of `maxmemory`, that raises a CRITICAL alert and triggers
    /// the aggressive trim. Default 80.
    pub memory_critical_percent: f64,
    /// `allocator_frag_ratio` above which fragmentation is reported. Default 1.5.
    pub frag_ratio: f64,
    /// Whether the ops loop may run `CONFIG SET activedefrag yes` above `frag_ratio`.
    /// Default false.
    pub allow_activedefrag: bool,
    /// Consumers idle this long, in seconds, with no pending entries are removed from their
    /// group. 0: never. Default 3600.
    pub consumer_idle_s: u64,
    /// How often alert rules are evaluated, in milliseconds. Default 10,000.
    pub alert_interval_ms: u64,
    /// A firing alert is sent again this often, in seconds. Default 1800.
    pub reminder_interval_s: u64,
    /// Alerts are POSTed here as JSON (`http://` or `https://`). Default: none, the log only.
    pub webhook_url: Option<String>,
    /// CA certificates (PEM) an `https://` webhook's certificate is checked against, for a
    /// private PKI. Default: none, the system's root certificates.
    pub webhook_ca_file: Option<PathBuf>,
    /// Events waiting in a process's ring that raise a WARNING. Default 100,000.
    pub ring_depth_warning: u64,
    /// Entries a group has not read yet that raise a WARNING. Default 10,000.
    pub group_lag_warning: u64,
    /// ... and a CRITICAL alert. Default 100,000.
    pub group_lag_critical: u64,
    /// Dead letters per second that raise a WARNING. Default 10.
    pub poison_rate_warning: f64,
    /// ... and a CRITICAL alert. Default 100.
    pub poison_rate_critical: f64,
    /// With an archive, seconds since the oldest entry it does not hold was appended that
    /// raise a WARNING (`ArchiveBehind`). Default 300.
    pub archive_behind_warning_s: u64,
    /// ... and a CRITICAL alert. Default 1800.
    pub archive_behind_critical_s: u64,
    /// The analysis services' alerts (`<stream>:alerts`, written by IntelliSense) of the
    /// last this many seconds fire `OrderLatencyHigh` and `OrderRiskHigh`; 0: not read.
    /// Default 300.
    pub analysis_alert_window_s: u64,
    /// Latency alerts of one kind within the window that make `OrderLatencyHigh` CRITICAL
    /// (one makes it a WARNING). Default 50.
    pub order_latency_alerts_critical: u64,
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            interval_ms: 30_000,
            max_len: 1_000_000,
            max_age_s: 86_400,
            aggressive_len: 100_000,
            dlq_max_len: 100_000,
            dlq_max_age_s: 7 * 24 * 3600,
            memory_warning_percent: 60.0,
            memory_critical_percent: 80.0,
            frag_ratio: 1.5,
            allow_activedefrag: false,
            consumer_idle_s: 3600,
            alert_interval_ms: 10_000,
            reminder_interval_s: 1800,
            webhook_url: None,
            webhook_ca_file: None,
            ring_depth_warning: 100_000,
            group_lag_warning: 10_000,
            group_lag_critical: 100_000,
            poison_rate_warning: 10.0,
            poison_rate_critical: 100.0,
            archive_behind_warning_s: 300,
            archive_behind_critical_s: 1800,
            analysis_alert_window_s: 300,
            order_latency_alerts_critical: 50,
        }
    }
}

impl OpsConfig {
    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, value: &dyn ToString, reason| {
            Err(ConfigError::Invalid {
                field,
                value: value.to_string(),
                reason,
            })
        };
        if self.interval_ms < 100 {
            return invalid("ops.interval_ms", &self.interval_ms, "must be at least 100");
        }
        if self.alert_interval_ms < 100 {
            return invalid(
                "ops.alert_interval_ms",
                &self.alert_interval_ms,
                "must be at least 100",
            );
        }
        if self.aggressive_len == 0 {
            return invalid(
                "ops.aggressive_len",
                &self.aggressive_len,
                "must be at least 1 (0 would empty the stream at critical memory)",
            );
        }
        if self.order_latency_alerts_critical == 0 {
            return invalid(
                "ops.order_latency_alerts_critical",
                &self.order_latency_alerts_critical,
                "must be at least 1 (one latency alert is a WARNING)",
            );
        }
        if self.reminder_interval_s == 0 {
            return invalid(
                "ops.reminder_interval_s",
                &self.reminder_interval_s,
                "must be at least 1",
            );
        }
        let percent = |p: f64| p > 0.0 && p <= 100.0;
        if !percent(self.memory_warning_percent) {
            return invalid(
                "ops.memory_warning_percent",
                &self.memory_warning_percent,
                "must be above 0 and at most 100",
            );
        }
        if !percent(self.memory_critical_percent)
            || self.memory_critical_percent < self.memory_warning_percent
        {
            return invalid(
                "ops.memory_critical_percent",
                &self.memory_critical_percent,
                "must be at most 100 and not below ops.memory_warning_percent",
            );
        }
        if self.group_lag_critical < self.group_lag_warning {
            return invalid(
                "ops.group_lag_critical",
                &self.group_lag_critical,
                "must not be below ops.group_lag_warning",
            );
        }
        if !(self.poison_rate_warning >= 0.0
            && self.poison_rate_critical >= self.poison_rate_warning)
        {
            return invalid(
                "ops.poison_rate_critical",
                &self.poison_rate_critical,
                "must not be below ops.poison_rate_warning, which must not be negative",
            );
        }
        if self.archive_behind_critical_s < self.archive_behind_warning_s {
            return invalid(
                "ops.archive_behind_critical_s",
                &self.archive_behind_critical_s,
                "must not be below ops.archive_behind_warning_s",
            );
        }
        if self.frag_ratio.is_nan() || self.frag_ratio < 1.0 {
            return invalid("ops.frag_ratio", &self.frag_ratio, "must be at least 1.0");
        }
        if let Some(url) = &self.webhook_url {
            if let Err(reason) = WebhookUrl::parse(url) {
                return Err(ConfigError::Invalid {
                    field: "ops.webhook_url",
                    value: url.clone(),
                    reason,
                });
            }
        }
        Ok(())
    }
}

/// `ops.webhook_url` taken apart: `http://host[:port][/path]` or `https://…`. The webhook
/// sink ([`crate::ops::webhook`]) posts there; the check lives here so that loading the
/// configuration refuses a bad URL before anything starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebhookUrl {
    pub(crate) tls: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) path: String,
}

impl WebhookUrl {
    /// Parses `http://host[:port][/path]` or `https://…`, or says what is wrong with it.
    pub(crate) fn parse(url: &str) -> Result<Self, &'static str> {
        let (tls, rest, default_port) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest, 443)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest, 80)
        } else {
            return Err("must start with http:// or https://");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("must not carry credentials; put a token in the path instead");
        }
        let bad_port = "has an invalid port";
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or("has an unclosed [")?;
            match after.strip_prefix(':') {
                Some(port) => (host, port.parse().map_err(|_| bad_port)?),
                None if after.is_empty() => (host, default_port),
                None => return Err(bad_port),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, port.parse().map_err(|_| bad_port)?),
                None => (authority, default_port),
            }
        };
        if host.is_empty()
            || path
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err("must be http(s)://host[:port][/path]");
        }
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}
