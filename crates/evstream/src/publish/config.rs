//! `[ring]` and `[producer]`: the publishing side's configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

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
/// Memory: about `capacity × (slot_bytes + 384)` bytes, allocated once at start (88 MiB by
/// default): besides its payload buffer, each slot holds the event type, the correlation id
/// and, in 128 bytes of its own, the binary record of a short typed event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingConfig {
    /// Number of slots, a power of two of at least 2. Default 65,536.
    pub capacity: usize,
    /// Bytes pre-allocated for each slot's payload. Payloads up to this size are published
    /// without any allocation; larger ones (up to `max_event_bytes`) grow the slot's buffer
    /// once, which the shipper hands back at normal size. Default 1,024.
    pub slot_bytes: usize,
    /// Largest accepted serialized payload; larger events are refused, never truncated.
    /// Default 65,536 (64 KiB).
    pub max_event_bytes: usize,
    /// Behaviour when the ring is full. Default `refuse`.
    pub when_full: WhenFull,
    /// How long `when_full = "wait"` waits for room, in microseconds. Default 100.
    pub wait_timeout_us: u64,
    /// One `publish` call in this many, per thread, is timed for the
    /// `evstream_publish_duration_seconds` histogram; a power of two, or 0 for none.
    /// Default 64.
    pub publish_timing_sample: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            capacity: 65_536,
            slot_bytes: 1024,
            max_event_bytes: 64 * 1024,
            when_full: WhenFull::Refuse,
            wait_timeout_us: 100,
            publish_timing_sample: 64,
        }
    }
}

/// Builders and getters, kept beside the public fields for the callers that chain them
/// (`RingConfig::default().set_capacity(4096).set_slot_bytes(256)`).
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

    /// Sets how many `publish` calls per timed one (a power of two; 0: none).
    pub fn set_publish_timing_sample(mut self, every: u32) -> Self {
        self.publish_timing_sample = every;
        self
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// One `publish` call in this many is timed; 0 for none.
    pub fn publish_timing_sample(&self) -> u32 {
        self.publish_timing_sample
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
        if self.publish_timing_sample != 0 && !self.publish_timing_sample.is_power_of_two() {
            return Err(ConfigError::Invalid {
                field: "ring.publish_timing_sample",
                value: self.publish_timing_sample.to_string(),
                reason: "must be a power of two (e.g. 64), or 0 to time no publish call",
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
    /// A readable name for this process's `producer_id`, which becomes
    /// `<name>:<UUIDv7>`. The UUIDv7 part is new for every process instance: sequences
    /// restart at 1 with each instance, so an id must never be reused across restarts (the
    /// no-duplicate mechanism would take the new events for old ones). Default: no name, the
    /// id is the bare UUIDv7.
    pub name: Option<String>,
}

impl ProducerConfig {
    /// Checks the name's length and characters.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.name {
            Some(name)
                if name.is_empty()
                    || name.len() > 64
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
            {
                Err(ConfigError::Invalid {
                    field: "producer.name",
                    value: name.clone(),
                    reason: "must be 1 to 64 characters of A-Z, a-z, 0-9, '-', '_', '.'",
                })
            }
            _ => Ok(()),
        }
    }
}
