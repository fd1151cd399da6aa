//! The Redis data model: every key evstream and its tools read or write, named once.
//!
//! Everything of one stream hangs off its key by a suffix, so that a partition's keys share
//! its Redis Cluster hash tag (`events:{3}` → `events:{3}:dlq`, `events:{3}:hwm:<producer>`)
//! and one script or transaction may touch them together, and so that an ACL can grant a
//! role exactly its keys (`docs/security.md`).
//!
//! | Key | Type | Written by | Function |
//! |---|---|---|---|
//! | `<stream>` | stream | shipper | the configuration's `redis.stream`, or [`partition`] |
//! | `<stream>:dlq` | stream | shipper, consumer | [`dead_letters`] |
//! | `<stream>:hwm:<producer_id>` | string | shipper | [`high_water_mark`] |
//! | `<key>:evstream-parked` | stream | shipper (transaction guard) | [`parked`] |
//! | `<stream>:consume:<group>` | hash | consumer | [`consume_counters`] |
//! | `<stream>:ops` | string | ops loop | [`ops_heartbeat`] |
//! | `<stream>:analysis` | stream | intellisense | [`analysis`] |
//! | `<stream>:alerts` | stream | intellisense | [`alerts`] |
//! | `<stream>:pairing:<correlation_id>` | hash | intellisense | [`pairing_prefix`] |
//! | group `evstream-archive` on `<stream>` and `<stream>:dlq` | consumer group | archiver | [`ARCHIVE_GROUP`] |
//! | `evstream:schemas` | hash | `evstream schema push` | [`SCHEMAS`] |
//! | `evstream:schemas:revision` | counter | `evstream schema push` | [`SCHEMAS_REVISION`] |
//!
//! The slot of a key (CRC16 of its hash tag) is [`crate::redis::key_slot`].

/// The key of partition `p` of `stream`: `<stream>:{p}`. The braces are a Redis Cluster hash
/// tag: keys derived from it by appending (`<stream>:{p}:dlq`, `…:hwm:<producer>`) hash to
/// the same slot, so one script or transaction may touch them together.
pub fn partition(stream: &str, partition: u16) -> String {
    format!("{stream}:{{{partition}}}")
}

/// The partition of `<stream>` an event with this correlation id goes to, of `count`: FNV-1a
/// of the id, so every process agrees and one order's events share a partition. Events
/// without a correlation id go to partition 0.
pub fn partition_of(correlation_id: &str, count: usize) -> usize {
    if count <= 1 || correlation_id.is_empty() {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in correlation_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % count as u64) as usize
}

/// Whether `key` holds a Redis Cluster hash tag (a non-empty `{…}`).
pub(crate) fn has_hash_tag(key: &str) -> bool {
    key.split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .is_some_and(|(tag, _)| !tag.is_empty())
}

/// The dead-letter stream of `stream`: `<stream>:dlq`. Events the shipper refuses and entries
/// a consumer gives up on go here, with their reason.
pub fn dead_letters(stream: &str) -> String {
    format!("{stream}:dlq")
}

/// A producer's high-water mark on `stream` (the no-duplicate state: the last sequence
/// appended): `<stream>:hwm:<producer_id>`.
pub fn high_water_mark(stream: &str, producer_id: &str) -> String {
    format!("{stream}:hwm:{producer_id}")
}

/// Where the transaction guard parks `key` (the stream or its dead letters) while a refused
/// batch's `XADD`s fail: `<key>:evstream-parked`.
pub fn parked(key: &str) -> String {
    format!("{key}:evstream-parked")
}

/// A consumer group's counters on `stream` (applied, dead-lettered, …):
/// `<stream>:consume:<group>`.
pub fn consume_counters(stream: &str, group: &str) -> String {
    format!("{stream}:consume:{group}")
}

/// The key an ops loop that maintains `stream` refreshes on every pass (`SET … PX`), so that
/// a shipper can tell whether anything trims the stream it appends to: `<stream>:ops`.
pub fn ops_heartbeat(stream: &str) -> String {
    format!("{stream}:ops")
}

/// The stream evstream-intellisense writes its analysis of `stream` to: `<stream>:analysis`.
pub fn analysis(stream: &str) -> String {
    format!("{stream}:analysis")
}

/// The stream evstream-intellisense writes its alerts about `stream` to: `<stream>:alerts`.
pub fn alerts(stream: &str) -> String {
    format!("{stream}:alerts")
}

/// The prefix of the keys in which evstream-intellisense pairs an order's events on `stream`
/// (`<stream>:pairing:<id>`): `<stream>:pairing:`.
pub fn pairing_prefix(stream: &str) -> String {
    format!("{stream}:pairing:")
}

/// The consumer group whose position on a stream (and on its dead letters) is the archive's
/// (`crate::archive`): every entry up to its last delivered one is archived, so retention,
/// which never trims what a group has not read, waits for the archive. No consumer reads
/// through it.
pub const ARCHIVE_GROUP: &str = "evstream-archive";

/// The Redis hash holding the schema registry's files.
pub const SCHEMAS: &str = "evstream:schemas";

/// The Redis counter incremented by every push of the schema registry.
pub const SCHEMAS_REVISION: &str = "evstream:schemas:revision";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partitions_keys_share_its_hash_tag() {
        let stream = partition("events", 3);
        assert_eq!(stream, "events:{3}");
        assert_eq!(dead_letters(&stream), "events:{3}:dlq");
        assert_eq!(high_water_mark(&stream, "p"), "events:{3}:hwm:p");
        assert_eq!(
            parked(&dead_letters(&stream)),
            "events:{3}:dlq:evstream-parked"
        );
        assert!(has_hash_tag(&stream));
        assert!(!has_hash_tag("events"));
        assert!(!has_hash_tag("events:{}"));
    }
}
