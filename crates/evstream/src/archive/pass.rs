//! One pass of the [`Archiver`]: read every key, write the entries to their files, close
//! the files that are due (staged, synced, renamed, recorded), and move the group.

use std::time::{Duration, Instant, SystemTime};

use super::group::{check_group, place_group};
use super::manifest::ManifestRecord;
use super::record::{Kind, Record};
use super::source::{read_batch, Open, Via};
use super::store::ArchiveStore;
use super::{file, Archiver, CALL_TIMEOUT, GROUP};
use crate::error::ArchiveError;
use crate::redis::{unix_ms, EntryId};

impl Archiver {
    /// One read of every key; closes the files that are due. Returns whether any read was
    /// full (more is waiting). With `once`, each key's target is set at its first read and
    /// a key past it is not read again.
    pub(super) async fn pass(&mut self, once: bool) -> Result<bool, ArchiveError> {
        let mut more = false;
        let mut first_error = None;
        for index in 0..self.parts.len() {
            match self.pass_part(index, once).await {
                Ok(full) => more |= full,
                Err(error) => {
                    let part = &mut self.parts[index];
                    part.connection = None;
                    for source in &mut part.sources {
                        source.via = None;
                    }
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
            let connected =
                crate::partitions::connect(&self.parts[index].config, &settings).await?;
            self.parts[index].connection = Some(connected);
        }
        for s in 0..self.parts[index].sources.len() {
            let part = &mut self.parts[index];
            let Some((conn, client)) = part.connection.as_mut() else {
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
            let prefetched = match source.prefetch.take() {
                Some((from, read)) => match read.await {
                    Ok((via, result)) => {
                        source.via = Some(via);
                        (from == source.position).then_some(result)
                    }
                    Err(_) => None,
                },
                None => None,
            };
            let (of, position) = (source.read(), source.position);
            // Opened on first use, and again after an error (or a read task that died).
            let via = match source.via.as_mut() {
                Some(via) => via,
                None => source.via.insert(Via::open(client, conn).await),
            };
            let (added, last, entries) = match prefetched {
                Some(result) => result?,
                None => read_batch(via, of, position, batch).await?,
            };
            if let Some(next) = entries.last().filter(|_| entries.len() == batch) {
                let (from, what) = (next.entry_id, source.read());
                if let Some(mut via) = source.via.take() {
                    let read = tokio::spawn(async move {
                        let result = read_batch(&mut via, what, from, batch).await;
                        (via, result)
                    });
                    source.prefetch = Some((from, read));
                }
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
    pub(super) async fn close_all(&mut self) -> Result<(), ArchiveError> {
        let mut first_error = None;
        for index in 0..self.parts.len() {
            for s in 0..self.parts[index].sources.len() {
                if let Err(error) = self.close(index, s) {
                    first_error.get_or_insert(error);
                }
            }
        }
        for part in &mut self.parts {
            let Some((conn, _)) = part.connection.as_mut() else {
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

/// The UTC date (`2026-12-05`) and hour (`07`) of Unix millisecond `ms`.
fn date_and_hour(ms: u64) -> (String, String) {
    let time = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    let text = humantime::format_rfc3339_seconds(time).to_string();
    (text[..10].to_owned(), text[11..13].to_owned())
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
