//! A batch's way from read to commit: each entry classified (its
//! [`Verdict`](super::verdict::Verdict)), the batch's commit built and sent (pipelined for
//! new entries, one commit in flight), its outcome told to the handler, and the effects
//! derived from it written.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{Cmd, RedisError, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::commit::{self, CommitBuilder};
use super::decode::{shape_error, RawEntry};
use super::session::Session;
use super::verdict::Verdict;
use super::{ConsumeStats, Consumer, Effects, Handler, Outcome};

impl<H: Handler> Consumer<H> {
    /// Decodes, handles and commits one batch.
    pub(super) async fn process(
        &mut self,
        session: &mut Session,
        entries: Vec<RawEntry>,
    ) -> Result<(), RedisError> {
        let Some(prepared) = self.prepare(entries) else {
            return Ok(());
        };
        let reply = prepared
            .command
            .query_async::<Value>(&mut session.writer)
            .await;
        self.finish(&mut session.writer, prepared, reply).await
    }

    /// Processes new entries, pipelined: a task reads ahead (up to two batches: one read
    /// waiting to be taken, one under way) while a batch is handled, and the previous
    /// batch's commit is being applied by Redis, so that the handler's work and Redis's
    /// overlap. The previous commit's outcome is given to the handler (`on_commit`) after the
    /// current batch's `end_batch`: one commit in flight. Returns when a read comes back
    /// empty, when it is time to claim, or when the shutdown is asked for, with every entry
    /// read handled and every commit finished.
    pub(super) async fn process_new(
        &mut self,
        session: &mut Session,
        mut entries: Vec<RawEntry>,
        claim_at: Instant,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), RedisError> {
        // Only wait for more if some came: a quiet stream ends the pipeline at once.
        let command = self.read_command(">", Some(Duration::from_millis(1)));
        let keep_reading = Arc::new(AtomicBool::new(true));
        let (batches, mut read) = tokio::sync::mpsc::channel(1);
        let reader = session.reader.clone();
        let keep = Arc::clone(&keep_reading);
        tokio::spawn(async move {
            while keep.load(Ordering::Relaxed) {
                let batch = reader.read(&command).await;
                let last = !matches!(&batch, Ok(entries) if !entries.is_empty());
                if batches.send(batch).await.is_err() || last {
                    break;
                }
            }
        });
        let stop_reading = || keep_reading.store(false, Ordering::Relaxed);
        let mut in_flight: Option<(Prepared, JoinHandle<Result<Value, RedisError>>)> = None;
        loop {
            let mut prepared = self.prepare(entries);
            let commit = prepared.as_mut().map(|prepared| {
                let mut writer = session.writer.clone();
                // Moved to the task, not copied: `finish` does not need it.
                let command = std::mem::replace(&mut prepared.command, Cmd::new());
                tokio::spawn(async move { command.query_async::<Value>(&mut writer).await })
            });
            let previous = std::mem::replace(&mut in_flight, prepared.zip(commit));
            if let Some((prepared, commit)) = previous {
                let reply = join_redis(commit).await;
                if let Err(error) = self.finish(&mut session.writer, prepared, reply).await {
                    stop_reading();
                    self.drain(session, in_flight.take()).await;
                    return Err(error);
                }
            }
            if *stop.borrow() || Instant::now() >= claim_at {
                // What is read already is handled; nothing more is asked for.
                stop_reading();
            }
            let received = read.recv().await;
            if received.is_none() && keep_reading.load(Ordering::Relaxed) {
                // The reading task ended without a last (empty) batch: it panicked.
                self.drain(session, in_flight.take()).await;
                return Err(RedisError::from(std::io::Error::other(
                    "the reading task stopped unexpectedly",
                )));
            }
            entries = match received {
                Some(Ok(entries)) if !entries.is_empty() => entries,
                // The stream is quiet, or reading was stopped: done once the commit lands.
                Some(Ok(_)) | None => {
                    return match in_flight.take() {
                        Some((prepared, commit)) => {
                            let reply = join_redis(commit).await;
                            self.finish(&mut session.writer, prepared, reply).await
                        }
                        None => Ok(()),
                    };
                }
                Some(Err(error)) => {
                    stop_reading();
                    self.drain(session, in_flight.take()).await;
                    return Err(error);
                }
            };
        }
    }

    /// Finishes a commit in flight when the pipeline stops on an error: the handler still
    /// learns its outcome (every batch it handled gets exactly one `on_commit`).
    async fn drain(
        &mut self,
        session: &mut Session,
        in_flight: Option<(Prepared, JoinHandle<Result<Value, RedisError>>)>,
    ) {
        if let Some((prepared, commit)) = in_flight {
            let reply = join_redis(commit).await;
            if let Err(error) = self.finish(&mut session.writer, prepared, reply).await {
                self.failed(&error);
            }
        }
    }

    /// Decodes and handles a batch, and builds its commit (`None` when nothing is to be
    /// committed: every entry failed and waits for a retry).
    fn prepare(&mut self, entries: Vec<RawEntry>) -> Option<Prepared> {
        ConsumeStats::add(&self.stats.read, entries.len() as u64);
        // Per entry that will be part of the commit: what it stands for and its effects.
        let mut planned: Vec<(usize, Record, Effects)> = Vec::with_capacity(entries.len());
        // One envelope for the whole batch, its strings reused entry after entry.
        let mut event = std::mem::take(&mut self.envelope);
        for (index, entry) in entries.iter().enumerate() {
            let mut effects = self.spare_effects.pop().unwrap_or_default();
            effects.clear();
            let record = match self.classify(entry, &mut event, &mut effects) {
                Verdict::Deleted => {
                    effects.count("deleted_pending", 1);
                    Record::Other
                }
                Verdict::Apply {
                    event_id,
                    unvalidated,
                } => {
                    effects.count("processed", 1);
                    if unvalidated {
                        effects.count("unvalidated", 1);
                    }
                    Record::Handled {
                        event_id,
                        unvalidated,
                    }
                }
                Verdict::Skip { counter } => {
                    effects.count(counter, 1);
                    Record::Skipped
                }
                Verdict::Duplicate => {
                    effects.count("duplicates_skipped", 1);
                    Record::Duplicate
                }
                Verdict::LeavePending => {
                    tracing::debug!(id = %entry.id, event_id = %event.event_id, "the same event is in the commit in flight; left pending");
                    self.spare_effects.push(effects);
                    continue;
                }
                Verdict::Retry { reason, message } => {
                    ConsumeStats::add(&self.stats.failed_attempts, 1);
                    tracing::debug!(id = %entry.id, deliveries = entry.deliveries, reason, %message, "entry failed; left pending for a retry");
                    self.spare_effects.push(effects);
                    continue;
                }
                Verdict::DeadLetter { reason, message } => {
                    // Whatever a failing handler added is not applied.
                    effects.clear();
                    self.dead_letter(&mut effects, entry, reason, &message);
                    Record::DeadLetter
                }
            };
            planned.push((index, record, effects));
        }
        self.envelope = event;
        if planned.is_empty() {
            return None;
        }
        {
            let mut batch = Batch {
                entries: planned
                    .iter_mut()
                    .filter_map(|(_, record, effects)| match record {
                        Record::Handled { event_id, .. } => Some((*event_id, effects)),
                        _ => None,
                    })
                    .collect(),
            };
            self.handler.end_batch(&mut batch);
        }
        let mut builder = CommitBuilder::new(
            &self.sha,
            &self.keys.stream,
            &self.keys.counters,
            &self.config.group,
        );
        let mut records = Vec::with_capacity(planned.len());
        for (index, record, effects) in planned {
            builder.record(&entries[index].id, &effects);
            records.push((index, record));
            self.spare_effects.push(effects);
        }
        let (command, wanted) = builder.finish();
        Some(Prepared {
            command,
            wanted,
            records,
            entries,
        })
    }

    /// Reads the commit's reply, tells the handler, and writes what follows from it.
    async fn finish(
        &mut self,
        writer: &mut MultiplexedConnection,
        prepared: Prepared,
        reply: Result<Value, RedisError>,
    ) -> Result<(), RedisError> {
        let Prepared {
            wanted,
            records,
            entries,
            ..
        } = prepared;
        let results =
            reply.and_then(|reply| commit::parse_reply(reply, &wanted).map_err(shape_error));
        let results = match results {
            Ok(results) => results,
            Err(error) => {
                // Outcome unknown: whatever this commit did, it did atomically, and the
                // entries it did not acknowledge stay pending. The handler learns that
                // none of them is known to be applied by this consumer.
                let now = Instant::now();
                let outcomes: Vec<Outcome> = records
                    .iter()
                    .filter_map(|(index, record)| match record {
                        Record::Handled { event_id, .. } => Some(Outcome {
                            event_id: *event_id,
                            stream_id: entries[*index].id.clone(),
                            applied: false,
                            replies: Vec::new(),
                        }),
                        _ => None,
                    })
                    .collect();
                for outcome in &outcomes {
                    self.recent.settle(outcome.event_id, false, now);
                }
                self.handler.on_commit(&outcomes);
                return Err(error);
            }
        };
        let now = Instant::now();
        let mut outcomes = Vec::with_capacity(results.len());
        let mut effect_failures = Vec::new();
        for ((index, record), result) in records.iter().zip(results) {
            let applied = result.status != 0;
            if !applied {
                ConsumeStats::add(&self.stats.duplicates_skipped, 1);
            }
            if result.status == 2 {
                effect_failures.push((*index, result.error));
            }
            match record {
                Record::Handled {
                    event_id,
                    unvalidated,
                } => {
                    if applied {
                        ConsumeStats::add(&self.stats.processed, 1);
                        if *unvalidated {
                            ConsumeStats::add(&self.stats.unvalidated, 1);
                        }
                    }
                    self.recent.settle(*event_id, applied, now);
                    outcomes.push(Outcome {
                        event_id: *event_id,
                        stream_id: entries[*index].id.clone(),
                        applied,
                        replies: result.replies,
                    });
                }
                Record::DeadLetter if applied => ConsumeStats::add(&self.stats.dead_lettered, 1),
                Record::Skipped if applied => ConsumeStats::add(&self.stats.skipped, 1),
                Record::Duplicate if applied => {
                    ConsumeStats::add(&self.stats.duplicates_skipped, 1);
                }
                _ => {}
            }
        }
        self.handler.on_commit(&outcomes);
        if !effect_failures.is_empty() {
            self.record_effect_failures(writer, &entries, effect_failures)
                .await?;
        }
        let mut effects = self.spare_effects.pop().unwrap_or_default();
        effects.clear();
        self.handler.flush(&mut effects);
        let derived = (!effects.is_empty()).then(|| {
            let mut builder = CommitBuilder::new(
                &self.sha,
                &self.keys.stream,
                &self.keys.counters,
                &self.config.group,
            );
            builder.record("", &effects);
            builder.finish().0
        });
        self.spare_effects.push(effects);
        if let Some(derived) = derived {
            // Not waited for here (the pipeline goes on); the previous one is, and its error
            // is reported.
            let mut connection = writer.clone();
            let flushing =
                tokio::spawn(async move { derived.query_async::<()>(&mut connection).await });
            if let Some(previous) = self.flushing.replace(flushing) {
                join_redis(previous).await?;
            }
        }
        Ok(())
    }

    /// Waits for the last derived effects sent by [`finish`](Self::finish).
    pub(super) async fn wait_for_flush(&mut self) {
        if let Some(flushing) = self.flushing.take() {
            if let Err(error) = join_redis(flushing).await {
                self.failed(&error);
            }
        }
    }
}

/// A batch handled and ready to commit.
pub(super) struct Prepared {
    command: Cmd,
    /// Replies wanted per record.
    wanted: Vec<usize>,
    /// Per record: the entry's index in `entries` and what it stands for.
    records: Vec<(usize, Record)>,
    entries: Vec<RawEntry>,
}

/// The effects of every entry of a batch, for [`Handler::end_batch`].
#[derive(Debug)]
pub struct Batch<'a> {
    entries: Vec<(uuid::Uuid, &'a mut Effects)>,
}

impl Batch<'_> {
    /// The effects of the entry holding `event_id`, if it was handled in this batch.
    pub fn effects(&mut self, event_id: &uuid::Uuid) -> Option<&mut Effects> {
        self.entries
            .iter_mut()
            .find(|(id, _)| id == event_id)
            .map(|(_, effects)| &mut **effects)
    }

    /// Number of entries handled in this batch.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry was handled.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What one record of a commit stands for.
enum Record {
    Handled {
        event_id: uuid::Uuid,
        /// Handed over without validation: a type the registry does not know.
        unvalidated: bool,
    },
    DeadLetter,
    Skipped,
    /// An event applied before, in another entry.
    Duplicate,
    Other,
}

/// The result of a spawned Redis call (a panicked task reads as an I/O error).
pub(super) async fn join_redis<T>(
    task: tokio::task::JoinHandle<Result<T, RedisError>>,
) -> Result<T, RedisError> {
    task.await.unwrap_or_else(|error| {
        Err(RedisError::from(std::io::Error::other(format!(
            "redis call task failed: {error}"
        ))))
    })
}
