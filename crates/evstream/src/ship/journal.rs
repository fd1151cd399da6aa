//! The spill journal: batches that cannot reach Redis in time, on local disk, in order.
//!
//! Why our own format: the well-kept candidates (`queue-file`, `yaque`, `okaywal`) either
//! keep no checksum per record or are write-ahead logs for a different job (checkpointing a
//! database); the journal needs append-only segments that are deleted whole once shipped, a
//! CRC per record, a disk budget and an fsync policy, which is a small amount of code.
//!
//! Layout: one directory per producer, `<journal_dir>/<producer_id>/`, holding segment files
//! `<first sequence, 20 digits>.seg` and a `lock` file held (flock) by the process that
//! writes or replays it. A segment is a sequence of records:
//!
//! ```text
//! record  = length:u32le  crc32(payload):u32le  payload
//! payload = count:u32le  event*
//! event   = sequence:u64le  timestamp_ns:u64le  kind:u8  [version:u32le]
//!           type_len:u8 event_type  correlation_len:u8 correlation_id  data_len:u32le data
//! kind    = 0 (JSON) or 1 (raw), plus 0x80 when a version other than 1 follows
//! ```
//!
//! (Journals written before versions existed hold only version-1 events, without the flag:
//! they read the same.)
//!
//! Reading stops at the first record that is cut short (a torn write at a crash) or whose
//! CRC does not match (corruption); what follows in that segment is reported as lost, never
//! shipped as garbage. Segments are never rewritten: a record is consumed by moving a read
//! position, and a fully consumed segment is deleted. After a restart every remaining record
//! is replayed; the append script skips the events Redis already has.
//!
//! What "journaled" means: [`Journal::append`] returns Ok once its record is in the file,
//! that is, once `write(2)` took all of it and the OS has it (plus an fsync with
//! `journal_fsync = "always"`). There is no buffer in this process: one record, one write,
//! so a process crash loses nothing counted as journaled. A write that fails (disk full,
//! file too large, I/O error) is cut back: the file is truncated to its whole records, the
//! record is not indexed, and the caller keeps the events.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::config::FsyncPolicy;
use crate::publish::{CapturedEvent, PayloadKind, MAX_CORRELATION_ID_LEN, MAX_EVENT_TYPE_LEN};

/// Largest segment file before a new one is started.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Flag on an event's kind byte: its version (other than 1) follows.
const VERSIONED: u8 = 0x80;
/// Largest record accepted when reading (a corrupt length must not allocate gigabytes).
const MAX_RECORD_BYTES: u32 = 256 * 1024 * 1024;

/// Why a batch could not be journaled.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The disk budget is used up.
    Full,
    Io(io::Error),
}

/// One batch read back from the journal.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) producer_id: String,
    pub(crate) events: Vec<CapturedEvent>,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// Bytes of whole records in the file.
    bytes: u64,
    /// Offset of the first record not yet consumed.
    consumed: u64,
    /// The records not yet consumed, oldest first.
    records: VecDeque<RecordMeta>,
}

#[derive(Debug, Clone, Copy)]
struct RecordMeta {
    /// Size on disk, header included.
    bytes: u64,
    events: u32,
}

/// The journal of one producer directory.
#[derive(Debug)]
pub(crate) struct Journal {
    dir: PathBuf,
    producer_id: String,
    /// Held for as long as this journal is open: no other process writes or replays it.
    _lock: File,
    segments: VecDeque<Segment>,
    /// The last segment, open for appending (`O_APPEND`, unbuffered: a record is in the OS
    /// once `append` returns). `None` until the next append opens a segment.
    file: Option<File>,
    /// Records handed out by `read_next` and not consumed yet: the first `read_ahead`
    /// records in consumption order.
    read_ahead: usize,
    /// Events written and not yet consumed (the sum of the segments' record counts), so the
    /// backlog is known without reading the disk.
    pending_events: u64,
    bytes_on_disk: u64,
    budget_bytes: u64,
    fsync: FsyncPolicy,
    fsync_interval: Duration,
    last_fsync: Instant,
    /// Last sequence appended to the open segment: a record joins that segment only if it
    /// continues it, so every segment is one ascending run and sorting segments by name
    /// (their first sequence) replays everything in sequence order, even records written
    /// out of order at shutdown.
    last_sequence: Option<u64>,
    /// Events lost to torn or corrupt records found when reading.
    pub(crate) lost_events: u64,
    pub(crate) corrupt_records: u64,
}

impl Journal {
    /// Opens (creating if needed) the journal of `producer_id` under `root`, and indexes the
    /// records already there.
    pub(crate) fn open(
        root: &Path,
        producer_id: &str,
        budget_bytes: u64,
        fsync: FsyncPolicy,
        fsync_interval: Duration,
    ) -> io::Result<Self> {
        let dir = root.join(producer_id);
        // Trading events are sensitive: directories 0700, files 0600.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let lock = OpenOptions::new()
            .mode(0o600)
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        lock.try_lock().map_err(|_| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("journal {} is in use by another process", dir.display()),
            )
        })?;
        let mut names: Vec<_> = fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        names.sort();
        let mut journal = Self {
            dir,
            producer_id: producer_id.to_owned(),
            _lock: lock,
            segments: VecDeque::new(),
            file: None,
            read_ahead: 0,
            pending_events: 0,
            bytes_on_disk: 0,
            budget_bytes,
            fsync,
            fsync_interval,
            last_fsync: Instant::now(),
            last_sequence: None,
            lost_events: 0,
            corrupt_records: 0,
        };
        for path in names {
            journal.index_segment(path)?;
        }
        Ok(journal)
    }

    /// Producer directories under `root` other than `except`: journals left by earlier
    /// processes, to replay. A partitioned stream's journals (`partition-<p>/`) are its
    /// lanes' to replay, not an unpartitioned shipper's.
    pub(crate) fn others(root: &Path, except: &str) -> Vec<String> {
        let Ok(entries) = fs::read_dir(root) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| id != except && !id.starts_with("partition-"))
            .collect();
        ids.sort();
        ids
    }

    /// Reads a segment's records to count them, truncating a torn or corrupt tail.
    fn index_segment(&mut self, path: PathBuf) -> io::Result<()> {
        let mut file = File::open(&path)?;
        let length = file.metadata()?.len();
        let mut offset = 0u64;
        let mut records = VecDeque::new();
        loop {
            match read_record(&mut file, length - offset)? {
                ReadOutcome::Record { bytes, payload } => {
                    let events = payload
                        .get(..4)
                        .map_or(0, |c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                    records.push_back(RecordMeta { bytes, events });
                    offset += bytes;
                }
                ReadOutcome::End => break,
                ReadOutcome::Damaged => {
                    self.corrupt_records += 1;
                    tracing::error!(
                        segment = %path.display(),
                        offset,
                        "journal record torn or corrupt; the rest of this segment is dropped"
                    );
                    break;
                }
            }
        }
        drop(file);
        if offset < length {
            // Cut the damaged tail so nothing reads past it again.
            OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(offset)?;
        }
        if records.is_empty() {
            fs::remove_file(&path)?;
            return Ok(());
        }
        self.pending_events += records.iter().map(|r| u64::from(r.events)).sum::<u64>();
        self.bytes_on_disk += offset;
        self.segments.push_back(Segment {
            path,
            bytes: offset,
            consumed: 0,
            records,
        });
        Ok(())
    }

    /// Events and bytes waiting in the journal.
    pub(crate) fn backlog(&self) -> (u64, u64) {
        (self.pending_events, self.bytes_on_disk)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.records.is_empty())
    }

    /// The producer whose events this journal holds.
    pub(crate) fn producer_id(&self) -> &str {
        &self.producer_id
    }

    /// The journal's directory, `<journal_dir>/<producer_id>`.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The earliest event time (`timestamp_ns`) of the oldest record not consumed yet (the
    /// events sequenced first), read from disk; `None` when the journal is empty.
    pub(crate) fn oldest_timestamp_ns(&self) -> io::Result<Option<u64>> {
        let Some(segment) = self.segments.iter().find(|s| !s.records.is_empty()) else {
            return Ok(None);
        };
        let mut file = File::open(&segment.path)?;
        io::Seek::seek(&mut file, io::SeekFrom::Start(segment.consumed))?;
        match read_record(&mut file, segment.bytes - segment.consumed)? {
            ReadOutcome::Record { payload, .. } => Ok(decode(&payload)
                .and_then(|events| events.iter().map(CapturedEvent::timestamp_ns).min())),
            ReadOutcome::End | ReadOutcome::Damaged => Ok(None),
        }
    }

    /// Appends one batch as one record, with one `write(2)`.
    ///
    /// Ok means the record is in the file (and on disk with `journal_fsync = "always"`):
    /// count the events as journaled. On an error nothing of the record stays in the file
    /// or the index; the caller still owns the events.
    pub(crate) fn append(&mut self, events: &[CapturedEvent]) -> Result<(), AppendError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let record = encode_record(events);
        let record_bytes = record.len() as u64;
        if self.bytes_on_disk + record_bytes > self.budget_bytes {
            return Err(AppendError::Full);
        }
        let continues = self.last_sequence.and_then(|s| s.checked_add(1)) == Some(first.sequence());
        let needs_segment = match (self.segments.back(), &self.file) {
            (Some(last), Some(_)) => !continues || last.bytes + record_bytes > SEGMENT_BYTES,
            _ => true,
        };
        if needs_segment {
            self.open_segment(first.sequence())
                .map_err(AppendError::Io)?;
        }
        let written = match &mut self.file {
            Some(file) => file.write_all(&record),
            None => return Err(AppendError::Full),
        };
        if let Err(error) = written {
            // Disk full or failing: what reached the file of this record is cut away.
            self.cut_back();
            return Err(AppendError::Io(error));
        }
        if self.fsync == FsyncPolicy::Always {
            if let Err(error) = self.sync() {
                // Not on disk, so not journaled under this policy: take it back.
                self.cut_back();
                return Err(AppendError::Io(error));
            }
        }
        if let Some(last) = self.segments.back_mut() {
            last.bytes += record_bytes;
            last.records.push_back(RecordMeta {
                bytes: record_bytes,
                events: events.len() as u32,
            });
        }
        self.bytes_on_disk += record_bytes;
        self.last_sequence = events.last().map(CapturedEvent::sequence);
        self.pending_events += events.len() as u64;
        if self.fsync == FsyncPolicy::Interval && self.last_fsync.elapsed() >= self.fsync_interval {
            // The record is in the file and indexed (in the OS: a crash of this process loses
            // nothing); a failed fsync leaves it exposed to a power loss only. Say so and
            // carry on: the next interval retries.
            if let Err(error) = self.sync() {
                tracing::error!(%error, dir = %self.dir.display(), "journal fsync failed; records written since the last fsync are in the OS, not yet on disk");
            }
        }
        Ok(())
    }

    /// Starts a segment named after `first_sequence` and makes it the open one.
    fn open_segment(&mut self, first_sequence: u64) -> io::Result<()> {
        self.file = None;
        let path = self.dir.join(format!("{first_sequence:020}.seg"));
        let file = OpenOptions::new()
            .mode(0o600)
            .create(true)
            .append(true)
            .open(&path)?;
        let bytes = file.metadata()?.len();
        self.file = Some(file);
        self.segments.push_back(Segment {
            path,
            bytes,
            consumed: bytes,
            records: VecDeque::new(),
        });
        Ok(())
    }

    /// After a failed write: truncates the open segment to its whole records (nothing of the
    /// failed record stays, no zeros are added) and closes it, so the next append starts a
    /// new segment (a per-file limit may not hold there; offsets stay true either way). A
    /// segment left with no record is removed, so no two index entries ever name one file.
    fn cut_back(&mut self) {
        let Some(file) = self.file.take() else {
            return;
        };
        self.last_sequence = None;
        let Some(last) = self.segments.back() else {
            return;
        };
        if last.records.is_empty() && last.bytes == 0 {
            if let Some(empty) = self.segments.pop_back() {
                drop(file);
                if let Err(error) = fs::remove_file(&empty.path) {
                    tracing::error!(%error, segment = %empty.path.display(), "cannot remove a journal segment left empty by a failed write");
                }
            }
            return;
        }
        if let Err(error) = file.set_len(last.bytes) {
            // The torn tail stays, past the indexed records: nothing reads there, and the
            // next start's indexing cuts it.
            tracing::error!(%error, segment = %last.path.display(), "cannot truncate a journal segment after a failed write");
        }
    }

    /// Closes the open segment without touching it (its tail is damaged or it is gone).
    fn abandon_open_segment(&mut self) {
        self.file = None;
        self.last_sequence = None;
    }

    /// Forces written records to disk, unless the policy is `never`. They are in the OS
    /// already (every append is a write); this is about surviving a power loss.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if self.fsync == FsyncPolicy::Never {
            return Ok(());
        }
        if let Some(file) = &self.file {
            file.sync_data()?;
        }
        self.last_fsync = Instant::now();
        Ok(())
    }

    /// Reads the next record not handed out yet (the oldest first), without consuming it:
    /// several records can be in flight to Redis at once, and are consumed in order.
    pub(crate) fn read_next(&mut self) -> io::Result<Option<Record>> {
        loop {
            // Find the `read_ahead`-th unconsumed record: its segment and offset.
            let mut skip = self.read_ahead;
            let mut found = None;
            for (index, segment) in self.segments.iter().enumerate() {
                if skip < segment.records.len() {
                    let offset = segment.consumed
                        + segment
                            .records
                            .iter()
                            .take(skip)
                            .map(|r| r.bytes)
                            .sum::<u64>();
                    found = Some((index, skip, offset));
                    break;
                }
                skip -= segment.records.len();
            }
            let Some((index, position, offset)) = found else {
                return Ok(None);
            };
            let segment = &self.segments[index];
            let mut file = match File::open(&segment.path) {
                Ok(file) => file,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    // Removed from outside: what it held is gone; count it, do not stall.
                    self.damaged(index, position, offset);
                    continue;
                }
                Err(error) => return Err(error),
            };
            io::Seek::seek(&mut file, io::SeekFrom::Start(offset))?;
            let outcome = read_record(&mut file, segment.bytes - offset)?;
            if let ReadOutcome::Record { payload, .. } = outcome {
                if let Some(events) = decode(&payload) {
                    self.read_ahead += 1;
                    return Ok(Some(Record {
                        producer_id: self.producer_id.clone(),
                        events,
                    }));
                }
            }
            self.damaged(index, position, offset);
        }
    }

    /// Consumes the oldest record handed out by `read_next` (after Redis confirmed it), and
    /// deletes its segment once every record of it is consumed.
    pub(crate) fn consume(&mut self) -> io::Result<()> {
        let Some(segment) = self.segments.iter_mut().find(|s| !s.records.is_empty()) else {
            return Ok(());
        };
        if let Some(record) = segment.records.pop_front() {
            segment.consumed += record.bytes;
            self.pending_events -= u64::from(record.events);
            self.read_ahead = self.read_ahead.saturating_sub(1);
        }
        // Delete fully consumed segments, the one being appended to included (the next
        // append starts a new one), so consumed records never count against the budget or
        // come back at the next start.
        while self.segments.front().is_some_and(|s| s.records.is_empty()) {
            self.drop_oldest_segment()?;
        }
        Ok(())
    }

    /// A record that was readable when indexed no longer is: it and the rest of its segment
    /// are counted as lost and never handed out.
    fn damaged(&mut self, index: usize, position: usize, offset: u64) {
        self.corrupt_records += 1;
        let last = index + 1 == self.segments.len();
        let segment = &mut self.segments[index];
        let lost: u64 = segment
            .records
            .drain(position..)
            .map(|r| u64::from(r.events))
            .sum();
        self.bytes_on_disk = self.bytes_on_disk.saturating_sub(segment.bytes - offset);
        segment.bytes = offset;
        self.pending_events -= lost;
        self.lost_events += lost;
        tracing::error!(
            segment = %segment.path.display(),
            lost,
            "journal record damaged since it was written; the rest of the segment is dropped"
        );
        if last {
            // Appending after the damage would put records where offsets no longer lead.
            self.abandon_open_segment();
        }
    }

    fn drop_oldest_segment(&mut self) -> io::Result<()> {
        if let Some(segment) = self.segments.pop_front() {
            let unread: u64 = segment.records.iter().map(|r| u64::from(r.events)).sum();
            self.pending_events -= unread;
            self.lost_events += unread;
            if self.segments.is_empty() {
                self.file = None;
                self.last_sequence = None;
            }
            self.bytes_on_disk = self.bytes_on_disk.saturating_sub(segment.bytes);
            match fs::remove_file(&segment.path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes the directory of a journal with nothing left in it (an earlier producer's).
    pub(crate) fn remove_if_empty(self) -> io::Result<()> {
        if self.is_empty() {
            let dir = self.dir.clone();
            for segment in &self.segments {
                let _ = fs::remove_file(&segment.path);
            }
            drop(self);
            let _ = fs::remove_file(dir.join("lock"));
            fs::remove_dir(dir)?;
        }
        Ok(())
    }
}

enum ReadOutcome {
    Record { bytes: u64, payload: Vec<u8> },
    End,
    Damaged,
}

fn read_record(file: &mut impl Read, remaining: u64) -> io::Result<ReadOutcome> {
    if remaining == 0 {
        return Ok(ReadOutcome::End);
    }
    if remaining < 8 {
        return Ok(ReadOutcome::Damaged);
    }
    let mut header = [0u8; 8];
    file.read_exact(&mut header)?;
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if length > MAX_RECORD_BYTES || u64::from(length) > remaining - 8 {
        return Ok(ReadOutcome::Damaged);
    }
    let mut payload = vec![0u8; length as usize];
    file.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != crc {
        return Ok(ReadOutcome::Damaged);
    }
    Ok(ReadOutcome::Record {
        bytes: 8 + u64::from(length),
        payload,
    })
}

/// One whole record, header and payload, for a single write.
fn encode_record(events: &[CapturedEvent]) -> Vec<u8> {
    let mut record = vec![0u8; 8];
    encode_into(&mut record, events);
    let length = (record.len() - 8) as u32;
    let crc = crc32fast::hash(&record[8..]);
    record[..4].copy_from_slice(&length.to_le_bytes());
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    record
}

#[cfg(test)]
fn encode(events: &[CapturedEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, events);
    out
}

fn encode_into(out: &mut Vec<u8>, events: &[CapturedEvent]) {
    let size: usize = events
        .iter()
        .map(|e| 27 + e.event_type().len() + e.correlation_id().len() + e.data().len())
        .sum();
    out.reserve(4 + size);
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for event in events {
        out.extend_from_slice(&event.sequence().to_le_bytes());
        out.extend_from_slice(&event.timestamp_ns().to_le_bytes());
        let kind = match event.kind() {
            PayloadKind::Json => 0,
            PayloadKind::Raw => 1,
        };
        if event.version() == 1 {
            out.push(kind);
        } else {
            out.push(kind | VERSIONED);
            out.extend_from_slice(&event.version().to_le_bytes());
        }
        out.push(event.event_type().len() as u8);
        out.extend_from_slice(event.event_type().as_bytes());
        out.push(event.correlation_id().len() as u8);
        out.extend_from_slice(event.correlation_id().as_bytes());
        out.extend_from_slice(&(event.data().len() as u32).to_le_bytes());
        out.extend_from_slice(event.data());
    }
}

/// Decodes a payload whose CRC matched; `None` if it is still malformed (a bug or a
/// collision), which the caller treats as corruption.
fn decode(payload: &[u8]) -> Option<Vec<CapturedEvent>> {
    let mut input = payload;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, rest) = input.split_at_checked(n)?;
        input = rest;
        Some(head)
    };
    let u32_at = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let u64_at = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a)
    };
    let count = u32_at(take(4)?) as usize;
    // An event takes at least 23 bytes: a count beyond what the bytes can hold is not
    // believed for the allocation (found by fuzzing: a tiny payload claiming 65,536 events
    // reserved ~20 MB).
    let mut events = Vec::with_capacity(count.min(payload.len() / 23));
    for _ in 0..count {
        let sequence = u64_at(take(8)?);
        let timestamp_ns = u64_at(take(8)?);
        let flags = take(1)?[0];
        let kind = match flags & !VERSIONED {
            0 => PayloadKind::Json,
            1 => PayloadKind::Raw,
            _ => return None,
        };
        let version = if flags & VERSIONED == 0 {
            1
        } else {
            match u32_at(take(4)?) {
                0 => return None,
                version => version,
            }
        };
        let type_len = take(1)?[0] as usize;
        let event_type = std::str::from_utf8(take(type_len)?).ok()?;
        let correlation_len = take(1)?[0] as usize;
        let correlation_id = std::str::from_utf8(take(correlation_len)?).ok()?;
        let data_len = u32_at(take(4)?) as usize;
        let data = take(data_len)?.to_vec();
        if event_type.len() > MAX_EVENT_TYPE_LEN || correlation_id.len() > MAX_CORRELATION_ID_LEN {
            return None;
        }
        events.push(
            CapturedEvent::from_parts(
                sequence,
                timestamp_ns,
                kind,
                event_type,
                correlation_id,
                data,
            )
            .with_version(version),
        );
    }
    input.is_empty().then_some(events)
}

/// Reads every record of a segment's bytes as `read_next` does (length, CRC, payload
/// decoding), for the fuzzer: returns how many records decoded before the first damaged one.
pub(crate) fn fuzz_segment(bytes: &[u8]) -> usize {
    let mut cursor = io::Cursor::new(bytes);
    let mut decoded = 0;
    loop {
        let remaining = bytes.len() as u64 - cursor.position();
        match read_record(&mut cursor, remaining) {
            Ok(ReadOutcome::Record { payload, .. }) if decode(&payload).is_some() => decoded += 1,
            _ => return decoded,
        }
    }
}

/// Decodes one record payload (after its CRC matched), for the fuzzer: the number of events.
pub(crate) fn fuzz_payload(payload: &[u8]) -> Option<usize> {
    decode(payload).map(|events| events.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(sequence: u64, data: &str) -> CapturedEvent {
        CapturedEvent::from_parts(
            sequence,
            1_764_000_000_000_000_000 + sequence,
            PayloadKind::Json,
            "Tick",
            "c-1",
            data.as_bytes().to_vec(),
        )
    }

    fn open(dir: &Path, budget: u64) -> Journal {
        Journal::open(
            dir,
            "p1",
            budget,
            FsyncPolicy::Never,
            Duration::from_secs(1),
        )
        .unwrap()
    }

    fn sequences(record: &Record) -> Vec<u64> {
        record.events.iter().map(CapturedEvent::sequence).collect()
    }

    #[test]
    fn versions_survive_the_journal_and_version_one_keeps_the_old_format() {
        let events = [event(1, "{}").with_version(3), event(2, "{}")];
        let bytes = encode(&events);
        let back = decode(&bytes).unwrap();
        assert_eq!(
            back.iter().map(CapturedEvent::version).collect::<Vec<_>>(),
            [3, 1]
        );
        // A version-1 event is written as before versions existed (kind byte 0, no version).
        let old = encode(&events[1..]);
        assert_eq!(old[4 + 16], 0);
        assert_eq!(old.len(), 4 + 23 + "Tick".len() + "c-1".len() + 2);
        // A version flag followed by version 0 is not believed.
        let mut zero = encode(&events[..1]);
        zero[4 + 17..4 + 21].copy_from_slice(&0u32.to_le_bytes());
        assert!(decode(&zero).is_none());
    }

    #[test]
    fn records_come_back_in_order_exactly_and_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = open(dir.path(), u64::MAX);
        journal
            .append(&[event(1, "{\"a\":1}"), event(2, "{}")])
            .unwrap();
        journal.append(&[event(3, "[1,2]")]).unwrap();
        assert_eq!(journal.backlog().0, 3);
        let first = journal.read_next().unwrap().unwrap();
        assert_eq!(sequences(&first), vec![1, 2]);
        assert_eq!(first.events[0].data(), b"{\"a\":1}");
        assert_eq!(first.events[0].correlation_id(), "c-1");
        assert_eq!(first.producer_id, "p1");
        // Read ahead before the first is consumed.
        assert_eq!(sequences(&journal.read_next().unwrap().unwrap()), vec![3]);
        assert!(journal.read_next().unwrap().is_none());
        journal.consume().unwrap();
        assert_eq!(journal.backlog().0, 1);
        journal.consume().unwrap();
        assert!(journal.read_next().unwrap().is_none());
        assert!(journal.is_empty());
    }

    #[test]
    fn a_fully_consumed_journal_leaves_no_segment_and_frees_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = open(dir.path(), 200);
        for round in 0..5u64 {
            // Each round would not fit twice in the budget if consumed bytes stayed counted.
            journal
                .append(&[
                    event(round * 2 + 1, &"x".repeat(60)),
                    event(round * 2 + 2, "y"),
                ])
                .unwrap();
            assert!(journal.read_next().unwrap().is_some());
            journal.consume().unwrap();
            assert_eq!(journal.backlog(), (0, 0), "round {round}");
        }
        let segments = fs::read_dir(dir.path().join("p1"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count();
        assert_eq!(segments, 0, "nothing left to replay at the next start");
    }

    #[test]
    fn reopened_journal_replays_what_was_not_consumed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut journal = open(dir.path(), u64::MAX);
            journal.append(&[event(1, "1")]).unwrap();
            journal.append(&[event(2, "2")]).unwrap();
            journal.sync().unwrap();
        }
        let mut journal = open(dir.path(), u64::MAX);
        assert_eq!(journal.backlog().0, 2);
        assert_eq!(sequences(&journal.read_next().unwrap().unwrap()), vec![1]);
    }

    #[test]
    fn journal_files_are_private_to_the_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut journal = open(dir.path(), u64::MAX);
        journal.append(&[event(1, "1")]).unwrap();
        journal.sync().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("p1")), 0o700);
        assert_eq!(mode(&segment_path(dir.path())), 0o600);
    }

    #[test]
    fn a_second_process_cannot_open_the_same_journal() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path(), u64::MAX);
        let error = Journal::open(
            dir.path(),
            "p1",
            u64::MAX,
            FsyncPolicy::Never,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(error.to_string().contains("in use"), "{error}");
    }

    #[test]
    fn records_written_out_of_order_replay_in_sequence_order_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut journal = open(dir.path(), u64::MAX);
            journal.append(&[event(10, "a"), event(11, "b")]).unwrap();
            journal.append(&[event(12, "c")]).unwrap();
            // At shutdown: an older unconfirmed batch, then the newest events.
            journal.append(&[event(5, "x"), event(6, "y")]).unwrap();
            journal.append(&[event(13, "z")]).unwrap();
            journal.sync().unwrap();
        }
        let mut journal = open(dir.path(), u64::MAX);
        let mut replayed = Vec::new();
        while let Some(record) = journal.read_next().unwrap() {
            replayed.extend(sequences(&record));
            journal.consume().unwrap();
        }
        assert_eq!(replayed, vec![5, 6, 10, 11, 12, 13]);
    }

    #[test]
    fn budget_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = open(dir.path(), 100);
        journal.append(&[event(1, "x")]).unwrap();
        let big = "y".repeat(200);
        assert!(matches!(
            journal.append(&[event(2, &big)]),
            Err(AppendError::Full)
        ));
        assert_eq!(
            journal.backlog().0,
            1,
            "the refused batch is not half-written"
        );
    }

    fn segment_path(dir: &Path) -> PathBuf {
        fs::read_dir(dir.join("p1"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap()
    }

    #[test]
    fn torn_write_at_the_tail_is_cut_and_the_rest_replays() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut journal = open(dir.path(), u64::MAX);
            journal.append(&[event(1, "first")]).unwrap();
            journal.append(&[event(2, "second")]).unwrap();
            journal.sync().unwrap();
        }
        let path = segment_path(dir.path());
        let length = fs::metadata(&path).unwrap().len();
        // A crash in the middle of writing the second record.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(length - 3)
            .unwrap();
        let mut journal = open(dir.path(), u64::MAX);
        assert_eq!(journal.corrupt_records, 1);
        assert_eq!(journal.backlog().0, 1);
        assert_eq!(sequences(&journal.read_next().unwrap().unwrap()), vec![1]);
        journal.consume().unwrap();
        assert!(journal.read_next().unwrap().is_none());
    }

    #[test]
    fn corrupt_record_is_detected_by_its_crc_and_never_shipped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut journal = open(dir.path(), u64::MAX);
            journal.append(&[event(1, "first")]).unwrap();
            journal.append(&[event(2, "second")]).unwrap();
            journal.sync().unwrap();
        }
        let path = segment_path(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff; // flip a byte of the second record's data
        fs::write(&path, bytes).unwrap();
        let mut journal = open(dir.path(), u64::MAX);
        assert_eq!(journal.corrupt_records, 1);
        let record = journal.read_next().unwrap().unwrap();
        assert_eq!(sequences(&record), vec![1]);
        assert_eq!(record.events[0].data(), b"first");
        journal.consume().unwrap();
        assert!(
            journal.read_next().unwrap().is_none(),
            "the corrupt record is not replayed"
        );
    }

    #[test]
    fn a_segment_deleted_from_outside_is_counted_lost_and_the_next_one_still_replays() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut journal = open(dir.path(), u64::MAX);
            journal.append(&[event(1, "a")]).unwrap();
            journal.append(&[event(5, "b")]).unwrap(); // not contiguous: a second segment
            journal.sync().unwrap();
        }
        let mut journal = open(dir.path(), u64::MAX);
        fs::remove_file(dir.path().join("p1").join(format!("{:020}.seg", 1))).unwrap();
        let record = journal.read_next().unwrap().unwrap();
        assert_eq!(sequences(&record), vec![5]);
        assert_eq!((journal.lost_events, journal.corrupt_records), (1, 1));
        journal.consume().unwrap();
        assert!(journal.is_empty());
    }

    #[test]
    fn garbage_file_is_rejected_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("p1")).unwrap();
        fs::write(
            dir.path().join("p1").join("00000000000000000001.seg"),
            [0xffu8; 64],
        )
        .unwrap();
        let mut journal = open(dir.path(), u64::MAX);
        assert_eq!(journal.corrupt_records, 1);
        assert!(journal.read_next().unwrap().is_none());
    }

    #[test]
    fn other_producers_journals_are_listed_for_replay() {
        let dir = tempfile::tempdir().unwrap();
        for id in ["old-a", "old-b", "me"] {
            fs::create_dir_all(dir.path().join(id)).unwrap();
        }
        assert_eq!(Journal::others(dir.path(), "me"), vec!["old-a", "old-b"]);
    }
}
