//! Risky settings, said once with their fix: a deployment that would lose or duplicate
//! events on a bad day should hear it on the first day.
//!
//! At start: Sentinel or Cluster without `ship.min_replicas_ack` (replication is
//! asynchronous: a failover loses the batches the replica had not received). At the first
//! connection: an eviction policy that can evict the stream or the high-water marks, and on a
//! Cluster with several partitions, `cluster-require-full-coverage yes` (every partition
//! pauses while one fails over). While shipping: no ops loop seen on the stream for a minute
//! (nothing trims it; Redis fills, then refuses every append).
//!
//! The server checks need `CONFIG GET` and `GET <stream>:ops`, which a minimal publisher ACL
//! may not grant (docs/security.md grants the second): refused checks are skipped (logged at debug level); the ops loop, which has
//! `CONFIG GET`, warns about the eviction policy too.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::config::Config;
use crate::redis::Connector;

/// How often the shipper looks for an ops loop's heartbeat, and how long it waits at start.
const OPS_CHECK_EVERY: Duration = Duration::from_secs(60);

/// A risk said at start, for tests to see what was said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Risk {
    /// Sentinel or Cluster without `ship.min_replicas_ack`.
    UnacknowledgedFailover,
    /// `maxmemory-policy allkeys-*`.
    EvictsTheStream,
    /// `maxmemory-policy volatile-*`.
    EvictsHighWaterMarks,
    /// `cluster-require-full-coverage yes` with partitions.
    FullCoverageRequired,
}

/// Warns about risks the configuration alone shows.
pub(super) fn warn_about_config(config: &Config, connector: &Connector) -> Vec<Risk> {
    let replicated = match connector {
        Connector::Fixed(_) => None,
        Connector::Sentinel(_) => Some("Sentinel"),
        Connector::Cluster { .. } => Some("Redis Cluster"),
    };
    if let (Some(kind), 0) = (replicated, config.ship.min_replicas_ack) {
        tracing::warn!(
            "{kind} without ship.min_replicas_ack: Redis replicates asynchronously, so a \
             failover loses the batches the promoted replica had not received yet, though \
             they were confirmed; set ship.min_replicas_ack = 1 (docs/deployment.md)"
        );
        return vec![Risk::UnacknowledgedFailover];
    }
    Vec::new()
}

/// Checks, once per shipper, what the server's configuration risks; `partitioned_cluster`:
/// whether this is one of several partitions on a Redis Cluster.
pub(super) async fn warn_about_server(
    connection: &mut MultiplexedConnection,
    partitioned_cluster: bool,
    timeout: Duration,
) -> Vec<Risk> {
    let mut risks = Vec::new();
    if let Some(policy) = config_get(connection, "maxmemory-policy", timeout).await {
        if policy.starts_with("allkeys-") {
            risks.push(Risk::EvictsTheStream);
            tracing::error!(
                %policy,
                "Redis's maxmemory-policy can EVICT THE STREAM with its consumer groups and \
                 pending entries; set maxmemory-policy noeviction (deploy/redis.conf)"
            );
        } else if policy.starts_with("volatile-") {
            risks.push(Risk::EvictsHighWaterMarks);
            tracing::warn!(
                %policy,
                "Redis's maxmemory-policy can evict the producers' high-water marks, which \
                 keep retried batches from being appended twice; set maxmemory-policy \
                 noeviction (deploy/redis.conf)"
            );
        }
    }
    if partitioned_cluster {
        let coverage = config_get(connection, "cluster-require-full-coverage", timeout).await;
        if coverage.as_deref() == Some("yes") {
            risks.push(Risk::FullCoverageRequired);
            tracing::warn!(
                "cluster-require-full-coverage is yes: while one primary fails over, every \
                 primary refuses writes, so every partition pauses, not only its own; set \
                 cluster-require-full-coverage no on every node (deploy/redis.conf)"
            );
        }
    }
    risks
}

/// `CONFIG GET name`'s value; `None` if refused (ACL) or unknown.
async fn config_get(
    connection: &mut MultiplexedConnection,
    name: &str,
    timeout: Duration,
) -> Option<String> {
    let mut call = redis::cmd("CONFIG");
    call.arg("GET").arg(name);
    match tokio::time::timeout(timeout, call.query_async::<Vec<String>>(connection)).await {
        Ok(Ok(reply)) => reply.into_iter().nth(1),
        Ok(Err(error)) => {
            tracing::debug!(%error, name, "CONFIG GET refused; that check is skipped");
            None
        }
        Err(_) => None,
    }
}

/// What a look for the ops loop's heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpsSeen {
    /// Present.
    Yes,
    /// Absent (said once until it is back).
    No,
    /// Not known: refused by the ACL, or Redis did not answer.
    Unknown,
}

/// Whether an ops loop looks after the stream: its heartbeat key, checked every minute.
#[derive(Debug)]
pub(super) struct OpsWatch {
    key: String,
    next_check: Instant,
    /// Warned about the missing ops loop, not yet seen since.
    warned: bool,
    /// The check was refused (ACL): not tried again.
    refused: bool,
}

impl OpsWatch {
    pub(super) fn new(stream: &str) -> Self {
        Self {
            key: crate::keys::ops_heartbeat(stream),
            next_check: Instant::now() + OPS_CHECK_EVERY,
            warned: false,
            refused: false,
        }
    }

    /// Whether a check is due.
    pub(super) fn due(&self, now: Instant) -> bool {
        !self.refused && now >= self.next_check
    }

    /// Looks for the heartbeat and says when it is missing (once) or back.
    pub(super) async fn check(
        &mut self,
        connection: &mut MultiplexedConnection,
        stream: &str,
        trims_itself: bool,
        timeout: Duration,
    ) -> OpsSeen {
        self.next_check = Instant::now() + OPS_CHECK_EVERY;
        let mut call = redis::cmd("EXISTS");
        call.arg(&self.key);
        let seen = match tokio::time::timeout(timeout, call.query_async::<bool>(connection)).await {
            Ok(Ok(seen)) => seen,
            Ok(Err(error)) if error.code() == Some("NOPERM") => {
                tracing::debug!(%error, key = %self.key, "cannot look for an ops loop's heartbeat (ACL); not checked");
                self.refused = true;
                return OpsSeen::Unknown;
            }
            Ok(Err(_)) | Err(_) => return OpsSeen::Unknown,
        };
        match (seen, self.warned) {
            (false, false) => {
                self.warned = true;
                let consequence = if trims_itself {
                    "only ship.max_len bounds it, whatever consumer groups have not read, and \
                     nobody watches memory or alerts"
                } else {
                    "nothing trims it: Redis fills, then refuses every append"
                };
                tracing::warn!(
                    %stream,
                    "no ops loop has looked after stream {stream} in the last minute; \
                     {consequence}. Run `evstream ops` against it (docs/operations.md)"
                );
            }
            (true, true) => {
                self.warned = false;
                tracing::info!(%stream, "an ops loop looks after stream {stream} again");
            }
            _ => {}
        }
        if seen {
            OpsSeen::Yes
        } else {
            OpsSeen::No
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evstream_testkit::RedisServer;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn issue_18_sentinel_or_cluster_without_replica_acks_is_said() {
        let mut config = Config::default();
        config.redis.url = "redis+sentinel://127.0.0.1:1/main".to_owned();
        let connector = config.redis.connector().unwrap();
        assert_eq!(
            warn_about_config(&config, &connector),
            [Risk::UnacknowledgedFailover]
        );
        config.ship.min_replicas_ack = 1;
        assert_eq!(warn_about_config(&config, &connector), []);
        config.redis.url = "redis://127.0.0.1:1".to_owned();
        config.ship.min_replicas_ack = 0;
        let single = config.redis.connector().unwrap();
        assert_eq!(
            warn_about_config(&config, &single),
            [],
            "one server: no failover"
        );
    }

    #[test]
    fn issue_18_an_evicting_policy_and_a_missing_ops_loop_are_said() {
        let redis = RedisServer::start().unwrap();
        let timeout = Duration::from_secs(2);
        block_on(async {
            let client = redis::Client::open(redis.url()).unwrap();
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            assert_eq!(
                warn_about_server(&mut connection, false, timeout).await,
                [],
                "noeviction"
            );
            for (policy, risk) in [
                ("allkeys-lru", Risk::EvictsTheStream),
                ("volatile-ttl", Risk::EvictsHighWaterMarks),
            ] {
                redis
                    .command(&["CONFIG", "SET", "maxmemory-policy", policy])
                    .unwrap();
                assert_eq!(
                    warn_about_server(&mut connection, false, timeout).await,
                    [risk]
                );
            }

            let mut ops = OpsWatch::new("events");
            assert!(!ops.due(Instant::now()), "a minute's grace at start");
            let seen = ops.check(&mut connection, "events", false, timeout).await;
            assert_eq!(seen, OpsSeen::No);
            assert!(ops.warned);
            redis
                .command(&["SET", "events:ops", "1", "PX", "60000"])
                .unwrap();
            let seen = ops.check(&mut connection, "events", false, timeout).await;
            assert_eq!(seen, OpsSeen::Yes);
            assert!(!ops.warned, "said again if it goes away again");
        });
    }
}
