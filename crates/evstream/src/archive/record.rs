//! One archived entry, as the files hold it and as `trace` and `export` show it, whether it
//! was read from the stream or from the archive.

use serde::{Deserialize, Serialize};

use crate::envelope;
use crate::redis::{EntryId, StreamEntry};

/// Which stream of the pair an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The stream of events.
    Events,
    /// Its dead letters (`<stream>:dlq`).
    DeadLetters,
}

impl Kind {
    /// Both, events first.
    pub const ALL: [Self; 2] = [Self::Events, Self::DeadLetters];

    /// The archive's top-level directory of this kind: `events` or `dlq`.
    pub fn dir(self) -> &'static str {
        match self {
            Self::Events => "events",
            Self::DeadLetters => "dlq",
        }
    }

    /// The key of this kind for the stream (a partition's key) `stream`.
    pub fn key(self, stream: &str) -> String {
        match self {
            Self::Events => stream.to_owned(),
            Self::DeadLetters => crate::keys::dead_letters(stream),
        }
    }
}

/// One entry with its envelope fields taken apart (`docs/envelope.md`).
///
/// A field missing from the entry is `None`; `timestamp_ns` and `sequence` are numbers. Any
/// other field (a dead letter's `dlq_reason`, …), and any value that is not UTF-8 or not a
/// number where one is expected, is kept in `extra`, a JSON object (a value that is not UTF-8
/// as `{"hex": "…"}`), so that nothing of the entry is lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    /// Events or dead letters.
    pub kind: Kind,
    /// The partition of the stream (0 without partitions).
    pub partition: u16,
    /// The stream entry id.
    pub entry_id: EntryId,
    /// `event_id`.
    pub event_id: Option<String>,
    /// `event_type`.
    pub event_type: Option<String>,
    /// `version`.
    pub version: Option<String>,
    /// `correlation_id`.
    pub correlation_id: Option<String>,
    /// `timestamp_ns`.
    pub timestamp_ns: Option<i64>,
    /// `producer_id`.
    pub producer_id: Option<String>,
    /// `sequence`.
    pub sequence: Option<i64>,
    /// `data`, the event's JSON.
    pub data: Option<String>,
    /// Every other field, as a JSON object; `None` when there is none.
    pub extra: Option<String>,
}

impl Record {
    /// The record of `entry`, read from partition `partition`'s stream of `kind` (its
    /// values are moved, not copied).
    pub fn from_entry(kind: Kind, partition: u16, entry: StreamEntry) -> Self {
        let mut builder = Builder::new(kind, partition, entry.id);
        for (name, value) in entry.fields {
            builder.field(&name, value);
        }
        builder.finish()
    }

    /// The event time in nanoseconds, or, without one, the entry id's millisecond: what
    /// `trace` and `export` order and filter by.
    pub fn time_ns(&self) -> i64 {
        self.timestamp_ns.unwrap_or_else(|| {
            i64::try_from(self.entry_id.ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
        })
    }
}

/// Builds a [`Record`] field by field, as an entry is read: what [`Record::from_entry`]
/// does, and what the archive's lean reader does straight from the reply's bytes.
#[derive(Debug)]
pub(crate) struct Builder {
    record: Record,
    extra: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Builder {
    pub(crate) fn new(kind: Kind, partition: u16, entry_id: EntryId) -> Self {
        Self {
            record: Record {
                kind,
                partition,
                entry_id,
                event_id: None,
                event_type: None,
                version: None,
                correlation_id: None,
                timestamp_ns: None,
                producer_id: None,
                sequence: None,
                data: None,
                extra: None,
            },
            extra: None,
        }
    }

    /// The field `name` with `value`: an envelope field to its column, anything else (and a
    /// value that is not UTF-8, or not a number where one is expected) to `extra`.
    pub(crate) fn field(&mut self, name: &str, value: Vec<u8>) {
        let text = match String::from_utf8(value) {
            Ok(text) => text,
            Err(error) => {
                let hex: String = error
                    .as_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                self.other(name, serde_json::json!({ "hex": hex }));
                return;
            }
        };
        let record = &mut self.record;
        let slot = match name {
            envelope::FIELD_TIMESTAMP_NS | envelope::FIELD_SEQUENCE => {
                match text.parse::<i64>() {
                    Ok(n) if name == envelope::FIELD_TIMESTAMP_NS => record.timestamp_ns = Some(n),
                    Ok(n) => record.sequence = Some(n),
                    Err(_) => self.other(name, text.into()),
                }
                return;
            }
            envelope::FIELD_EVENT_ID => &mut record.event_id,
            envelope::FIELD_EVENT_TYPE => &mut record.event_type,
            envelope::FIELD_VERSION => &mut record.version,
            envelope::FIELD_CORRELATION_ID => &mut record.correlation_id,
            envelope::FIELD_PRODUCER_ID => &mut record.producer_id,
            envelope::FIELD_DATA => &mut record.data,
            _ => {
                self.other(name, text.into());
                return;
            }
        };
        *slot = Some(text);
    }

    fn other(&mut self, name: &str, value: serde_json::Value) {
        self.extra
            .get_or_insert_with(serde_json::Map::new)
            .insert(name.to_owned(), value);
    }

    pub(crate) fn finish(mut self) -> Record {
        if let Some(extra) = self.extra {
            self.record.extra = Some(serde_json::Value::Object(extra).to_string());
        }
        self.record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_fields_are_columns_and_everything_else_is_kept_in_extra() {
        let entry = StreamEntry {
            id: "5-1".parse().unwrap(),
            fields: vec![
                ("event_id".into(), b"e1".to_vec()),
                ("timestamp_ns".into(), b"17".to_vec()),
                ("sequence".into(), b"not a number".to_vec()),
                ("data".into(), b"{\"a\":1}".to_vec()),
                ("dlq_reason".into(), b"invalid_json".to_vec()),
                ("correlation_id".into(), vec![0xff, 0x00]),
            ],
        };
        let record = Record::from_entry(Kind::DeadLetters, 2, entry);
        assert_eq!(record.event_id.as_deref(), Some("e1"));
        assert_eq!(record.timestamp_ns, Some(17));
        assert_eq!(record.sequence, None);
        assert_eq!(record.correlation_id, None);
        assert_eq!(record.data.as_deref(), Some("{\"a\":1}"));
        let extra: serde_json::Value =
            serde_json::from_str(record.extra.as_deref().unwrap()).unwrap();
        assert_eq!(extra["dlq_reason"], "invalid_json");
        assert_eq!(extra["sequence"], "not a number");
        assert_eq!(extra["correlation_id"]["hex"], "ff00");
        assert_eq!(record.time_ns(), 17);
    }
}
