//! Reads a stream back and checks the delivery guarantees: every producer's sequences present
//! once each, in order, with ids unique and payloads intact. Used by tests and by
//! `evstream bench`, so "0 lost, 0 duplicates" is measured, not assumed.

use std::collections::{BTreeMap, HashSet};

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamRangeReply};
use redis::{AsyncCommands, Value};
use serde::Serialize;

use crate::config::Config;
use crate::envelope::{FIELD_DATA, FIELD_EVENT_ID, FIELD_PRODUCER_ID, FIELD_SEQUENCE};
use crate::error::{OpsError, PartitionError};

/// What the audit found for one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Audit {
    /// Entries read.
    pub entries: u64,
    /// Entries whose sequence was seen before for the same producer.
    pub duplicates: u64,
    /// Entries whose sequence is lower than an earlier entry's of the same producer.
    pub out_of_order: u64,
    /// Entries that lack an envelope field or whose payload failed the caller's check.
    pub corrupt: u64,
    /// Entries whose `event_id` was seen before.
    pub duplicate_event_ids: u64,
    /// Dead letters put back for one consumer group (`replay_for_group`): not counted as
    /// duplicates or out of order.
    pub replays: u64,
    /// Per producer: the distinct sequences seen, lowest and highest.
    pub producers: BTreeMap<String, ProducerAudit>,
}

impl Audit {
    /// Adds the audit of another partition of the same stream. A producer numbers its events
    /// per partition, so sequences are checked within each partition and the counts add up.
    pub fn add_partition(&mut self, other: Audit) {
        self.entries += other.entries;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.corrupt += other.corrupt;
        self.duplicate_event_ids += other.duplicate_event_ids;
        self.replays += other.replays;
        for (producer, found) in other.producers {
            match self.producers.entry(producer) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(found);
                }
                std::collections::btree_map::Entry::Occupied(mut slot) => {
                    let mine = slot.get_mut();
                    mine.distinct += found.distinct;
                    mine.missing += found.missing;
                    mine.first = mine.first.min(found.first);
                    mine.last = mine.last.max(found.last);
                }
            }
        }
    }
}

/// The sequences of one producer found in the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProducerAudit {
    /// Distinct sequences found.
    pub distinct: u64,
    /// Lowest sequence found (over all partitions).
    pub first: u64,
    /// Highest sequence found (over all partitions).
    pub last: u64,
    /// Sequences missing between the lowest and the highest found, summed over partitions.
    pub missing: u64,
}

impl ProducerAudit {
    /// Sequences missing between the lowest and the highest found (in each partition).
    pub fn gaps(&self) -> u64 {
        self.missing
    }
}

/// Reads `stream` from the start in pages of `page` entries and checks every entry; `check`
/// judges each payload (return `false` for a corrupt one).
pub async fn audit_stream(
    connection: &mut MultiplexedConnection,
    stream: &str,
    page: usize,
    mut check: impl FnMut(&StreamId, &[u8]) -> bool,
) -> redis::RedisResult<Audit> {
    let mut audit = Audit::default();
    let mut seen_sequences: BTreeMap<String, (HashSet<u64>, u64)> = BTreeMap::new();
    let mut seen_ids = HashSet::new();
    let mut start = "-".to_owned();
    loop {
        let reply: StreamRangeReply = connection.xrange_count(stream, &start, "+", page).await?;
        let Some(last) = reply.ids.last() else { break };
        start = format!("({}", last.id);
        for entry in &reply.ids {
            audit.entries += 1;
            let field = |name: &str| match entry.map.get(name) {
                Some(Value::BulkString(bytes)) => Some(bytes.as_slice()),
                _ => None,
            };
            let (Some(producer), Some(sequence), Some(event_id), Some(data)) = (
                field(FIELD_PRODUCER_ID),
                field(FIELD_SEQUENCE)
                    .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u64>().ok()),
                field(FIELD_EVENT_ID),
                field(FIELD_DATA),
            ) else {
                audit.corrupt += 1;
                continue;
            };
            if !check(entry, data) {
                audit.corrupt += 1;
            }
            if field(crate::consume::FIELD_REPLAY_FOR_GROUP).is_some() {
                // A dead letter put back for one group (`evstream dlq replay`): the original
                // entry's numbers, by design.
                audit.replays += 1;
                continue;
            }
            if !seen_ids.insert(event_id.to_vec()) {
                audit.duplicate_event_ids += 1;
            }
            let producer = String::from_utf8_lossy(producer).into_owned();
            let (sequences, highest) = seen_sequences.entry(producer).or_default();
            if !sequences.insert(sequence) {
                audit.duplicates += 1;
            } else if sequence < *highest {
                audit.out_of_order += 1;
            }
            *highest = (*highest).max(sequence);
        }
        if reply.ids.len() < page {
            break;
        }
    }
    for (producer, (sequences, _)) in seen_sequences {
        let first = sequences.iter().copied().min().unwrap_or(0);
        let last = sequences.iter().copied().max().unwrap_or(0);
        let distinct = sequences.len() as u64;
        let summary = ProducerAudit {
            distinct,
            first,
            last,
            missing: (last - first + 1).saturating_sub(distinct),
        };
        audit.producers.insert(producer, summary);
    }
    Ok(audit)
}

/// Audits every partition of `config.redis.stream` ([`audit_stream`], pages of `page`
/// entries), each read from the server holding it, and adds them up
/// ([`Audit::add_partition`]).
pub async fn audit_partitions(
    config: &Config,
    page: usize,
    mut check: impl FnMut(&StreamId, &[u8]) -> bool,
) -> Result<Audit, PartitionError> {
    // Pages of a long stream take their time: no deadline per reply.
    let settings = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut total = Audit::default();
    for part in config.partition_configs() {
        let stream = &part.redis.stream;
        let (mut connection, _) = crate::partitions::connect(&part, &settings).await?;
        let audit = audit_stream(&mut connection, stream, page, &mut check)
            .await
            .map_err(|source| PartitionError::Audit {
                stream: stream.clone(),
                source,
            })?;
        total.add_partition(audit);
    }
    Ok(total)
}

/// Redis's count of the entries ever appended to `config.redis.stream` (`entries-added` of
/// `XINFO STREAM`, Redis 7.0 or later), summed over its partitions; 0 for a partition that
/// does not exist yet.
pub async fn entries_added(config: &Config) -> Result<u64, PartitionError> {
    let mut total = 0;
    for part in config.partition_configs() {
        let stream = &part.redis.stream;
        let (mut connection, _) =
            crate::partitions::connect(&part, &redis::AsyncConnectionConfig::new()).await?;
        let what = format!("XINFO STREAM {stream}");
        let read = |source| PartitionError::Read {
            stream: stream.clone(),
            source,
        };
        let info: redis::RedisResult<std::collections::HashMap<String, Value>> =
            redis::cmd("XINFO")
                .arg("STREAM")
                .arg(stream)
                .query_async(&mut connection)
                .await;
        total += match info {
            Ok(info) => match info.get("entries-added") {
                Some(Value::Int(n)) => *n as u64,
                _ => {
                    return Err(read(OpsError::Reply {
                        what,
                        detail: "no entries-added".to_owned(),
                    }))
                }
            },
            Err(error) if error.to_string().contains("no such key") => 0,
            Err(source) => return Err(read(OpsError::Redis { what, source })),
        };
    }
    Ok(total)
}
