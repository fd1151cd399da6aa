//! One lane of the shipper: the ring (or partition) it drains, its batches, connection,
//! breaker and journal, and the loop that moves events from one to the other. See the
//! [module documentation](super) for the loop's steps.

mod replay;
mod send;
mod spill;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};
use tokio::sync::watch;

use super::append::{self, AppendSettings, Checks, Keys};
use super::batch::{AttemptError, Batch, Origin, Request, Status};
use super::breaker::Breaker;
use super::health::{ShutdownReport, State};
use super::journal::Journal;
use super::{risks, BreakerState};
use crate::config::{AppendMode, Config, ShipConfig};
use crate::envelope::EventIdGenerator;
use crate::error::ShipError;
use crate::publish::{wall_clock_ns, CapturedEvent, Receiver};
use crate::redis::Backoff;
use crate::redis::FailoverWatch;
use crate::schema::Source;
use replay::StaleJournal;

/// How often an idle shipper looks at the ring. Producers never wake the shipper (that would
/// cost the hot path), so this bounds the added latency at low rates.
const IDLE_POLL: Duration = Duration::from_millis(1);

/// One lane: drains one ring into one stream (or partition) over one connection. Every lane
/// of a shipper runs on the shipper's thread, each a task of its own.
pub(super) struct Lane {
    config: ShipConfig,
    settings: AppendSettings,
    /// Opens connections (after a Sentinel failover, to the new master).
    client: crate::redis::Connector,
    connection: Option<MultiplexedConnection>,
    sha: String,
    /// This producer's event ids (replayed journals' events get their own producer's).
    ids: EventIdGenerator,
    /// The partition of the stream this lane ships (0 without partitions): event ids depend
    /// on it, as sequences do.
    partition: u16,
    checks: Checks,
    /// Where `checks` gets its registry from, and when it is reloaded.
    schemas: Source,
    /// Why the last reload failed, so that a failure that repeats (an ACL without read
    /// access to the registry) is logged once, not at every `ship.schema_reload_ms`.
    schema_error: Option<String>,
    receiver: Receiver,
    /// Events drained for the next batch, oldest first.
    forming: Vec<CapturedEvent>,
    forming_since: Option<Instant>,
    /// Built, unconfirmed batches, in sequence order.
    queue: VecDeque<Batch>,
    journal: Option<Journal>,
    /// Journals of earlier processes, replayed first, one batch at a time.
    replays: VecDeque<Journal>,
    /// Journals of earlier processes older than the high-water mark's lifetime, waiting for
    /// the mark to be checked in Redis before they join `replays` (or are refused).
    stale: Vec<StaleJournal>,
    breaker: Breaker,
    /// Sentinel's promotion announcements (started with the loop, inside its runtime).
    failovers: Option<FailoverWatch>,
    /// Whether this lane is one of several partitions on a Redis Cluster (for the server's
    /// risk checks).
    partitioned_cluster: bool,
    /// The server's risky settings were checked (once, at the first connection).
    server_checked: bool,
    /// Whether an ops loop looks after the stream.
    ops: risks::OpsWatch,
    backoff: Backoff,
    /// After a failure: send nothing until every in-flight batch answered and this passed.
    retry_at: Option<Instant>,
    recovering: bool,
    state: Arc<State>,
    shutdown: watch::Receiver<Option<Instant>>,
}

impl Lane {
    /// The lane of one partition (or the only one): its connector, settings and journals
    /// (under `partition-<p>/` of `ship.journal_dir` when `partitioned`).
    pub(super) fn open(
        lane: &Config,
        receiver: Receiver,
        partitioned: bool,
        state: Arc<State>,
        shutdown: watch::Receiver<Option<Instant>>,
        schemas: Source,
    ) -> Result<Self, ShipError> {
        let client = lane.redis.connector()?;
        let mut ship = lane.ship.clone();
        if partitioned {
            ship.journal_dir = ship
                .journal_dir
                .map(|dir| dir.join(format!("partition-{}", receiver.partition())));
        }
        let producer_id = receiver.producer_id().to_owned();
        let settings = AppendSettings {
            keys: Keys::new(&lane.redis.stream, &producer_id),
            producer_id,
            max_len: ship.max_len,
            high_water_mark_ttl_ms: ship.dedupe_ttl_s.saturating_mul(1000),
        };
        let journals = replay::open_journals(&ship, &settings.producer_id)?;
        let mut lane = Self::new(ship, settings, client, receiver, state, shutdown, schemas);
        lane.journal = journals.own;
        lane.replays = journals.replays;
        lane.stale = journals.stale;
        lane.partitioned_cluster =
            partitioned && matches!(lane.client, crate::redis::Connector::Cluster { .. });
        lane.publish_state(Instant::now());
        Ok(lane)
    }

    fn new(
        config: ShipConfig,
        settings: AppendSettings,
        client: crate::redis::Connector,
        receiver: Receiver,
        state: Arc<State>,
        shutdown: watch::Receiver<Option<Instant>>,
        schemas: Source,
    ) -> Self {
        let seed = wall_clock_ns() ^ u64::from(std::process::id());
        Self {
            breaker: Breaker::new(
                config.breaker_threshold,
                Duration::from_millis(config.breaker_cool_down_ms),
                Duration::from_millis(config.breaker_cool_down_max_ms),
            ),
            backoff: Backoff::new(
                Duration::from_millis(config.retry_base_ms),
                Duration::from_millis(config.retry_max_ms),
                seed,
            ),
            sha: redis::Script::new(append::SCRIPT).get_hash().to_owned(),
            ids: EventIdGenerator::for_producer(&settings.producer_id, receiver.partition()),
            partition: receiver.partition(),
            checks: Checks {
                known_types: (!config.known_event_types.is_empty())
                    .then(|| config.known_event_types.iter().cloned().collect()),
                validation: config.validation,
                sample_every: (1.0 / config.validation_sample_rate).round().max(1.0) as u64,
                registry: schemas.registry().cloned(),
                ..Checks::default()
            },
            schemas,
            schema_error: None,
            forming: Vec::with_capacity(config.batch_max),
            forming_since: None,
            queue: VecDeque::new(),
            journal: None,
            replays: VecDeque::new(),
            stale: Vec::new(),
            connection: None,
            failovers: None,
            partitioned_cluster: false,
            server_checked: false,
            ops: risks::OpsWatch::new(&settings.keys.stream),
            retry_at: None,
            recovering: false,
            config,
            settings,
            client,
            receiver,
            state,
            shutdown,
        }
    }

    pub(super) async fn run(mut self) -> ShutdownReport {
        self.failovers = Some(FailoverWatch::start(&self.client));
        loop {
            let now = Instant::now();
            let deadline = *self.shutdown.borrow();
            let ring_empty = !self.receiver.has_ready() && self.forming.is_empty();
            let journals_empty = self.replays.is_empty()
                && self.stale.is_empty()
                && self.journal.as_ref().is_none_or(Journal::is_empty);
            let flushed = self.queue.is_empty() && ring_empty && journals_empty;
            if flushed && (deadline.is_some() || self.receiver.is_finished()) {
                break;
            }
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
            self.form_batches(now, deadline.is_some());
            let send = self.may_send(now);
            // `may_send` ends a recovery whose retry time has come.
            let vet = !self.stale.is_empty() && !self.recovering;
            if send || vet {
                // Reconnecting goes on while the breaker is open, paced by the retry delay: a
                // handshake that succeeds (the server is back, or a failover reached the new
                // one) ends the cool-down, so the breaker only holds batches back from a
                // server that answers and keeps failing.
                if self.connection.is_none() {
                    self.connect().await;
                }
                if vet && self.connection.is_some() {
                    self.vet_stale_journals().await;
                }
                let now = Instant::now();
                if self.breaker.state(now) != BreakerState::Open {
                    self.send_ready(now);
                }
            }
            // Not while the breaker is open: a server that fails batches would only stall the
            // lane for the refresh's deadline.
            if self.schemas.due(now) && self.breaker.state(now) == BreakerState::Closed {
                if let Some(mut connection) = self.connection.clone() {
                    self.refresh_schemas(&mut connection).await;
                }
            }
            if self.ops.due(now) {
                let timeout = self.timeout();
                if let Some(connection) = &mut self.connection {
                    let stream = &self.settings.keys.stream;
                    let trims_itself = self.config.max_len > 0;
                    self.ops
                        .check(connection, stream, trims_itself, timeout)
                        .await;
                }
            }
            self.publish_state(now);
            self.wait(now, deadline).await;
        }
        // Let batches already on the wire answer before counting what is undelivered.
        while self.first_in_flight().is_some() {
            let deadline = *self.shutdown.borrow();
            self.wait(
                Instant::now(),
                deadline.map(|d| d.max(Instant::now() + self.timeout())),
            )
            .await;
        }
        let (journaled, undelivered) = self.leave_rest_in_journal();
        self.publish_state(Instant::now());
        ShutdownReport {
            shipped: self.state.shipped.load(Ordering::Relaxed),
            dead_lettered: self.state.dead_lettered(),
            journaled,
            undelivered,
            panicked: false,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    /// Fills the queue (at most two windows of batches): journals of earlier processes
    /// first, then this producer's journal, then the ring (only once the journal is empty,
    /// so nothing newer overtakes it); and spills the ring to the journal while Redis lags.
    fn form_batches(&mut self, now: Instant, flushing: bool) {
        let room = |queue: &VecDeque<Batch>, window: usize| queue.len() < 2 * window;
        let window = self.config.in_flight;
        if room(&self.queue, window) && !self.queue.iter().any(|b| b.origin == Origin::Replay) {
            while let Some(journal) = self.replays.front_mut() {
                match journal.read_next() {
                    Ok(Some(record)) => {
                        let batch =
                            self.build(Origin::Replay, &record.producer_id, record.events, false);
                        self.queue.push_back(batch);
                        break;
                    }
                    Ok(None) => {
                        if let Some(done) = self.replays.pop_front() {
                            let _ = done.remove_if_empty();
                        }
                    }
                    Err(error) => {
                        self.state
                            .set_error(format!("cannot read a journal to replay: {error}"));
                        self.replays.pop_front();
                    }
                }
            }
        }
        if self.journal.as_ref().is_some_and(|j| !j.is_empty()) {
            // Several journal batches in flight at once, so a backlog drains at full speed.
            while room(&self.queue, window) {
                let Some(journal) = self.journal.as_mut() else {
                    break;
                };
                match journal.read_next() {
                    Ok(Some(record)) => {
                        let batch =
                            self.build(Origin::Journal, &record.producer_id, record.events, false);
                        self.queue.push_back(batch);
                    }
                    Ok(None) => break,
                    Err(error) => {
                        self.state
                            .set_error(format!("cannot read the journal: {error}"));
                        break;
                    }
                }
            }
        } else {
            self.form_from_ring(now, flushing);
        }
        self.spill();
    }

    /// Moves events from the ring into batches while the queue has room.
    fn form_from_ring(&mut self, now: Instant, flushing: bool) {
        let max = self.config.batch_max;
        while self.queue.len() < 2 * self.config.in_flight {
            let room = max - self.forming.len();
            if room > 0 && self.receiver.drain_into(&mut self.forming, room) > 0 {
                self.forming_since.get_or_insert(now);
            }
            if self.forming.is_empty() {
                return;
            }
            let lingered = self.forming_since.is_some_and(|since| {
                now.duration_since(since) >= Duration::from_micros(self.config.linger_us)
            });
            let pipe_idle = self.first_in_flight().is_none();
            if self.forming.len() < max && !(flushing || lingered || pipe_idle) {
                return;
            }
            let events = std::mem::replace(&mut self.forming, Vec::with_capacity(max));
            self.forming_since = None;
            let producer_id = self.settings.producer_id.clone();
            let batch = self.build(Origin::Ring, &producer_id, events, false);
            self.queue.push_back(batch);
        }
    }

    fn build(
        &mut self,
        origin: Origin,
        producer_id: &str,
        events: Vec<CapturedEvent>,
        accept_gap: bool,
    ) -> Batch {
        let checks = &mut self.checks;
        let poison: Vec<_> = events.iter().map(|e| checks.check(e)).collect();
        self.state
            .schema_violations
            .store(checks.violations, Ordering::Relaxed);
        let (keys, replayed_ids);
        let ids = if producer_id == self.settings.producer_id {
            keys = self.settings.keys.clone();
            &self.ids
        } else {
            // Another producer's journal: its events keep the ids their producer gave them.
            keys = Keys::new(&self.settings.keys.stream, producer_id);
            replayed_ids = EventIdGenerator::for_producer(producer_id, self.partition);
            &replayed_ids
        };
        let input = append::BatchInput {
            settings: &self.settings,
            keys: &keys,
            producer_id,
            ids,
            events: &events,
            poison: &poison,
            accept_gap,
            now_ns: wall_clock_ns(),
        };
        let request = match self.config.append {
            AppendMode::Script => Request::Script(Arc::new(append::build(&self.sha, &input))),
            AppendMode::Transaction => {
                Request::Transaction(Arc::new(append::build_transaction(&input)))
            }
        };
        Batch {
            origin,
            producer_id: producer_id.to_owned(),
            events,
            poison,
            request,
            status: Status::Unsent,
        }
    }

    fn may_send(&mut self, now: Instant) -> bool {
        if self.recovering {
            if self.first_in_flight().is_some() || self.retry_at.is_some_and(|at| now < at) {
                return false;
            }
            self.recovering = false;
            self.retry_at = None;
        }
        self.queue
            .iter()
            .any(|b| matches!(b.status, Status::Unsent))
    }

    /// Follows the schema registry in Redis, if validation uses it: reads its revision when
    /// due (see [`Source`]) and hands a reloaded registry to the checks. A failure keeps the
    /// registry in use.
    async fn refresh_schemas(&mut self, connection: &mut MultiplexedConnection) {
        if !self.schemas.due(Instant::now()) {
            return;
        }
        let refreshed =
            tokio::time::timeout(self.timeout() * 10, self.schemas.refresh(connection)).await;
        let error = match refreshed {
            Ok(Ok(reloaded)) => {
                if reloaded {
                    self.checks.registry = self.schemas.registry().cloned();
                }
                None
            }
            Ok(Err(error)) => Some(format!("cannot read the schema registry: {error}")),
            Err(_) => Some("reading the schema registry timed out".to_owned()),
        };
        if error.is_some() && error != self.schema_error {
            tracing::error!(
                error = error.as_deref(),
                "ship.validation: validation uses the registry it has, if any; \
                 with an ACL, the publisher's user needs +hgetall +get %R~evstream:schemas* (docs/security.md)"
            );
        }
        self.schema_error = error;
    }

    async fn connect(&mut self) {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout().max(Duration::from_millis(500))))
            .set_response_timeout(None);
        let append_mode = self.config.append;
        let keys = self.settings.keys.clone();
        let connected = async {
            let mut connection = self
                .client
                .client()
                .await?
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            crate::redis::name_connection(
                &mut connection,
                &format!("evstream-ship:{}", self.settings.producer_id),
            )
            .await;
            // Load the script on every new connection: a restarted Redis has an empty cache.
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(append::SCRIPT)
                .query_async::<String>(&mut connection)
                .await?;
            if append_mode == AppendMode::Transaction {
                append::probe_guard(&mut connection, &keys).await?;
            }
            Ok::<_, RedisError>(connection)
        };
        // The handshake and SCRIPT LOAD share one deadline: a server that stops answering
        // must not hold the loop (and a shutdown) until TCP gives up.
        let deadline =
            self.timeout().max(Duration::from_millis(500)) * 2 + self.client.lookup_budget();
        let connected = async {
            tokio::time::timeout(deadline, connected)
                .await
                .unwrap_or_else(|_| {
                    Err(RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connecting to Redis took longer than {deadline:?}"),
                    )))
                })
        };
        match connected.await {
            Ok(mut connection) => {
                self.breaker.probe_now(Instant::now());
                if !self.server_checked {
                    self.server_checked = true;
                    let cluster = self.partitioned_cluster;
                    risks::warn_about_server(&mut connection, cluster, self.timeout()).await;
                }
                self.schemas.check_now();
                self.refresh_schemas(&mut connection).await;
                self.connection = Some(connection);
                self.state.connected.store(true, Ordering::Relaxed);
            }
            Err(error) => self.failed(Instant::now(), &AttemptError::Redis(error)),
        }
    }

    fn publish_state(&self, now: Instant) {
        let state = &self.state;
        let breaker = self.breaker.state(now);
        state
            .breaker_open
            .store(breaker == BreakerState::Open, Ordering::Relaxed);
        state
            .breaker_half_open
            .store(breaker == BreakerState::HalfOpen, Ordering::Relaxed);
        let (mut in_flight, mut unconfirmed) = (0, self.forming.len() as u64);
        for batch in &self.queue {
            match batch.status {
                Status::InFlight(_) => {
                    in_flight += 1;
                    unconfirmed += batch.events.len() as u64;
                }
                Status::Unsent => unconfirmed += batch.events.len() as u64,
                Status::Confirmed => {}
            }
        }
        state.in_flight.store(in_flight, Ordering::Relaxed);
        state.unconfirmed.store(unconfirmed, Ordering::Relaxed);
        let (mut events, mut bytes, mut lost) = (0, 0, 0);
        let stale = self.stale.iter().map(|s| &s.journal);
        for journal in self.journal.iter().chain(&self.replays).chain(stale) {
            let (e, b) = journal.backlog();
            events += e;
            bytes += b;
            lost += journal.lost_events;
        }
        state.journal_events.store(events, Ordering::Relaxed);
        state.journal_bytes.store(bytes, Ordering::Relaxed);
        state.journal_lost.store(lost, Ordering::Relaxed);
    }
}
