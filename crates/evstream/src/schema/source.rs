//! Where a process's schema registry comes from, and how it stays current: one [`Source`]
//! for the shipper's validation (`ship.validation`) and the consumer's reader schemas
//! ([`Consumer::with_schemas`](crate::consume::Consumer::with_schemas),
//! [`Consumer::with_schemas_from_redis`](crate::consume::Consumer::with_schemas_from_redis)).
//!
//! - [`Source::None`]: no registry; nothing is validated.
//! - [`Source::Fixed`]: a registry loaded once, from a directory (`ship.schemas_dir`,
//!   `evstream consume --schemas DIR`) or handed over by the caller. It never changes: a new
//!   version in the directory is learned at the next start.
//! - [`Source::Redis`]: the registry `evstream schema push` stores in Redis
//!   ([`REDIS_KEY`](super::REDIS_KEY)), followed by its revision
//!   ([`REDIS_REVISION_KEY`](super::REDIS_REVISION_KEY)). The revision is read on every new
//!   connection and then every reload interval (`consume.schema_reload_ms` and
//!   `ship.schema_reload_ms`, 5 s by default), and the registry is loaded again only when the revision moved, so
//!   a pushed version is learned within the interval, without a restart or a reconnect, for
//!   the cost of one `GET` per interval. A load that fails keeps the previous registry (and
//!   is tried again at the next check); while nothing is registered there is no registry
//!   (events pass unvalidated), said once in the log.
//!
//! Both sides used to differ: the shipper loaded the whole registry (`HGETALL`) at each
//! connection and never in between, so a push reached it only after a reconnect; the
//! consumer followed the revision as above. Both now follow the revision.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::RedisError;

use super::Registry;
use crate::error::SchemaError;

/// Where a registry comes from; see the [module documentation](self).
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// No registry.
    None,
    /// Loaded once, never reloaded.
    Fixed(Arc<Registry>),
    /// The registry in Redis, reloaded when its revision moves.
    Redis(Followed),
}

/// The state of a [`Source::Redis`].
#[derive(Debug, Clone)]
pub(crate) struct Followed {
    /// The registry of `revision`; `None` while nothing is registered.
    registry: Option<Arc<Registry>>,
    /// The revision loaded (`None`: nothing registered, or nothing loaded yet).
    revision: Option<u64>,
    /// When the revision was last read (`None`: never, or a check is asked for now).
    checked_at: Option<Instant>,
    /// Whether the revision was ever read (to say once that nothing is registered).
    checked_once: bool,
    /// How often the revision is read.
    every: Duration,
}

impl Source {
    /// A registry loaded from the files of `dir`, once.
    pub(crate) fn from_dir(dir: &Path) -> Result<Self, SchemaError> {
        Registry::from_dir(dir).map(|registry| Self::Fixed(Arc::new(registry)))
    }

    /// The registry in Redis, its revision read every `every`.
    pub(crate) fn redis(every: Duration) -> Self {
        Self::Redis(Followed {
            registry: None,
            revision: None,
            checked_at: None,
            checked_once: false,
            every,
        })
    }

    /// The registry in use now, if any.
    pub(crate) fn registry(&self) -> Option<&Arc<Registry>> {
        match self {
            Self::None => None,
            Self::Fixed(registry) => Some(registry),
            Self::Redis(followed) => followed.registry.as_ref(),
        }
    }

    /// Asks for the revision to be read at the next [`refresh`](Self::refresh), whatever the
    /// interval: on a new connection (a restarted server, a new master).
    pub(crate) fn check_now(&mut self) {
        if let Self::Redis(followed) = self {
            followed.checked_at = None;
        }
    }

    /// Whether a [`refresh`](Self::refresh) would read the revision now.
    pub(crate) fn due(&self, now: Instant) -> bool {
        match self {
            Self::None | Self::Fixed(_) => false,
            Self::Redis(followed) => followed
                .checked_at
                .is_none_or(|at| now.saturating_duration_since(at) >= followed.every),
        }
    }

    /// If it is time, reads the revision in Redis and reloads the registry when it moved.
    /// Returns whether the registry changed. An error reading the revision is returned (the
    /// next check is an interval later); an error loading the registry is logged and keeps
    /// the previous one.
    pub(crate) async fn refresh<C>(&mut self, connection: &mut C) -> Result<bool, RedisError>
    where
        C: redis::aio::ConnectionLike + Send,
    {
        if !self.due(Instant::now()) {
            return Ok(false);
        }
        let Self::Redis(followed) = self else {
            return Ok(false);
        };
        followed.checked_at = Some(Instant::now());
        let first = !std::mem::replace(&mut followed.checked_once, true);
        let current: Option<u64> = redis::cmd("GET")
            .arg(super::REDIS_REVISION_KEY)
            .query_async(connection)
            .await?;
        if current == followed.revision {
            if first && current.is_none() {
                tracing::warn!(
                    "no schema is registered in Redis: events are not validated until one is \
                     (register them with `evstream schema push DIR`)"
                );
            }
            return Ok(false);
        }
        match super::load(connection).await {
            Ok(loaded) => {
                tracing::info!(revision = ?current, types = loaded.summary().len(), "schema registry loaded from Redis");
                followed.registry = current.map(|_| Arc::new(loaded));
                followed.revision = current;
                Ok(true)
            }
            Err(error) => {
                tracing::error!(%error, "cannot load the schema registry from Redis; keeping the previous one");
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_redis_source_is_ever_due() {
        let now = Instant::now();
        assert!(!Source::None.due(now));
        let fixed = Source::Fixed(Arc::new(Registry::from_files(Default::default()).unwrap()));
        assert!(!fixed.due(now));
        assert!(fixed.registry().is_some());
        let mut redis = Source::redis(Duration::from_secs(5));
        assert!(redis.due(now), "the first check is at once");
        assert!(redis.registry().is_none());
        if let Source::Redis(followed) = &mut redis {
            followed.checked_at = Some(now);
        }
        assert!(!redis.due(now + Duration::from_secs(4)));
        assert!(redis.due(now + Duration::from_secs(5)));
        redis.check_now();
        assert!(redis.due(now), "a new connection checks at once");
    }
}
