//! A batch of events on its way to Redis: where it came from, its prepared call, where it
//! stands, and why an attempt at it failed.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Cmd, RedisError};

use super::append::{self, Outcome, Poison};
use crate::publish::CapturedEvent;

/// Why one attempt at a batch failed.
#[derive(Debug)]
pub(super) enum AttemptError {
    Timeout(Duration),
    Redis(RedisError),
    /// Appended, but fewer replicas than `ship.min_replicas_ack` confirmed it in time.
    Unreplicated {
        acknowledged: u64,
        wanted: u32,
    },
}

impl AttemptError {
    pub(super) fn breaks_connection(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Unreplicated { .. } => false,
            // Including a master demoted by a failover or a moved cluster slot: reconnect,
            // through Sentinel or the cluster's nodes, to the new one.
            Self::Redis(e) => crate::redis::Connector::calls_for_new_server(e),
        }
    }

    pub(super) fn is_noscript(&self) -> bool {
        matches!(self, Self::Redis(e) if e.code() == Some("NOSCRIPT"))
    }
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout(after) => write!(f, "batch timed out after {after:?}"),
            Self::Redis(e) => write!(f, "{e}"),
            Self::Unreplicated {
                acknowledged,
                wanted,
            } => write!(
                f,
                "WAIT: {acknowledged} of the {wanted} replicas ship.min_replicas_ack asks for \
                 confirmed the batch in time; retrying (check the replicas: INFO replication)"
            ),
        }
    }
}

/// The outcome of one attempt at a batch.
pub(super) type Attempt = Result<Outcome, AttemptError>;

/// Where a batch stands.
pub(super) enum Status {
    /// Built, waiting to be sent (first time or again).
    Unsent,
    /// Sent; the task answers with the attempt's outcome.
    InFlight(tokio::task::JoinHandle<Attempt>),
    /// Handled by Redis; waiting for the batches before it to be confirmed.
    Confirmed,
}

/// Where a batch came from, so confirming it consumes the right thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// The ring, drained by this lane.
    Ring,
    /// The oldest record of this producer's journal.
    Journal,
    /// The oldest record of the first journal left by an earlier process.
    Replay,
}

/// Events taken from one origin, their checks' verdicts and their prepared call.
pub(super) struct Batch {
    pub(super) origin: Origin,
    /// Whose events they are: this producer's, or an earlier one's (a replayed journal).
    pub(super) producer_id: String,
    pub(super) events: Vec<CapturedEvent>,
    /// Per event, the dead letter decided before sending, if any.
    pub(super) poison: Vec<Option<Poison>>,
    pub(super) request: Request,
    pub(super) status: Status,
}

/// One batch's call, per `ship.append`.
#[derive(Clone)]
pub(super) enum Request {
    Script(Arc<Cmd>),
    Transaction(Arc<append::Transaction>),
}

impl Request {
    pub(super) async fn send(
        self,
        connection: &mut MultiplexedConnection,
    ) -> Result<Outcome, RedisError> {
        match self {
            Self::Script(cmd) => cmd.query_async::<Outcome>(connection).await,
            Self::Transaction(transaction) => transaction.run(connection).await,
        }
    }
}

impl Batch {
    pub(super) fn first_sequence(&self) -> u64 {
        self.events.first().map_or(0, CapturedEvent::sequence)
    }
}
