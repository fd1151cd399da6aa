//! Stream entries as Redis returns them: the id, and the fields of an entry.

use std::fmt;
use std::str::FromStr;

use redis::Value;
use serde::{Deserialize, Serialize};

/// A stream entry id, `<ms>-<seq>`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    /// Milliseconds part (the Unix time of the append for ids Redis generated).
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl EntryId {
    /// The smallest id of millisecond `ms`.
    pub fn from_ms(ms: u64) -> Self {
        Self { ms, seq: 0 }
    }

    /// The largest id of millisecond `ms`.
    pub fn last_of_ms(ms: u64) -> Self {
        Self { ms, seq: u64::MAX }
    }

    /// The id right after this one.
    pub fn successor(self) -> Self {
        match self.seq.checked_add(1) {
            Some(seq) => Self { ms: self.ms, seq },
            None => Self {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EntryId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        match (ms.parse(), seq.parse()) {
            (Ok(ms), Ok(seq)) => Ok(Self { ms, seq }),
            _ => Err(format!("{s:?} is not a stream entry id")),
        }
    }
}

impl Serialize for EntryId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EntryId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Now, in Unix milliseconds: the clock of the ids Redis generates.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One stream entry: its id and its fields, in the order Redis returned them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// The entry id.
    pub id: EntryId,
    /// The fields and their values (binary-safe).
    pub fields: Vec<(String, Vec<u8>)>,
}

impl StreamEntry {
    /// The value of `name`, if the entry has that field.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// The entries of an `XRANGE` / `XREVRANGE` reply (an array of `[id, [field, value, …]]`),
/// taking the reply's bytes without copying them; `Err` says what was not as expected. An
/// entry deleted while pending (`[id, nil]`) has no fields.
pub fn parse_entries(reply: Value) -> Result<Vec<StreamEntry>, String> {
    let Value::Array(items) = reply else {
        return Err(format!("expected an array of entries, got {reply:?}"));
    };
    items.into_iter().map(parse_entry).collect()
}

fn parse_entry(item: Value) -> Result<StreamEntry, String> {
    let Value::Array(parts) = item else {
        return Err(format!("expected an entry, got {item:?}"));
    };
    let Ok([id, fields]) = <[Value; 2]>::try_from(parts) else {
        return Err("expected [id, fields]".to_owned());
    };
    let id = text(&id).ok_or("entry id is not a string")?.parse()?;
    let fields = match fields {
        Value::Array(flat) => {
            let mut fields = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let Some(name) = flat.next() {
                let value = flat.next().ok_or("odd number of field names and values")?;
                let name = String::from_utf8(owned(name).ok_or("field name is not a string")?)
                    .map_err(|_| "field name is not UTF-8")?;
                fields.push((name, owned(value).ok_or("field value is not a string")?));
            }
            fields
        }
        Value::Nil => Vec::new(),
        other => return Err(format!("expected fields, got {other:?}")),
    };
    Ok(StreamEntry { id, fields })
}

fn owned(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn text(value: &Value) -> Option<&str> {
    bytes(value).and_then(|b| std::str::from_utf8(b).ok())
}
