//! The master a Redis Sentinel deployment names: a parsed `redis+sentinel://` URL, asked at
//! every (re)connection.
//!
//! Why not the `redis` crate's `sentinel` module (redis 1.8, feature `sentinel`), which also
//! resolves a master and checks its `ROLE`; read in its `src/sentinel.rs`:
//! - Its deadlines are not ours: it connects to the sentinels and masters with the crate's
//!   defaults (1 s to connect, 0.5 s per reply), which its API does not let a caller set, and
//!   takes the sentinels' answers in the configured order (`buffered`), so a silent first
//!   sentinel costs its full timeout every time. Here each sentinel, and the master it
//!   names, has [`LOOKUP_TIMEOUT`], the one that answered last is asked first, and
//!   [`Connector::lookup_budget`](super::Connector::lookup_budget) bounds the whole lookup,
//!   which the stages add to their connection deadlines.
//! - `async_master_for` takes `&mut self` (it caches sentinel connections): one shared
//!   connector (an `Arc` cloned into every lane and partition) would need a lock around it,
//!   serializing the lookups of every partition after a failover.
//! - The publisher and consumer users of `docs/security.md` may run neither `ROLE` (optional
//!   there) nor `INFO`: the crate checks the master with `ROLE`, falls back to
//!   `INFO replication`, and fails the lookup; here a `NOPERM` takes the sentinel's word (a
//!   demoted master still answers writes with `READONLY`, which makes the caller look again).
//! - The feature brings `log` and `rand` into evstream's build for no other use.
//!
//! [`FailoverWatch`](super::FailoverWatch) listens for promotions, which the crate does not.

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use super::connector::{ask_each, check_master, open_node, LOOKUP_TIMEOUT};
use super::url::{node_settings, split_hosts, HostList};

/// A parsed `redis+sentinel://` URL.
pub struct SentinelTarget {
    /// `host:port` of each sentinel.
    pub(super) hosts: Vec<String>,
    /// The name the sentinels monitor the master under.
    pub(super) master: String,
    /// The master's user, password and database.
    pub(super) node: redis::RedisConnectionInfo,
    /// The sentinel that answered last, asked first next time.
    preferred: AtomicUsize,
}

impl std::fmt::Debug for SentinelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelTarget")
            .field("sentinels", &self.hosts)
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

impl SentinelTarget {
    /// `rest` is the URL after `redis+sentinel://`; `password` the password file's, if any;
    /// `tls` whether TLS files are given.
    pub(super) fn parse(rest: &str, password: Option<&str>, tls: bool) -> Result<Self, String> {
        let expected =
            "expected redis+sentinel://[user:password@]host:port[,host:port…]/master-name[/db]";
        if tls {
            return Err(
                "TLS with Sentinel is not supported yet; use rediss:// to one server".to_owned(),
            );
        }
        let HostList {
            hosts,
            userinfo,
            path,
        } = split_hosts(rest, "sentinel", expected)?;
        let path = path.ok_or_else(|| format!("no master name; {expected}"))?;
        let (master, db) = match path.split_once('/') {
            Some((master, db)) => (master, db),
            None => (path, ""),
        };
        if master.is_empty() {
            return Err(format!("no master name; {expected}"));
        }
        if !db.is_empty() && db.parse::<u32>().is_err() {
            return Err(format!("database '{db}' is not a number; {expected}"));
        }
        Ok(Self {
            hosts,
            master: master.to_owned(),
            node: node_settings(userinfo, password, db, expected)?,
            preferred: AtomicUsize::new(0),
        })
    }

    /// Asks the sentinels for the master's address, and checks with `ROLE` that the server
    /// there is a master (a sentinel's view can lag a failover).
    pub(super) async fn master(&self) -> redis::RedisResult<redis::Client> {
        ask_each(&self.hosts, &self.preferred, "sentinel", |sentinel| {
            self.ask(sentinel)
        })
        .await
    }

    /// One sentinel's answer, checked.
    async fn ask(&self, sentinel: &str) -> redis::RedisResult<redis::Client> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(LOOKUP_TIMEOUT))
            .set_response_timeout(Some(LOOKUP_TIMEOUT));
        let mut connection = redis::Client::open(format!("redis://{sentinel}"))?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let address: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.master)
            .query_async(&mut connection)
            .await?;
        let Some((host, port)) = address else {
            return Err(redis::RedisError::from(std::io::Error::other(format!(
                "sentinel {sentinel} does not monitor a master named '{}'",
                self.master
            ))));
        };
        let (client, master) =
            open_node(redis::ConnectionAddr::Tcp(host, port), &self.node).await?;
        check_master(client, master, &format!("sentinel {sentinel}")).await
    }

    /// `host:port` of each sentinel.
    pub(crate) fn sentinels(&self) -> &[String] {
        &self.hosts
    }

    /// The name the sentinels monitor the master under.
    pub(crate) fn master_name(&self) -> &str {
        &self.master
    }

    /// The longest a lookup takes when every sentinel is silent.
    pub(crate) fn lookup_budget(&self) -> Duration {
        LOOKUP_TIMEOUT * 2 * self.hosts.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::url::SENTINEL_SCHEME;

    fn sentinel_target(url: &str) -> Result<SentinelTarget, String> {
        SentinelTarget::parse(url.strip_prefix(SENTINEL_SCHEME).unwrap(), None, false)
    }

    #[test]
    fn sentinel_urls_name_the_sentinels_and_the_master() {
        let target =
            sentinel_target("redis+sentinel://app:pw@10.0.0.1:26379,10.0.0.2:26380/main/2")
                .unwrap();
        assert_eq!(target.hosts, ["10.0.0.1:26379", "10.0.0.2:26380"]);
        assert_eq!(target.master, "main");
        let target = sentinel_target("redis+sentinel://h:26379/main").unwrap();
        assert_eq!((target.hosts.len(), target.master.as_str()), (1, "main"));
        // A password holding `/`, `@` or `,` is split right, refused unless percent-encoded
        // (as in any URL), and never shown in the error.
        let error = sentinel_target("redis+sentinel://app:p/a@s,s@h:26379/main")
            .err()
            .unwrap();
        assert!(error.contains("percent-encode"), "{error}");
        assert!(!error.contains("p/a"), "{error}");
        let target = sentinel_target("redis+sentinel://app:p%2Fa%40s%2Cs@h:26379/main").unwrap();
        assert_eq!(target.hosts, ["h:26379"]);
        assert_eq!(target.node.password(), Some("p/a@s,s"));
        for (url, complaint) in [
            ("redis+sentinel://h:26379", "no master name"),
            ("redis+sentinel://h:26379/", "no master name"),
            ("redis+sentinel://h/main", "has no port"),
            ("redis+sentinel://h:port/main", "not host:port"),
            ("redis+sentinel://h:1,:2/main", "not host:port"),
            ("redis+sentinel://h:1/main/x", "not a number"),
        ] {
            let error = sentinel_target(url).err().unwrap_or_default();
            assert!(error.contains(complaint), "{url}: {error}");
            assert!(
                error.contains("expected redis+sentinel://"),
                "{url}: {error}"
            );
        }
    }
}
