//! The [`Connector`]: what opens connections to the configured server, following a failover.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::cluster::{key_slot, ClusterTarget};
use super::config::RedisConfig;
use super::sentinel::SentinelTarget;
use super::url::{redact_url, with_password, CLUSTER_SCHEME, SENTINEL_SCHEME};
use crate::error::ConfigError;

/// How long one sentinel or cluster node, and then the server it names, may take to answer.
pub(super) const LOOKUP_TIMEOUT: Duration = Duration::from_millis(500);

/// Opens clients for the configured Redis; see
/// [`RedisConfig::connector`](crate::config::RedisConfig::connector).
#[derive(Clone)]
pub enum Connector {
    /// One server.
    Fixed(Box<redis::Client>),
    /// The master that Redis Sentinel names at the time of the call.
    Sentinel(Arc<SentinelTarget>),
    /// The Redis Cluster primary that holds `key`'s slot at the time of the call.
    Cluster {
        /// The cluster's seed nodes and credentials.
        target: Arc<ClusterTarget>,
        /// The key whose slot decides the node (a stream partition's key).
        key: String,
    },
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(_) => f.write_str("Connector::Fixed"),
            Self::Sentinel(target) => f
                .debug_struct("Connector::Sentinel")
                .field("sentinels", &target.sentinels())
                .field("master", &target.master_name())
                .finish(),
            Self::Cluster { target, key } => f
                .debug_struct("Connector::Cluster")
                .field("nodes", &target.nodes())
                .field("key", key)
                .finish(),
        }
    }
}

impl Connector {
    /// The connector `config` describes; see
    /// [`RedisConfig::connector`](crate::config::RedisConfig::connector).
    pub(super) fn new(config: &RedisConfig) -> Result<Self, ConfigError> {
        let shown = redact_url(&config.url);
        let tls = config.tls_ca.is_some() || config.tls_cert.is_some() || config.tls_key.is_some();
        if let Some(rest) = config.url.strip_prefix(CLUSTER_SCHEME) {
            let password = password_from_file(config)?;
            return ClusterTarget::parse(rest, password.as_deref(), tls)
                .map(|target| Connector::Cluster {
                    target: Arc::new(target),
                    key: config.stream.clone(),
                })
                .map_err(|reason| ConfigError::Redis { url: shown, reason });
        }
        if let Some(rest) = config.url.strip_prefix(SENTINEL_SCHEME) {
            let password = password_from_file(config)?;
            return SentinelTarget::parse(rest, password.as_deref(), tls)
                .map(|target| Connector::Sentinel(Arc::new(target)))
                .map_err(|reason| ConfigError::Redis { url: shown, reason });
        }
        single_client(config).map(|client| Connector::Fixed(Box::new(client)))
    }

    /// A client for the server to talk to now. For Sentinel, every call asks the sentinels
    /// for the master; for Cluster, the nodes for the primary of the key's slot; either way
    /// (where the user may run `ROLE`) it checks that the server is a master, so a
    /// reconnection after a failover reaches the new one.
    pub async fn client(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Self::Fixed(client) => Ok((**client).clone()),
            Self::Sentinel(target) => target.master().await,
            Self::Cluster { target, key } => target.primary_for(key).await,
        }
    }

    /// How long [`client`](Self::client) may take before any server is reached: every
    /// sentinel or seed node silent; add it to a connection deadline.
    pub fn lookup_budget(&self) -> Duration {
        match self {
            Self::Fixed(_) => Duration::ZERO,
            Self::Sentinel(target) => target.lookup_budget(),
            Self::Cluster { target, .. } => target.lookup_budget(),
        }
    }

    /// [`client`](Self::client) for callers without a runtime, on a thread of its own (a
    /// runtime cannot be started inside another one's `block_on`).
    pub(super) fn client_blocking(&self) -> Result<redis::Client, ConfigError> {
        let found = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(redis::RedisError::from)?
                        .block_on(self.client())
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(redis::RedisError::from(std::io::Error::other(
                        "the server lookup panicked",
                    )))
                })
        });
        found.map_err(|e| match self {
            Self::Sentinel(target) => ConfigError::Redis {
                url: format!(
                    "redis+sentinel://{}/{}",
                    target.sentinels().join(","),
                    target.master_name()
                ),
                reason: format!(
                    "no sentinel named a reachable master '{}': {e}; check that the sentinels \
                     run and monitor this name (SENTINEL MASTERS)",
                    target.master_name()
                ),
            },
            Self::Cluster { target, key } => ConfigError::Redis {
                url: format!("redis+cluster://{}", target.nodes().join(",")),
                reason: format!(
                    "no cluster node named a reachable primary for {key} (slot {}): {e}; check \
                     that the nodes run and report cluster_state:ok (CLUSTER INFO)",
                    key_slot(key)
                ),
            },
            Self::Fixed(_) => ConfigError::Redis {
                url: String::new(),
                reason: e.to_string(),
            },
        })
    }

    /// Whether an error means the server is no longer the one to write to: the connection
    /// broke, a failover demoted it (`READONLY`), or a Redis Cluster moved the slot or is
    /// between owners (`MOVED`, `ASK`, `CLUSTERDOWN`, `TRYAGAIN`, `MASTERDOWN`). The caller
    /// drops the connection and asks [`client`](Self::client) again.
    pub fn calls_for_new_server(error: &redis::RedisError) -> bool {
        error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || matches!(
                error.code(),
                Some("READONLY" | "MOVED" | "ASK" | "CLUSTERDOWN" | "TRYAGAIN" | "MASTERDOWN")
            )
    }
}

/// The first line of `password_file`, if one is given; an empty one is an error.
fn password_from_file(config: &RedisConfig) -> Result<Option<String>, ConfigError> {
    let Some(path) = &config.password_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        what: "the Redis password file (redis.password_file, --redis-password-file)",
        path: path.clone(),
        source,
    })?;
    let password = text.lines().next().unwrap_or("").trim_end();
    if password.is_empty() {
        return Err(ConfigError::Redis {
            url: redact_url(&config.url),
            reason: format!("the password file {} is empty", path.display()),
        });
    }
    Ok(Some(password.to_owned()))
}

/// A client for one server (`redis://` or `rediss://`).
fn single_client(config: &RedisConfig) -> Result<redis::Client, ConfigError> {
    let shown = redact_url(&config.url);
    let invalid = |reason: String| ConfigError::Redis {
        url: shown.clone(),
        reason,
    };
    let mut url = config.url.clone();
    if let Some(password) = password_from_file(config)? {
        url = with_password(&url, &password).map_err(invalid)?;
    }
    let tls = config.url.starts_with("rediss://");
    let files = [&config.tls_ca, &config.tls_cert, &config.tls_key];
    if !tls && files.iter().any(|f| f.is_some()) {
        return Err(invalid(
            "TLS files are given but the URL is redis://, which would be plain text; use \
             rediss://"
                .to_owned(),
        ));
    }
    if config.tls_cert.is_some() != config.tls_key.is_some() {
        return Err(invalid(
            "a client certificate needs both tls_cert and tls_key (--tls-cert, --tls-key)"
                .to_owned(),
        ));
    }
    let unusable = |e: redis::RedisError| {
        invalid(format!(
            "{e} (expected redis://[user:password@]host:port[/db], rediss://… for TLS, \
             redis+sentinel://[user:password@]host:port[,host:port…]/master-name, or \
             redis+cluster://[user:password@]host:port[,host:port…])"
        ))
    };
    if !tls {
        return redis::Client::open(url).map_err(unusable);
    }
    let certificates = super::tls::certificates(config)?;
    redis::Client::build_with_tls(url, certificates).map_err(unusable)
}

/// A client for `host:port` with `settings`, and a connection to it with lookup deadlines.
pub(super) async fn open_node(
    address: redis::ConnectionAddr,
    settings: &redis::RedisConnectionInfo,
) -> redis::RedisResult<(redis::Client, redis::aio::MultiplexedConnection)> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(LOOKUP_TIMEOUT))
        .set_response_timeout(Some(LOOKUP_TIMEOUT));
    let info = redis::IntoConnectionInfo::into_connection_info(address)?
        .set_redis_settings(settings.clone());
    let client = redis::Client::open(info)?;
    let connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    Ok((client, connection))
}

/// Checks with `ROLE` that the server is a master; `named_by` says who named it.
pub(super) async fn check_master(
    client: redis::Client,
    mut connection: redis::aio::MultiplexedConnection,
    named_by: &str,
) -> redis::RedisResult<redis::Client> {
    let role = redis::cmd("ROLE")
        .query_async::<Vec<redis::Value>>(&mut connection)
        .await;
    match role {
        Ok(role) => match role.first() {
            Some(redis::Value::BulkString(role)) if role == b"master" => Ok(client),
            _ => Err(redis::RedisError::from(std::io::Error::other(format!(
                "{named_by} named a server that is not (or no longer) a master"
            )))),
        },
        // A user without `+role` (the minimal roles of docs/security.md): take the word of
        // who named it; a demoted master still answers writes with READONLY (a moved slot
        // with MOVED), which makes the caller look again.
        Err(error) if error.code() == Some("NOPERM") => Ok(client),
        Err(error) => Err(error),
    }
}

/// Asks `hosts` in turn, the one that answered last first, each within the lookup deadline,
/// and returns the first good answer. A silent host costs one timeout, not the whole lookup.
pub(super) async fn ask_each<'a, F, Fut>(
    hosts: &'a [String],
    preferred: &AtomicUsize,
    what: &str,
    ask: F,
) -> redis::RedisResult<redis::Client>
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<redis::Client>>,
{
    let count = hosts.len();
    let first = preferred.load(Ordering::Relaxed) % count;
    let mut last_error = None;
    for index in (0..count).map(|i| (first + i) % count) {
        match tokio::time::timeout(LOOKUP_TIMEOUT * 2, ask(&hosts[index])).await {
            Ok(Ok(client)) => {
                preferred.store(index, Ordering::Relaxed);
                return Ok(client);
            }
            Ok(Err(error)) => last_error = Some(error),
            Err(_) => {
                last_error = Some(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("{what} {} did not answer in time", hosts[index]),
                )))
            }
        }
    }
    Err(last_error
        .unwrap_or_else(|| redis::RedisError::from(std::io::Error::other("no host configured"))))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn a_sentinel_url_is_a_connector_and_tls_files_with_it_are_refused() {
        let mut config = RedisConfig {
            url: "redis+sentinel://127.0.0.1:1/main".to_owned(),
            ..RedisConfig::default()
        };
        assert!(matches!(config.connector(), Ok(Connector::Sentinel(_))));
        config.tls_ca = Some(PathBuf::from("ca.pem"));
        let error = config.connector().unwrap_err().to_string();
        assert!(
            error.contains("TLS with Sentinel is not supported"),
            "{error}"
        );
        // Nobody listens on port 1: a clear error naming the master, not a hang.
        config.tls_ca = None;
        let error = config.client().unwrap_err().to_string();
        assert!(
            error.contains("no sentinel named a reachable master 'main'"),
            "{error}"
        );
    }

    #[test]
    fn cluster_urls_name_the_nodes_and_route_by_the_partition_key() {
        let mut config = RedisConfig {
            url: "redis+cluster://u:p%2Fw@10.0.0.1:7000,10.0.0.2:7001".to_owned(),
            stream: "events:{3}".to_owned(),
            ..RedisConfig::default()
        };
        match config.connector() {
            Ok(Connector::Cluster { target, key }) => {
                assert_eq!(target.hosts, ["10.0.0.1:7000", "10.0.0.2:7001"]);
                assert_eq!(key, "events:{3}");
                assert_eq!(target.node.password(), Some("p/w"));
            }
            other => panic!("{other:?}"),
        }
        for (url, expected) in [
            ("redis+cluster://h", "has no port"),
            ("redis+cluster://h:x", "is not host:port"),
            ("redis+cluster://h:7000/2", "only database 0"),
        ] {
            config.url = url.to_owned();
            let error = config.connector().unwrap_err().to_string();
            assert!(error.contains(expected), "{url}: {error}");
        }
        config.url = "redis+cluster://u:secret@h:7000".to_owned();
        config.tls_ca = Some(PathBuf::from("ca.pem"));
        let error = config.connector().unwrap_err().to_string();
        assert!(error.contains("TLS with Redis Cluster"), "{error}");
        assert!(!error.contains("secret"), "{error}");
        // Nobody listens on port 1: a clear error naming the key and its slot, not a hang.
        config.tls_ca = None;
        config.url = "redis+cluster://127.0.0.1:1".to_owned();
        let error = config.client().unwrap_err().to_string();
        assert!(
            error.contains("no cluster node named a reachable primary for events:{3} (slot"),
            "{error}"
        );
    }
}
