//! The archive: every entry of the stream and of its dead letters, in Parquet files, before
//! retention deletes it from Redis.
//!
//! The [`Archiver`] reads each partition's stream and dead letters in order (`XRANGE` from
//! where it stopped) and writes Parquet files (zstd, a column per envelope field plus the
//! stream entry id and partition, see [`Record`]) under `<dir>/events/` and `<dir>/dlq/`,
//! one directory per UTC date and hour of the entries (`date=2026-12-05/hour=07/`, which
//! DuckDB, pandas and Polars read as columns). A file is closed at `archive.max_file_bytes`,
//! at the hour's end, and `archive.max_file_age_s` after it was opened.
//!
//! **Exactly once, crash or not.** A file is written in `<dir>/.staging/`, synced, renamed
//! into place (and its directory synced), and only then recorded in `<dir>/manifest.jsonl`
//! (appended and synced). The manifest is the archiver's progress: a restarted archiver
//! resumes after each key's last recorded entry, deletes what the staging directory holds and
//! any file not recorded (a kill between the rename and the record), and writes those entries
//! again. So every entry is in exactly one recorded file, whatever moment a `kill -9` hits.
//!
//! **Retention waits for the archive.** After each record, the archiver moves the consumer
//! group [`GROUP`] (`evstream-archive`) of the key to the file's last entry
//! (`XGROUP SETID`, with the entries-read counter when it is known, so that Redis reports
//! the group's lag). The ops loop protects what a group has not read, so it never trims an
//! entry the archive does not hold; with `archive.dir` set it creates the group (at the
//! beginning) where it is missing. Only the aggressive trim at critical memory may delete
//! unarchived entries, counted and alerted as the loss of group `evstream-archive`.
//!
//! ```no_run
//! # async fn run() -> Result<(), evstream::error::ArchiveError> {
//! let mut config = evstream::Config::default();
//! config.archive.dir = Some("/var/lib/evstream/archive".into());
//! let archiver = evstream::archive::Archiver::new(&config)?;
//! let report = archiver.run_once().await?; // or .run(shutdown) to follow the stream
//! println!("{} events in {} files", report.events, report.files);
//! # Ok(()) }
//! ```

pub(crate) mod config;
mod file;
mod manifest;
pub mod read;
mod record;
mod store;

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use redis::aio::MultiplexedConnection;
use redis::{Cmd, Value};
use serde::Serialize;

use crate::config::{ArchiveConfig, Config};
use crate::error::{ArchiveError, OpsError};
use crate::redis::{call, parse_entries, EntryId};
pub use manifest::ManifestRecord;
pub use record::{Kind, Record};
pub use store::{ArchiveStore, LocalDir, MANIFEST};

/// The consumer group whose position is the archive's: everything up to its last delivered
/// entry is archived. Reserved: no consumer reads through it.
pub const GROUP: &str = crate::keys::ARCHIVE_GROUP;

/// Deadline of each Redis call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What an archiver did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArchiveReport {
    /// Events archived (stream entries).
    pub events: u64,
    /// Dead letters archived.
    pub dead_letters: u64,
    /// Files written and recorded.
    pub files: u64,
    /// Their size in bytes.
    pub bytes: u64,
    /// Files found unrecorded after a crash and deleted (their entries were archived again).
    pub unrecorded_removed: u64,
}

/// A file being written and what is known of its last entry.
struct Open {
    file: file::OpenFile,
    hour: u64,
    opened: Instant,
    /// The entries-read counter of the file's last entry, when known.
    last_counter: Option<u64>,
}

/// One key being archived: a partition's stream or its dead letters.
struct Source {
    kind: Kind,
    partition: u16,
    key: String,
    /// The last entry read (in the open file, or recorded).
    position: EntryId,
    /// The last entry recorded in the manifest.
    recorded: EntryId,
    /// The entries-read counter of `position`, when known.
    counter: Option<u64>,
    open: Option<Open>,
    /// Where the group should be moved (`id`, entries-read), not done yet.
    unplaced: Option<(EntryId, Option<u64>)>,
    /// Whether the group was checked against the manifest since start.
    group_checked: bool,
    /// `run_once`: the last entry to archive (the last generated when first read).
    target: Option<EntryId>,
    /// The next batch, already asked for (after a full one) while this one is written: the
    /// reply is decoded by the connection's task, on the other core of a multi-threaded
    /// runtime, while this task encodes. Used only if it starts where the source stands.
    prefetch: Option<(EntryId, Prefetch)>,
}

/// A batch read in the background.
type Prefetch = tokio::task::JoinHandle<Result<Batch, OpsError>>;

/// What a read returns: `entries-added`, `last-generated-id` and the entries' records.
type Batch = (u64, EntryId, Vec<Record>);

/// What a read needs to know of its source (owned: a prefetch runs on a task of its own).
#[derive(Debug, Clone)]
struct ReadOf {
    key: String,
    kind: Kind,
    partition: u16,
}

impl Source {
    fn read(&self) -> ReadOf {
        ReadOf {
            key: self.key.clone(),
            kind: self.kind,
            partition: self.partition,
        }
    }

    fn done(&self) -> bool {
        self.target.is_some_and(|t| self.position >= t)
    }
}

/// One partition: its configuration, connection and two sources.
struct Part {
    config: Config,
    connection: Option<MultiplexedConnection>,
    sources: Vec<Source>,
}

/// Archives a stream (every partition) and its dead letters into a directory; see the
/// [module documentation](self).
pub struct Archiver {
    config: ArchiveConfig,
    stream: String,
    store: LocalDir,
    parts: Vec<Part>,
    report: ArchiveReport,
    staged: u64,
}

impl std::fmt::Debug for Archiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archiver")
            .field("dir", &self.store.root())
            .field("stream", &self.stream)
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

impl Archiver {
    /// An archiver of `config.redis.stream` into `config.archive.dir`: takes the directory's
    /// lock, reads the manifest (cutting a torn last line), deletes what a killed archiver
    /// left unrecorded, and resumes each key after its last recorded entry.
    pub fn new(config: &Config) -> Result<Self, ArchiveError> {
        config.validate()?;
        let dir = config
            .archive
            .dir
            .as_ref()
            .ok_or(ArchiveError::NoDirectory)?;
        let mut store = LocalDir::lock(dir)?;
        let bytes = store.read_manifest()?;
        let (records, whole) =
            manifest::parse(&bytes).map_err(|(line, reason)| ArchiveError::Manifest {
                path: dir.join(MANIFEST),
                line,
                reason,
            })?;
        if whole < bytes.len() as u64 {
            tracing::warn!(dir = %dir.display(), "archive: the manifest's last line was cut short by a crash; removed (its file is written again)");
            store.truncate_manifest(whole)?;
        }
        if let Some(theirs) = records.iter().find(|r| r.stream != config.redis.stream) {
            return Err(ArchiveError::OtherStream {
                dir: dir.clone(),
                theirs: theirs.stream.clone(),
                ours: config.redis.stream.clone(),
            });
        }
        let recorded: std::collections::HashSet<&str> =
            records.iter().map(|r| r.file.as_str()).collect();
        let mut report = ArchiveReport::default();
        for key in store.list()? {
            if !recorded.contains(key.as_str()) {
                tracing::warn!(file = %key, "archive: a file written but not recorded before a crash; deleted, its entries are archived again");
                store.remove(&key)?;
                report.unrecorded_removed += 1;
            }
        }
        let parts = config
            .partition_configs()
            .into_iter()
            .enumerate()
            .map(|(p, part)| {
                let partition = u16::try_from(p).unwrap_or(u16::MAX);
                let sources = Kind::ALL
                    .into_iter()
                    .map(|kind| {
                        let key = kind.key(&part.redis.stream);
                        let position = records
                            .iter()
                            .filter(|r| r.key == key)
                            .map(|r| r.last_id)
                            .max()
                            .unwrap_or_default();
                        Source {
                            kind,
                            partition,
                            key,
                            position,
                            recorded: position,
                            counter: None,
                            open: None,
                            unplaced: None,
                            group_checked: false,
                            target: None,
                            prefetch: None,
                        }
                    })
                    .collect();
                Part {
                    config: part,
                    connection: None,
                    sources,
                }
            })
            .collect();
        Ok(Self {
            config: config.archive.clone(),
            stream: config.redis.stream.clone(),
            store,
            parts,
            report,
            staged: 0,
        })
    }

    /// Archives what the stream and its dead letters hold now, closes every file and
    /// returns. A Redis or disk error ends it (what was recorded stays recorded).
    pub async fn run_once(mut self) -> Result<ArchiveReport, ArchiveError> {
        for part in &mut self.parts {
            for source in &mut part.sources {
                source.target = None;
            }
        }
        loop {
            let progressed = self.pass(true).await?;
            let done = self
                .parts
                .iter()
                .all(|p| p.sources.iter().all(Source::done));
            if done {
                break;
            }
            if !progressed {
                tokio::time::sleep(self.poll_interval()).await;
            }
        }
        self.close_all().await?;
        Ok(self.report)
    }

    /// Follows the stream until `shutdown` completes, then closes and records every open
    /// file. Redis being away or a full disk is logged and retried, never fatal: nothing is
    /// recorded that is not in place.
    pub async fn run<F: Future>(mut self, shutdown: F) -> Result<ArchiveReport, ArchiveError> {
        tokio::pin!(shutdown);
        let mut failing = false;
        loop {
            let wait = match self.pass(false).await {
                Ok(true) => {
                    failing = false;
                    Duration::ZERO
                }
                Ok(false) => {
                    failing = false;
                    self.poll_interval()
                }
                Err(error) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::error!(%error, "archive: failed; retrying every second (nothing unrecorded is lost: retention waits for the archive)");
                    }
                    metrics::counter!("evstream_archive_errors_total", "stream" => self.stream.clone())
                        .increment(1);
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.close_all().await?;
        Ok(self.report)
    }

    /// What was archived so far.
    pub fn report(&self) -> &ArchiveReport {
        &self.report
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.config.poll_interval_ms)
    }

    /// One read of every key; closes the files that are due. Returns whether any read was
    /// full (more is waiting). With `once`, each key's target is set at its first read and
    /// a key past it is not read again.
    async fn pass(&mut self, once: bool) -> Result<bool, ArchiveError> {
        let mut more = false;
        let mut first_error = None;
        for index in 0..self.parts.len() {
            match self.pass_part(index, once).await {
                Ok(full) => more |= full,
                Err(error) => {
                    self.parts[index].connection = None;
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(more),
        }
    }

    async fn pass_part(&mut self, index: usize, once: bool) -> Result<bool, ArchiveError> {
        let mut more = false;
        if self.parts[index].connection.is_none() {
            let settings =
                redis::AsyncConnectionConfig::new().set_response_timeout(Some(CALL_TIMEOUT));
            let (connection, _) =
                crate::partitions::connect(&self.parts[index].config, &settings).await?;
            self.parts[index].connection = Some(connection);
        }
        for s in 0..self.parts[index].sources.len() {
            let part = &mut self.parts[index];
            let Some(conn) = part.connection.as_mut() else {
                unreachable!("connected above")
            };
            let source = &mut part.sources[s];
            if !source.group_checked {
                source.group_checked = check_group(conn, source).await?;
            }
            if let Some((id, counter)) = source.unplaced {
                if place_group(conn, &source.key, id, counter).await? {
                    source.unplaced = None;
                }
            }
            if once && source.done() {
                continue;
            }
            let batch = self.config.batch;
            let (added, last, entries) = match source.prefetch.take() {
                Some((from, read)) if from == source.position => match read.await {
                    Ok(batch) => batch?,
                    Err(_) => read_batch(conn, source.read(), source.position, batch).await?,
                },
                _ => read_batch(conn, source.read(), source.position, batch).await?,
            };
            if let Some(next) = entries.last().filter(|_| entries.len() == batch) {
                let (from, what, mut conn) = (next.entry_id, source.read(), conn.clone());
                let read =
                    tokio::spawn(async move { read_batch(&mut conn, what, from, batch).await });
                source.prefetch = Some((from, read));
            }
            if once {
                source.target.get_or_insert(last);
            }
            more |= entries.len() == batch;
            // Encoding is CPU work: on a multi-threaded runtime, give this worker's other
            // tasks (the next batch's read, the connection's decoding) to another thread
            // meanwhile.
            let multi_threaded = tokio::runtime::Handle::current().runtime_flavor()
                == tokio::runtime::RuntimeFlavor::MultiThread;
            if multi_threaded {
                tokio::task::block_in_place(|| self.append(index, s, entries, added, last))?;
            } else {
                self.append(index, s, entries, added, last)?;
            }
        }
        let due: Vec<usize> = self.parts[index]
            .sources
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.open.as_ref().is_some_and(|o| {
                    o.opened.elapsed() >= Duration::from_secs(self.config.max_file_age_s)
                })
            })
            .map(|(i, _)| i)
            .collect();
        for s in due {
            self.close(index, s)?;
        }
        Ok(more)
    }

    /// Writes `entries` (read after the source's position) to the source's files.
    fn append(
        &mut self,
        index: usize,
        s: usize,
        entries: Vec<Record>,
        added: u64,
        last: EntryId,
    ) -> Result<(), ArchiveError> {
        let n = entries.len();
        for (i, entry) in entries.into_iter().enumerate() {
            let source = &self.parts[index].sources[s];
            // The counter of the batch's last entry is exact when it is the last generated;
            // otherwise one more than the previous entry's (short of entries deleted in
            // between, which only makes the reported lag larger: retention keeps more).
            let counter = if i + 1 == n && entry.entry_id == last {
                Some(added)
            } else {
                source.counter.map(|c| c + 1)
            };
            let hour = entry.entry_id.ms / 3_600_000;
            if source.open.as_ref().is_some_and(|o| o.hour != hour) {
                self.close(index, s)?;
            }
            if self.parts[index].sources[s].open.is_none() {
                self.open(index, s, hour)?;
            }
            let source = &mut self.parts[index].sources[s];
            let id = entry.entry_id;
            let Some(open) = source.open.as_mut() else {
                unreachable!("opened above")
            };
            open.file.push(entry)?;
            open.last_counter = counter;
            source.position = id;
            source.counter = counter;
        }
        let source = &mut self.parts[index].sources[s];
        if n == 0 && source.position == last {
            source.counter = Some(added);
            if let Some(open) = source.open.as_mut() {
                open.last_counter = Some(added);
            }
        }
        let full = source
            .open
            .as_ref()
            .is_some_and(|o| o.file.estimated_bytes() >= self.config.max_file_bytes);
        if full {
            self.close(index, s)?;
        }
        Ok(())
    }

    fn open(&mut self, index: usize, s: usize, hour: u64) -> Result<(), ArchiveError> {
        self.staged += 1;
        let source = &self.parts[index].sources[s];
        let staged = self.store.staging().join(format!(
            "{}-p{}-{}-{}.parquet.tmp",
            source.kind.dir(),
            source.partition,
            std::process::id(),
            self.staged
        ));
        let file = file::OpenFile::create(&staged, &source.key, self.config.zstd_level);
        let file = match file {
            Ok(file) => file,
            Err(error) => {
                self.rewind(index, s);
                return Err(error);
            }
        };
        self.parts[index].sources[s].open = Some(Open {
            file,
            hour,
            opened: Instant::now(),
            last_counter: None,
        });
        Ok(())
    }

    /// Closes the source's open file: finish, put in place, record. On failure the file's
    /// entries are read again from Redis (where retention kept them).
    fn close(&mut self, index: usize, s: usize) -> Result<(), ArchiveError> {
        let Some(open) = self.parts[index].sources[s].open.take() else {
            return Ok(());
        };
        let last_counter = open.last_counter;
        match self.record(index, s, open) {
            Ok(Some(last)) => {
                let source = &mut self.parts[index].sources[s];
                source.recorded = last;
                source.unplaced = Some((last, last_counter));
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(error) => {
                self.rewind(index, s);
                Err(error)
            }
        }
    }

    fn rewind(&mut self, index: usize, s: usize) {
        let source = &mut self.parts[index].sources[s];
        source.open = None;
        source.position = source.recorded;
        source.counter = None;
    }

    fn record(
        &mut self,
        index: usize,
        s: usize,
        open: Open,
    ) -> Result<Option<EntryId>, ArchiveError> {
        if open.file.rows() == 0 {
            return Ok(None);
        }
        let written = open.file.finish()?;
        let source = &self.parts[index].sources[s];
        let (date, hour) = date_and_hour(written.first_id.ms);
        let key = format!(
            "{}/date={date}/hour={hour}/p{}_{}_{}.parquet",
            source.kind.dir(),
            source.partition,
            written.first_id,
            written.last_id
        );
        let bytes = match self.store.publish(&written.staged, &key) {
            Ok(bytes) => bytes,
            Err(error) => {
                let _ = std::fs::remove_file(&written.staged);
                return Err(error);
            }
        };
        let record = ManifestRecord {
            file: key.clone(),
            stream: self.stream.clone(),
            kind: source.kind,
            partition: source.partition,
            key: source.key.clone(),
            first_id: written.first_id,
            last_id: written.last_id,
            rows: written.rows,
            bytes,
            min_timestamp_ns: written.min_timestamp_ns,
            max_timestamp_ns: written.max_timestamp_ns,
            written_at_ms: unix_ms(),
        };
        let mut line = serde_json::to_vec(&record).expect("a manifest record serializes");
        line.push(b'\n');
        if let Err(error) = self.store.append_manifest(&line) {
            // Not recorded: the file goes, its entries are archived again.
            let _ = self.store.remove(&key);
            return Err(error);
        }
        let kind = match source.kind {
            Kind::Events => {
                self.report.events += written.rows;
                "events"
            }
            Kind::DeadLetters => {
                self.report.dead_letters += written.rows;
                "dlq"
            }
        };
        self.report.files += 1;
        self.report.bytes += bytes;
        let stream = self.stream.clone();
        metrics::counter!("evstream_archive_entries_total", "stream" => stream.clone(), "kind" => kind)
            .increment(written.rows);
        metrics::counter!("evstream_archive_files_total", "stream" => stream.clone(), "kind" => kind)
            .increment(1);
        metrics::counter!("evstream_archive_bytes_total", "stream" => stream, "kind" => kind)
            .increment(bytes);
        tracing::debug!(file = %key, rows = written.rows, bytes, "archive: file recorded");
        Ok(Some(written.last_id))
    }

    /// Closes every open file and moves every group (best effort: a restart does it too).
    async fn close_all(&mut self) -> Result<(), ArchiveError> {
        let mut first_error = None;
        for index in 0..self.parts.len() {
            for s in 0..self.parts[index].sources.len() {
                if let Err(error) = self.close(index, s) {
                    first_error.get_or_insert(error);
                }
            }
        }
        for part in &mut self.parts {
            let Some(conn) = part.connection.as_mut() else {
                continue;
            };
            for source in &mut part.sources {
                if let Some((id, counter)) = source.unplaced {
                    match place_group(conn, &source.key, id, counter).await {
                        Ok(_) => source.unplaced = None,
                        Err(error) => {
                            tracing::warn!(%error, key = %source.key, "archive: the group {GROUP} was not moved; the next start moves it");
                        }
                    }
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Writes records to one Parquet file with the archive's columns: what
/// `evstream export --format parquet` writes. The file appears under its name only once
/// complete (written beside it as `<name>.tmp`, synced, renamed).
#[derive(Debug)]
pub struct ParquetWriter {
    file: file::OpenFile,
    target: std::path::PathBuf,
}

impl ParquetWriter {
    /// Starts the file `path`, whose entries come from `stream` (named in its footer).
    pub fn create(path: &std::path::Path, stream: &str) -> Result<Self, ArchiveError> {
        let mut staged = path.as_os_str().to_owned();
        staged.push(".tmp");
        let file = file::OpenFile::create(std::path::Path::new(&staged), stream, 3)?;
        Ok(Self {
            file,
            target: path.to_owned(),
        })
    }

    /// Adds one record.
    pub fn push(&mut self, record: Record) -> Result<(), ArchiveError> {
        self.file.push(record)
    }

    /// Completes the file; returns how many records it holds.
    pub fn finish(self) -> Result<u64, ArchiveError> {
        let written = self.file.finish()?;
        std::fs::rename(&written.staged, &self.target).map_err(|source| ArchiveError::Io {
            what: "renaming",
            path: self.target.clone(),
            source,
        })?;
        Ok(written.rows)
    }
}

/// The next `count` entries of the source after `after`, as records (converted here, so on
/// the reading task), with the stream's `entries-added` and
/// `last-generated-id` read in the same atomic step (`MULTI`: `XRANGE`, `XINFO STREAM`):
/// when the batch ends at the last generated id, the entries-read counter of its last entry
/// is `entries-added`. A missing key reads as empty.
async fn read_batch(
    conn: &mut MultiplexedConnection,
    of: ReadOf,
    after: EntryId,
    count: usize,
) -> Result<Batch, OpsError> {
    let key = of.key.as_str();
    let what = format!("XRANGE {key} ({after} + COUNT {count}; XINFO STREAM {key}");
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("XRANGE")
        .arg(key)
        .arg(format!("({after}"))
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .cmd("XINFO")
        .arg("STREAM")
        .arg(key);
    let reply = match tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<Value>(conn)).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(source)) if source.to_string().contains("no such key") => {
            return Ok((0, EntryId::default(), Vec::new()))
        }
        Ok(Err(source)) => return Err(OpsError::Redis { what, source }),
        Err(_) => {
            return Err(OpsError::Timeout {
                what,
                timeout: CALL_TIMEOUT,
            })
        }
    };
    let bad = |detail: String| OpsError::Reply {
        what: what.clone(),
        detail,
    };
    let Value::Array(parts) = reply else {
        return Err(bad(format!("{reply:?}")));
    };
    let Ok([entries, info]) = <[Value; 2]>::try_from(parts) else {
        return Err(bad("not two replies".to_owned()));
    };
    if matches!(info, Value::ServerError(_)) {
        return Ok((0, EntryId::default(), Vec::new()));
    }
    let pairs: Vec<(Value, Value)> = match info {
        Value::Array(flat) => {
            let mut flat = flat.into_iter();
            std::iter::from_fn(|| Some((flat.next()?, flat.next()?))).collect()
        }
        Value::Map(map) => map,
        other => return Err(bad(format!("{other:?}"))),
    };
    let mut added = 0;
    let mut last = EntryId::default();
    for (name, value) in pairs {
        match redis::from_redis_value_ref::<String>(&name).as_deref() {
            Ok("entries-added") => added = redis::from_redis_value_ref(&value).unwrap_or(0),
            Ok("last-generated-id") => {
                last = redis::from_redis_value_ref::<String>(&value)
                    .map_err(|e| bad(e.to_string()))?
                    .parse()
                    .map_err(bad)?;
            }
            _ => {}
        }
    }
    let records = parse_entries(entries)
        .map_err(bad)?
        .into_iter()
        .map(|entry| Record::from_entry(of.kind, of.partition, entry))
        .collect();
    Ok((added, last, records))
}

/// Where the archive stands on a key, from its group [`GROUP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveMark {
    /// The last entry archived (`0-0`: none).
    pub archived: EntryId,
    /// Entries after it, not archived yet, when Redis can tell (the group's lag).
    pub unarchived: Option<u64>,
}

impl ArchiveMark {
    /// The first entry not archived: retention may trim everything before it.
    pub fn next(&self) -> EntryId {
        self.archived.successor()
    }
}

/// The archive's mark on `key` (`XINFO GROUPS`); `None` when the key or the group does not
/// exist.
pub async fn mark(
    conn: &mut MultiplexedConnection,
    key: &str,
) -> Result<Option<ArchiveMark>, OpsError> {
    let what = format!("XINFO GROUPS {key}");
    let cmd = Cmd::new().arg("XINFO").arg("GROUPS").arg(key).clone();
    let groups: Value = match call(conn, &what, &cmd, CALL_TIMEOUT).await {
        Ok(groups) => groups,
        Err(OpsError::Redis { source, .. }) if source.to_string().contains("no such key") => {
            return Ok(None)
        }
        Err(error) => return Err(error),
    };
    let Value::Array(groups) = groups else {
        return Ok(None);
    };
    for group in &groups {
        let pairs: Vec<(&Value, &Value)> = match group {
            Value::Array(flat) => flat
                .chunks(2)
                .filter_map(|c| Some((c.first()?, c.get(1)?)))
                .collect(),
            Value::Map(map) => map.iter().map(|(k, v)| (k, v)).collect(),
            _ => continue,
        };
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| redis::from_redis_value_ref::<String>(k).is_ok_and(|k| k == name))
                .map(|(_, v)| *v)
        };
        let text =
            |name: &str| get(name).and_then(|v| redis::from_redis_value_ref::<String>(v).ok());
        if text("name").as_deref() != Some(GROUP) {
            continue;
        }
        let archived = text("last-delivered-id")
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| OpsError::Reply {
                what: what.clone(),
                detail: "no last-delivered-id".to_owned(),
            })?;
        let unarchived = get("lag").and_then(|v| redis::from_redis_value_ref::<u64>(v).ok());
        return Ok(Some(ArchiveMark {
            archived,
            unarchived,
        }));
    }
    Ok(None)
}

/// Creates [`GROUP`] on `key` at the beginning if it is missing, so that retention keeps
/// everything until the archive holds it. Returns whether the group exists now (false: no
/// such key, nothing to keep).
pub async fn ensure_group(conn: &mut MultiplexedConnection, key: &str) -> Result<bool, OpsError> {
    let create = Cmd::new()
        .arg("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(GROUP)
        .arg("0")
        .clone();
    let what = format!("XGROUP CREATE {key} {GROUP} 0");
    match call::<()>(conn, &what, &create, CALL_TIMEOUT).await {
        Ok(()) => Ok(true),
        Err(OpsError::Redis { source, .. }) if source.code() == Some("BUSYGROUP") => Ok(true),
        Err(OpsError::Redis { source, .. }) if no_such_key(&source) => Ok(false),
        Err(error) => Err(error),
    }
}

/// At start: creates the group at the recorded position if it is missing, and moves it
/// there if it is elsewhere (behind: killed between the record and the move; ahead: an
/// archive directory replaced). Returns whether the key
/// exists (a missing key is checked again next time).
async fn check_group(conn: &mut MultiplexedConnection, source: &Source) -> Result<bool, OpsError> {
    match mark(conn, &source.key).await? {
        Some(mark) if mark.archived == source.recorded => Ok(true),
        Some(mark) => {
            if mark.archived > source.recorded {
                tracing::warn!(key = %source.key, group = GROUP, at = %mark.archived, recorded = %source.recorded, "archive: the group is ahead of the manifest; moved back to what this archive holds");
            }
            place_group(conn, &source.key, source.recorded, None).await
        }
        None => place_group(conn, &source.key, source.recorded, None).await,
    }
}

/// Moves (or creates) [`GROUP`] on `key` to `id`, with its entries-read counter when known.
/// Returns false when the key does not exist (nothing to protect yet).
async fn place_group(
    conn: &mut MultiplexedConnection,
    key: &str,
    id: EntryId,
    entries_read: Option<u64>,
) -> Result<bool, OpsError> {
    let with_counter = |mut cmd: Cmd| {
        if let Some(n) = entries_read {
            cmd.arg("ENTRIESREAD").arg(n);
        }
        cmd
    };
    let setid = with_counter(
        Cmd::new()
            .arg("XGROUP")
            .arg("SETID")
            .arg(key)
            .arg(GROUP)
            .arg(id.to_string())
            .clone(),
    );
    let what = format!("XGROUP SETID {key} {GROUP} {id}");
    match call::<()>(conn, &what, &setid, CALL_TIMEOUT).await {
        Ok(()) => return Ok(true),
        Err(OpsError::Redis { source, .. }) if source.code() == Some("NOGROUP") => {}
        Err(OpsError::Redis { source, .. }) if no_such_key(&source) => return Ok(false),
        Err(error) => return Err(error),
    }
    let create = with_counter(
        Cmd::new()
            .arg("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg(GROUP)
            .arg(id.to_string())
            .clone(),
    );
    let what = format!("XGROUP CREATE {key} {GROUP} {id}");
    match call::<()>(conn, &what, &create, CALL_TIMEOUT).await {
        Ok(()) => Ok(true),
        Err(OpsError::Redis { source, .. }) if no_such_key(&source) => Ok(false),
        Err(OpsError::Redis { source, .. }) if source.code() == Some("BUSYGROUP") => {
            // Created meanwhile (by an ops loop): move it.
            call::<()>(
                conn,
                &format!("XGROUP SETID {key} {GROUP} {id}"),
                &setid,
                CALL_TIMEOUT,
            )
            .await
            .map(|()| true)
        }
        Err(error) => Err(error),
    }
}

/// Whether Redis refused an `XGROUP` call because the key does not exist.
fn no_such_key(error: &redis::RedisError) -> bool {
    error.to_string().contains("requires the key to exist")
}

/// The UTC date (`2026-12-05`) and hour (`07`) of Unix millisecond `ms`.
fn date_and_hour(ms: u64) -> (String, String) {
    let time = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    let text = humantime::format_rfc3339_seconds(time).to_string();
    (text[..10].to_owned(), text[11..13].to_owned())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_filed_by_the_utc_date_and_hour_of_their_entries() {
        assert_eq!(
            date_and_hour(1_764_892_800_000 + 7 * 3_600_000 + 59 * 60_000),
            ("2025-12-05".to_owned(), "07".to_owned())
        );
    }
}
