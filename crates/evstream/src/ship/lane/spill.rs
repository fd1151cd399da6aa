//! The ring to the spill journal: while Redis lags, and at shutdown for what could not be
//! delivered in time.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Lane;
use crate::publish::CapturedEvent;
use crate::ship::batch::{Origin, Status};
use crate::ship::journal::AppendError;

/// How long the final drain waits for a claim made before the shutdown to be written.
const STUCK_CLAIM: Duration = Duration::from_secs(1);

impl Lane {
    /// While the ring is past `spill_at_percent`, writes batches from it to the journal.
    pub(super) fn spill(&mut self) {
        let Some(journal) = &mut self.journal else {
            return;
        };
        let health = self.receiver.health();
        let threshold = health.capacity * u64::from(self.config.spill_at_percent) / 100;
        let max = self.config.batch_max;
        // Bounded per loop turn, so confirmations keep being processed.
        for _ in 0..64 {
            if self.receiver.health().depth < threshold.max(1) {
                break;
            }
            let room = max - self.forming.len();
            self.receiver.drain_into(&mut self.forming, room);
            match journal.append(&self.forming) {
                Ok(()) => {
                    self.state
                        .spilled
                        .fetch_add(self.forming.len() as u64, Ordering::Relaxed);
                    self.state.journal_full.store(false, Ordering::Relaxed);
                    let events = std::mem::take(&mut self.forming);
                    self.forming_since = None;
                    self.receiver.recycle(events);
                }
                Err(AppendError::Full) => {
                    // Stop draining: the ring fills and publish refuses, counted there.
                    self.state.journal_full.store(true, Ordering::Relaxed);
                    break;
                }
                Err(AppendError::Io(error)) => {
                    // The record was cut back: the events are still in `forming`, to be
                    // journaled again or shipped, never recycled.
                    if is_disk_full(&error) {
                        self.state.journal_full.store(true, Ordering::Relaxed);
                    }
                    self.state.set_error(format!(
                        "cannot write the spill journal (its events wait in memory): {error}"
                    ));
                    break;
                }
            }
        }
    }

    /// At shutdown: writes every undelivered event to the journal, in sequence order, for the
    /// next start. Returns (journaled, lost).
    pub(super) fn leave_rest_in_journal(&mut self) -> (u64, u64) {
        let mut batches: Vec<Vec<CapturedEvent>> = Vec::new();
        // Journal records Redis already confirmed (waiting behind an earlier batch) stay in
        // the journal, but are delivered: the next start will find them and skip them.
        let delivered_in_journals: u64 = self
            .queue
            .iter()
            .filter(|b| b.origin != Origin::Ring && matches!(b.status, Status::Confirmed))
            .map(|b| b.events.len() as u64)
            .sum();
        for batch in self.queue.drain(..) {
            // A batch read from a journal is still in it (counted in its backlog below).
            if batch.origin == Origin::Ring && !matches!(batch.status, Status::Confirmed) {
                batches.push(batch.events);
            }
        }
        let mut in_journals = self.journal.as_ref().map_or(0, |j| j.backlog().0);
        in_journals += self.replays.iter().map(|j| j.backlog().0).sum::<u64>();
        in_journals = in_journals.saturating_sub(delivered_in_journals);
        in_journals += self
            .stale
            .iter()
            .map(|s| s.journal.backlog().0)
            .sum::<u64>();
        batches.push(std::mem::take(&mut self.forming));
        // Refuse new events (publish returns `Closed`), then drain until every event accepted
        // before the close is out of the ring: the ring's close is a clean cut, so this
        // misses no publish that returned Ok, and waits only for claims being written.
        self.receiver.close();
        // Writing an event into its claim takes nanoseconds to microseconds; a claim still
        // open after a second belongs to a publisher that is stuck (a `Serialize` that
        // blocks): its events are counted undelivered rather than holding the shutdown.
        let give_up = Instant::now() + STUCK_CLAIM;
        let mut stuck = 0;
        loop {
            let mut rest = Vec::new();
            if self.receiver.drain_into(&mut rest, self.config.batch_max) == 0 {
                if self.receiver.is_drained() {
                    break;
                }
                if Instant::now() >= give_up {
                    stuck = self.receiver.health().depth;
                    tracing::error!(
                        events = stuck,
                        "events claimed before the shutdown are still being written after \
                         {STUCK_CLAIM:?} (a publisher blocked inside its event's Serialize?); \
                         they are counted undelivered"
                    );
                    break;
                }
                std::thread::yield_now();
                continue;
            }
            batches.push(rest);
        }
        let mut journaled = 0;
        let mut lost = stuck;
        for events in batches.into_iter().filter(|b| !b.is_empty()) {
            let count = events.len() as u64;
            let Some(journal) = self.journal.as_mut() else {
                lost += count;
                continue;
            };
            // A failed write was cut back and the next append starts a new segment: worth
            // one more try (a limit on file size holds per file; a full disk fails again).
            let appended = match journal.append(&events) {
                Err(AppendError::Io(_)) => journal.append(&events),
                other => other,
            };
            match appended {
                Ok(()) => journaled += count,
                Err(error) => {
                    let error = match error {
                        AppendError::Full => "its disk budget is used up".to_owned(),
                        AppendError::Io(error) => error.to_string(),
                    };
                    tracing::error!(
                        events = count,
                        %error,
                        "cannot journal undelivered events at shutdown; they are lost (counted undelivered)"
                    );
                    lost += count;
                }
            }
        }
        if let Some(journal) = &mut self.journal {
            // The records are in the files (the OS has them); this is for a power loss.
            if let Err(error) = journal.sync() {
                tracing::error!(%error, "cannot fsync the spill journal at shutdown; its records are written but may not survive a power loss");
            }
        }
        (journaled + in_journals, lost)
    }
}

/// Whether a write failed for want of room (disk or quota full, file size limit), not for a
/// failing disk: health then says `journal_full`.
fn is_disk_full(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge
    )
}
