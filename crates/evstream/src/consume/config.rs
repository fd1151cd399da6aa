//! `[consume]`: how a consumer group reads the stream.

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// `[consume]`: how a consumer group reads the stream.
///
/// The consumer name is not here: every process needs its own (`--consumer`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumeConfig {
    /// Consumer group name. Default `intellisense_group`.
    pub group: String,
    /// Where a group created by evstream starts: `0` reads the whole stream (the original
    /// design's choice), `$` only entries added from now on, or an entry id. Default `0`.
    pub start_id: String,
    /// Entries asked for per `XREADGROUP` and per `XAUTOCLAIM`. Default 256.
    pub count: usize,
    /// How long one `XREADGROUP` blocks waiting for new entries, in milliseconds; also the
    /// longest delay before a shutdown is noticed when `CLIENT UNBLOCK` is not allowed.
    /// Default 1000.
    pub block_ms: u64,
    /// Pending entries idle this long (in any consumer of the group, this one included) are
    /// claimed with `XAUTOCLAIM` and processed again, in milliseconds. Default 60,000.
    pub min_idle_ms: u64,
    /// Deliveries after which an entry that still fails goes to the dead letter queue and is
    /// acknowledged. Default 5.
    pub max_deliveries: u64,
    /// Deadline of every call except the blocking read, in milliseconds. Default 2000.
    pub timeout_ms: u64,
    /// Largest accepted `data` field in bytes; a larger entry is poison (`too_large`).
    /// Default 1 MiB.
    pub max_data_bytes: usize,
    /// How many recently applied event ids the consumer remembers, to skip an event that
    /// reaches it twice (e.g. a group re-created from `0`). Default 100,000.
    pub dedupe_capacity: usize,
    /// How long an applied event id is remembered, in seconds. Default 600.
    pub dedupe_ttl_s: u64,
    /// With a schema registry in use: `false` (the default) hands events of a type nobody
    /// registered to the handler unvalidated and counts them (`unvalidated`), since an
    /// everything stream carries new types before anyone registers them; `true` makes them
    /// poison (`unknown_type`), retried and then dead-lettered. Types the handler does not
    /// read are acknowledged unhandled either way.
    pub strict_schemas: bool,
    /// How often a consumer with the registry from Redis checks its revision and reloads it,
    /// in milliseconds. Default 5000.
    pub schema_reload_ms: u64,
}

impl Default for ConsumeConfig {
    fn default() -> Self {
        Self {
            group: "intellisense_group".to_owned(),
            start_id: "0".to_owned(),
            count: 256,
            block_ms: 1000,
            min_idle_ms: 60_000,
            max_deliveries: 5,
            timeout_ms: 2000,
            max_data_bytes: 1024 * 1024,
            dedupe_capacity: 100_000,
            dedupe_ttl_s: 600,
            strict_schemas: false,
            schema_reload_ms: 5000,
        }
    }
}

impl ConsumeConfig {
    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, value: &dyn ToString, reason| ConfigError::Invalid {
            field,
            value: value.to_string(),
            reason,
        };
        if self.group.is_empty() {
            return Err(invalid("consume.group", &"\"\"", "must not be empty"));
        }
        if !(self.start_id == "0" || self.start_id == "$" || is_stream_id(&self.start_id)) {
            return Err(invalid(
                "consume.start_id",
                &self.start_id,
                "must be \"0\", \"$\" or an entry id such as 1700000000000-0",
            ));
        }
        let checks: [(&'static str, u64, bool, &'static str); 6] = [
            (
                "consume.count",
                self.count as u64,
                (1..=10_000).contains(&self.count),
                "must be between 1 and 10000",
            ),
            (
                "consume.block_ms",
                self.block_ms,
                (1..=60_000).contains(&self.block_ms),
                "must be between 1 and 60000",
            ),
            (
                "consume.max_deliveries",
                self.max_deliveries,
                self.max_deliveries >= 1,
                "must be at least 1",
            ),
            (
                "consume.timeout_ms",
                self.timeout_ms,
                self.timeout_ms >= 1,
                "must be at least 1",
            ),
            (
                "consume.min_idle_ms",
                self.min_idle_ms,
                self.min_idle_ms >= 1,
                "must be at least 1",
            ),
            (
                "consume.schema_reload_ms",
                self.schema_reload_ms,
                self.schema_reload_ms >= 100,
                "must be at least 100 (each check is a GET on the server)",
            ),
        ];
        for (field, value, ok, reason) in checks {
            if !ok {
                return Err(invalid(field, &value, reason));
            }
        }
        Ok(())
    }
}

/// Whether `id` is a stream entry id, `<ms>` or `<ms>-<seq>`.
fn is_stream_id(id: &str) -> bool {
    let mut parts = id.splitn(2, '-');
    let digits =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let ms = parts.next();
    match parts.next() {
        None => digits(ms),
        seq => digits(ms) && digits(seq),
    }
}
