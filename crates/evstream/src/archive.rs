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
/// One Parquet file being written; `ParquetWriter` for exports.
mod file;
/// The archive's group: where it stands on a key, creating and moving it.
mod group;
/// The manifest's records.
mod manifest;
/// One pass of the archiver: read, write, close, record.
mod pass;
pub mod read;
/// A record: one entry, its envelope fields taken apart.
mod record;
/// A lean reader of `XRANGE` replies (why: its docs).
mod resp;
/// What is archived (a partition's stream or dead letters) and how it is read.
mod source;
/// Where files and the manifest live.
mod store;

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use crate::config::{ArchiveConfig, Config};
use crate::error::ArchiveError;
pub use file::ParquetWriter;
pub use group::{ensure_group, mark, ArchiveMark};
pub use manifest::ManifestRecord;
pub use record::{Kind, Record};
use source::{Part, Source};
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
                            via: None,
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
}
