//! The journals earlier processes left: found at start, replayed before anything newer, and
//! those older than the high-water mark's lifetime vetted against Redis first.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Lane;
use crate::config::ShipConfig;
use crate::error::ShipError;
use crate::publish::wall_clock_ns;
use crate::ship::append::Keys;
use crate::ship::batch::AttemptError;
use crate::ship::journal::Journal;

/// This producer's journal and the journals earlier processes left, as found at start.
pub(super) struct Journals {
    pub(super) own: Option<Journal>,
    pub(super) replays: VecDeque<Journal>,
    pub(super) stale: Vec<StaleJournal>,
}

/// A journal of an earlier process whose oldest events are older than `ship.dedupe_ttl_s`:
/// its producer's high-water mark may have expired, and without it the append guard cannot
/// tell which events Redis already has. It is replayed only once the mark is found in Redis.
pub(super) struct StaleJournal {
    pub(super) journal: Journal,
    /// How old its oldest event is.
    pub(super) age: Duration,
}

/// Opens this producer's journal and the journals earlier processes left to replay.
pub(super) fn open_journals(ship: &ShipConfig, producer_id: &str) -> Result<Journals, ShipError> {
    let Some(root) = &ship.journal_dir else {
        tracing::warn!(
            "no ship.journal_dir: during a Redis outage longer than the ring absorbs (a few \
             seconds at full rate), publish will refuse events; set ship.journal_dir to a \
             local directory (docs/deployment.md)"
        );
        return Ok(Journals {
            own: None,
            replays: VecDeque::new(),
            stale: Vec::new(),
        });
    };
    let open = |id: &str| {
        Journal::open(
            root,
            id,
            ship.journal_budget_mb.saturating_mul(1024 * 1024),
            ship.journal_fsync,
            Duration::from_millis(ship.journal_fsync_interval_ms),
        )
    };
    let own = open(producer_id).map_err(|source| ShipError::Journal {
        dir: root.clone(),
        source,
    })?;
    let mut replays = VecDeque::new();
    let mut stale = Vec::new();
    let mark_ttl = Duration::from_secs(ship.dedupe_ttl_s);
    for id in Journal::others(root, producer_id) {
        match open(&id) {
            Ok(journal) if journal.is_empty() => {
                let _ = journal.remove_if_empty();
            }
            Ok(journal) => {
                // Unreadable: the replay reads it as it can and counts what it cannot.
                let oldest = journal.oldest_timestamp_ns().ok().flatten();
                let age = oldest.map_or(Duration::ZERO, |ns| {
                    Duration::from_nanos(wall_clock_ns().saturating_sub(ns))
                });
                let events = journal.backlog().0;
                if age <= mark_ttl {
                    tracing::info!(producer_id = %id, events, "replaying journal");
                    replays.push_back(journal);
                } else if ship.replay_stale_journals {
                    tracing::warn!(
                        producer_id = %id,
                        events,
                        age_s = age.as_secs(),
                        "replaying a journal older than ship.dedupe_ttl_s because \
                         ship.replay_stale_journals is set: events Redis already has are \
                         appended again if the producer's high-water mark has expired"
                    );
                    replays.push_back(journal);
                } else {
                    tracing::info!(
                        producer_id = %id,
                        events,
                        age_s = age.as_secs(),
                        "journal older than ship.dedupe_ttl_s: replayed only if its producer's \
                         high-water mark is still in Redis"
                    );
                    stale.push(StaleJournal { journal, age });
                }
            }
            // Held by a live process: it is that process's to ship.
            Err(error) => tracing::debug!(%error, "journal not replayed"),
        }
    }
    Ok(Journals {
        own: Some(own),
        replays,
        stale,
    })
}

impl Lane {
    /// Checks, for each journal older than the high-water mark's lifetime, whether its
    /// producer's mark is still in Redis: then the append guard skips what Redis has and the
    /// journal is replayed; otherwise it is refused (left on disk, logged, counted), since a
    /// replay could append again events delivered before.
    pub(super) async fn vet_stale_journals(&mut self) {
        let Some(connection) = &self.connection else {
            return;
        };
        let mut connection = connection.clone();
        let mut marks = redis::pipe();
        for stale in &self.stale {
            let keys = Keys::new(&self.settings.keys.stream, stale.journal.producer_id());
            marks.exists(keys.high_water_mark);
        }
        let timeout = self.timeout().max(Duration::from_millis(500));
        let answer = tokio::time::timeout(timeout, marks.query_async::<Vec<bool>>(&mut connection));
        let exists = match answer.await {
            Ok(Ok(exists)) => exists,
            Ok(Err(error)) => return self.failed(Instant::now(), &AttemptError::Redis(error)),
            Err(_) => return self.failed(Instant::now(), &AttemptError::Timeout(timeout)),
        };
        let ttl = self.config.dedupe_ttl_s;
        for (stale, marked) in std::mem::take(&mut self.stale).into_iter().zip(exists) {
            let producer_id = stale.journal.producer_id().to_owned();
            if marked {
                tracing::info!(
                    %producer_id,
                    events = stale.journal.backlog().0,
                    "replaying a journal older than ship.dedupe_ttl_s: its producer's \
                     high-water mark is still in Redis"
                );
                self.replays.push_back(stale.journal);
                continue;
            }
            let message = format!(
                "journal {dir} not replayed: its oldest event is {age} h old, older than \
                 ship.dedupe_ttl_s ({ttl} s), and producer {producer_id}'s high-water mark is \
                 gone from Redis, so nothing tells which of its {events} events the stream \
                 already has. If none of them reached the stream (look for producer_id \
                 {producer_id} there), start once with ship.replay_stale_journals = true; \
                 otherwise move the directory out of ship.journal_dir (docs/operations.md, \
                 \"A journal older than the mark\")",
                dir = stale.journal.dir().display(),
                age = stale.age.as_secs() / 3600,
                events = stale.journal.backlog().0,
            );
            tracing::error!(%message, "stale journal refused");
            self.state.journals_refused.fetch_add(1, Ordering::Relaxed);
            self.state.set_error(message);
            // Dropping it releases its lock; the files stay.
        }
    }
}
