//! Learning of failovers as they happen.
//!
//! Redis Sentinel announces a promotion on its Pub/Sub channels: `+promoted-slave` when the
//! chosen replica answers as a master (from then on the leading sentinel names it), and
//! `+switch-master` once the failover is complete (every sentinel names it). A component that
//! waits for its next retry, or for a circuit breaker's cool-down, to find the new master
//! loses that wait in appends; one that listens reconnects the moment the promotion is
//! announced. [`FailoverWatch`] listens on every sentinel of a `redis+sentinel://` URL (so
//! one that is down does not blind it) and wakes its owner once per new master.
//!
//! Redis Cluster announces nothing comparable to a client; there the components find the new
//! primary through `CLUSTER SLOTS` when they reconnect, which their short retry delays make
//! prompt.
//!
//! Why not the `redis` crate's `sentinel` module: it resolves a master on demand (as
//! [`Connector`] does) but does not listen for promotions.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Connector, SentinelTarget};

/// How long a listener waits before reconnecting to a sentinel that closed or refused its
/// subscription.
/// The `tracing` target of failover events, kept from when this was the crate's
/// `failover` module: the `evstream` binary's default filter and deployments' `RUST_LOG`
/// name it (`evstream::failover=info`).
const LOG_TARGET: &str = "evstream::failover";

const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// Announces each new master of a Sentinel deployment; see the [module docs](self).
///
/// Start it inside the runtime of the component that owns it: its listeners are tasks of that
/// runtime, aborted when the watch is dropped. For a single server or a Cluster it never
/// announces anything.
#[derive(Debug)]
pub(crate) struct FailoverWatch {
    /// The last announced master, `host:port`; `None` until the first announcement.
    announced: Option<watch::Receiver<Option<String>>>,
    listeners: Vec<tokio::task::JoinHandle<()>>,
}

impl FailoverWatch {
    /// Starts listening on every sentinel of `connector` (nothing for other connectors).
    pub(crate) fn start(connector: &Connector) -> Self {
        let Connector::Sentinel(target) = connector else {
            return Self {
                announced: None,
                listeners: Vec::new(),
            };
        };
        let (sender, receiver) = watch::channel(None);
        let sender = Arc::new(sender);
        let listeners = target
            .sentinels()
            .iter()
            .map(|sentinel| {
                let (sentinel, target, sender) =
                    (sentinel.clone(), Arc::clone(target), Arc::clone(&sender));
                tokio::spawn(async move {
                    loop {
                        let error = listen(&sentinel, &target, &sender).await;
                        tracing::debug!(target: LOG_TARGET, %sentinel, %error, "not subscribed to the sentinel's failover announcements; retrying");
                        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
                    }
                })
            })
            .collect();
        Self {
            announced: Some(receiver),
            listeners,
        }
    }

    /// Completes when a sentinel announces a master other than the last one announced, with
    /// its `host:port`. Never completes for a single server or a Cluster.
    pub(crate) async fn promoted(&mut self) -> String {
        let Some(announced) = &mut self.announced else {
            return std::future::pending().await;
        };
        loop {
            if announced.changed().await.is_err() {
                // Every listener ended (the runtime is shutting down).
                return std::future::pending().await;
            }
            if let Some(master) = announced.borrow_and_update().clone() {
                return master;
            }
        }
    }
}

impl Drop for FailoverWatch {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
    }
}

/// Subscribes to one sentinel's announcements and forwards those about `target`'s master
/// until the connection ends; returns why it ended.
async fn listen(
    sentinel: &str,
    target: &SentinelTarget,
    announced: &watch::Sender<Option<String>>,
) -> redis::RedisError {
    use futures_util::StreamExt;
    let subscribed = async {
        let client = redis::Client::open(format!("redis://{sentinel}"))?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub
            .subscribe(&["+switch-master", "+promoted-slave"])
            .await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    let pubsub = match tokio::time::timeout(target.lookup_budget(), subscribed).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(error)) => return error,
        Err(_) => {
            return redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "subscribing took too long",
            ))
        }
    };
    let mut messages = pubsub.into_on_message();
    while let Some(message) = messages.next().await {
        let Ok(payload) = message.get_payload::<String>() else {
            continue;
        };
        let Some(master) = new_master(message.get_channel_name(), &payload, target.master_name())
        else {
            continue;
        };
        announced.send_if_modified(|last| {
            if last.as_deref() == Some(master.as_str()) {
                return false;
            }
            tracing::info!(target: LOG_TARGET, %sentinel, master = %master, name = target.master_name(), "Sentinel announced a new master; reconnecting to it");
            *last = Some(master);
            true
        });
    }
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the sentinel closed the connection",
    ))
}

/// The new master's `host:port` in an announcement about `name`, if it is one:
/// `+switch-master <name> <old ip> <old port> <new ip> <new port>` or
/// `+promoted-slave slave <ip>:<port> <ip> <port> @ <name> <master ip> <master port>`.
fn new_master(channel: &str, payload: &str, name: &str) -> Option<String> {
    let words: Vec<&str> = payload.split_whitespace().collect();
    match (channel, words.as_slice()) {
        ("+switch-master", [master, _, _, ip, port]) if *master == name => {
            Some(format!("{ip}:{port}"))
        }
        ("+promoted-slave", ["slave", _, ip, port, "@", master, _, _]) if *master == name => {
            Some(format!("{ip}:{port}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_name_the_new_master_of_the_watched_name_only() {
        assert_eq!(
            new_master(
                "+switch-master",
                "main 127.0.0.1 6379 127.0.0.1 6380",
                "main"
            ),
            Some("127.0.0.1:6380".to_owned())
        );
        assert_eq!(
            new_master(
                "+promoted-slave",
                "slave 127.0.0.1:6380 127.0.0.1 6380 @ main 127.0.0.1 6379",
                "main"
            ),
            Some("127.0.0.1:6380".to_owned())
        );
        assert_eq!(
            new_master(
                "+switch-master",
                "other 127.0.0.1 6379 127.0.0.1 6380",
                "main"
            ),
            None
        );
        assert_eq!(
            new_master("+sdown", "master main 127.0.0.1 6379", "main"),
            None
        );
        assert_eq!(new_master("+switch-master", "main 1 2", "main"), None);
    }
}
