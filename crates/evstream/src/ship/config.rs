//! `[ship]`: how the shipper batches, retries, spills and trims.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::config::OpsConfig;
use crate::error::ConfigError;

/// `[ship]`: how the shipper batches, retries and trims. See `docs/configuration.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShipConfig {
    /// Most events in one batch (one Redis call). Default 256.
    pub batch_max: usize,
    /// How long a partial batch waits for more events while other batches are in flight, in
    /// microseconds; when nothing is in flight a batch goes at once. Default 2000.
    pub linger_us: u64,
    /// How a batch is appended exactly once: `transaction` (one `MULTI`/`EXEC` of plain
    /// `XADD`s between a guard script and one that moves the mark) or `script` (one Lua
    /// script per batch; a narrower ACL, about twice the Redis CPU per event). Both pipeline
    /// `in_flight` batches. Default `transaction`. Measurements: `BENCHMARKS.md`.
    pub append: AppendMode,
    /// Batches in flight at once on the connection. Default 4.
    pub in_flight: usize,
    /// Deadline of one batch, in milliseconds; past it the batch is retried. Default 100.
    pub timeout_ms: u64,
    /// With k > 0, a batch counts as delivered only once `WAIT k` confirms that k replicas
    /// have it (waiting up to half of `timeout_ms`); otherwise it is retried, and the
    /// no-duplicate check skips what was appended already. So a failover to a replica that
    /// acknowledged loses nothing. Costs a replica round trip per batch, and batches of one
    /// connection wait behind each `WAIT`. Default 0 (off).
    pub min_replicas_ack: u32,
    /// `MAXLEN ~` bound the stream is trimmed to after each batch; 0 disables trimming.
    /// Default 0: this trim does not know about consumer groups and would delete entries a
    /// lagging group has not read, uncounted. Retention belongs to the ops loop
    /// ([`OpsConfig::max_len`], [`OpsConfig::max_age_s`]), which waits for lagging groups
    /// unless memory is critical and counts what they lose. Set it only as a hard cap for a
    /// stream no ops loop looks after, or well above `ops.max_len`.
    pub max_len: u64,
    /// First retry delay in milliseconds; it doubles per attempt, with full jitter. Default 10.
    pub retry_base_ms: u64,
    /// Longest retry delay in milliseconds. Default 1000.
    pub retry_max_ms: u64,
    /// Consecutive failures that open the circuit breaker. Default 10.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before one probe batch the first time, in
    /// milliseconds; each failed probe doubles it, up to `breaker_cool_down_max_ms`, and a
    /// success resets it. The cool-down also ends at once when a new connection's handshake
    /// succeeds (the server is back, or a failover reached a new one) or Sentinel announces a
    /// promotion: it only holds batches back from a server that answers but keeps failing.
    /// Default 250.
    pub breaker_cool_down_ms: u64,
    /// Longest cool-down of the breaker, in milliseconds. Default 2000: a server that answers
    /// but keeps failing gets one probe batch every 2 s at most, and once it recovers,
    /// shipping resumes within 2 s. (A longer cool-down protects the server no better: the
    /// probe is one batch.)
    pub breaker_cool_down_max_ms: u64,
    /// Lifetime of a producer's high-water mark in Redis (the no-duplicate state), in seconds,
    /// refreshed by every batch. It must exceed the longest time a batch can wait for a
    /// retry. Default 604800 (7 days).
    pub dedupe_ttl_s: u64,
    /// Default deadline of a shutdown's final flush, in milliseconds. Default 5000.
    pub shutdown_timeout_ms: u64,
    /// Directory of the spill journal. When Redis is away longer than the ring can absorb,
    /// batches spill here and are replayed in order once it is back; at shutdown, what could
    /// not be delivered is left here for the next start to replay. Default: none, which means
    /// that during a long outage the ring fills and `publish` refuses events (counted); set it
    /// in production.
    pub journal_dir: Option<PathBuf>,
    /// Disk budget of the journal in MiB; past it, the ring fills again. Default 1024.
    pub journal_budget_mb: u64,
    /// When journal writes are forced to disk. Default `interval`.
    pub journal_fsync: FsyncPolicy,
    /// Period of `journal_fsync = "interval"`, in milliseconds. Default 1000.
    pub journal_fsync_interval_ms: u64,
    /// Replay journals left by earlier processes even when their events are older than
    /// `dedupe_ttl_s` and their producer's high-water mark is gone from Redis. Without the
    /// mark, nothing tells which of their events Redis already has: such a journal is not
    /// replayed (logged as an error, counted in health as `journals_refused`) unless this is
    /// set. Set it for one start once you know none of the journal's events reached the
    /// stream (see `docs/operations.md`, "A journal older than the mark"); replaying a journal
    /// that was partly delivered appends that part twice. Default false.
    pub replay_stale_journals: bool,
    /// Ring fill, in percent of its capacity, from which batches spill to the journal while
    /// Redis is not keeping up. Default 50.
    pub spill_at_percent: u8,
    /// Strict mode: when not empty, only these event types go to the stream; any other is
    /// dead-lettered with reason `unknown_type`. Default empty (every type accepted).
    pub known_event_types: Vec<String>,
    /// Schema validation in the shipper (never on `publish`'s path): `off`, `sample`
    /// (validate `validation_sample_rate` of the events, count and log violations, ship them
    /// anyway) or `strict` (validate every event; unknown types and invalid data are
    /// dead-lettered as `unknown_type` / `invalid_schema`). Default `off`.
    pub validation: Validation,
    /// Fraction of events validated in `sample` mode. Default 0.01.
    pub validation_sample_rate: f64,
    /// Schema directory for validation; default: the registry in Redis
    /// (`evstream schema push`), re-read when its revision moves (`schema::Source`).
    pub schemas_dir: Option<PathBuf>,
    /// How often, in milliseconds, a shipper validating against the registry in Redis checks
    /// its revision and reloads it (as `consume.schema_reload_ms` does for consumers); at
    /// least 100. Default 5000.
    pub schema_reload_ms: u64,
}

/// How the shipper appends a batch exactly once; see [`ShipConfig::append`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppendMode {
    /// One Lua script per batch that checks the mark and appends every event: the narrowest
    /// ACL (no `RENAME`/`DEL`), about twice the Redis CPU per event.
    Script,
    /// `MULTI`/`EXEC` of plain `XADD`s between a guard script that checks the mark (and
    /// makes the `XADD`s fail when it is not where the batch continues) and one that moves
    /// it. Default.
    #[default]
    Transaction,
}

/// Schema validation in the shipper.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    /// No validation. Default.
    #[default]
    Off,
    /// Validate a sample; violations are counted and logged, and shipped.
    Sample,
    /// Validate every event; violations are dead-lettered.
    Strict,
}

impl Default for ShipConfig {
    fn default() -> Self {
        Self {
            batch_max: 256,
            linger_us: 2000,
            append: AppendMode::Transaction,
            in_flight: 4,
            timeout_ms: 100,
            min_replicas_ack: 0,
            max_len: 0,
            retry_base_ms: 10,
            retry_max_ms: 1000,
            breaker_threshold: 10,
            breaker_cool_down_ms: 250,
            breaker_cool_down_max_ms: 2_000,
            dedupe_ttl_s: 7 * 24 * 3600,
            shutdown_timeout_ms: 5000,
            journal_dir: None,
            journal_budget_mb: 1024,
            journal_fsync: FsyncPolicy::Interval,
            journal_fsync_interval_ms: 1000,
            replay_stale_journals: false,
            spill_at_percent: 50,
            known_event_types: Vec::new(),
            validation: Validation::Off,
            validation_sample_rate: 0.01,
            schemas_dir: None,
            schema_reload_ms: 5000,
        }
    }
}

impl ShipConfig {
    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let checks: [(&'static str, u64, bool, &'static str); 9] = [
            (
                "ship.breaker_cool_down_ms",
                self.breaker_cool_down_ms,
                self.breaker_cool_down_ms >= 1,
                "must be at least 1",
            ),
            (
                "ship.breaker_cool_down_max_ms",
                self.breaker_cool_down_max_ms,
                self.breaker_cool_down_max_ms >= self.breaker_cool_down_ms,
                "must be at least ship.breaker_cool_down_ms",
            ),
            (
                "ship.batch_max",
                self.batch_max as u64,
                (1..=10_000).contains(&self.batch_max),
                "must be between 1 and 10000",
            ),
            (
                "ship.in_flight",
                self.in_flight as u64,
                (1..=64).contains(&self.in_flight),
                "must be between 1 and 64",
            ),
            (
                "ship.schema_reload_ms",
                self.schema_reload_ms,
                self.schema_reload_ms >= 100,
                "must be at least 100 (each check is a GET on the server)",
            ),
            (
                "ship.timeout_ms",
                self.timeout_ms,
                self.timeout_ms >= 1,
                "must be at least 1",
            ),
            (
                "ship.retry_base_ms",
                self.retry_base_ms,
                self.retry_base_ms >= 1,
                "must be at least 1",
            ),
            (
                "ship.dedupe_ttl_s",
                self.dedupe_ttl_s,
                self.dedupe_ttl_s >= 60,
                "must be at least 60",
            ),
            (
                "ship.spill_at_percent",
                u64::from(self.spill_at_percent),
                (1..=100).contains(&self.spill_at_percent),
                "must be between 1 and 100",
            ),
        ];
        for (field, value, ok, reason) in checks {
            if !ok {
                return Err(ConfigError::Invalid {
                    field,
                    value: value.to_string(),
                    reason,
                });
            }
        }
        Ok(())
    }
}

/// When the journal forces its writes to disk.
///
/// With every policy, each record is written to its file (handed to the OS by `write(2)`)
/// before it counts as journaled: the journal keeps no buffer of its own, so a crash of the
/// process loses nothing it counted. The policies differ in what survives a crash of the
/// machine (power loss, kernel panic), which loses what the OS had not written back yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// `fsync` after every record, before it counts as journaled (a failed `fsync` is a
    /// failed append): survives a power loss; slowest.
    Always,
    /// `fsync` at most once per `journal_fsync_interval_ms` (and at shutdown): a power loss
    /// loses at most that interval's records.
    Interval,
    /// Never `fsync`: survives a process crash (the OS has every record), not a power loss.
    Never,
}
