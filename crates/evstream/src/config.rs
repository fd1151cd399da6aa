//! The one typed configuration of evstream, read from TOML (`--config FILE`).
//!
//! Every section and option is optional; a missing one takes the default documented on it.
//! Unknown options are errors, so a typo never silently falls back to a default.
//!
//! ```toml
//! [redis]
//! url = "redis://127.0.0.1:6379"   # overridden by --redis-url / EVSTREAM_REDIS_URL
//! stream = "events"                # overridden by --stream
//!
//! [ring]
//! capacity = 65536          # slots, a power of two
//! slot_bytes = 1024         # bytes pre-allocated per slot
//! max_event_bytes = 65536   # larger payloads are refused, never truncated
//! when_full = "refuse"      # or "wait"
//! wait_timeout_us = 100     # bound of the wait when when_full = "wait"
//!
//! [producer]
//! id = "engine-1"           # default: a new UUIDv7 per process
//! ```

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Default Redis URL.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Default stream key.
pub const DEFAULT_STREAM: &str = "events";

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where events go.
    pub redis: RedisConfig,
    /// The in-process ring buffer.
    pub ring: RingConfig,
    /// Identity of this publishing process.
    pub producer: ProducerConfig,
}

impl Config {
    /// Reads and validates a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Self = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.ring.validate()?;
        self.producer.validate()
    }
}

/// `[redis]`: the server and the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Server URL. Default `redis://127.0.0.1:6379`.
    pub url: String,
    /// Stream key. Default `events`.
    pub stream: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_REDIS_URL.to_owned(),
            stream: DEFAULT_STREAM.to_owned(),
        }
    }
}

/// What [`Publisher::publish`](crate::publish::Publisher::publish) does when the ring is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Refuse at once with [`PublishError::RingFull`](crate::PublishError::RingFull). Default.
    #[default]
    Refuse,
    /// Wait for room, spinning then yielding, up to `wait_timeout_us`, then refuse.
    Wait,
}

/// `[ring]`: the in-process ring buffer between the engine's threads and the shipper.
///
/// Memory: about `capacity × slot_bytes` bytes, allocated once at start (64 MiB by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingConfig {
    /// Number of slots, a power of two of at least 2. Default 65,536.
    capacity: usize,
    /// Bytes pre-allocated for each slot's payload. Payloads up to this size are published
    /// without any allocation; larger ones (up to `max_event_bytes`) grow the slot's buffer
    /// once, which the shipper hands back at normal size. Default 1,024.
    slot_bytes: usize,
    /// Largest accepted serialized payload; larger events are refused, never truncated.
    /// Default 65,536 (64 KiB).
    max_event_bytes: usize,
    /// Behaviour when the ring is full. Default `refuse`.
    when_full: WhenFull,
    /// How long `when_full = "wait"` waits for room, in microseconds. Default 100.
    wait_timeout_us: u64,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            capacity: 65_536,
            slot_bytes: 1024,
            max_event_bytes: 64 * 1024,
            when_full: WhenFull::Refuse,
            wait_timeout_us: 100,
        }
    }
}

impl RingConfig {
    /// Sets the number of slots (a power of two of at least 2).
    pub fn set_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets the bytes pre-allocated per slot.
    pub fn set_slot_bytes(mut self, slot_bytes: usize) -> Self {
        self.slot_bytes = slot_bytes;
        self
    }

    /// Sets the largest accepted payload.
    pub fn set_max_event_bytes(mut self, max_event_bytes: usize) -> Self {
        self.max_event_bytes = max_event_bytes;
        self
    }

    /// Sets the behaviour when the ring is full; `wait` is the bound for [`WhenFull::Wait`].
    pub fn set_when_full(mut self, when_full: WhenFull, wait: Duration) -> Self {
        self.when_full = when_full;
        self.wait_timeout_us = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        self
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes pre-allocated per slot.
    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// Largest accepted payload in bytes.
    pub fn max_event_bytes(&self) -> usize {
        self.max_event_bytes
    }

    /// Behaviour when full.
    pub fn when_full(&self) -> WhenFull {
        self.when_full
    }

    /// Bound of the wait for [`WhenFull::Wait`].
    pub fn wait_timeout(&self) -> Duration {
        Duration::from_micros(self.wait_timeout_us)
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.capacity < 2 || !self.capacity.is_power_of_two() {
            return Err(ConfigError::Invalid {
                field: "ring.capacity",
                value: self.capacity.to_string(),
                reason: "must be a power of two of at least 2, e.g. 65536",
            });
        }
        if self.max_event_bytes == 0 || self.max_event_bytes > MAX_EVENT_BYTES_LIMIT {
            return Err(ConfigError::Invalid {
                field: "ring.max_event_bytes",
                value: self.max_event_bytes.to_string(),
                reason: "must be between 1 and 67108864 (64 MiB)",
            });
        }
        if self.slot_bytes > self.max_event_bytes {
            return Err(ConfigError::Invalid {
                field: "ring.slot_bytes",
                value: self.slot_bytes.to_string(),
                reason: "must not exceed ring.max_event_bytes",
            });
        }
        Ok(())
    }
}

/// Upper bound of `ring.max_event_bytes`: far above any sane event, below Redis's 512 MB
/// bulk-string limit.
const MAX_EVENT_BYTES_LIMIT: usize = 64 * 1024 * 1024;

/// `[producer]`: identity of this publishing process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProducerConfig {
    /// The `producer_id` written with every event. Default: a new UUIDv7 for each process, so
    /// two processes never share an id. Set it only if each process gets its own value.
    pub id: Option<String>,
}

impl ProducerConfig {
    /// Checks the id's length and characters.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.id {
            Some(id)
                if id.is_empty()
                    || id.len() > 64
                    || !id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
            {
                Err(ConfigError::Invalid {
                    field: "producer.id",
                    value: id.clone(),
                    reason: "must be 1 to 64 characters of A-Z, a-z, 0-9, '-', '_', '.', ':'",
                })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.ring.capacity(), 65_536);
        assert_eq!(config.redis.stream, "events");
        config.validate().unwrap();
    }

    #[test]
    fn every_documented_option_parses() {
        let text = "[redis]\nurl = \"redis://h:1\"\nstream = \"s\"\n\
                    [ring]\ncapacity = 1024\nslot_bytes = 512\nmax_event_bytes = 4096\n\
                    when_full = \"wait\"\nwait_timeout_us = 7\n[producer]\nid = \"engine-1\"\n";
        let config: Config = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.redis.url, "redis://h:1");
        assert_eq!(config.ring.when_full(), WhenFull::Wait);
        assert_eq!(config.ring.wait_timeout(), Duration::from_micros(7));
        assert_eq!(config.producer.id.as_deref(), Some("engine-1"));
    }

    #[test]
    fn unknown_option_is_an_error_naming_it() {
        let error = toml::from_str::<Config>("[ring]\ncapacty = 8\n").unwrap_err();
        assert!(error.to_string().contains("capacty"), "{error}");
    }

    #[test]
    fn out_of_range_values_are_named() {
        let bad = Config {
            ring: RingConfig::default().set_capacity(1000),
            ..Config::default()
        };
        let error = bad.validate().unwrap_err().to_string();
        assert!(error.contains("ring.capacity = 1000"), "{error}");

        let bad = RingConfig::default().set_slot_bytes(1 << 20);
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("ring.slot_bytes"));

        let bad = ProducerConfig {
            id: Some("has space".into()),
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("producer.id"));
    }
}
