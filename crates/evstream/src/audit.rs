//! Reads a stream back and checks the delivery guarantees: every producer's sequences present
//! once each, in order, with ids unique and payloads intact. Used by tests and by
//! `evstream bench`, so "0 lost, 0 duplicates" is measured, not assumed.

use std::collections::{BTreeMap, HashSet};

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamRangeReply};
use redis::{AsyncCommands, Value};
use serde::Serialize;

use crate::envelope::{FIELD_DATA, FIELD_EVENT_ID, FIELD_PRODUCER_ID, FIELD_SEQUENCE};

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
    /// Per producer: the distinct sequences seen, lowest and highest.
    pub producers: BTreeMap<String, ProducerAudit>,
}

/// The sequences of one producer found in the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProducerAudit {
    /// Distinct sequences found.
    pub distinct: u64,
    /// Lowest sequence found.
    pub first: u64,
    /// Highest sequence found.
    pub last: u64,
}

impl ProducerAudit {
    /// Sequences missing between `first` and `last`.
    pub fn gaps(&self) -> u64 {
        (self.last - self.first + 1).saturating_sub(self.distinct)
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
        let summary = ProducerAudit {
            distinct: sequences.len() as u64,
            first: sequences.iter().copied().min().unwrap_or(0),
            last: sequences.iter().copied().max().unwrap_or(0),
        };
        audit.producers.insert(producer, summary);
    }
    Ok(audit)
}
