//! The Redis plumbing every stage shares: how evstream finds, opens and talks to its server.
//!
//! The stages (ship, consume, ops) and the tools import from here; nothing here imports a
//! stage. What each file holds:
//!
//! - `config`: the `[redis]` section ([`RedisConfig`](crate::config::RedisConfig)), and
//!   from it the [`Connector`].
//! - `url`: the URL grammar (`redis://`, `rediss://`, `redis+sentinel://`,
//!   `redis+cluster://` seeds), the password file's secret put into a URL, and
//!   [`redact_url`] for messages and logs.
//! - `connector`: the [`Connector`], which opens a client for the server to talk to now and
//!   finds it again after a failover.
//! - `sentinel`: the master a Sentinel deployment names ([`SentinelTarget`]); `failover`:
//!   listening for its promotions.
//! - `cluster`: the primary that holds a key's slot ([`ClusterTarget`], [`key_slot`]).
//! - `tls`: a `rediss://` client with the configured CA and client certificate.
//! - `connection`: what is done on an open connection: naming it, calls with a deadline.
//! - `backoff`: the retry delays of the shipper and the consumer.
//! - `entry`: stream entries as Redis returns them ([`EntryId`], [`StreamEntry`]).
//!
//! The key names live in [`crate::keys`].
//!
//! Why this module is named `redis` although it shadows the `redis` crate: it is what a
//! reader looks for ("where is the Redis plumbing?"), and the shadowing reaches only the
//! crate root, where the module is declared. Inside this module and everywhere else,
//! `redis::` still names the crate (a module's own name is not in its scope); the crate root
//! would write `::redis::`.

mod backoff;
mod cluster;
pub(crate) mod config;
mod connection;
mod connector;
mod entry;
mod failover;
mod sentinel;
mod tls;
mod url;

pub(crate) use backoff::Backoff;
pub use cluster::{key_slot, ClusterTarget};
pub(crate) use connection::{call, name_connection};
pub use connector::Connector;
pub(crate) use entry::unix_ms;
pub use entry::{parse_entries, EntryId, StreamEntry};
pub(crate) use failover::FailoverWatch;
pub use sentinel::SentinelTarget;
pub use url::redact_url;
pub(crate) use url::redact_urls;
