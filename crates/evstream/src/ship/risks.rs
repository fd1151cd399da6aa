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
//! may not grant: refused checks are skipped (logged at debug level); the ops loop, which has
//! `CONFIG GET`, warns about the eviction policy too.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::config::{Config, Connector};

/// How often the shipper looks for an ops loop's heartbeat, and how long it waits at start.
const OPS_CHECK_EVERY: Duration = Duration::from_secs(60);

/// Warns about risks the configuration alone shows.
pub(super) fn warn_about_config(config: &Config, connector: &Connector) {
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
    }
}

/// Checks, once per shipper, what the server's configuration risks.
pub(super) async fn warn_about_server(
    connection: &mut MultiplexedConnection,
    partitioned: bool,
    timeout: Duration,
) {
    if let Some(policy) = config_get(connection, "maxmemory-policy", timeout).await {
        if policy.starts_with("allkeys-") {
            tracing::error!(
                %policy,
                "Redis's maxmemory-policy can EVICT THE STREAM with its consumer groups and \
                 pending entries; set maxmemory-policy noeviction (deploy/redis.conf)"
            );
        } else if policy.starts_with("volatile-") {
            tracing::warn!(
                %policy,
                "Redis's maxmemory-policy can evict the producers' high-water marks, which \
                 keep retried batches from being appended twice; set maxmemory-policy \
                 noeviction (deploy/redis.conf)"
            );
        }
    }
    if partitioned {
        let coverage = config_get(connection, "cluster-require-full-coverage", timeout).await;
        if coverage.as_deref() == Some("yes") {
            tracing::warn!(
                "cluster-require-full-coverage is yes: while one primary fails over, every \
                 primary refuses writes, so every partition pauses, not only its own; set \
                 cluster-require-full-coverage no on every node (deploy/redis.conf)"
            );
        }
    }
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
            key: crate::config::ops_heartbeat_key(stream),
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
    ) {
        self.next_check = Instant::now() + OPS_CHECK_EVERY;
        let mut call = redis::cmd("EXISTS");
        call.arg(&self.key);
        let seen = match tokio::time::timeout(timeout, call.query_async::<bool>(connection)).await {
            Ok(Ok(seen)) => seen,
            Ok(Err(error)) if error.code() == Some("NOPERM") => {
                tracing::debug!(%error, key = %self.key, "cannot look for an ops loop's heartbeat (ACL); not checked");
                self.refused = true;
                return;
            }
            Ok(Err(_)) | Err(_) => return,
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
    }
}
