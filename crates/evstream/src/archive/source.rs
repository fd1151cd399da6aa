//! What is archived: one key (a partition's stream or its dead letters), where it stands,
//! its open file, and how its entries are read (with the next batch read ahead).

use std::time::Instant;

use redis::aio::MultiplexedConnection;
use redis::Value;

use super::record::{Kind, Record};
use super::{file, resp, CALL_TIMEOUT};
use crate::config::Config;
use crate::error::OpsError;
use crate::redis::{parse_entries, EntryId};

/// A file being written and what is known of its last entry.
pub(super) struct Open {
    pub(super) file: file::OpenFile,
    pub(super) hour: u64,
    pub(super) opened: Instant,
    /// The entries-read counter of the file's last entry, when known.
    pub(super) last_counter: Option<u64>,
}

/// One key being archived: a partition's stream or its dead letters.
pub(super) struct Source {
    pub(super) kind: Kind,
    pub(super) partition: u16,
    pub(super) key: String,
    /// The last entry read (in the open file, or recorded).
    pub(super) position: EntryId,
    /// The last entry recorded in the manifest.
    pub(super) recorded: EntryId,
    /// The entries-read counter of `position`, when known.
    pub(super) counter: Option<u64>,
    pub(super) open: Option<Open>,
    /// Where the group should be moved (`id`, entries-read), not done yet.
    pub(super) unplaced: Option<(EntryId, Option<u64>)>,
    /// Whether the group was checked against the manifest since start.
    pub(super) group_checked: bool,
    /// `run_once`: the last entry to archive (the last generated when first read).
    pub(super) target: Option<EntryId>,
    /// How its batches are read; `None` until connected, and after an error.
    pub(super) via: Option<Via>,
    /// The next batch, already asked for (after a full one) while this one is written: the
    /// reply is read and decoded on a task of its own, on the other core of a multi-threaded
    /// runtime, while this task encodes. Used only if it starts where the source stands.
    pub(super) prefetch: Option<(EntryId, Prefetch)>,
}

/// A batch read in the background, and the connection it was read on, given back.
pub(super) type Prefetch = tokio::task::JoinHandle<(Via, Result<Batch, OpsError>)>;

/// How a source's batches are read.
#[derive(Debug)]
pub(super) enum Via {
    /// This module's lean reader, on a connection of its own (plain TCP).
    Lean(resp::Reader),
    /// redis-rs, on the partition's connection (TLS, or where the lean reader failed).
    Redis(MultiplexedConnection),
}

impl Via {
    /// The lean reader for the server `client` names when it can be used, else redis-rs on
    /// `conn`.
    pub(super) async fn open(client: &redis::Client, conn: &MultiplexedConnection) -> Self {
        match resp::Reader::connect(client).await {
            Some(Ok(reader)) => Self::Lean(reader),
            Some(Err(error)) => {
                tracing::warn!(%error, "archive: the lean reader cannot connect; reading through redis-rs");
                Self::Redis(conn.clone())
            }
            None => Self::Redis(conn.clone()),
        }
    }
}

/// What a read returns: `entries-added`, `last-generated-id` and the entries' records.
pub(super) type Batch = (u64, EntryId, Vec<Record>);

/// What a read needs to know of its source (owned: a prefetch runs on a task of its own).
#[derive(Debug, Clone)]
pub(super) struct ReadOf {
    pub(super) key: String,
    pub(super) kind: Kind,
    pub(super) partition: u16,
}

impl Source {
    pub(super) fn read(&self) -> ReadOf {
        ReadOf {
            key: self.key.clone(),
            kind: self.kind,
            partition: self.partition,
        }
    }

    pub(super) fn done(&self) -> bool {
        self.target.is_some_and(|t| self.position >= t)
    }
}

/// One partition: its configuration, connection and two sources.
pub(super) struct Part {
    pub(super) config: Config,
    /// The partition's connection, and the client of the server it reached.
    pub(super) connection: Option<(MultiplexedConnection, redis::Client)>,
    pub(super) sources: Vec<Source>,
}

/// The next `count` entries of the source after `after`, as records (converted here, so on
/// the reading task), with the stream's `entries-added` and
/// `last-generated-id` read in the same atomic step (`MULTI`: `XRANGE`, `XINFO STREAM`):
/// when the batch ends at the last generated id, the entries-read counter of its last entry
/// is `entries-added`. A missing key reads as empty.
pub(super) async fn read_batch(
    via: &mut Via,
    of: ReadOf,
    after: EntryId,
    count: usize,
) -> Result<Batch, OpsError> {
    let conn = match via {
        Via::Redis(conn) => conn,
        Via::Lean(reader) => {
            let what = format!("XRANGE {} ({after} + COUNT {count}; XINFO STREAM", of.key);
            let read = reader.read_batch(&of.key, after, count, (of.kind, of.partition));
            let (added, last, records) = match tokio::time::timeout(CALL_TIMEOUT, read).await {
                Ok(Ok(batch)) => batch,
                Ok(Err(resp::ReadError::Io(error))) => {
                    return Err(OpsError::Redis {
                        what,
                        source: error.into(),
                    })
                }
                Ok(Err(resp::ReadError::Protocol(detail))) => {
                    return Err(OpsError::Reply { what, detail })
                }
                Err(_) => {
                    return Err(OpsError::Timeout {
                        what,
                        timeout: CALL_TIMEOUT,
                    })
                }
            };
            return Ok((added, last, records));
        }
    };
    let key = of.key.as_str();
    let what = format!("XRANGE {key} ({after} + COUNT {count}; XINFO STREAM {key}");
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("XRANGE")
        .arg(key)
        .arg(format!("({after}"))
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .cmd("XINFO")
        .arg("STREAM")
        .arg(key);
    let reply = match tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<Value>(conn)).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(source)) if source.to_string().contains("no such key") => {
            return Ok((0, EntryId::default(), Vec::new()))
        }
        Ok(Err(source)) => return Err(OpsError::Redis { what, source }),
        Err(_) => {
            return Err(OpsError::Timeout {
                what,
                timeout: CALL_TIMEOUT,
            })
        }
    };
    let bad = |detail: String| OpsError::Reply {
        what: what.clone(),
        detail,
    };
    let Value::Array(parts) = reply else {
        return Err(bad(format!("{reply:?}")));
    };
    let Ok([entries, info]) = <[Value; 2]>::try_from(parts) else {
        return Err(bad("not two replies".to_owned()));
    };
    if matches!(info, Value::ServerError(_)) {
        return Ok((0, EntryId::default(), Vec::new()));
    }
    let pairs: Vec<(Value, Value)> = match info {
        Value::Array(flat) => {
            let mut flat = flat.into_iter();
            std::iter::from_fn(|| Some((flat.next()?, flat.next()?))).collect()
        }
        Value::Map(map) => map,
        other => return Err(bad(format!("{other:?}"))),
    };
    let mut added = 0;
    let mut last = EntryId::default();
    for (name, value) in pairs {
        match redis::from_redis_value_ref::<String>(&name).as_deref() {
            Ok("entries-added") => added = redis::from_redis_value_ref(&value).unwrap_or(0),
            Ok("last-generated-id") => {
                last = redis::from_redis_value_ref::<String>(&value)
                    .map_err(|e| bad(e.to_string()))?
                    .parse()
                    .map_err(bad)?;
            }
            _ => {}
        }
    }
    let records = parse_entries(entries)
        .map_err(bad)?
        .into_iter()
        .map(|entry| Record::from_entry(of.kind, of.partition, entry))
        .collect();
    Ok((added, last, records))
}
