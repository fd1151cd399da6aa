//! The manifest: one JSON line per archive file, appended once the file is in place. It is
//! the archiver's progress (where each stream resumes) and the archive's index (which file
//! holds which entries and times).

use serde::{Deserialize, Serialize};

use super::record::Kind;
use crate::redis::EntryId;

/// What one archive file holds: a line of `manifest.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    /// The file, relative to the archive's directory, with `/` separators.
    pub file: String,
    /// The configured stream (`redis.stream`) the archive belongs to.
    pub stream: String,
    /// Events or dead letters.
    pub kind: Kind,
    /// The partition (0 without partitions).
    pub partition: u16,
    /// The Redis key the entries were read from.
    pub key: String,
    /// The first entry's id.
    pub first_id: EntryId,
    /// The last entry's id: every entry of `key` up to it is archived.
    pub last_id: EntryId,
    /// Entries in the file.
    pub rows: u64,
    /// The file's size.
    pub bytes: u64,
    /// The earliest `timestamp_ns` in the file.
    pub min_timestamp_ns: Option<i64>,
    /// The latest `timestamp_ns` in the file.
    pub max_timestamp_ns: Option<i64>,
    /// When the file was recorded (Unix milliseconds).
    pub written_at_ms: u64,
}

/// The manifest's records, and how many bytes of it are whole lines: a line cut short by a
/// crash (the last one, without its newline) is left out, to be cut off. `Err` gives the
/// line number and what is wrong with a line that is not the torn last one.
pub(crate) fn parse(bytes: &[u8]) -> Result<(Vec<ManifestRecord>, u64), (usize, String)> {
    let mut records = Vec::new();
    let mut whole = 0;
    let mut rest = bytes;
    let mut number = 0;
    while !rest.is_empty() {
        number += 1;
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            // Torn: written without its newline when the archiver died.
            break;
        };
        let line = &rest[..end];
        if !line.iter().all(u8::is_ascii_whitespace) {
            let record = serde_json::from_slice(line).map_err(|e| (number, e.to_string()))?;
            records.push(record);
        }
        whole += end + 1;
        rest = &rest[end + 1..];
    }
    Ok((records, whole as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(last: &str) -> String {
        let record = ManifestRecord {
            file: "events/x.parquet".into(),
            stream: "events".into(),
            kind: Kind::Events,
            partition: 0,
            key: "events".into(),
            first_id: "1-0".parse().unwrap(),
            last_id: last.parse().unwrap(),
            rows: 1,
            bytes: 10,
            min_timestamp_ns: None,
            max_timestamp_ns: Some(5),
            written_at_ms: 9,
        };
        format!("{}\n", serde_json::to_string(&record).unwrap())
    }

    #[test]
    fn a_torn_last_line_is_left_out_and_a_corrupt_one_is_an_error() {
        let two = line("2-0") + &line("3-0");
        let (records, whole) = parse(two.as_bytes()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].last_id, "3-0".parse().unwrap());
        assert_eq!(whole, two.len() as u64);
        let torn = format!("{two}{{\"file\":\"ev");
        let (records, whole) = parse(torn.as_bytes()).unwrap();
        assert_eq!((records.len(), whole), (2, two.len() as u64));
        let corrupt = format!("{}garbage\n{}", line("2-0"), line("3-0"));
        assert_eq!(parse(corrupt.as_bytes()).unwrap_err().0, 2);
    }
}
