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
/// (milliseconds) and whose other 74 bits mix a salt derived from the producer with the
/// producer's sequence.
///
/// The id depends only on (producer_id, partition, timestamp, sequence), so it is the same
/// whoever computes it: a retried batch carries the ids it had the first time, and a journal
/// replayed by another process gives its events the ids their producer gave them. (A random
/// salt per shipper did not: replayed journals of two producers with the same sequence in the
/// same millisecond got one id, and consumers, which deduplicate by id, dropped one.)
///
/// The salt is 80 bits of the SHA-1 name-based UUID (v5) of the producer id and partition.
/// Within one producer and partition, two events never share an id (their sequences
/// differ); across producers, ids collide only if the salts of two producers coincide on the
/// bits that survive the XOR with sequences of the same millisecond, about one chance in
/// 2^64 per pair of events. Unlike `Uuid::now_v7()`, no shared state or random number per
/// event.
#[derive(Debug, Clone)]
pub struct EventIdGenerator {
    salt: [u8; 10],
}

/// Namespace of the name-based UUIDs the salts are taken from (fixed forever: changing it
/// changes every replayed event's id).
const SALT_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x1f5e4685_b3cb_404e_88ed_a383d7b5158d);

impl EventIdGenerator {
    /// The generator of `producer_id`'s events in `partition` of the stream (0 without
    /// partitions: each partition numbers its events on its own).
    pub fn for_producer(producer_id: &str, partition: u16) -> Self {
        let mut name = Vec::with_capacity(producer_id.len() + 3);
        name.extend_from_slice(producer_id.as_bytes());
        name.push(0);
        name.extend_from_slice(&partition.to_be_bytes());
        let hash = uuid::Uuid::new_v5(&SALT_NAMESPACE, &name).into_bytes();
        // Bytes 6 and 8 carry v5's version and variant bits; the other 14 are hash.
        let mut salt = [0u8; 10];
        salt[..6].copy_from_slice(&hash[..6]);
        salt[6..].copy_from_slice(&hash[9..13]);
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
        let ids = EventIdGenerator::for_producer("engine-1:0199", 0);
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
    }

    #[test]
    fn issue_18_ids_depend_on_the_producer_and_partition_not_on_who_computes_them() {
        let t = 1_764_000_000_123_456_789;
        let a = EventIdGenerator::for_producer("engine-a", 0);
        assert_eq!(
            a.event_id(t, 7),
            EventIdGenerator::for_producer("engine-a", 0).event_id(t, 7),
            "a replaying process computes the producer's own ids"
        );
        let others = [
            EventIdGenerator::for_producer("engine-b", 0),
            EventIdGenerator::for_producer("engine-a", 1),
        ];
        for other in &others {
            let theirs: std::collections::HashSet<_> =
                (1..10_000).map(|s| other.event_id(t, s)).collect();
            assert!((1..10_000).all(|s| !theirs.contains(&a.event_id(t, s))));
        }
    }
}
