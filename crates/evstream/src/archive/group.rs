//! The archive's consumer group on a key: where the archive stands (its mark), creating it
//! (the ops loop, so that retention waits) and moving it (the archiver, after each record).

use redis::aio::MultiplexedConnection;
use redis::{Cmd, Value};

use super::source::Source;
use super::{CALL_TIMEOUT, GROUP};
use crate::error::OpsError;
use crate::redis::{call, EntryId};

/// Where the archive stands on a key, from its group [`GROUP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveMark {
    /// The last entry archived (`0-0`: none).
    pub archived: EntryId,
    /// Entries after it, not archived yet, when Redis can tell (the group's lag).
    pub unarchived: Option<u64>,
}

impl ArchiveMark {
    /// The first entry not archived: retention may trim everything before it.
    pub fn next(&self) -> EntryId {
        self.archived.successor()
    }
}

/// The archive's mark on `key` (`XINFO GROUPS`); `None` when the key or the group does not
/// exist.
pub async fn mark(
    conn: &mut MultiplexedConnection,
    key: &str,
) -> Result<Option<ArchiveMark>, OpsError> {
    let what = format!("XINFO GROUPS {key}");
    let cmd = Cmd::new().arg("XINFO").arg("GROUPS").arg(key).clone();
    let groups: Value = match call(conn, &what, &cmd, CALL_TIMEOUT).await {
        Ok(groups) => groups,
        Err(OpsError::Redis { source, .. }) if source.to_string().contains("no such key") => {
            return Ok(None)
        }
        Err(error) => return Err(error),
    };
    let Value::Array(groups) = groups else {
        return Ok(None);
    };
    for group in &groups {
        let pairs: Vec<(&Value, &Value)> = match group {
            Value::Array(flat) => flat
                .chunks(2)
                .filter_map(|c| Some((c.first()?, c.get(1)?)))
                .collect(),
            Value::Map(map) => map.iter().map(|(k, v)| (k, v)).collect(),
            _ => continue,
        };
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| redis::from_redis_value_ref::<String>(k).is_ok_and(|k| k == name))
                .map(|(_, v)| *v)
        };
        let text =
            |name: &str| get(name).and_then(|v| redis::from_redis_value_ref::<String>(v).ok());
        if text("name").as_deref() != Some(GROUP) {
            continue;
        }
        let archived = text("last-delivered-id")
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| OpsError::Reply {
                what: what.clone(),
                detail: "no last-delivered-id".to_owned(),
            })?;
        let unarchived = get("lag").and_then(|v| redis::from_redis_value_ref::<u64>(v).ok());
        return Ok(Some(ArchiveMark {
            archived,
            unarchived,
        }));
    }
    Ok(None)
}

/// Creates [`GROUP`] on `key` at the beginning if it is missing, so that retention keeps
/// everything until the archive holds it. Returns whether the group exists now (false: no
/// such key, nothing to keep).
pub async fn ensure_group(conn: &mut MultiplexedConnection, key: &str) -> Result<bool, OpsError> {
    let create = Cmd::new()
        .arg("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(GROUP)
        .arg("0")
        .clone();
    let what = format!("XGROUP CREATE {key} {GROUP} 0");
    match call::<()>(conn, &what, &create, CALL_TIMEOUT).await {
        Ok(()) => Ok(true),
        Err(OpsError::Redis { source, .. }) if source.code() == Some("BUSYGROUP") => Ok(true),
        Err(OpsError::Redis { source, .. }) if no_such_key(&source) => Ok(false),
        Err(error) => Err(error),
    }
}

/// At start: creates the group at the recorded position if it is missing, and moves it
/// there if it is elsewhere (behind: killed between the record and the move; ahead: an
/// archive directory replaced). Returns whether the key
/// exists (a missing key is checked again next time).
pub(super) async fn check_group(
    conn: &mut MultiplexedConnection,
    source: &Source,
) -> Result<bool, OpsError> {
    match mark(conn, &source.key).await? {
        Some(mark) if mark.archived == source.recorded => Ok(true),
        Some(mark) => {
            if mark.archived > source.recorded {
                tracing::warn!(key = %source.key, group = GROUP, at = %mark.archived, recorded = %source.recorded, "archive: the group is ahead of the manifest; moved back to what this archive holds");
            }
            place_group(conn, &source.key, source.recorded, None).await
        }
        None => place_group(conn, &source.key, source.recorded, None).await,
    }
}

/// Moves (or creates) [`GROUP`] on `key` to `id`, with its entries-read counter when known.
/// Returns false when the key does not exist (nothing to protect yet).
pub(super) async fn place_group(
    conn: &mut MultiplexedConnection,
    key: &str,
    id: EntryId,
    entries_read: Option<u64>,
) -> Result<bool, OpsError> {
    let with_counter = |mut cmd: Cmd| {
        if let Some(n) = entries_read {
            cmd.arg("ENTRIESREAD").arg(n);
        }
        cmd
    };
    let setid = with_counter(
        Cmd::new()
            .arg("XGROUP")
            .arg("SETID")
            .arg(key)
            .arg(GROUP)
            .arg(id.to_string())
            .clone(),
    );
    let what = format!("XGROUP SETID {key} {GROUP} {id}");
    match call::<()>(conn, &what, &setid, CALL_TIMEOUT).await {
        Ok(()) => return Ok(true),
        Err(OpsError::Redis { source, .. }) if source.code() == Some("NOGROUP") => {}
        Err(OpsError::Redis { source, .. }) if no_such_key(&source) => return Ok(false),
        Err(error) => return Err(error),
    }
    let create = with_counter(
        Cmd::new()
            .arg("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg(GROUP)
            .arg(id.to_string())
            .clone(),
    );
    let what = format!("XGROUP CREATE {key} {GROUP} {id}");
    match call::<()>(conn, &what, &create, CALL_TIMEOUT).await {
        Ok(()) => Ok(true),
        Err(OpsError::Redis { source, .. }) if no_such_key(&source) => Ok(false),
        Err(OpsError::Redis { source, .. }) if source.code() == Some("BUSYGROUP") => {
            // Created meanwhile (by an ops loop): move it.
            call::<()>(
                conn,
                &format!("XGROUP SETID {key} {GROUP} {id}"),
                &setid,
                CALL_TIMEOUT,
            )
            .await
            .map(|()| true)
        }
        Err(error) => Err(error),
    }
}

/// Whether Redis refused an `XGROUP` call because the key does not exist.
fn no_such_key(error: &redis::RedisError) -> bool {
    error.to_string().contains("requires the key to exist")
}
