//! The consumer's session: its two connections, the loop that keeps them (reconnecting
//! with backoff, at once on a Sentinel promotion) and reads from them: its own pending
//! entries first, then new ones, with a claim of idle entries every `min(min_idle / 2, 5 s)`.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, RedisError, Value};
use tokio::sync::watch;

use super::decode::{self, RawEntry};
use super::{commit, reader, ConsumeReport, ConsumeStats, Consumer, Handler};
use crate::publish::wall_clock_ns;
use crate::redis::Backoff;
use crate::redis::FailoverWatch;

/// The two connections of a running consumer.
pub(super) struct Session {
    /// Only for `XREADGROUP … BLOCK`.
    pub(super) reader: reader::Reader,
    /// Its `CLIENT ID`, to unblock it at shutdown.
    pub(super) reader_id: Option<i64>,
    /// Everything else, each call with the `consume.timeout_ms` deadline.
    pub(super) writer: MultiplexedConnection,
}

/// Where reading stands.
enum ReadFrom {
    /// Own pending entries after this id (`0` from the start).
    OwnPending(String),
    /// `XAUTOCLAIM` from this cursor.
    Claim(String),
    /// New entries.
    New,
}

impl<H: Handler> Consumer<H> {
    /// Runs until `shutdown` completes, then stops reading, finishes and acknowledges the
    /// entries in hand, and returns the final counters. Redis errors never end the run: every
    /// call is retried with backoff (and the connections re-made) until it succeeds or the
    /// shutdown comes; entries not acknowledged by then stay pending for the group.
    pub async fn run<F>(mut self, shutdown: F) -> ConsumeReport
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop_tx, mut stop) = watch::channel(false);
        let watcher = tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        // Retries within a second at most: a restarted server or a new master is found
        // within a second of coming up (at once when Sentinel announces it).
        let mut backoff = Backoff::new(
            Duration::from_millis(10),
            Duration::from_secs(1),
            wall_clock_ns() ^ u64::from(std::process::id()),
        );
        let mut failovers = FailoverWatch::start(&self.client);
        let claim_every =
            (self.min_idle() / 2).clamp(Duration::from_millis(10), Duration::from_secs(5));
        let mut session: Option<Session> = None;
        let mut read_from = ReadFrom::OwnPending("0".to_owned());
        let mut claim_at = Instant::now();

        while !*stop.borrow() {
            let Some(connected) = session.as_mut() else {
                match self.connect().await {
                    Ok(connected) => {
                        session = Some(connected);
                        // A new server may hold another registry: look at its revision now.
                        self.schemas.check_now();
                        // After any reconnect, what this consumer was given before comes first.
                        read_from = ReadFrom::OwnPending("0".to_owned());
                    }
                    Err(error) => {
                        self.failed(&error);
                        if retry_after(backoff.next_delay(), &mut stop, &mut failovers).await {
                            backoff.reset();
                        }
                    }
                }
                continue;
            };
            if let Err(error) = self.schemas.refresh(&mut connected.writer).await {
                self.failed(&error);
            }
            let reading_new = matches!(read_from, ReadFrom::New);
            let step = match &read_from {
                ReadFrom::OwnPending(after) => {
                    let after = after.clone();
                    self.read_own_pending(connected, &after)
                        .await
                        .map(|(entries, next)| {
                            read_from = next.map_or(ReadFrom::New, ReadFrom::OwnPending);
                            entries
                        })
                }
                ReadFrom::Claim(cursor) => {
                    let cursor = cursor.clone();
                    self.claim(connected, &cursor).await.map(|(entries, next)| {
                        if next == "0-0" {
                            claim_at = Instant::now() + claim_every;
                            read_from = ReadFrom::New;
                        } else {
                            read_from = ReadFrom::Claim(next);
                        }
                        entries
                    })
                }
                ReadFrom::New if Instant::now() >= claim_at => {
                    read_from = ReadFrom::Claim("0-0".to_owned());
                    continue;
                }
                ReadFrom::New => {
                    let block = claim_at.saturating_duration_since(Instant::now());
                    self.read_new(connected, block, &mut stop).await
                }
            };
            let result = match step {
                Ok(entries) if entries.is_empty() => Ok(()),
                Ok(entries) if reading_new => {
                    let processed = self
                        .process_new(connected, entries, claim_at, &mut stop)
                        .await;
                    if processed.is_err() {
                        // Batches read ahead were given up: they are this consumer's own
                        // pending entries now; take them first, in order.
                        read_from = ReadFrom::OwnPending("0".to_owned());
                    }
                    processed
                }
                Ok(entries) => self.process(connected, entries).await,
                Err(error) => Err(error),
            };
            match result {
                Ok(()) => {
                    backoff.reset();
                    self.stats.connected.store(true, Ordering::Relaxed);
                }
                Err(error) => {
                    self.failed(&error);
                    if error.code() == Some("NOGROUP") {
                        if let Err(error) = self.ensure_group(&mut connected.writer).await {
                            self.failed(&error);
                        }
                    } else if breaks_session(&error) {
                        session = None;
                    }
                    if retry_after(backoff.next_delay(), &mut stop, &mut failovers).await {
                        // A new master: whatever failed on the old one, start afresh.
                        session = None;
                        backoff.reset();
                    }
                }
            }
        }
        self.wait_for_flush().await;
        watcher.abort();
        self.stats.snapshot()
    }

    fn min_idle(&self) -> Duration {
        Duration::from_millis(self.config.min_idle_ms)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    pub(super) fn failed(&self, error: &RedisError) {
        ConsumeStats::add(&self.stats.redis_errors, 1);
        if breaks_session(error) {
            self.stats.connected.store(false, Ordering::Relaxed);
        }
        tracing::warn!(group = %self.config.group, consumer = %self.name, %error, "redis call failed; retrying");
        *self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
    }

    async fn connect(&self) -> Result<Session, RedisError> {
        let timeout = self.timeout();
        let block = Duration::from_millis(self.config.block_ms);
        let setup = async {
            // Both connections to the same server (the master Sentinel names now).
            let client = self.client.client().await?;
            let name = format!("evstream-consume:{}:{}", self.config.group, self.name);
            // A blocking read answers after up to `block`; only a dead server takes longer.
            let (reader, reader_id) =
                reader::Reader::open(&client, timeout, block + timeout, &name).await?;
            let mut writer = client
                .get_multiplexed_async_connection_with_config(
                    &AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(timeout))
                        .set_response_timeout(Some(timeout)),
                )
                .await?;
            crate::redis::name_connection(&mut writer, &name).await;
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(commit::SCRIPT)
                .query_async::<String>(&mut writer)
                .await?;
            self.ensure_group(&mut writer).await?;
            Ok(Session {
                reader,
                reader_id,
                writer,
            })
        };
        tokio::time::timeout(timeout * 3 + self.client.lookup_budget(), setup)
            .await
            .unwrap_or_else(|_| {
                Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to Redis took longer than {:?}", timeout * 3),
                )))
            })
    }

    /// Creates the group (and the stream) unless it exists.
    async fn ensure_group(&self, writer: &mut MultiplexedConnection) -> Result<(), RedisError> {
        let created = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys.stream)
            .arg(&self.config.group)
            .arg(&self.config.start_id)
            .arg("MKSTREAM")
            .query_async::<()>(writer)
            .await;
        match created {
            Ok(()) => {
                tracing::info!(group = %self.config.group, stream = %self.keys.stream, start_id = %self.config.start_id, "consumer group created");
                Ok(())
            }
            Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn read_own_pending(
        &self,
        session: &mut Session,
        after: &str,
    ) -> Result<(Vec<RawEntry>, Option<String>), RedisError> {
        let reply: Value = self
            .read_command(after, None)
            .query_async(&mut session.writer)
            .await?;
        let mut entries = decode::read_reply(reply).map_err(decode::shape_error)?;
        let next = (entries.len() >= self.config.count)
            .then(|| entries.last().map(|e| e.id.clone()))
            .flatten();
        self.fill_deliveries(&mut session.writer, &mut entries, 1)
            .await?;
        Ok((entries, next))
    }

    async fn claim(
        &self,
        session: &mut Session,
        cursor: &str,
    ) -> Result<(Vec<RawEntry>, String), RedisError> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.keys.stream)
            .arg(&self.config.group)
            .arg(&self.name)
            .arg(self.config.min_idle_ms)
            .arg(cursor)
            .arg("COUNT")
            .arg(self.config.count)
            .query_async(&mut session.writer)
            .await?;
        let (next, mut entries, deleted) =
            decode::autoclaim_reply(reply).map_err(decode::shape_error)?;
        if !deleted.is_empty() {
            // Redis already dropped these from the pending list: they were trimmed away
            // before anyone acknowledged them.
            ConsumeStats::add(&self.stats.deleted, deleted.len() as u64);
            tracing::warn!(count = deleted.len(), group = %self.config.group, "pending entries were deleted from the stream before being processed");
        }
        ConsumeStats::add(&self.stats.claimed, entries.len() as u64);
        // A claimed entry was delivered at least once before this claim.
        self.fill_deliveries(&mut session.writer, &mut entries, 2)
            .await?;
        Ok((entries, next))
    }

    async fn read_new(
        &self,
        session: &mut Session,
        block: Duration,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Vec<RawEntry>, RedisError> {
        let block = block.clamp(
            Duration::from_millis(1),
            Duration::from_millis(self.config.block_ms),
        );
        let command = self.read_command(">", Some(block));
        let Session {
            reader,
            reader_id,
            writer,
        } = session;
        let read = reader.read(&command);
        tokio::pin!(read);
        let mut unblocked = false;
        loop {
            tokio::select! {
                entries = &mut read => break entries,
                _ = stop.changed(), if !unblocked => {
                    unblocked = true;
                    // Wake the blocked read (it returns what it has, possibly nothing);
                    // without the right, it ends at its BLOCK timeout.
                    if let Some(id) = reader_id {
                        let _ = redis::cmd("CLIENT").arg("UNBLOCK").arg(*id)
                            .query_async::<i64>(writer).await;
                    }
                }
            }
        }
    }

    pub(super) fn read_command(&self, after: &str, block: Option<Duration>) -> Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.config.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(self.config.count);
        if let Some(block) = block {
            cmd.arg("BLOCK")
                .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX));
        }
        cmd.arg("STREAMS").arg(&self.keys.stream).arg(after);
        cmd
    }

    /// Sets each entry's delivery count from `XPENDING`; an entry not found there
    /// (acknowledged meanwhile) gets `at_least`.
    ///
    /// One call covers the batch's id range, with room, but this consumer's own pending
    /// entries between the first and the last that are not in the batch (failures waiting
    /// for a retry, fresh ones `XAUTOCLAIM` stepped over) come back too, and there may be any
    /// number of them: a page that came back full is followed by another, from the first
    /// entry of the batch past it, until every entry is found or the range is exhausted. A
    /// count read short would let a poison entry escape `max_deliveries` (issue 18).
    async fn fill_deliveries(
        &self,
        writer: &mut MultiplexedConnection,
        entries: &mut [RawEntry],
        at_least: u64,
    ) -> Result<(), RedisError> {
        let Some(last) = entries.last().map(|e| e.id.clone()) else {
            return Ok(());
        };
        let page = entries.len() * 4 + 64;
        let mut counts: std::collections::HashMap<String, u64> =
            std::collections::HashMap::with_capacity(entries.len());
        // Entries before `next` are settled: found, or not pending.
        let mut next = 0;
        while let Some(start) = entries.get(next) {
            let reply: Value = redis::cmd("XPENDING")
                .arg(&self.keys.stream)
                .arg(&self.config.group)
                .arg(&start.id)
                .arg(&last)
                .arg(page)
                .arg(&self.name)
                .query_async(writer)
                .await?;
            let rows = decode::pending_reply(reply).map_err(decode::shape_error)?;
            let full = rows.len() >= page;
            let reached = rows.last().map(|(id, _)| decode::parse_id(id));
            counts.extend(rows);
            match reached {
                Some(Some(reached)) if full => {
                    next += entries[next..].partition_point(|e| {
                        decode::parse_id(&e.id).is_some_and(|id| id <= reached)
                    });
                }
                _ => break,
            }
        }
        for entry in entries {
            entry.deliveries = counts
                .get(&entry.id)
                .copied()
                .unwrap_or(at_least)
                .max(at_least);
        }
        Ok(())
    }
}

/// Whether an error means the connections must be made again.
pub(super) fn breaks_session(error: &RedisError) -> bool {
    // Including a master demoted by a failover or a moved cluster slot: reconnect, through
    // Sentinel or the cluster's nodes, to the new one.
    crate::redis::Connector::calls_for_new_server(error)
        || error.is_timeout()
        || error.code() == Some("NOSCRIPT")
}

/// Waits `delay` before a retry, less if the consumer is stopped or Sentinel announces a new
/// master (then returns true: reconnect now).
async fn retry_after(
    delay: Duration,
    stop: &mut watch::Receiver<bool>,
    failovers: &mut FailoverWatch,
) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stop.changed() => false,
        _ = failovers.promoted() => true,
    }
}
