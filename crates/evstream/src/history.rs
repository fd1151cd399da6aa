//! The stream and its archive read as one history: `evstream tail`, `evstream trace` and
//! `evstream export`.
//!
//! Redis holds the recent entries, the [archive](crate::archive) the older ones, and both
//! hold the entries archived but not trimmed yet. Each reader here takes, per partition and
//! kind, the archive's entries up to the last one it recorded, then the stream's entries
//! after it: every entry once, wherever it is now.
//!
//! ```no_run
//! # async fn run() -> Result<(), evstream::error::ArchiveError> {
//! let config = evstream::Config::default();
//! let archive = std::path::Path::new("/var/lib/evstream/archive");
//! for step in evstream::history::trace(&config, "ord-42", Some(archive)).await? {
//!     println!("{:?} {:?}", step.record.event_type, step.since_previous_ns);
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Cmd;
use serde::Serialize;

use crate::archive::read::ArchiveReader;
use crate::archive::{Kind, ManifestRecord, Record};
use crate::config::Config;
use crate::error::ArchiveError;
use crate::redis::{call, parse_entries, EntryId, StreamEntry};

/// Entries read per `XRANGE`.
const PAGE: usize = 5_000;

/// Deadline of each Redis call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a record was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// From Redis.
    Stream,
    /// From the archive's files.
    Archive,
}

/// One step of an order's life ([`trace`]).
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// The entry.
    #[serde(flatten)]
    pub record: Record,
    /// Where it was read.
    pub source: Source,
    /// Nanoseconds since the previous step (by `timestamp_ns`); `None` for the first.
    pub since_previous_ns: Option<i64>,
}

/// Which entries a reader wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only these event types (any, when empty).
    pub event_types: Vec<String>,
    /// Only this correlation id.
    pub correlation_id: Option<String>,
    /// Only this producer.
    pub producer_id: Option<String>,
}

impl Filter {
    /// Whether `record` passes.
    pub fn accepts(&self, record: &Record) -> bool {
        let is = |wanted: &Option<String>, value: &Option<String>| {
            wanted.as_ref().is_none_or(|w| value.as_ref() == Some(w))
        };
        (self.event_types.is_empty()
            || record
                .event_type
                .as_ref()
                .is_some_and(|t| self.event_types.contains(t)))
            && is(&self.correlation_id, &record.correlation_id)
            && is(&self.producer_id, &record.producer_id)
    }
}

/// A connection to each partition's server, in partition order, with its key.
async fn connect_all(
    config: &Config,
) -> Result<Vec<(Config, MultiplexedConnection)>, ArchiveError> {
    let settings = redis::AsyncConnectionConfig::new().set_response_timeout(Some(CALL_TIMEOUT));
    let mut parts = Vec::new();
    for part in config.partition_configs() {
        let (connection, _) = crate::partitions::connect(&part, &settings).await?;
        parts.push((part, connection));
    }
    Ok(parts)
}

/// Calls `each` with the entries of `key` after `after` (exclusive) up to `to` (inclusive,
/// `+` for the end), oldest first, a page at a time, until it breaks.
async fn scan(
    conn: &mut MultiplexedConnection,
    key: &str,
    mut after: EntryId,
    to: &str,
    mut each: impl FnMut(StreamEntry) -> ControlFlow<()>,
) -> Result<EntryId, ArchiveError> {
    loop {
        let cmd = Cmd::new()
            .arg("XRANGE")
            .arg(key)
            .arg(format!("({after}"))
            .arg(to)
            .arg("COUNT")
            .arg(PAGE)
            .clone();
        let what = format!("XRANGE {key} ({after} {to}");
        let reply: redis::Value = call(conn, &what, &cmd, CALL_TIMEOUT).await?;
        let entries = parse_entries(reply).map_err(|detail| crate::error::OpsError::Reply {
            what: what.clone(),
            detail,
        })?;
        let full = entries.len() == PAGE;
        for entry in entries {
            after = entry.id;
            if each(entry).is_break() {
                return Ok(after);
            }
        }
        if !full {
            return Ok(after);
        }
    }
}

/// The archive's files per (kind, partition), and the last entry each pair holds.
fn archived_up_to(reader: &ArchiveReader) -> BTreeMap<(Kind, u16), EntryId> {
    let mut last = BTreeMap::new();
    for file in reader.files() {
        let at = last.entry((file.kind, file.partition)).or_default();
        *at = file.last_id.max(*at);
    }
    last
}

/// Every event of the order `correlation_id`, from the stream (its partition's key, events
/// and dead letters) and, with `archive`, from the archive, in time order (`timestamp_ns`,
/// then entry id), each with the time since the previous one.
pub async fn trace(
    config: &Config,
    correlation_id: &str,
    archive: Option<&Path>,
) -> Result<Vec<Step>, ArchiveError> {
    let filter = Filter {
        correlation_id: Some(correlation_id.to_owned()),
        ..Filter::default()
    };
    let parts = config.partition_configs();
    let partition = crate::keys::partition_of(correlation_id, parts.len());
    let partition_u16 = u16::try_from(partition).unwrap_or(u16::MAX);
    let mut steps = Vec::new();
    let mut archived = BTreeMap::new();
    if let Some(dir) = archive {
        let reader = ArchiveReader::open(dir)?;
        archived = archived_up_to(&reader);
        let wanted = |f: &ManifestRecord| f.partition == partition_u16;
        for record in reader.read_where(wanted)? {
            if filter.accepts(&record) {
                steps.push((record, Source::Archive));
            }
        }
    }
    let part = parts
        .into_iter()
        .nth(partition)
        .expect("partition_of is below the partition count");
    let settings = redis::AsyncConnectionConfig::new().set_response_timeout(Some(CALL_TIMEOUT));
    let (mut conn, _) = crate::partitions::connect(&part, &settings).await?;
    for kind in Kind::ALL {
        let after = archived
            .get(&(kind, partition_u16))
            .copied()
            .unwrap_or_default();
        let key = kind.key(&part.redis.stream);
        scan(&mut conn, &key, after, "+", |entry| {
            let record = Record::from_entry(kind, partition_u16, entry);
            if filter.accepts(&record) {
                steps.push((record, Source::Stream));
            }
            ControlFlow::Continue(())
        })
        .await?;
    }
    steps.sort_by_key(|(r, _)| (r.time_ns(), r.entry_id));
    let mut previous = None;
    Ok(steps
        .into_iter()
        .map(|(record, source)| {
            let time = record.time_ns();
            let since_previous_ns = previous.map(|p| time - p);
            previous = Some(time);
            Step {
                record,
                source,
                since_previous_ns,
            }
        })
        .collect())
}

/// Calls `each` with every event appended between `from_ms` and `to_ms` (Unix milliseconds
/// of the entry ids, `to_ms` exclusive), from the archive (with `archive`) and the stream,
/// each once: partition by partition, in stream order. Dead letters with `dead_letters`,
/// events otherwise. Returns how many were given.
pub async fn export(
    config: &Config,
    archive: Option<&Path>,
    from_ms: u64,
    to_ms: u64,
    dead_letters: bool,
    mut each: impl FnMut(Record) -> Result<(), ArchiveError>,
) -> Result<u64, ArchiveError> {
    let kind = if dead_letters {
        Kind::DeadLetters
    } else {
        Kind::Events
    };
    let in_range = |id: EntryId| id.ms >= from_ms && id.ms < to_ms;
    let reader = archive.map(ArchiveReader::open).transpose()?;
    let archived = reader.as_ref().map(archived_up_to).unwrap_or_default();
    let mut given = 0;
    for (p, (part, mut conn)) in connect_all(config).await?.into_iter().enumerate() {
        let partition = u16::try_from(p).unwrap_or(u16::MAX);
        if let Some(reader) = &reader {
            let mut files: Vec<&ManifestRecord> = reader
                .files()
                .iter()
                .filter(|f| f.kind == kind && f.partition == partition)
                .filter(|f| f.last_id.ms >= from_ms && f.first_id.ms < to_ms)
                .collect();
            files.sort_by_key(|f| f.first_id);
            for file in files {
                for record in reader.read(file)? {
                    if in_range(record.entry_id) {
                        each(record)?;
                        given += 1;
                    }
                }
            }
        }
        let after = archived
            .get(&(kind, partition))
            .copied()
            .unwrap_or_default()
            .max(EntryId::last_of_ms(from_ms.saturating_sub(1)));
        let key = kind.key(&part.redis.stream);
        let to = format!("{}-{}", to_ms.saturating_sub(1), u64::MAX);
        let mut failed = None;
        scan(&mut conn, &key, after, &to, |entry| {
            let record = Record::from_entry(kind, partition, entry);
            match each(record) {
                Ok(()) => {
                    given += 1;
                    ControlFlow::Continue(())
                }
                Err(error) => {
                    failed = Some(error);
                    ControlFlow::Break(())
                }
            }
        })
        .await?;
        if let Some(error) = failed {
            return Err(error);
        }
    }
    Ok(given)
}

/// Follows the stream (every partition) like `tail -f`: from `since_ms` (Unix milliseconds;
/// `None`: only what is appended from now on), calling `each` with every entry `filter`
/// accepts, polling every `poll` when there is nothing new, until `each` breaks; with
/// `follow` false, stops once it has read what the stream held when it started.
pub async fn tail(
    config: &Config,
    filter: &Filter,
    since_ms: Option<u64>,
    follow: bool,
    poll: Duration,
    mut each: impl FnMut(&Record) -> ControlFlow<()>,
) -> Result<(), ArchiveError> {
    let mut parts = Vec::new();
    for (p, (part, mut conn)) in connect_all(config).await?.into_iter().enumerate() {
        let key = part.redis.stream.clone();
        let start = match since_ms {
            Some(ms) => EntryId::last_of_ms(ms.saturating_sub(1)),
            None => last_entry(&mut conn, &key).await?,
        };
        let end = last_entry(&mut conn, &key).await?;
        parts.push((u16::try_from(p).unwrap_or(u16::MAX), key, conn, start, end));
    }
    loop {
        let mut any = false;
        for (partition, key, conn, position, end) in &mut parts {
            if !follow && *position >= *end {
                continue;
            }
            let mut stop = false;
            let before = *position;
            *position = scan(conn, key, *position, "+", |entry| {
                let record = Record::from_entry(Kind::Events, *partition, entry);
                if filter.accepts(&record) && each(&record).is_break() {
                    stop = true;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })
            .await?;
            if stop {
                return Ok(());
            }
            any |= *position != before;
        }
        if !follow && parts.iter().all(|(_, _, _, at, end)| at >= end) {
            return Ok(());
        }
        if !any {
            tokio::time::sleep(poll).await;
        }
    }
}

/// The id of the last entry of `key` (`0-0` when it is empty or missing).
async fn last_entry(conn: &mut MultiplexedConnection, key: &str) -> Result<EntryId, ArchiveError> {
    let cmd = Cmd::new()
        .arg("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .clone();
    let what = format!("XREVRANGE {key} + - COUNT 1");
    let reply: redis::Value = call(conn, &what, &cmd, CALL_TIMEOUT).await?;
    let entries =
        parse_entries(reply).map_err(|detail| crate::error::OpsError::Reply { what, detail })?;
    Ok(entries.first().map(|e| e.id).unwrap_or_default())
}
