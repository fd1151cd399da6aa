//! Stream entries as Redis returns them, and their decoding into [`Envelope`]s.

use redis::Value;

use crate::envelope::{
    FIELD_CORRELATION_ID, FIELD_DATA, FIELD_EVENT_ID, FIELD_EVENT_TYPE, FIELD_PRODUCER_ID,
    FIELD_SEQUENCE, FIELD_TIMESTAMP_NS, FIELD_VERSION,
};

/// One stream entry as read, before decoding.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawEntry {
    /// The stream entry id, e.g. `1700000000000-0`.
    pub(crate) id: String,
    /// Field/value pairs in stream order; `None` when the entry was deleted (trimmed) while
    /// it was pending.
    pub(crate) fields: Option<Fields>,
    /// How many times the group delivered it, this delivery included.
    pub(crate) deliveries: u64,
}

/// An entry's field/value pairs, back to back in one buffer: two allocations per entry
/// instead of two per field (allocation was a fifth of a consumer's CPU).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Fields {
    bytes: Vec<u8>,
    /// End offsets in `bytes`: name, value, name, value, …
    ends: Vec<usize>,
}

impl Fields {
    pub(crate) fn with_capacity(pairs: usize, bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(pairs * 2),
        }
    }

    pub(crate) fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Self {
        let mut fields = Self::default();
        for (name, value) in pairs {
            fields.push(name, value);
        }
        fields
    }

    pub(crate) fn push(&mut self, name: &[u8], value: &[u8]) {
        for part in [name, value] {
            self.bytes.extend_from_slice(part);
            self.ends.push(self.bytes.len());
        }
    }

    /// Number of pairs.
    pub(crate) fn len(&self) -> usize {
        self.ends.len() / 2
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.ends.chunks_exact(2).enumerate().map(|(i, ends)| {
            let start = if i == 0 { 0 } else { self.ends[2 * i - 1] };
            (&self.bytes[start..ends[0]], &self.bytes[ends[0]..ends[1]])
        })
    }
}

/// A stream entry decoded into the envelope of `docs/envelope.md`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Envelope {
    /// The stream entry id (`<ms>-<seq>`), not part of the envelope.
    pub stream_id: String,
    /// UUIDv7, unique per event: the key of every deduplication.
    pub event_id: uuid::Uuid,
    /// Event type, e.g. `OrderCreated`.
    pub event_type: String,
    /// Schema version of `data` (`v2` is 2).
    pub version: u32,
    /// Groups the events of one order's life.
    pub correlation_id: String,
    /// Event time, wall-clock nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The publishing process instance.
    pub producer_id: String,
    /// Per-producer sequence.
    pub sequence: u64,
    /// The JSON payload, checked to be valid JSON.
    pub data: String,
    /// How many times the group delivered this entry, this delivery included (1 the first
    /// time).
    pub deliveries: u64,
    /// For an entry put back from the dead letters by `evstream dlq replay`: the one
    /// consumer group it is meant for (the others already processed the original entry and
    /// acknowledge this one without handling it). `None` for every other entry.
    pub replay_for_group: Option<String>,
}

/// The field `evstream dlq replay` adds to an entry it puts back for one consumer group.
pub const FIELD_REPLAY_FOR_GROUP: &str = "replay_for_group";

/// Why an entry is not a valid envelope. Every variant is poison: it is retried like a
/// failing handler and dead-lettered after `max_deliveries`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A required envelope field is absent.
    #[error("envelope field {0:?} is missing")]
    MissingField(&'static str),
    /// A field is present twice.
    #[error("envelope field {0:?} appears more than once")]
    DuplicateField(&'static str),
    /// A field's value does not have its documented form.
    #[error("envelope field {field:?} is invalid: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `data` is larger than `consume.max_data_bytes`.
    #[error("data is {size} bytes, more than consume.max_data_bytes = {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// `data` is not valid JSON.
    #[error("data is not valid JSON: {0}")]
    InvalidJson(String),
    /// The entry has more than [`MAX_FIELDS`] fields.
    #[error("the entry has {count} fields, more than the {MAX_FIELDS} allowed")]
    TooManyFields {
        /// How many.
        count: usize,
    },
    /// A field name or a value other than `data` is beyond [`MAX_FIELD_NAME_BYTES`] /
    /// [`MAX_FIELD_BYTES`].
    #[error("a field ({name_bytes}-byte name, {value_bytes}-byte value) is larger than allowed ({MAX_FIELD_NAME_BYTES} / {MAX_FIELD_BYTES} bytes)")]
    FieldTooLarge {
        /// Its name's length.
        name_bytes: usize,
        /// Its value's length.
        value_bytes: usize,
    },
}

impl DecodeError {
    /// The dead letter reason code (`dlq_reason`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingField(_) => "missing_field",
            Self::DuplicateField(_) | Self::InvalidField { .. } => "invalid_envelope",
            Self::TooLarge { .. } | Self::TooManyFields { .. } | Self::FieldTooLarge { .. } => {
                "too_large"
            }
            Self::InvalidJson(_) => "invalid_json",
        }
    }
}

const REQUIRED: [&str; 8] = crate::envelope::FIELDS;

/// Most fields an entry may have (the envelope has 8; later versions may add a few).
pub const MAX_FIELDS: usize = 64;
/// Longest field name, in bytes.
pub const MAX_FIELD_NAME_BYTES: usize = 256;
/// Longest value of any field but `data` (which `consume.max_data_bytes` bounds), in bytes.
pub const MAX_FIELD_BYTES: usize = 4096;

/// Whether a field is beyond the limits above (and is left out of its dead letter).
pub(crate) fn oversized_field(name: &[u8], value: &[u8], max_data_bytes: usize) -> bool {
    let limit = if name == FIELD_DATA.as_bytes() {
        max_data_bytes
    } else {
        MAX_FIELD_BYTES
    };
    name.len() > MAX_FIELD_NAME_BYTES || value.len() > limit
}

/// Decodes an entry's fields into an envelope. Unknown extra fields are ignored (a later
/// envelope version may add some). `check_json` off leaves the JSON check of `data` to the
/// caller (the schema registry parses it anyway).
pub(crate) fn decode(
    id: &str,
    fields: &Fields,
    deliveries: u64,
    max_data_bytes: usize,
    check_json: bool,
) -> Result<Envelope, DecodeError> {
    let mut envelope = Envelope::default();
    decode_into(
        &mut envelope,
        id,
        fields,
        deliveries,
        max_data_bytes,
        check_json,
    )?;
    Ok(envelope)
}

/// [`decode`] into an envelope whose strings are reused (no allocation once they are large
/// enough); on error, `envelope` holds whatever was decoded before it.
pub(crate) fn decode_into(
    envelope: &mut Envelope,
    id: &str,
    fields: &Fields,
    deliveries: u64,
    max_data_bytes: usize,
    check_json: bool,
) -> Result<(), DecodeError> {
    if fields.len() > MAX_FIELDS {
        return Err(DecodeError::TooManyFields {
            count: fields.len(),
        });
    }
    let mut found: [Option<&[u8]>; 8] = [None; 8];
    let mut replay_for = None;
    for (name, value) in fields.iter() {
        if name != FIELD_DATA.as_bytes() && oversized_field(name, value, usize::MAX) {
            return Err(DecodeError::FieldTooLarge {
                name_bytes: name.len(),
                value_bytes: value.len(),
            });
        }
        if let Some(index) = REQUIRED.iter().position(|f| f.as_bytes() == name) {
            if found[index].replace(value).is_some() {
                return Err(DecodeError::DuplicateField(REQUIRED[index]));
            }
        } else if name == FIELD_REPLAY_FOR_GROUP.as_bytes() {
            replay_for = Some(value);
        }
    }
    let field = |index: usize| found[index].ok_or(DecodeError::MissingField(REQUIRED[index]));
    let text = |index: usize| {
        std::str::from_utf8(field(index)?).map_err(|_| DecodeError::InvalidField {
            field: REQUIRED[index],
            reason: "not valid UTF-8".to_owned(),
        })
    };
    let number = |index: usize| {
        text(index)?
            .parse::<u64>()
            .map_err(|e| DecodeError::InvalidField {
                field: REQUIRED[index],
                reason: format!("not a decimal number: {e}"),
            })
    };
    let position = |name: &str| REQUIRED.iter().position(|f| *f == name).unwrap_or(0);

    let data = field(position(FIELD_DATA))?;
    if data.len() > max_data_bytes {
        return Err(DecodeError::TooLarge {
            size: data.len(),
            max: max_data_bytes,
        });
    }
    let data = std::str::from_utf8(data).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
    if check_json {
        serde_json::from_str::<serde::de::IgnoredAny>(data)
            .map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
    }

    let event_id = uuid::Uuid::try_parse(text(position(FIELD_EVENT_ID))?).map_err(|e| {
        DecodeError::InvalidField {
            field: FIELD_EVENT_ID,
            reason: e.to_string(),
        }
    })?;
    let event_type = text(position(FIELD_EVENT_TYPE))?;
    if event_type.is_empty() {
        return Err(DecodeError::InvalidField {
            field: FIELD_EVENT_TYPE,
            reason: "empty".to_owned(),
        });
    }
    let version_text = text(position(FIELD_VERSION))?;
    let version = version_text
        .strip_prefix('v')
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|v| *v >= 1)
        .ok_or_else(|| DecodeError::InvalidField {
            field: FIELD_VERSION,
            reason: format!("{version_text:?} is not of the form v1, v2, …"),
        })?;
    let set = |target: &mut String, value: &str| {
        target.clear();
        target.push_str(value);
    };
    set(&mut envelope.stream_id, id);
    envelope.event_id = event_id;
    set(&mut envelope.event_type, event_type);
    envelope.version = version;
    set(
        &mut envelope.correlation_id,
        text(position(FIELD_CORRELATION_ID))?,
    );
    envelope.timestamp_ns = number(position(FIELD_TIMESTAMP_NS))?;
    set(
        &mut envelope.producer_id,
        text(position(FIELD_PRODUCER_ID))?,
    );
    envelope.sequence = number(position(FIELD_SEQUENCE))?;
    set(&mut envelope.data, data);
    envelope.deliveries = deliveries;
    envelope.replay_for_group = replay_for.map(|group| String::from_utf8_lossy(group).into_owned());
    Ok(())
}

/// A reply that does not have the shape the command documents.
#[derive(Debug, thiserror::Error)]
#[error("unexpected reply to {command}: {detail}")]
pub(crate) struct ReplyShapeError {
    pub(crate) command: &'static str,
    pub(crate) detail: String,
}

/// A reply of the wrong shape, as the Redis error every caller handles (an I/O error of
/// kind `InvalidData`).
pub(crate) fn shape_error(error: ReplyShapeError) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        error.to_string(),
    ))
}

fn shape(command: &'static str, detail: impl Into<String>) -> ReplyShapeError {
    ReplyShapeError {
        command,
        detail: detail.into(),
    }
}

fn into_bytes(value: Value, command: &'static str) -> Result<Vec<u8>, ReplyShapeError> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.into_bytes()),
        other => Err(shape(command, format!("expected a string, got {other:?}"))),
    }
}

fn into_array(value: Value, command: &'static str) -> Result<Vec<Value>, ReplyShapeError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(shape(command, format!("expected an array, got {other:?}"))),
    }
}

/// Parses a list of `[id, [field, value, …]]` entries (`XRANGE`, `XREADGROUP`, `XAUTOCLAIM`).
/// Each entry gets `deliveries` 1.
pub(crate) fn entries(
    value: Value,
    command: &'static str,
) -> Result<Vec<RawEntry>, ReplyShapeError> {
    into_array(value, command)?
        .into_iter()
        .map(|entry| {
            let mut parts = into_array(entry, command)?.into_iter();
            let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
                return Err(shape(command, "an entry without id and fields"));
            };
            let id = String::from_utf8(into_bytes(id, command)?)
                .map_err(|_| shape(command, "an entry id that is not UTF-8"))?;
            let fields = match fields {
                Value::Nil => None,
                fields => {
                    let mut flat = into_array(fields, command)?.into_iter();
                    let mut pairs = Fields::default();
                    while let Some(name) = flat.next() {
                        let value = flat
                            .next()
                            .ok_or_else(|| shape(command, "a field without a value"))?;
                        pairs.push(&into_bytes(name, command)?, &into_bytes(value, command)?);
                    }
                    Some(pairs)
                }
            };
            Ok(RawEntry {
                id,
                fields,
                deliveries: 1,
            })
        })
        .collect()
}

/// Parses an `XREADGROUP` reply for one stream: its entries, or none on timeout.
pub(crate) fn read_reply(value: Value) -> Result<Vec<RawEntry>, ReplyShapeError> {
    const COMMAND: &str = "XREADGROUP";
    let streams = match value {
        Value::Nil => return Ok(Vec::new()),
        // RESP3 answers with a map of stream → entries.
        Value::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect(),
        other => into_array(other, COMMAND)?
            .into_iter()
            .map(|stream| {
                let mut parts = into_array(stream, COMMAND)?.into_iter();
                parts
                    .nth(1)
                    .ok_or_else(|| shape(COMMAND, "a stream without entries"))
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let mut all = Vec::new();
    for stream in streams {
        all.extend(entries(stream, COMMAND)?);
    }
    Ok(all)
}

/// Parses an `XAUTOCLAIM` reply: the next cursor, the claimed entries and the ids of
/// pending entries that no longer exist (Redis removed them from the pending list).
pub(crate) fn autoclaim_reply(
    value: Value,
) -> Result<(String, Vec<RawEntry>, Vec<String>), ReplyShapeError> {
    const COMMAND: &str = "XAUTOCLAIM";
    let mut parts = into_array(value, COMMAND)?.into_iter();
    let (Some(cursor), Some(claimed)) = (parts.next(), parts.next()) else {
        return Err(shape(COMMAND, "fewer than two elements"));
    };
    let cursor = String::from_utf8(into_bytes(cursor, COMMAND)?)
        .map_err(|_| shape(COMMAND, "a cursor that is not UTF-8"))?;
    let deleted = match parts.next() {
        Some(deleted) => into_array(deleted, COMMAND)?
            .into_iter()
            .map(|id| {
                String::from_utf8(into_bytes(id, COMMAND)?)
                    .map_err(|_| shape(COMMAND, "an id that is not UTF-8"))
            })
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    Ok((cursor, entries(claimed, COMMAND)?, deleted))
}

/// Parses the extended `XPENDING` reply into `(id, deliveries)` pairs.
pub(crate) fn pending_reply(value: Value) -> Result<Vec<(String, u64)>, ReplyShapeError> {
    const COMMAND: &str = "XPENDING";
    into_array(value, COMMAND)?
        .into_iter()
        .map(|row| {
            let row = into_array(row, COMMAND)?;
            let (Some(id), Some(Value::Int(count))) = (row.first(), row.get(3)) else {
                return Err(shape(
                    COMMAND,
                    format!("a row of unexpected shape: {row:?}"),
                ));
            };
            let id = match id {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                other => return Err(shape(COMMAND, format!("an id of type {other:?}"))),
            };
            Ok((id, u64::try_from(*count).unwrap_or(0)))
        })
        .collect()
}

/// A stream entry id `<ms>-<seq>` as a pair that orders like the stream.
pub(crate) fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        Fields::from_pairs(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
    }

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("event_id", "0192f0c1-8a2b-7c3d-8e4f-5a6b7c8d9e0f"),
            ("event_type", "OrderCreated"),
            ("version", "v2"),
            ("correlation_id", "ord-1"),
            ("timestamp_ns", "1764000000000000000"),
            ("producer_id", "engine-1:x"),
            ("sequence", "42"),
            ("data", r#"{"orderId":"1"}"#),
        ]
    }

    #[test]
    fn a_valid_entry_decodes_every_field() {
        let envelope = decode("1-0", &fields(&good()), 3, 1024, true).unwrap();
        assert_eq!(envelope.event_type, "OrderCreated");
        assert_eq!(envelope.version, 2);
        assert_eq!(envelope.timestamp_ns, 1_764_000_000_000_000_000);
        assert_eq!(envelope.sequence, 42);
        assert_eq!(envelope.deliveries, 3);
        assert_eq!(envelope.data, r#"{"orderId":"1"}"#);
        assert_eq!(envelope.stream_id, "1-0");
    }

    #[test]
    fn each_broken_field_has_its_own_code() {
        let cases: [(&str, Option<&str>, &str); 7] = [
            ("data", Some("{not json"), "invalid_json"),
            ("data", None, "missing_field"),
            ("version", Some("2"), "invalid_envelope"),
            ("version", Some("v0"), "invalid_envelope"),
            ("event_id", Some("nope"), "invalid_envelope"),
            ("sequence", Some("-1"), "invalid_envelope"),
            ("timestamp_ns", Some("12a"), "invalid_envelope"),
        ];
        for (name, value, code) in cases {
            let mut pairs = good();
            pairs.retain(|(k, _)| *k != name);
            if let Some(value) = value {
                pairs.push((name, value));
            }
            let error = decode("1-0", &fields(&pairs), 1, 1024, true).unwrap_err();
            assert_eq!(error.code(), code, "{name}={value:?}: {error}");
        }
        let mut twice = good();
        twice.push(("event_type", "Other"));
        assert_eq!(
            decode("1-0", &fields(&twice), 1, 1024, true).unwrap_err(),
            DecodeError::DuplicateField("event_type")
        );
        let error = decode("1-0", &fields(&good()), 1, 4, true).unwrap_err();
        assert_eq!(error.code(), "too_large");
    }

    #[test]
    fn replies_parse_including_deleted_entries() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("events"),
            Value::Array(vec![
                Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("a"), bulk("b")])]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let entries = read_reply(reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0].fields,
            Some(Fields::from_pairs([(&b"a"[..], &b"b"[..])]))
        );
        assert_eq!(entries[1].fields, None);
        assert!(read_reply(Value::Nil).unwrap().is_empty());

        let claim = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![]),
            Value::Array(vec![bulk("3-0")]),
        ]);
        let (cursor, claimed, deleted) = autoclaim_reply(claim).unwrap();
        assert_eq!((cursor.as_str(), claimed.len()), ("0-0", 0));
        assert_eq!(deleted, vec!["3-0".to_owned()]);

        let pending = Value::Array(vec![Value::Array(vec![
            bulk("1-0"),
            bulk("c1"),
            Value::Int(10),
            Value::Int(4),
        ])]);
        assert_eq!(pending_reply(pending).unwrap(), vec![("1-0".to_owned(), 4)]);
    }

    #[test]
    fn entry_ids_order_like_the_stream() {
        assert!(parse_id("9-10") > parse_id("9-9"));
        assert!(parse_id("10-0") > parse_id("9-99"));
        assert_eq!(parse_id("1796327889689-0"), Some((1_796_327_889_689, 0)));
        assert_eq!(parse_id("garbage"), None);
    }
}
