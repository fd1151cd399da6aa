//! Sending a lane's batches, up to `ship.in_flight` at once, and confirming them in order:
//! what each answer does to the queue, the breaker and the counters.

use std::sync::atomic::Ordering;
use std::time::Instant;

use redis::RedisError;

use super::{Lane, IDLE_POLL};
use crate::ship::append::{Keys, Outcome};
use crate::ship::batch::{Attempt, AttemptError, Batch, Origin, Status};
use crate::ship::breaker::Transition;
use crate::ship::health::lock;
use crate::ship::journal::Journal;
use crate::ship::BreakerState;

impl Lane {
    pub(super) fn send_ready(&mut self, now: Instant) {
        let Some(connection) = &self.connection else {
            return;
        };
        let timeout = self.timeout();
        let mut in_flight = self
            .queue
            .iter()
            .filter(|b| matches!(b.status, Status::InFlight(_)))
            .count();
        for batch in self.queue.iter_mut() {
            if in_flight >= self.config.in_flight {
                break;
            }
            match batch.status {
                Status::Confirmed | Status::InFlight(_) => continue,
                Status::Unsent => {}
            }
            if !self.breaker.allow(now) {
                break;
            }
            let mut connection = connection.clone();
            let request = batch.request.clone();
            let replicas = self.config.min_replicas_ack;
            let mark = (replicas > 0).then(|| {
                (
                    Keys::new(&self.settings.keys.stream, &batch.producer_id).high_water_mark,
                    self.settings.high_water_mark_ttl_ms,
                )
            });
            batch.status = Status::InFlight(tokio::spawn(async move {
                let started = Instant::now();
                let attempt = async {
                    let outcome = request
                        .send(&mut connection)
                        .await
                        .map_err(AttemptError::Redis)?;
                    if let (Some((mark, ttl_ms)), Outcome::Handled { .. }) = (&mark, &outcome) {
                        // `WAIT` counts replicas that have this connection's writes. A retry
                        // that found its batch appended already wrote nothing (and a new
                        // connection has no writes): refreshing the mark's lifetime is a
                        // write after the batch's, so the `WAIT` covers the batch either way.
                        let (_, acknowledged): (i64, u64) = redis::pipe()
                            .cmd("PEXPIRE")
                            .arg(mark)
                            .arg(*ttl_ms)
                            .cmd("WAIT")
                            .arg(replicas)
                            .arg((timeout.as_millis() as u64 / 2).max(1))
                            .query_async(&mut connection)
                            .await
                            .map_err(AttemptError::Redis)?;
                        if acknowledged < u64::from(replicas) {
                            return Err(AttemptError::Unreplicated {
                                acknowledged,
                                wanted: replicas,
                            });
                        }
                    }
                    Ok(outcome)
                };
                match tokio::time::timeout(timeout, attempt).await {
                    Ok(Ok(outcome)) => {
                        metrics::histogram!("evstream_batch_duration_seconds")
                            .record(started.elapsed().as_secs_f64());
                        Ok(outcome)
                    }
                    Ok(Err(error)) => Err(error),
                    Err(_) => Err(AttemptError::Timeout(timeout)),
                }
            }));
            in_flight += 1;
        }
    }

    pub(super) fn first_in_flight(&self) -> Option<usize> {
        self.queue
            .iter()
            .position(|b| matches!(b.status, Status::InFlight(_)))
    }

    /// Waits for the oldest in-flight batch, the next poll, a retry time, or shutdown.
    pub(super) async fn wait(&mut self, now: Instant, deadline: Option<Instant>) {
        // Wake at least every poll interval, even while backing off or with the breaker
        // open: the ring must keep moving to the journal during an outage.
        let mut wake = now + IDLE_POLL;
        if let Some(deadline) = deadline {
            wake = wake.min(deadline.max(now));
        }
        let index = self.first_in_flight();
        let Self {
            queue,
            shutdown,
            failovers,
            ..
        } = self;
        let promoted = async {
            match failovers {
                Some(failovers) => failovers.promoted().await,
                None => std::future::pending().await,
            }
        };
        let answer = async {
            match index.and_then(|i| queue.get_mut(i)) {
                Some(Batch {
                    status: Status::InFlight(handle),
                    ..
                }) => handle.await,
                _ => std::future::pending().await,
            }
        };
        let mut promotion = None;
        let finished = tokio::select! {
            biased;
            answer = answer => Some(answer),
            master = promoted => {
                promotion = Some(master);
                None
            }
            _ = shutdown.changed(), if deadline.is_none() => None,
            _ = tokio::time::sleep_until(wake.into()) => None,
        };
        if promotion.is_some() {
            self.promoted();
        }
        if let (Some(index), Some(joined)) = (index, finished) {
            let attempt = joined.unwrap_or_else(|join_error| {
                Err(AttemptError::Redis(RedisError::from(
                    std::io::Error::other(format!("batch task failed: {join_error}")),
                )))
            });
            self.answered(index, attempt);
        }
    }

    fn answered(&mut self, index: usize, attempt: Attempt) {
        let now = Instant::now();
        match attempt {
            Ok(Outcome::Handled {
                added,
                dead,
                skipped,
            }) => {
                self.succeeded(now);
                self.backoff.reset();
                self.state.connected.store(true, Ordering::Relaxed);
                let batch = &mut self.queue[index];
                batch.status = Status::Confirmed;
                self.account(index, added, dead, skipped);
                while matches!(
                    self.queue.front().map(|b| &b.status),
                    Some(Status::Confirmed)
                ) {
                    let Some(batch) = self.queue.pop_front() else {
                        break;
                    };
                    let consumed = match batch.origin {
                        Origin::Ring => Ok(()),
                        Origin::Journal => self.journal.as_mut().map_or(Ok(()), Journal::consume),
                        Origin::Replay => self.replays.front_mut().map_or(Ok(()), Journal::consume),
                    };
                    if let Err(error) = consumed {
                        self.state
                            .set_error(format!("cannot advance the journal: {error}"));
                    }
                    if batch.origin == Origin::Ring {
                        self.receiver.recycle(batch.events);
                    }
                }
            }
            Ok(Outcome::Gap { mark }) => {
                let earlier_unconfirmed = self
                    .queue
                    .iter()
                    .take(index)
                    .any(|b| !matches!(b.status, Status::Confirmed));
                let batch = &mut self.queue[index];
                batch.status = Status::Unsent;
                if !earlier_unconfirmed {
                    // Nothing earlier will fill the gap: those sequences never reached us
                    // (a bug or a lost journal). Say so loudly and move on.
                    let first = batch.first_sequence();
                    let message = format!(
                        "sequences {}..{} of producer {} are missing before this batch; \
                         appending it anyway",
                        mark + 1,
                        first.saturating_sub(1),
                        batch.producer_id
                    );
                    tracing::error!(%message, "sequence gap");
                    self.state.set_error(message);
                    let events = std::mem::take(&mut batch.events);
                    let origin = batch.origin;
                    let producer_id = self.producer_of(index);
                    let rebuilt = self.build(origin, &producer_id, events, true);
                    self.queue[index] = rebuilt;
                }
                // Redis answered: the breaker must not stay half-open waiting for a probe.
                self.succeeded(now);
                self.recovering = true;
            }
            Ok(Outcome::Stopped { error, .. }) => {
                self.queue[index].status = Status::Unsent;
                self.failed(
                    now,
                    &AttemptError::Redis(RedisError::from(std::io::Error::other(format!(
                        "Redis refused an entry and its dead letter: {error}"
                    )))),
                );
            }
            Err(error) => {
                self.queue[index].status = Status::Unsent;
                if error.is_noscript() {
                    // Someone flushed the script cache: reload it on a fresh connection.
                    self.connection = None;
                }
                self.failed(now, &error);
            }
        }
    }

    /// Sentinel announced a new master: reconnect to it as soon as the batches in flight on
    /// the old connection have answered (they fail, or land on a master that is still
    /// writable; the guard keeps order either way), without waiting for a retry delay or the
    /// breaker's cool-down.
    fn promoted(&mut self) {
        self.connection = None;
        self.state.connected.store(false, Ordering::Relaxed);
        self.backoff.reset();
        self.recovering = true;
        self.retry_at = None;
        self.breaker.new_server(Instant::now());
    }

    fn producer_of(&self, index: usize) -> String {
        self.queue[index].producer_id.clone()
    }

    fn account(&mut self, index: usize, added: u64, dead: u64, skipped: u64) {
        let batch = &self.queue[index];
        let state = &self.state;
        state.batches_ok.fetch_add(1, Ordering::Relaxed);
        state.skipped.fetch_add(skipped, Ordering::Relaxed);
        if skipped == 0 || batch.origin == Origin::Replay {
            // A replayed journal's skipped events were shipped by the process that wrote it.
            state.shipped.fetch_add(added, Ordering::Relaxed);
        } else {
            // Part of this batch landed in an attempt whose answer we never got: everything
            // not dead-lettered is in the stream now.
            let poisoned = batch.poison.iter().filter(|p| p.is_some()).count() as u64;
            let in_stream = batch.events.len() as u64 - poisoned;
            state.shipped.fetch_add(in_stream, Ordering::Relaxed);
        }
        let mut letters = lock(&state.dead_letters);
        let mut poisoned = 0;
        for poison in batch.poison.iter().flatten() {
            *letters.entry(poison.reason.to_owned()).or_default() += 1;
            poisoned += 1;
        }
        if dead > poisoned {
            *letters.entry("redis_rejected".to_owned()).or_default() += dead - poisoned;
        }
    }

    /// Redis handled a batch: closes the breaker, and says so if it was open.
    fn succeeded(&mut self, now: Instant) {
        if let Transition::Closed(after) = self.breaker.on_success(now) {
            tracing::info!(
                stream = %self.settings.keys.stream,
                paused_ms = after.as_millis() as u64,
                "circuit breaker closed: shipping resumed after {after:.1?}"
            );
        }
    }

    pub(super) fn failed(&mut self, now: Instant, error: &AttemptError) {
        // One line per failure while shipping; while the breaker is open (a server away for
        // long), only its transitions reach the default log level.
        if self.breaker.state(now) == BreakerState::Closed {
            tracing::warn!(%error, "batch failed; will retry");
        } else {
            tracing::debug!(%error, "batch failed; will retry");
        }
        self.state.batches_failed.fetch_add(1, Ordering::Relaxed);
        self.state.set_error(error.to_string());
        if error.breaks_connection() {
            self.connection = None;
            self.state.connected.store(false, Ordering::Relaxed);
        }
        match self.breaker.on_failure(now) {
            Transition::Opened(cool_down) => tracing::warn!(
                stream = %self.settings.keys.stream,
                %error,
                "circuit breaker opened after {} consecutive failures: shipping paused, events \
                 wait in the ring{}; next probe in {cool_down:?}, or as soon as a new \
                 connection's handshake succeeds",
                self.config.breaker_threshold,
                if self.journal.is_some() { " and the journal" } else { "" },
            ),
            Transition::Reopened(cool_down) => tracing::warn!(
                stream = %self.settings.keys.stream,
                %error,
                "circuit breaker probe failed; next probe in {cool_down:?}"
            ),
            Transition::None | Transition::Closed(_) => {}
        }
        self.recovering = true;
        self.retry_at = Some(now + self.backoff.next_delay());
    }
}
