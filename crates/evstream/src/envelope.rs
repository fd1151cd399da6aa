//! The stream entry contract: the field names every evstream entry carries.
//!
//! Other programs (consumers in any language) depend on these names; see `docs/envelope.md`.
//! Changing one is a breaking change that needs a version bump.

/// UUIDv7, unique per event.
pub const FIELD_EVENT_ID: &str = "event_id";
/// Event type, e.g. `OrderCreated`.
pub const FIELD_EVENT_TYPE: &str = "event_type";
/// Schema version of `data`: `v1`, `v2`, …
pub const FIELD_VERSION: &str = "version";
/// Groups the events of one order's life; never truncated.
pub const FIELD_CORRELATION_ID: &str = "correlation_id";
/// Event time, wall-clock nanoseconds since the Unix epoch, in decimal.
pub const FIELD_TIMESTAMP_NS: &str = "timestamp_ns";
/// Stable id of the publishing process instance.
pub const FIELD_PRODUCER_ID: &str = "producer_id";
/// Per-producer sequence, consecutive over accepted events, in decimal.
pub const FIELD_SEQUENCE: &str = "sequence";
/// The JSON payload, byte for byte as serialized.
pub const FIELD_DATA: &str = "data";

/// All envelope fields, in the order evstream writes them.
pub const FIELDS: [&str; 8] = [
    FIELD_EVENT_ID,
    FIELD_EVENT_TYPE,
    FIELD_VERSION,
    FIELD_CORRELATION_ID,
    FIELD_TIMESTAMP_NS,
    FIELD_PRODUCER_ID,
    FIELD_SEQUENCE,
    FIELD_DATA,
];

/// Makes the `event_id` of each event: a UUIDv7 whose 48-bit time is the event's timestamp
/// (milliseconds) and whose other 74 bits mix a per-process random salt with the producer's
/// sequence.
///
/// Within one producer, two events never share an id (their sequences differ); across
/// producers, ids collide only if two processes draw salts that coincide on the same
/// millisecond and sequence, about one chance in 2^74. Unlike `Uuid::now_v7()`, this needs no
/// shared state or random number per event, and the same event always gets the same id, so a
/// retried batch carries the ids it had the first time.
#[derive(Debug, Clone)]
pub struct EventIdGenerator {
    salt: [u8; 10],
}

impl Default for EventIdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl EventIdGenerator {
    /// A generator with a fresh random salt.
    pub fn new() -> Self {
        // The 74 random bits of a UUIDv7 from the OS random source, once per process.
        let random = uuid::Uuid::now_v7().into_bytes();
        let mut salt = [0u8; 10];
        salt.copy_from_slice(&random[6..16]);
        Self { salt }
    }

    /// The id of the event with this timestamp and sequence.
    pub fn event_id(&self, timestamp_ns: u64, sequence: u64) -> uuid::Uuid {
        let mut bits = self.salt;
        for (b, s) in bits[2..].iter_mut().zip(sequence.to_be_bytes()) {
            *b ^= s;
        }
        uuid::Builder::from_unix_timestamp_millis(timestamp_ns / 1_000_000, &bits).into_uuid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_v7_time_ordered_unique_and_stable() {
        let ids = EventIdGenerator::new();
        let t = 1_764_000_000_123_456_789;
        let a = ids.event_id(t, 1);
        assert_eq!(a.get_version_num(), 7);
        assert_eq!(
            a,
            ids.event_id(t, 1),
            "same event, same id (retries keep ids)"
        );
        let many: std::collections::HashSet<_> = (0..100_000).map(|s| ids.event_id(t, s)).collect();
        assert_eq!(many.len(), 100_000);
        let (secs, nanos) = a.get_timestamp().unwrap().to_unix();
        assert_eq!(secs * 1000 + u64::from(nanos) / 1_000_000, t / 1_000_000);
        assert!(
            ids.event_id(t + 1_000_000, 0) > ids.event_id(t, u64::MAX),
            "time first"
        );
        assert_ne!(
            EventIdGenerator::new().event_id(t, 1),
            a,
            "salts differ per process"
        );
    }
}
