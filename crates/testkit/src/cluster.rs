//! A Redis Cluster on loopback: three primaries with one replica each, made with
//! `redis-cli --cluster create`.

use std::io;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{RedisServer, Reply};

/// Three primaries and three replicas (`cluster-node-timeout` 1000 ms), every slot covered.
/// Everything is killed on drop.
#[derive(Debug)]
pub struct ClusterSet {
    /// The six servers, in the order given to `redis-cli --cluster create` (its first three
    /// become the primaries).
    pub servers: Vec<RedisServer>,
}

impl ClusterSet {
    /// Starts six cluster-enabled servers, joins them, and waits until every node reports
    /// `cluster_state:ok`.
    pub fn start() -> io::Result<Self> {
        let servers = (0..6)
            .map(|_| {
                RedisServer::builder()
                    .arg("cluster-enabled", "yes")
                    .arg("cluster-config-file", "nodes.conf")
                    .arg("cluster-node-timeout", "1000")
                    // Replicas sync at once (Redis 7.0 waits 5 s for more replicas by default):
                    // a replica that never synced refuses to take over.
                    .arg("repl-diskless-sync-delay", "0")
                    .start()
            })
            .collect::<io::Result<Vec<_>>>()?;
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(servers.iter().map(RedisServer::addr))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("cannot run redis-cli (Debian package redis-tools): {error}"),
                )
            })?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
            )));
        }
        let set = Self { servers };
        let deadline = Instant::now() + Duration::from_secs(30);
        for server in &set.servers {
            loop {
                let state = match server.command(&["CLUSTER", "INFO"])? {
                    Reply::Bulk(Some(text)) => String::from_utf8_lossy(&text).into_owned(),
                    other => format!("{other:?}"),
                };
                if state.contains("cluster_state:ok") {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(io::Error::other(format!(
                        "node {} did not reach cluster_state:ok within 30 s: {state}",
                        server.addr()
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        set.wait_for_replicas(deadline)?;
        Ok(set)
    }

    /// Waits until every replica has synced with its primary, so that each can take over.
    fn wait_for_replicas(&self, deadline: Instant) -> io::Result<()> {
        for server in &self.servers {
            loop {
                let info = match server.command(&["INFO", "replication"])? {
                    Reply::Bulk(Some(text)) => String::from_utf8_lossy(&text).into_owned(),
                    other => format!("{other:?}"),
                };
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(io::Error::other(format!(
                        "replica {} did not sync within 30 s: {info}",
                        server.addr()
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// `redis+cluster://127.0.0.1:p1,…` with every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.servers.iter().map(RedisServer::addr).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The primary serving the slot of `key` now (the others answer `MOVED`; a node that is
    /// down or between owners is skipped).
    pub fn primary_for(&self, key: &str) -> io::Result<&RedisServer> {
        for server in &self.servers {
            match server.command(&["EXISTS", key]) {
                Ok(Reply::Int(_)) => return Ok(server),
                Ok(Reply::Error(error))
                    if error.starts_with("MOVED") || error.starts_with("CLUSTERDOWN") => {}
                Ok(other) => return Err(io::Error::other(format!("unexpected reply {other:?}"))),
                Err(_) => {}
            }
        }
        Err(io::Error::other(format!("no node serves the key {key}")))
    }
}
