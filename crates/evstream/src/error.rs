//! Error types of the `evstream` library.
//!
//! A message includes its cause's text (the C ABI and log lines print the message alone), and
//! the cause is also the error's `source()`, for callers that downcast. Print a chain with each
//! text once: the `evstream` binary leaves out a cause whose text it printed already.

use std::path::PathBuf;

/// Why [`Publisher::publish`](crate::publish::Publisher::publish) did not accept an event.
///
/// An event is either accepted whole or refused with one of these; it is never truncated.
/// Every refusal is also counted in [`CaptureHealth::refused`](crate::publish::CaptureHealth).
/// Building this error never allocates, except for [`Serialize`](Self::Serialize), whose
/// source is `serde_json`'s own error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// Every ring slot holds an event the shipper has not taken yet.
    #[error(
        "ring buffer full ({capacity} events waiting to be shipped); the event was not accepted. \
         The shipper is behind or stopped: check its health, raise ring.capacity, \
         or set ring.when_full = \"wait\""
    )]
    RingFull {
        /// Ring capacity in events.
        capacity: usize,
    },
    /// The serialized event is larger than `ring.max_event_bytes`.
    #[error(
        "event payload is {size} bytes, more than the maximum of {max} bytes \
         (ring.max_event_bytes); it was refused, not truncated"
    )]
    TooLarge {
        /// Size of the serialized payload in bytes.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The schema version is 0 (versions start at 1).
    #[error("schema version 0 is invalid: versions start at 1 (the envelope says v1, v2, …)")]
    InvalidVersion,
    /// The event type is empty, too long, or has characters outside `[A-Za-z0-9_.:-]`.
    #[error(
        "event type of {len} bytes is invalid: {reason} (allowed: 1 to {max} bytes of \
         A-Z, a-z, 0-9, '_', '.', ':', '-')"
    )]
    InvalidEventType {
        /// What is wrong with it.
        reason: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The maximum length, [`MAX_EVENT_TYPE_LEN`](crate::publish::MAX_EVENT_TYPE_LEN).
        max: usize,
    },
    /// The correlation id is longer than [`MAX_CORRELATION_ID_LEN`](crate::publish::MAX_CORRELATION_ID_LEN).
    #[error(
        "correlation id is {len} bytes, more than the maximum of {max}; it was refused, not \
         truncated (use a shorter id, e.g. a UUID)"
    )]
    CorrelationIdTooLong {
        /// Its length in bytes.
        len: usize,
        /// The maximum length.
        max: usize,
    },
    /// The payload's `Serialize` implementation failed.
    #[error("event payload could not be serialized to JSON: {source}")]
    Serialize {
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// The receiving end (the shipper) is gone; nothing can be accepted any more.
    #[error("the publisher is closed because its shipper stopped; the event was not accepted")]
    Closed,
}

impl PublishError {
    /// A short, stable code for metrics labels and dead-letter reasons.
    pub fn code(&self) -> &'static str {
        match self {
            Self::RingFull { .. } => "ring_full",
            Self::TooLarge { .. } => "too_large",
            Self::InvalidEventType { .. } => "invalid_event_type",
            Self::CorrelationIdTooLong { .. } => "correlation_id_too_long",
            Self::InvalidVersion => "invalid_version",
            Self::Serialize { .. } => "serialize",
            Self::Closed => "closed",
        }
    }

    /// Whether the same event may be accepted if tried again later (only a full ring clears).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RingFull { .. })
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file the configuration names (the Redis password file, a TLS file) could not be
    /// read.
    #[error("cannot read {what} {path}: {source}")]
    ReadFile {
        /// Which file, with the option that names it (`the Redis password file
        /// (redis.password_file, --redis-password-file)`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for evstream.
    ///
    /// Not the parser's error itself: its text quotes the offending line, which may hold a
    /// password. The message is the parser's, with URL passwords masked.
    #[error("invalid configuration file {path}, line {line}, column {column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where the error is (1-based; 0 when the parser gave no position).
        line: usize,
        /// The column in that line (1-based, in bytes).
        column: usize,
        /// What is wrong, without the line's text.
        message: String,
    },
    /// The Redis connection settings cannot be used.
    #[error("Redis at {url}: {reason}")]
    Redis {
        /// The URL, password hidden.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A value is out of its allowed range.
    #[error("invalid configuration: {field} = {value}: {reason}")]
    Invalid {
        /// The option, as written in the file (`ring.capacity`).
        field: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        reason: &'static str,
    },
}

/// The shipper could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShipError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The spill journal cannot be opened.
    #[error("cannot open the spill journal in {dir}: {source} (check ship.journal_dir)")]
    Journal {
        /// The journal directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `ship.schemas_dir` cannot be used.
    #[error("cannot use ship.schemas_dir: {source}")]
    Schemas {
        /// What is wrong with the schemas.
        #[source]
        source: SchemaError,
    },
    /// The shipper's thread or runtime could not be created.
    #[error("cannot start the shipper thread: {source}")]
    Runtime {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A consumer could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The consumer name cannot be used.
    #[error(
        "invalid consumer name {name:?}: use 1 to 200 characters without spaces, stable across \
         restarts of the same worker (e.g. the host name) so that it finds its pending entries"
    )]
    InvalidConsumerName {
        /// The name given.
        name: String,
    },
}

/// The schema registry cannot be built, loaded or stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A schema file or directory cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The schemas have problems; every one is listed.
    #[error("{} schema problem(s):\n  {}", problems.len(), problems.join("\n  "))]
    Invalid {
        /// Each problem, naming the file or the type, versions and field.
        problems: Vec<String>,
    },
    /// Redis failed while loading or storing the registry.
    #[error("schema registry in Redis: {source}")]
    Redis {
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
}

/// The ops loop or `status` could not read or act on Redis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A Redis call failed or timed out.
    #[error("{what}: {source}")]
    Redis {
        /// The call, e.g. `XINFO GROUPS events`.
        what: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// A Redis call did not answer within its deadline.
    #[error("{what}: no answer within {timeout:?} (is Redis overloaded or unreachable?)")]
    Timeout {
        /// The call.
        what: String,
        /// The deadline.
        timeout: std::time::Duration,
    },
    /// Redis answered something evstream does not understand (an unsupported version?).
    #[error("{what}: unexpected reply ({detail}); evstream needs Redis 7.0 or later")]
    Reply {
        /// The call.
        what: String,
        /// What was wrong.
        detail: String,
    },
}

/// A command over every partition of a stream (its status, its consumers, its ops loops, its
/// audit) could not reach or finish one of them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No connection to the server holding a partition.
    #[error(
        "cannot connect to Redis at {url}: {source} (is it running? check redis.url; over \
         TLS, redis.tls_ca, and redis.tls_cert and redis.tls_key if the server requires \
         client certificates)"
    )]
    Connect {
        /// The URL, password hidden.
        url: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// Connecting took longer than its deadline.
    #[error("connecting to Redis at {url} took longer than {timeout:?} (is it reachable?)")]
    ConnectTimeout {
        /// The URL, password hidden.
        url: String,
        /// The deadline.
        timeout: std::time::Duration,
    },
    /// A partition could not be read (its status, its counters).
    #[error("cannot read {stream}: {source}")]
    Read {
        /// The partition's key.
        stream: String,
        /// What failed.
        #[source]
        source: OpsError,
    },
    /// A partition could not be read back to audit it.
    #[error("cannot read the stream {stream} back to audit it: {source}")]
    Audit {
        /// The partition's key.
        stream: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// The task of one partition (its consumer, its ops loop) ended by a panic; the other
    /// partitions' tasks were stopped.
    #[error("{task} of {stream} failed: {source} (a bug: please report it with the log above)")]
    TaskFailed {
        /// What the task was: `the consumer`, `the ops loop`.
        task: &'static str,
        /// The partition's key.
        stream: String,
        /// How the task ended.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Dead letters could not be listed or replayed over a stream's partitions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DlqError {
    /// A partition's server could not be reached.
    #[error(transparent)]
    Partition(#[from] PartitionError),
    /// A bare dead-letter id was given for a partitioned stream.
    #[error(
        "dead letter id {id}: with partitions an id is only unique within one dead-letter \
         stream; give it as <dlq key>/<id>, as a listing names it"
    )]
    AmbiguousId {
        /// The id given.
        id: String,
    },
    /// A dead-letter stream could not be read.
    #[error("cannot read the dead letters in {dlq}: {source}")]
    Read {
        /// The dead-letter stream's key.
        dlq: String,
        /// What failed.
        #[source]
        source: OpsError,
    },
    /// A replay stopped half-way; what was replayed before stays replayed.
    #[error("replaying the dead letters of {dlq} into {stream}: {source}")]
    Replay {
        /// The dead-letter stream's key.
        dlq: String,
        /// The stream (partition) the letters go back into.
        stream: String,
        /// What failed.
        #[source]
        source: OpsError,
    },
}

/// The archive could not be written or read ([`crate::archive`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `archive.dir` is not set.
    #[error("no archive directory: give --dir DIR or set archive.dir in the configuration")]
    NoDirectory,
    /// A partition's server could not be reached.
    #[error(transparent)]
    Partition(#[from] PartitionError),
    /// A file or directory of the archive could not be used.
    #[error("{what} {path}: {source} (check the archive directory's permissions and free space)")]
    Io {
        /// What was being done: `creating`, `writing`, `renaming`, …
        what: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A Parquet file could not be written or read.
    #[error("Parquet file {path}: {source}")]
    Parquet {
        /// The file.
        path: std::path::PathBuf,
        /// The library's error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Another archiver holds the archive directory.
    #[error(
        "the archive {dir} is in use by another archiver (its lock file {dir}/.lock is held); \
         run one archiver per archive"
    )]
    Locked {
        /// The archive directory.
        dir: std::path::PathBuf,
    },
    /// The manifest holds a line that is not a manifest record (not a torn last line, which
    /// is repaired).
    #[error(
        "the manifest {path} is corrupt at line {line}: {reason}; restore it from a backup \
         (every file's footer names its stream and last entry id)"
    )]
    Manifest {
        /// The manifest file.
        path: std::path::PathBuf,
        /// Its line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The archive belongs to another stream.
    #[error(
        "the archive {dir} holds the stream {theirs}, not {ours}; give each stream its own \
         archive directory"
    )]
    OtherStream {
        /// The archive directory.
        dir: std::path::PathBuf,
        /// The stream of its manifest.
        theirs: String,
        /// The configured stream.
        ours: String,
    },
    /// A Redis call failed.
    #[error(transparent)]
    Redis(#[from] OpsError),
}

/// `/metrics` and `/health` could not be served ([`crate::exporter`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExporterError {
    /// The address could not be bound.
    #[error(
        "cannot serve /metrics on {addr}: {source} (is another process using it? choose \
         another metrics address, or port 0 for a free one)"
    )]
    Bind {
        /// The address.
        addr: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The address is reachable from the network and that was not asked for.
    #[error(
        "the metrics address {addr} is reachable from the network; /metrics and /health show \
         stream, group and consumer names. Allow it explicitly (--metrics-public, or `public` \
         in the C ABI's options), best with a bearer token, or bind 127.0.0.1"
    )]
    NotLoopback {
        /// The address.
        addr: String,
    },
    /// The token file could not be read.
    #[error("cannot read the metrics token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: std::path::PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The token is too short to be a secret.
    #[error(
        "the token in {path} is shorter than 16 characters; use a long random one (e.g. \
         `openssl rand -hex 32`)"
    )]
    TokenTooShort {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The Prometheus recorder could not be installed: most often another metrics recorder
    /// was installed in this process first.
    #[error(
        "cannot install the Prometheus metrics recorder: {0}. If this process installed a \
         metrics recorder of its own, evstream's metrics go to it: serve them with its \
         exporter, or read the capture and shipper health as values"
    )]
    Recorder(String),
    /// The server's thread or runtime could not start.
    #[error("cannot start the metrics server's thread: {0}")]
    Runtime(#[source] std::io::Error),
}
