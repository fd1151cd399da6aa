//! `[redis]`: the server and the stream.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::url::CLUSTER_SCHEME;
use super::Connector;
use crate::error::ConfigError;
use crate::keys;

/// Default Redis URL.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Default stream key.
pub const DEFAULT_STREAM: &str = "events";

/// Most partitions a stream may have.
const MAX_PARTITIONS: u16 = 1024;

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
            Some(count) => (0..count)
                .map(|p| keys::partition(&self.stream, p))
                .collect(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let Some(count) = self.partitions else {
            if self.url.starts_with(CLUSTER_SCHEME) && !keys::has_hash_tag(&self.stream) {
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
    /// partition's, see [`Config::partition_configs`](crate::Config::partition_configs)).
    pub fn connector(&self) -> Result<Connector, ConfigError> {
        Connector::new(self)
    }
}
