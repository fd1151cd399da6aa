//! Redis Cluster: the slot of a key, and the primary that holds it, asked of the seed nodes of
//! a `redis+cluster://` URL at every (re)connection.

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use super::connector::{ask_each, check_master, open_node, LOOKUP_TIMEOUT};
use super::url::{node_settings, split_hosts, HostList};

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the text between the first
/// `{` and the next `}`, when not empty) or of the whole key, modulo 16,384, as the cluster
/// specification defines it. Written here because the redis crate's own sits behind its
/// `cluster` feature, which brings a cluster client evstream does not use.
pub fn key_slot(key: &str) -> u16 {
    let key = key.as_bytes();
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let tag = &key[open + 1..];
            let close = tag.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &tag[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16_384
}

/// A parsed `redis+cluster://` URL: seed nodes and the credentials every node shares.
pub struct ClusterTarget {
    /// `host:port` of each seed node.
    pub(super) hosts: Vec<String>,
    /// The nodes' user and password.
    pub(super) node: redis::RedisConnectionInfo,
    /// The node that answered last, asked first next time.
    preferred: AtomicUsize,
}

impl std::fmt::Debug for ClusterTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTarget")
            .field("nodes", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl ClusterTarget {
    /// `rest` is the URL after `redis+cluster://`; `password` the password file's, if any;
    /// `tls` whether TLS files are given.
    pub(super) fn parse(rest: &str, password: Option<&str>, tls: bool) -> Result<Self, String> {
        let expected = "expected redis+cluster://[user:password@]host:port[,host:port…]";
        if tls {
            return Err(
                "TLS with Redis Cluster is not supported yet; use rediss:// to one server"
                    .to_owned(),
            );
        }
        let HostList {
            hosts,
            userinfo,
            path,
        } = split_hosts(rest, "cluster node", expected)?;
        if path.is_some_and(|p| !p.is_empty() && p != "0") {
            return Err(format!(
                "a Redis Cluster has only database 0; remove the path; {expected}"
            ));
        }
        Ok(Self {
            hosts,
            node: node_settings(userinfo, password, "", expected)?,
            preferred: AtomicUsize::new(0),
        })
    }

    /// Asks the nodes which primary holds `key`'s slot (`CLUSTER SLOTS`), and checks with
    /// `ROLE` that it is one (a node's view can lag a failover).
    pub(super) async fn primary_for(&self, key: &str) -> redis::RedisResult<redis::Client> {
        let slot = key_slot(key);
        ask_each(&self.hosts, &self.preferred, "cluster node", |node| {
            self.ask(node, slot)
        })
        .await
    }

    /// One node's answer, checked.
    async fn ask(&self, node: &str, slot: u16) -> redis::RedisResult<redis::Client> {
        let (host, port) = node
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.to_owned(), port.parse::<u16>().ok()?)))
            .ok_or_else(|| redis::RedisError::from(std::io::Error::other("bad node address")))?;
        let (_, mut connection) =
            open_node(redis::ConnectionAddr::Tcp(host.clone(), port), &self.node).await?;
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut connection)
            .await?;
        let (primary_host, primary_port) = primary_of_slot(&slots, slot).ok_or_else(|| {
            redis::RedisError::from(std::io::Error::other(format!(
                "cluster node {node} knows no primary for slot {slot} (is every slot covered? \
                 CLUSTER INFO)"
            )))
        })?;
        // An empty or `?` host means "the address you reached me at".
        let primary_host = if primary_host.is_empty() || primary_host == "?" {
            host
        } else {
            primary_host
        };
        let (client, primary) = open_node(
            redis::ConnectionAddr::Tcp(primary_host, primary_port),
            &self.node,
        )
        .await?;
        check_master(client, primary, &format!("cluster node {node}")).await
    }

    /// `host:port` of each seed node.
    pub(super) fn nodes(&self) -> &[String] {
        &self.hosts
    }

    /// The longest a lookup takes when every seed node is silent.
    pub(super) fn lookup_budget(&self) -> Duration {
        LOOKUP_TIMEOUT * 2 * self.hosts.len() as u32
    }
}

/// The primary's `(host, port)` for `slot` in a `CLUSTER SLOTS` reply: ranges of
/// `[start, end, [host, port, id, …], replicas…]`.
fn primary_of_slot(ranges: &[redis::Value], slot: u16) -> Option<(String, u16)> {
    use redis::Value;
    let int = |value: &Value| match value {
        Value::Int(n) => Some(*n),
        _ => None,
    };
    ranges.iter().find_map(|range| {
        let Value::Array(range) = range else {
            return None;
        };
        let (start, end) = (int(range.first()?)?, int(range.get(1)?)?);
        if !(start..=end).contains(&i64::from(slot)) {
            return None;
        }
        let Value::Array(primary) = range.get(2)? else {
            return None;
        };
        let host = match primary.first()? {
            Value::BulkString(host) => String::from_utf8_lossy(host).into_owned(),
            Value::SimpleString(host) => host.clone(),
            _ => return None,
        };
        let port = u16::try_from(int(primary.get(1)?)?).ok()?;
        Some((host, port))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_follow_the_cluster_specification() {
        // Values from `CLUSTER KEYSLOT` of Redis 7.0.
        assert_eq!(key_slot("foo"), 12_182);
        assert_eq!(key_slot("bar"), 5_061);
        assert_eq!(key_slot(""), 0);
        // The hash tag decides: every key of a partition shares its slot.
        assert_eq!(key_slot("events:{3}"), key_slot("3"));
        assert_eq!(key_slot("events:{3}:dlq"), key_slot("events:{3}"));
        assert_eq!(key_slot("events:{3}:hwm:p1"), key_slot("events:{3}"));
        // The first tag only; an empty tag is no tag (the specification's examples).
        assert_eq!(key_slot("foo{bar}{zap}"), 5_061);
        assert_ne!(key_slot("foo{}{bar}"), 5_061);
    }
}
