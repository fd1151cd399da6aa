//! `[archive]`: where the archive goes and when its files are closed.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// `[archive]`: the Parquet archive of the stream and its dead letters
/// ([`crate::archive`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// The archive's directory. When set, `evstream ops` archives the stream and its dead
    /// letters there, and retention never trims an entry before it is archived. Default:
    /// none, no archive.
    pub dir: Option<PathBuf>,
    /// A file is closed once it holds this many bytes (compressed). Default 67,108,864
    /// (64 MiB).
    pub max_file_bytes: u64,
    /// A file is closed at the latest this many seconds after it was opened: until it is
    /// closed, retention keeps its entries in Redis. Default 60.
    pub max_file_age_s: u64,
    /// Entries read from Redis per call. Default 5,000.
    pub batch: usize,
    /// zstd compression level of the files, 1–22. Default 3.
    pub zstd_level: i32,
    /// How long the archiver waits, in milliseconds, when it has read everything. Default 200.
    pub poll_interval_ms: u64,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            dir: None,
            max_file_bytes: 64 << 20,
            max_file_age_s: 60,
            batch: 5_000,
            zstd_level: 3,
            poll_interval_ms: 200,
        }
    }
}

impl ArchiveConfig {
    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, value: &dyn ToString, reason| {
            Err(ConfigError::Invalid {
                field,
                value: value.to_string(),
                reason,
            })
        };
        if self.max_file_bytes < 1 << 16 {
            return invalid(
                "archive.max_file_bytes",
                &self.max_file_bytes,
                "must be at least 65536",
            );
        }
        if self.max_file_age_s == 0 {
            return invalid(
                "archive.max_file_age_s",
                &self.max_file_age_s,
                "must be at least 1",
            );
        }
        if !(1..=100_000).contains(&self.batch) {
            return invalid("archive.batch", &self.batch, "must be 1 to 100000");
        }
        if !(1..=22).contains(&self.zstd_level) {
            return invalid("archive.zstd_level", &self.zstd_level, "must be 1 to 22");
        }
        if self.poll_interval_ms == 0 {
            return invalid(
                "archive.poll_interval_ms",
                &self.poll_interval_ms,
                "must be at least 1",
            );
        }
        Ok(())
    }
}
