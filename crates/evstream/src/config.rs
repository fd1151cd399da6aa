//! The one typed configuration of evstream, read from TOML (`--config FILE`).
//!
//! Every section and option is optional; a missing one takes the default documented on it.
//! Unknown options are errors, so a typo never silently falls back to a default.
//!
//! The reference below is `docs/configuration.md`, included here so that the two cannot
//! drift; `tests/config_docs.rs` checks that its example parses, shows the defaults and names
//! every option.
//!
#![doc = include_str!("../../../docs/configuration.md")]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
pub use crate::ship::FsyncPolicy;

/// Default Redis URL.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Default stream key.
pub const DEFAULT_STREAM: &str = "events";

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where events go.
    pub redis: RedisConfig,
    /// The in-process ring buffer.
    pub ring: RingConfig,
    /// Identity of this publishing process.
    pub producer: ProducerConfig,
    /// The shipper from the ring into Redis.
    pub ship: ShipConfig,
    /// Consumer groups reading the stream.
    pub consume: ConsumeConfig,
    /// The ops loop: retention, Redis memory, group hygiene, alerts.
    pub ops: OpsConfig,
}

impl Config {
    /// Reads and validates a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Self =
            toml::from_str(&text).map_err(|error| parse_error(path, &text, &error))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.ring.validate()?;
        self.ship.validate()?;
        self.consume.validate()?;
        self.ops.validate()?;
        self.redis.validate()?;
        self.producer.validate()
    }

    /// One configuration per partition of the stream: the same settings with `redis.stream`
    /// set to the partition's key (`<stream>:{p}`) and no partitions of its own, so every key
    /// derived from it (dead letters, marks, group counters, analysis) carries the
    /// partition's hash tag and lives in its Redis Cluster slot. Without `redis.partitions`,
    /// this configuration alone.
    pub fn partition_configs(&self) -> Vec<Config> {
        self.redis
            .stream_keys()
            .into_iter()
            .map(|stream| {
                let mut config = self.clone();
                config.redis.stream = stream;
                config.redis.partitions = None;
                config
            })
            .collect()
    }
}

/// `[redis]`: the server and the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Server URL: `redis://[user[:password]@]host:port[/db]`, or `rediss://…` for TLS, or
    /// `redis+sentinel://[user[:password]@]host:port[,host:port…]/<master-name>[/db]` to
    /// find the master through Redis Sentinel (and find it again after a failover; the
    /// credentials are the master's). Default `redis://127.0.0.1:6379`.
    pub url: String,
    /// Stream key. Default `events`.
    pub stream: String,
    /// Split the stream into this many keys, `<stream>:{0}` … `<stream>:{P-1}` (1 to 1,024),
    /// each event's chosen by a hash of its correlation id, so an order's events stay in one
    /// partition and in order. For Redis Cluster, where one key lives on one primary: the
    /// partitions spread over the primaries. Default: none, one key named `stream`.
    pub partitions: Option<u16>,
    /// A file holding the password (its first line), used instead of one in the URL, so the
    /// secret is in neither the command line nor the configuration file. Default: none.
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the server's certificate, for `rediss://`. Default:
    /// the system's trusted roots.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; with `tls_key`. Default: none.
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM). Default: none.
    pub tls_key: Option<PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_REDIS_URL.to_owned(),
            stream: DEFAULT_STREAM.to_owned(),
            partitions: None,
            password_file: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl RedisConfig {
    /// The stream's keys: `stream` alone, or one per partition.
    pub fn stream_keys(&self) -> Vec<String> {
        match self.partitions {
            None => vec![self.stream.clone()],
            Some(count) => (0..count).map(|p| partition_key(&self.stream, p)).collect(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let Some(count) = self.partitions else {
            if self.url.starts_with(CLUSTER_SCHEME) && !has_hash_tag(&self.stream) {
                return Err(ConfigError::Invalid {
                    field: "redis.partitions",
                    value: "none".to_owned(),
                    reason: "Redis Cluster needs a partitioned stream (redis.partitions, \
                             --partitions P): the keys a batch touches together must share a \
                             slot; one or two partitions per primary is a good start",
                });
            }
            return Ok(());
        };
        if !(1..=MAX_PARTITIONS).contains(&count) {
            return Err(ConfigError::Invalid {
                field: "redis.partitions",
                value: count.to_string(),
                reason: "must be between 1 and 1024; one or two per Redis Cluster primary is \
                         a good start",
            });
        }
        if self.stream.contains('{') || self.stream.contains('}') {
            return Err(ConfigError::Invalid {
                field: "redis.stream",
                value: self.stream.clone(),
                reason: "a partitioned stream's name must not hold { or }: the partitions' \
                         hash tags would all be the name's, one cluster slot for all",
            });
        }
        Ok(())
    }

    /// A client for this server: the URL with the password file's secret, and TLS with the
    /// given CA and client certificate. TLS files with a plain `redis://` URL are an error,
    /// never a silent plain-text connection. With a `redis+sentinel://` URL, the sentinels
    /// are asked for the current master (a blocking call); long-running parts use
    /// [`connector`](Self::connector) instead, which asks again at every reconnection.
    pub fn client(&self) -> Result<redis::Client, ConfigError> {
        match self.connector()? {
            Connector::Fixed(client) => Ok(*client),
            connector => connector.client_blocking(),
        }
    }

    /// What opens connections to this server, following a failover: for a single node, one
    /// client; for `redis+sentinel://`, the sentinels, asked at every call of
    /// [`Connector::client`]; for `redis+cluster://`, the cluster's nodes, asked at every
    /// call which primary holds the slot of `stream` (this configuration's key: a
    /// partition's, see [`Config::partition_configs`]).
    pub fn connector(&self) -> Result<Connector, ConfigError> {
        let shown = crate::ship::redact_url(&self.url);
        let tls = self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some();
        if let Some(rest) = self.url.strip_prefix(CLUSTER_SCHEME) {
            let password = self.password_from_file()?;
            return ClusterTarget::parse(rest, password.as_deref(), tls)
                .map(|target| Connector::Cluster {
                    target: Arc::new(target),
                    key: self.stream.clone(),
                })
                .map_err(|reason| ConfigError::Redis { url: shown, reason });
        }
        if let Some(rest) = self.url.strip_prefix(SENTINEL_SCHEME) {
            let password = self.password_from_file()?;
            return SentinelTarget::parse(rest, password.as_deref(), tls)
                .map(|target| Connector::Sentinel(Arc::new(target)))
                .map_err(|reason| ConfigError::Redis { url: shown, reason });
        }
        self.single_client()
            .map(|client| Connector::Fixed(Box::new(client)))
    }

    /// The first line of `password_file`, if one is given; an empty one is an error.
    fn password_from_file(&self) -> Result<Option<String>, ConfigError> {
        let Some(path) = &self.password_file else {
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
                url: crate::ship::redact_url(&self.url),
                reason: format!("the password file {} is empty", path.display()),
            });
        }
        Ok(Some(password.to_owned()))
    }

    fn single_client(&self) -> Result<redis::Client, ConfigError> {
        let shown = crate::ship::redact_url(&self.url);
        let invalid = |reason: String| ConfigError::Redis {
            url: shown.clone(),
            reason,
        };
        let mut url = self.url.clone();
        if let Some(password) = self.password_from_file()? {
            url = with_password(&url, &password).map_err(invalid)?;
        }
        let tls = self.url.starts_with("rediss://");
        let files = [&self.tls_ca, &self.tls_cert, &self.tls_key];
        if !tls && files.iter().any(|f| f.is_some()) {
            return Err(invalid(
                "TLS files are given but the URL is redis://, which would be plain text; use \
                 rediss://"
                    .to_owned(),
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
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
        // redis's rustls has no crypto provider of its own: ring, once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let read = |what: &'static str, path: &PathBuf| {
            std::fs::read(path).map_err(|source| ConfigError::ReadFile {
                what,
                path: path.clone(),
                source,
            })
        };
        let client_tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read(
                    "the TLS client certificate (redis.tls_cert, --tls-cert)",
                    cert,
                )?,
                client_key: read("the TLS client key (redis.tls_key, --tls-key)", key)?,
            }),
            _ => None,
        };
        let root_cert = self
            .tls_ca
            .as_ref()
            .map(|ca| read("the TLS CA certificate (redis.tls_ca, --tls-ca)", ca))
            .transpose()?;
        redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls,
                root_cert,
            },
        )
        .map_err(unusable)
    }
}

const SENTINEL_SCHEME: &str = "redis+sentinel://";
const CLUSTER_SCHEME: &str = "redis+cluster://";

/// How long one sentinel or cluster node, and then the server it names, may take to answer.
const LOOKUP_TIMEOUT: Duration = Duration::from_millis(500);

/// Most partitions a stream may have.
const MAX_PARTITIONS: u16 = 1024;

/// Whether `key` holds a Redis Cluster hash tag (a non-empty `{…}`).
fn has_hash_tag(key: &str) -> bool {
    key.split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .is_some_and(|(tag, _)| !tag.is_empty())
}

/// The key of partition `p` of `stream`: `<stream>:{p}`. The braces are a Redis Cluster hash
/// tag: keys derived from it by appending (`<stream>:{p}:dlq`, `…:hwm:<producer>`) hash to
/// the same slot, so one script or transaction may touch them together.
pub fn partition_key(stream: &str, partition: u16) -> String {
    format!("{stream}:{{{partition}}}")
}

/// The key an ops loop that maintains `stream` refreshes on every pass (`SET … PX`), so that
/// a shipper can tell whether anything trims the stream it appends to: `<stream>:ops`.
pub fn ops_heartbeat_key(stream: &str) -> String {
    format!("{stream}:ops")
}

/// The partition of `<stream>` an event with this correlation id goes to, of `count`: FNV-1a
/// of the id, so every process agrees and one order's events share a partition. Events
/// without a correlation id go to partition 0.
pub fn partition_of(correlation_id: &str, count: usize) -> usize {
    if count <= 1 || correlation_id.is_empty() {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in correlation_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % count as u64) as usize
}

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

/// Opens clients for the configured Redis; see [`RedisConfig::connector`].
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
                .field("sentinels", &target.hosts)
                .field("master", &target.master)
                .finish(),
            Self::Cluster { target, key } => f
                .debug_struct("Connector::Cluster")
                .field("nodes", &target.hosts)
                .field("key", key)
                .finish(),
        }
    }
}

impl Connector {
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
    fn client_blocking(&self) -> Result<redis::Client, ConfigError> {
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
                    target.hosts.join(","),
                    target.master
                ),
                reason: format!(
                    "no sentinel named a reachable master '{}': {e}; check that the sentinels \
                     run and monitor this name (SENTINEL MASTERS)",
                    target.master
                ),
            },
            Self::Cluster { target, key } => ConfigError::Redis {
                url: format!("redis+cluster://{}", target.hosts.join(",")),
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

/// The parts of `[user:password@]host:port[,host:port…][/path]`.
struct HostList<'a> {
    hosts: Vec<String>,
    userinfo: Option<&'a str>,
    /// Without its `/`.
    path: Option<&'a str>,
}

/// Splits `[user:password@]host:port[,host:port…]` then, for Sentinel, `/path`. The user
/// information ends at the last `@` (a password may hold `/`, `@`, `,`).
fn split_hosts<'a>(rest: &'a str, what: &str, expected: &str) -> Result<HostList<'a>, String> {
    let (userinfo, after) = match rest.rsplit_once('@') {
        Some((userinfo, after)) => (Some(userinfo), after),
        None => (None, rest),
    };
    let (hosts, path) = match after.split_once('/') {
        Some((hosts, path)) => (hosts, Some(path)),
        None => (after, None),
    };
    let hosts = hosts
        .split(',')
        .map(|host| {
            let (name, port) = host
                .rsplit_once(':')
                .ok_or_else(|| format!("{what} '{host}' has no port; {expected}"))?;
            if name.is_empty() || port.parse::<u16>().is_err() {
                return Err(format!("{what} '{host}' is not host:port; {expected}"));
            }
            Ok(host.to_owned())
        })
        .collect::<Result<_, String>>()?;
    Ok(HostList {
        hosts,
        userinfo,
        path,
    })
}

/// The servers' user, password and database, read by the redis crate from an equivalent
/// single-node URL.
fn node_settings(
    userinfo: Option<&str>,
    password: Option<&str>,
    db: &str,
    expected: &str,
) -> Result<redis::RedisConnectionInfo, String> {
    let mut node_url = match userinfo {
        Some(userinfo) => format!("redis://{userinfo}@127.0.0.1:6379/{db}"),
        None => format!("redis://127.0.0.1:6379/{db}"),
    };
    if let Some(password) = password {
        node_url = with_password(&node_url, password)?;
    }
    let info =
        redis::IntoConnectionInfo::into_connection_info(node_url.as_str()).map_err(|_| {
            format!("the user or password cannot be used (percent-encode them); {expected}")
        })?;
    Ok(info.redis_settings().clone())
}

/// A client for `host:port` with `settings`, and a connection to it with lookup deadlines.
async fn open_node(
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
async fn check_master(
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
async fn ask_each<'a, F, Fut>(
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

/// A parsed `redis+sentinel://` URL.
pub struct SentinelTarget {
    /// `host:port` of each sentinel.
    hosts: Vec<String>,
    /// The name the sentinels monitor the master under.
    master: String,
    /// The master's user, password and database.
    node: redis::RedisConnectionInfo,
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
    fn parse(rest: &str, password: Option<&str>, tls: bool) -> Result<Self, String> {
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
    async fn master(&self) -> redis::RedisResult<redis::Client> {
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

/// A parsed `redis+cluster://` URL: seed nodes and the credentials every node shares.
pub struct ClusterTarget {
    /// `host:port` of each seed node.
    hosts: Vec<String>,
    /// The nodes' user and password.
    node: redis::RedisConnectionInfo,
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
    fn parse(rest: &str, password: Option<&str>, tls: bool) -> Result<Self, String> {
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
    async fn primary_for(&self, key: &str) -> redis::RedisResult<redis::Client> {
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

    /// The longest a lookup takes when every seed node is silent.
    fn lookup_budget(&self) -> Duration {
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

/// Names a connection (`CLIENT SETNAME`) so that `CLIENT LIST` tells operators which evstream
/// process and role holds it: `evstream-ship:<producer_id>`,
/// `evstream-consume:<group>:<consumer>`. Characters Redis refuses in a name (spaces,
/// controls, non-ASCII) become `_`. Optional: a user without `client|setname` only loses the
/// names.
pub(crate) async fn name_connection(
    connection: &mut redis::aio::MultiplexedConnection,
    name: &str,
) {
    let name: String = name
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    let named = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(&name)
        .query_async::<()>(connection)
        .await;
    if let Err(error) = named {
        tracing::debug!(%error, "CLIENT SETNAME refused; the connection stays unnamed");
    }
}

/// Puts `password` into the URL's user information, percent-encoded.
fn with_password(url: &str, password: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "expected redis://… or rediss://…".to_owned())?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let user = authority
        .rsplit_once('@')
        .map(|(info, _)| info.split(':').next().unwrap_or(""))
        .unwrap_or("");
    let mut encoded = String::new();
    for byte in password.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(format!("{scheme}://{user}:{encoded}@{host}{path}"))
}

/// What [`Publisher::publish`](crate::publish::Publisher::publish) does when the ring is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Refuse at once with [`PublishError::RingFull`](crate::PublishError::RingFull). Default.
    #[default]
    Refuse,
    /// Wait for room, spinning then yielding, up to `wait_timeout_us`, then refuse.
    Wait,
}

/// `[ring]`: the in-process ring buffer between the engine's threads and the shipper.
///
/// Memory: about `capacity × slot_bytes` bytes, allocated once at start (64 MiB by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingConfig {
    /// Number of slots, a power of two of at least 2. Default 65,536.
    capacity: usize,
    /// Bytes pre-allocated for each slot's payload. Payloads up to this size are published
    /// without any allocation; larger ones (up to `max_event_bytes`) grow the slot's buffer
    /// once, which the shipper hands back at normal size. Default 1,024.
    slot_bytes: usize,
    /// Largest accepted serialized payload; larger events are refused, never truncated.
    /// Default 65,536 (64 KiB).
    max_event_bytes: usize,
    /// Behaviour when the ring is full. Default `refuse`.
    when_full: WhenFull,
    /// How long `when_full = "wait"` waits for room, in microseconds. Default 100.
    wait_timeout_us: u64,
    /// One `publish` call in this many, per thread, is timed for the
    /// `evstream_publish_duration_seconds` histogram; a power of two, or 0 for none.
    /// Default 64.
    publish_timing_sample: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            capacity: 65_536,
            slot_bytes: 1024,
            max_event_bytes: 64 * 1024,
            when_full: WhenFull::Refuse,
            wait_timeout_us: 100,
            publish_timing_sample: 64,
        }
    }
}

impl RingConfig {
    /// Sets the number of slots (a power of two of at least 2).
    pub fn set_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets the bytes pre-allocated per slot.
    pub fn set_slot_bytes(mut self, slot_bytes: usize) -> Self {
        self.slot_bytes = slot_bytes;
        self
    }

    /// Sets the largest accepted payload.
    pub fn set_max_event_bytes(mut self, max_event_bytes: usize) -> Self {
        self.max_event_bytes = max_event_bytes;
        self
    }

    /// Sets the behaviour when the ring is full; `wait` is the bound for [`WhenFull::Wait`].
    pub fn set_when_full(mut self, when_full: WhenFull, wait: Duration) -> Self {
        self.when_full = when_full;
        self.wait_timeout_us = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        self
    }

    /// Sets how many `publish` calls per timed one (a power of two; 0: none).
    pub fn set_publish_timing_sample(mut self, every: u32) -> Self {
        self.publish_timing_sample = every;
        self
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// One `publish` call in this many is timed; 0 for none.
    pub fn publish_timing_sample(&self) -> u32 {
        self.publish_timing_sample
    }

    /// Bytes pre-allocated per slot.
    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// Largest accepted payload in bytes.
    pub fn max_event_bytes(&self) -> usize {
        self.max_event_bytes
    }

    /// Behaviour when full.
    pub fn when_full(&self) -> WhenFull {
        self.when_full
    }

    /// Bound of the wait for [`WhenFull::Wait`].
    pub fn wait_timeout(&self) -> Duration {
        Duration::from_micros(self.wait_timeout_us)
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.capacity < 2 || !self.capacity.is_power_of_two() {
            return Err(ConfigError::Invalid {
                field: "ring.capacity",
                value: self.capacity.to_string(),
                reason: "must be a power of two of at least 2, e.g. 65536",
            });
        }
        if self.publish_timing_sample != 0 && !self.publish_timing_sample.is_power_of_two() {
            return Err(ConfigError::Invalid {
                field: "ring.publish_timing_sample",
                value: self.publish_timing_sample.to_string(),
                reason: "must be a power of two (e.g. 64), or 0 to time no publish call",
            });
        }
        if self.max_event_bytes == 0 || self.max_event_bytes > MAX_EVENT_BYTES_LIMIT {
            return Err(ConfigError::Invalid {
                field: "ring.max_event_bytes",
                value: self.max_event_bytes.to_string(),
                reason: "must be between 1 and 67108864 (64 MiB)",
            });
        }
        if self.slot_bytes > self.max_event_bytes {
            return Err(ConfigError::Invalid {
                field: "ring.slot_bytes",
                value: self.slot_bytes.to_string(),
                reason: "must not exceed ring.max_event_bytes",
            });
        }
        Ok(())
    }
}

/// `[ship]`: how the shipper batches, retries and trims. See `docs/configuration.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShipConfig {
    /// Most events in one batch (one Redis call). Default 256.
    pub batch_max: usize,
    /// How long a partial batch waits for more events while other batches are in flight, in
    /// microseconds; when nothing is in flight a batch goes at once. Default 2000.
    pub linger_us: u64,
    /// How a batch is appended exactly once: `transaction` (one `MULTI`/`EXEC` of plain
    /// `XADD`s between a guard script and one that moves the mark) or `script` (one Lua
    /// script per batch; a narrower ACL, about twice the Redis CPU per event). Both pipeline
    /// `in_flight` batches. Default `transaction`. Measurements: `BENCHMARKS.md`.
    pub append: AppendMode,
    /// Batches in flight at once on the connection. Default 4.
    pub in_flight: usize,
    /// Deadline of one batch, in milliseconds; past it the batch is retried. Default 100.
    pub timeout_ms: u64,
    /// With k > 0, a batch counts as delivered only once `WAIT k` confirms that k replicas
    /// have it (waiting up to half of `timeout_ms`); otherwise it is retried, and the
    /// no-duplicate check skips what was appended already. So a failover to a replica that
    /// acknowledged loses nothing. Costs a replica round trip per batch, and batches of one
    /// connection wait behind each `WAIT`. Default 0 (off).
    pub min_replicas_ack: u32,
    /// `MAXLEN ~` bound the stream is trimmed to after each batch; 0 disables trimming.
    /// Default 0: this trim does not know about consumer groups and would delete entries a
    /// lagging group has not read, uncounted. Retention belongs to the ops loop
    /// ([`OpsConfig::max_len`], [`OpsConfig::max_age_s`]), which waits for lagging groups
    /// unless memory is critical and counts what they lose. Set it only as a hard cap for a
    /// stream no ops loop looks after, or well above `ops.max_len`.
    pub max_len: u64,
    /// First retry delay in milliseconds; it doubles per attempt, with full jitter. Default 10.
    pub retry_base_ms: u64,
    /// Longest retry delay in milliseconds. Default 1000.
    pub retry_max_ms: u64,
    /// Consecutive failures that open the circuit breaker. Default 10.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before one probe batch the first time, in
    /// milliseconds; each failed probe doubles it, up to `breaker_cool_down_max_ms`, and a
    /// success resets it. The cool-down also ends at once when a new connection's handshake
    /// succeeds (the server is back, or a failover reached a new one) or Sentinel announces a
    /// promotion: it only holds batches back from a server that answers but keeps failing.
    /// Default 250.
    pub breaker_cool_down_ms: u64,
    /// Longest cool-down of the breaker, in milliseconds. Default 2000: a server that answers
    /// but keeps failing gets one probe batch every 2 s at most, and once it recovers,
    /// shipping resumes within 2 s. (A longer cool-down protects the server no better: the
    /// probe is one batch.)
    pub breaker_cool_down_max_ms: u64,
    /// Lifetime of a producer's high-water mark in Redis (the no-duplicate state), in seconds,
    /// refreshed by every batch. It must exceed the longest time a batch can wait for a
    /// retry. Default 604800 (7 days).
    pub dedupe_ttl_s: u64,
    /// Default deadline of a shutdown's final flush, in milliseconds. Default 5000.
    pub shutdown_timeout_ms: u64,
    /// Directory of the spill journal. When Redis is away longer than the ring can absorb,
    /// batches spill here and are replayed in order once it is back; at shutdown, what could
    /// not be delivered is left here for the next start to replay. Default: none, which means
    /// that during a long outage the ring fills and `publish` refuses events (counted); set it
    /// in production.
    pub journal_dir: Option<PathBuf>,
    /// Disk budget of the journal in MiB; past it, the ring fills again. Default 1024.
    pub journal_budget_mb: u64,
    /// When journal writes are forced to disk. Default `interval`.
    pub journal_fsync: FsyncPolicy,
    /// Period of `journal_fsync = "interval"`, in milliseconds. Default 1000.
    pub journal_fsync_interval_ms: u64,
    /// Replay journals left by earlier processes even when their events are older than
    /// `dedupe_ttl_s` and their producer's high-water mark is gone from Redis. Without the
    /// mark, nothing tells which of their events Redis already has: such a journal is not
    /// replayed (logged as an error, counted in health as `journals_refused`) unless this is
    /// set. Set it for one start once you know none of the journal's events reached the
    /// stream (see `docs/operations.md`, "A journal older than the mark"); replaying a journal
    /// that was partly delivered appends that part twice. Default false.
    pub replay_stale_journals: bool,
    /// Ring fill, in percent of its capacity, from which batches spill to the journal while
    /// Redis is not keeping up. Default 50.
    pub spill_at_percent: u8,
    /// Strict mode: when not empty, only these event types go to the stream; any other is
    /// dead-lettered with reason `unknown_type`. Default empty (every type accepted).
    pub known_event_types: Vec<String>,
    /// Schema validation in the shipper (never on `publish`'s path): `off`, `sample`
    /// (validate `validation_sample_rate` of the events, count and log violations, ship them
    /// anyway) or `strict` (validate every event; unknown types and invalid data are
    /// dead-lettered as `unknown_type` / `invalid_schema`). Default `off`.
    pub validation: Validation,
    /// Fraction of events validated in `sample` mode. Default 0.01.
    pub validation_sample_rate: f64,
    /// Schema directory for validation; default: the registry in Redis
    /// (`evstream schema push`), re-read when its revision moves (`schema::Source`).
    pub schemas_dir: Option<PathBuf>,
}

/// How the shipper appends a batch exactly once; see [`ShipConfig::append`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppendMode {
    /// One Lua script per batch that checks the mark and appends every event: the narrowest
    /// ACL (no `RENAME`/`DEL`), about twice the Redis CPU per event.
    Script,
    /// `MULTI`/`EXEC` of plain `XADD`s between a guard script that checks the mark (and
    /// makes the `XADD`s fail when it is not where the batch continues) and one that moves
    /// it. Default.
    #[default]
    Transaction,
}

/// Schema validation in the shipper.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    /// No validation. Default.
    #[default]
    Off,
    /// Validate a sample; violations are counted and logged, and shipped.
    Sample,
    /// Validate every event; violations are dead-lettered.
    Strict,
}

impl Default for ShipConfig {
    fn default() -> Self {
        Self {
            batch_max: 256,
            linger_us: 2000,
            append: AppendMode::Transaction,
            in_flight: 4,
            timeout_ms: 100,
            min_replicas_ack: 0,
            max_len: 0,
            retry_base_ms: 10,
            retry_max_ms: 1000,
            breaker_threshold: 10,
            breaker_cool_down_ms: 250,
            breaker_cool_down_max_ms: 2_000,
            dedupe_ttl_s: 7 * 24 * 3600,
            shutdown_timeout_ms: 5000,
            journal_dir: None,
            journal_budget_mb: 1024,
            journal_fsync: FsyncPolicy::Interval,
            journal_fsync_interval_ms: 1000,
            replay_stale_journals: false,
            spill_at_percent: 50,
            known_event_types: Vec::new(),
            validation: Validation::Off,
            validation_sample_rate: 0.01,
            schemas_dir: None,
        }
    }
}

impl ShipConfig {
    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let checks: [(&'static str, u64, bool, &'static str); 8] = [
            (
                "ship.breaker_cool_down_ms",
                self.breaker_cool_down_ms,
                self.breaker_cool_down_ms >= 1,
                "must be at least 1",
            ),
            (
                "ship.breaker_cool_down_max_ms",
                self.breaker_cool_down_max_ms,
                self.breaker_cool_down_max_ms >= self.breaker_cool_down_ms,
                "must be at least ship.breaker_cool_down_ms",
            ),
            (
                "ship.batch_max",
                self.batch_max as u64,
                (1..=10_000).contains(&self.batch_max),
                "must be between 1 and 10000",
            ),
            (
                "ship.in_flight",
                self.in_flight as u64,
                (1..=64).contains(&self.in_flight),
                "must be between 1 and 64",
            ),
            (
                "ship.timeout_ms",
                self.timeout_ms,
                self.timeout_ms >= 1,
                "must be at least 1",
            ),
            (
                "ship.retry_base_ms",
                self.retry_base_ms,
                self.retry_base_ms >= 1,
                "must be at least 1",
            ),
            (
                "ship.dedupe_ttl_s",
                self.dedupe_ttl_s,
                self.dedupe_ttl_s >= 60,
                "must be at least 60",
            ),
            (
                "ship.spill_at_percent",
                u64::from(self.spill_at_percent),
                (1..=100).contains(&self.spill_at_percent),
                "must be between 1 and 100",
            ),
        ];
        for (field, value, ok, reason) in checks {
            if !ok {
                return Err(ConfigError::Invalid {
                    field,
                    value: value.to_string(),
                    reason,
                });
            }
        }
        Ok(())
    }
}

/// `[consume]`: how a consumer group reads the stream.
///
/// The consumer name is not here: every process needs its own (`--consumer`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumeConfig {
    /// Consumer group name. Default `intellisense_group`.
    pub group: String,
    /// Where a group created by evstream starts: `0` reads the whole stream (the original
    /// design's choice), `$` only entries added from now on, or an entry id. Default `0`.
    pub start_id: String,
    /// Entries asked for per `XREADGROUP` and per `XAUTOCLAIM`. Default 256.
    pub count: usize,
    /// How long one `XREADGROUP` blocks waiting for new entries, in milliseconds; also the
    /// longest delay before a shutdown is noticed when `CLIENT UNBLOCK` is not allowed.
    /// Default 1000.
    pub block_ms: u64,
    /// Pending entries idle this long (in any consumer of the group, this one included) are
    /// claimed with `XAUTOCLAIM` and processed again, in milliseconds. Default 60,000.
    pub min_idle_ms: u64,
    /// Deliveries after which an entry that still fails goes to the dead letter queue and is
    /// acknowledged. Default 5.
    pub max_deliveries: u64,
    /// Deadline of every call except the blocking read, in milliseconds. Default 2000.
    pub timeout_ms: u64,
    /// Largest accepted `data` field in bytes; a larger entry is poison (`too_large`).
    /// Default 1 MiB.
    pub max_data_bytes: usize,
    /// How many recently applied event ids the consumer remembers, to skip an event that
    /// reaches it twice (e.g. a group re-created from `0`). Default 100,000.
    pub dedupe_capacity: usize,
    /// How long an applied event id is remembered, in seconds. Default 600.
    pub dedupe_ttl_s: u64,
    /// With a schema registry in use: `false` (the default) hands events of a type nobody
    /// registered to the handler unvalidated and counts them (`unvalidated`), since an
    /// everything stream carries new types before anyone registers them; `true` makes them
    /// poison (`unknown_type`), retried and then dead-lettered. Types the handler does not
    /// read are acknowledged unhandled either way.
    pub strict_schemas: bool,
    /// How often a consumer with the registry from Redis checks its revision and reloads it,
    /// in milliseconds. Default 5000.
    pub schema_reload_ms: u64,
}

impl Default for ConsumeConfig {
    fn default() -> Self {
        Self {
            group: "intellisense_group".to_owned(),
            start_id: "0".to_owned(),
            count: 256,
            block_ms: 1000,
            min_idle_ms: 60_000,
            max_deliveries: 5,
            timeout_ms: 2000,
            max_data_bytes: 1024 * 1024,
            dedupe_capacity: 100_000,
            dedupe_ttl_s: 600,
            strict_schemas: false,
            schema_reload_ms: 5000,
        }
    }
}

impl ConsumeConfig {
    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, value: &dyn ToString, reason| ConfigError::Invalid {
            field,
            value: value.to_string(),
            reason,
        };
        if self.group.is_empty() {
            return Err(invalid("consume.group", &"\"\"", "must not be empty"));
        }
        if !(self.start_id == "0" || self.start_id == "$" || is_stream_id(&self.start_id)) {
            return Err(invalid(
                "consume.start_id",
                &self.start_id,
                "must be \"0\", \"$\" or an entry id such as 1700000000000-0",
            ));
        }
        let checks: [(&'static str, u64, bool, &'static str); 6] = [
            (
                "consume.count",
                self.count as u64,
                (1..=10_000).contains(&self.count),
                "must be between 1 and 10000",
            ),
            (
                "consume.block_ms",
                self.block_ms,
                (1..=60_000).contains(&self.block_ms),
                "must be between 1 and 60000",
            ),
            (
                "consume.max_deliveries",
                self.max_deliveries,
                self.max_deliveries >= 1,
                "must be at least 1",
            ),
            (
                "consume.timeout_ms",
                self.timeout_ms,
                self.timeout_ms >= 1,
                "must be at least 1",
            ),
            (
                "consume.min_idle_ms",
                self.min_idle_ms,
                self.min_idle_ms >= 1,
                "must be at least 1",
            ),
            (
                "consume.schema_reload_ms",
                self.schema_reload_ms,
                self.schema_reload_ms >= 100,
                "must be at least 100 (each check is a GET on the server)",
            ),
        ];
        for (field, value, ok, reason) in checks {
            if !ok {
                return Err(invalid(field, &value, reason));
            }
        }
        Ok(())
    }
}

/// `[ops]`: the ops loop (`evstream ops`, or [`crate::ops::OpsLoop`] in any process).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    /// How often Redis is polled (`INFO`, `XINFO`) and retention applied, in milliseconds.
    /// Default 30,000.
    pub interval_ms: u64,
    /// Retention by length: entries beyond the newest `max_len` are trimmed. 0: no length
    /// limit. Default 1,000,000.
    pub max_len: u64,
    /// Retention by age: entries older than this many seconds are trimmed. 0: no age limit.
    /// Default 86,400 (24 h).
    pub max_age_s: u64,
    /// Length the stream is cut to when memory is critical, even past entries a group has
    /// not read (those are counted and alerted); `max_len` when that is smaller.
    /// Default 100,000.
    pub aggressive_len: u64,
    /// Dead letters kept in `<stream>:dlq` at most (the newest); 0: no limit by count.
    /// Default 100,000. What this and [`dlq_max_age_s`](Self::dlq_max_age_s) delete is
    /// counted (`evstream_dlq_trimmed_entries_total`).
    pub dlq_max_len: u64,
    /// Dead letters older than this many seconds are deleted; 0: no age limit.
    /// Default 604,800 (7 days).
    pub dlq_max_age_s: u64,
    /// Used memory, in percent of `maxmemory`, that raises a WARNING. Default 60.
    pub memory_warning_percent: f64,
    /// Used memory, in percent of `maxmemory`, that raises a CRITICAL alert and triggers
    /// the aggressive trim. Default 80.
    pub memory_critical_percent: f64,
    /// `allocator_frag_ratio` above which fragmentation is reported. Default 1.5.
    pub frag_ratio: f64,
    /// Whether the ops loop may run `CONFIG SET activedefrag yes` above `frag_ratio`.
    /// Default false.
    pub allow_activedefrag: bool,
    /// Consumers idle this long, in seconds, with no pending entries are removed from their
    /// group. 0: never. Default 3600.
    pub consumer_idle_s: u64,
    /// How often alert rules are evaluated, in milliseconds. Default 10,000.
    pub alert_interval_ms: u64,
    /// A firing alert is sent again this often, in seconds. Default 1800.
    pub reminder_interval_s: u64,
    /// Alerts are POSTed here as JSON (`http://` only). Default: none, the log only.
    pub webhook_url: Option<String>,
    /// Events waiting in a process's ring that raise a WARNING. Default 100,000.
    pub ring_depth_warning: u64,
    /// Entries a group has not read yet that raise a WARNING. Default 10,000.
    pub group_lag_warning: u64,
    /// ... and a CRITICAL alert. Default 100,000.
    pub group_lag_critical: u64,
    /// Dead letters per second that raise a WARNING. Default 10.
    pub poison_rate_warning: f64,
    /// ... and a CRITICAL alert. Default 100.
    pub poison_rate_critical: f64,
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            interval_ms: 30_000,
            max_len: 1_000_000,
            max_age_s: 86_400,
            aggressive_len: 100_000,
            dlq_max_len: 100_000,
            dlq_max_age_s: 7 * 24 * 3600,
            memory_warning_percent: 60.0,
            memory_critical_percent: 80.0,
            frag_ratio: 1.5,
            allow_activedefrag: false,
            consumer_idle_s: 3600,
            alert_interval_ms: 10_000,
            reminder_interval_s: 1800,
            webhook_url: None,
            ring_depth_warning: 100_000,
            group_lag_warning: 10_000,
            group_lag_critical: 100_000,
            poison_rate_warning: 10.0,
            poison_rate_critical: 100.0,
        }
    }
}

impl OpsConfig {
    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, value: &dyn ToString, reason| {
            Err(ConfigError::Invalid {
                field,
                value: value.to_string(),
                reason,
            })
        };
        if self.interval_ms < 100 {
            return invalid("ops.interval_ms", &self.interval_ms, "must be at least 100");
        }
        if self.alert_interval_ms < 100 {
            return invalid(
                "ops.alert_interval_ms",
                &self.alert_interval_ms,
                "must be at least 100",
            );
        }
        if self.aggressive_len == 0 {
            return invalid(
                "ops.aggressive_len",
                &self.aggressive_len,
                "must be at least 1 (0 would empty the stream at critical memory)",
            );
        }
        if self.reminder_interval_s == 0 {
            return invalid(
                "ops.reminder_interval_s",
                &self.reminder_interval_s,
                "must be at least 1",
            );
        }
        let percent = |p: f64| p > 0.0 && p <= 100.0;
        if !percent(self.memory_warning_percent) {
            return invalid(
                "ops.memory_warning_percent",
                &self.memory_warning_percent,
                "must be above 0 and at most 100",
            );
        }
        if !percent(self.memory_critical_percent)
            || self.memory_critical_percent < self.memory_warning_percent
        {
            return invalid(
                "ops.memory_critical_percent",
                &self.memory_critical_percent,
                "must be at most 100 and not below ops.memory_warning_percent",
            );
        }
        if self.group_lag_critical < self.group_lag_warning {
            return invalid(
                "ops.group_lag_critical",
                &self.group_lag_critical,
                "must not be below ops.group_lag_warning",
            );
        }
        if !(self.poison_rate_warning >= 0.0
            && self.poison_rate_critical >= self.poison_rate_warning)
        {
            return invalid(
                "ops.poison_rate_critical",
                &self.poison_rate_critical,
                "must not be below ops.poison_rate_warning, which must not be negative",
            );
        }
        if self.frag_ratio.is_nan() || self.frag_ratio < 1.0 {
            return invalid("ops.frag_ratio", &self.frag_ratio, "must be at least 1.0");
        }
        if let Some(url) = &self.webhook_url {
            if let Err(reason) = crate::ops::webhook::Endpoint::parse(url) {
                return Err(ConfigError::Invalid {
                    field: "ops.webhook_url",
                    value: url.clone(),
                    reason,
                });
            }
        }
        Ok(())
    }
}

/// Whether `id` is a stream entry id, `<ms>` or `<ms>-<seq>`.
fn is_stream_id(id: &str) -> bool {
    let mut parts = id.splitn(2, '-');
    let digits =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let ms = parts.next();
    match parts.next() {
        None => digits(ms),
        seq => digits(ms) && digits(seq),
    }
}

/// Upper bound of `ring.max_event_bytes`: far above any sane event, below Redis's 512 MB
/// bulk-string limit.
const MAX_EVENT_BYTES_LIMIT: usize = 64 * 1024 * 1024;

/// `[producer]`: identity of this publishing process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProducerConfig {
    /// A readable name for this process's `producer_id`, which becomes
    /// `<name>:<UUIDv7>`. The UUIDv7 part is new for every process instance: sequences
    /// restart at 1 with each instance, so an id must never be reused across restarts (the
    /// no-duplicate mechanism would take the new events for old ones). Default: no name, the
    /// id is the bare UUIDv7.
    pub name: Option<String>,
}

impl ProducerConfig {
    /// Checks the name's length and characters.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.name {
            Some(name)
                if name.is_empty()
                    || name.len() > 64
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
            {
                Err(ConfigError::Invalid {
                    field: "producer.name",
                    value: name.clone(),
                    reason: "must be 1 to 64 characters of A-Z, a-z, 0-9, '-', '_', '.'",
                })
            }
            _ => Ok(()),
        }
    }
}

/// A TOML error, rebuilt from its position and message: the parser's own text quotes the
/// offending line, which may hold a password (`url = "redis://:secret@…"`), and is never
/// printed. Whatever the message quotes itself has URL passwords masked.
fn parse_error(path: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
    let (line, column) = error.span().map_or((0, 0), |span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
        (line, column)
    });
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        message: redact_urls(error.message().trim_end()),
    }
}

/// Masks the password of every `scheme://user:password@host` URL in `text`.
pub(crate) fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme) = rest.find("://") {
        let (head, tail) = rest.split_at(scheme + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c.is_whitespace() || "\"'`/?#".contains(c))
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn issue_18_url_passwords_are_masked_in_messages() {
        assert_eq!(
            redact_urls(r#"string "redis://:hunter2@h:6379/0", expected x"#),
            r#"string "redis://:***@h:6379/0", expected x"#
        );
        assert_eq!(
            redact_urls("rediss://u:p@a and redis+sentinel://v:q@b,c/m"),
            "rediss://u:***@a and redis+sentinel://v:***@b,c/m"
        );
        assert_eq!(redact_urls("redis://h:6379 ok"), "redis://h:6379 ok");
    }

    #[test]
    fn issue_18_a_toml_error_never_quotes_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.toml");
        std::fs::write(&path, "[redis]\nurl = \"redis://:hunter2@h\" x\n").unwrap();
        let error = Config::from_file(&path).unwrap_err();
        let text = error.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("line 2, column"), "{text}");
        std::fs::write(&path, "[ship]\nbatch_max = \"redis://:hunter2@h\"\n").unwrap();
        let text = Config::from_file(&path).unwrap_err().to_string();
        assert!(!text.contains("hunter2"), "{text}");
    }
    use super::*;

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

    #[test]
    fn partitions_split_the_stream_into_tagged_keys_and_the_ids_spread() {
        let mut config = Config::default();
        assert_eq!(config.redis.stream_keys(), ["events"]);
        assert_eq!(config.partition_configs().len(), 1);
        config.redis.partitions = Some(3);
        config.validate().unwrap();
        assert_eq!(
            config.redis.stream_keys(),
            ["events:{0}", "events:{1}", "events:{2}"]
        );
        let parts = config.partition_configs();
        assert_eq!(parts[2].redis.stream, "events:{2}");
        assert_eq!(parts[2].redis.partitions, None);
        // One correlation id, one partition; many ids spread over all of them.
        assert_eq!(partition_of("order-17", 3), partition_of("order-17", 3));
        assert_eq!(partition_of("", 3), 0);
        assert_eq!(partition_of("order-17", 1), 0);
        let mut counts = [0u32; 3];
        for i in 0..3000 {
            counts[partition_of(&format!("order-{i}"), 3)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        for bad in [0, 1025] {
            config.redis.partitions = Some(bad);
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains("redis.partitions"), "{error}");
        }
        config.redis.partitions = Some(2);
        config.redis.stream = "ev{x}".to_owned();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("must not hold {"), "{error}");
        // A cluster needs partitions (a partition's own configuration has its tag).
        config.redis.url = "redis+cluster://127.0.0.1:7000".to_owned();
        config.redis.stream = "events".to_owned();
        config.redis.partitions = None;
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.contains("Redis Cluster needs a partitioned stream"),
            "{error}"
        );
        config.redis.partitions = Some(3);
        for part in config.partition_configs() {
            part.validate().unwrap();
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.ring.capacity(), 65_536);
        assert_eq!(config.redis.stream, "events");
        config.validate().unwrap();
    }

    #[test]
    fn every_documented_option_parses() {
        let text = "[redis]\nurl = \"redis://h:1\"\nstream = \"s\"\n\
                    [ring]\ncapacity = 1024\nslot_bytes = 512\nmax_event_bytes = 4096\n\
                    when_full = \"wait\"\nwait_timeout_us = 7\n[producer]\nname = \"engine-1\"\n";
        let config: Config = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.redis.url, "redis://h:1");
        assert_eq!(config.ring.when_full(), WhenFull::Wait);
        assert_eq!(config.ring.wait_timeout(), Duration::from_micros(7));
        assert_eq!(config.producer.name.as_deref(), Some("engine-1"));
    }

    #[test]
    fn unknown_option_is_an_error_naming_it() {
        let error = toml::from_str::<Config>("[ring]\ncapacty = 8\n").unwrap_err();
        assert!(error.to_string().contains("capacty"), "{error}");
    }

    #[test]
    fn out_of_range_values_are_named() {
        let bad = Config {
            ring: RingConfig::default().set_capacity(1000),
            ..Config::default()
        };
        let error = bad.validate().unwrap_err().to_string();
        assert!(error.contains("ring.capacity = 1000"), "{error}");

        let bad = RingConfig::default().set_slot_bytes(1 << 20);
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("ring.slot_bytes"));

        let bad = ProducerConfig {
            name: Some("has space".into()),
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("producer.name"));
    }
}
