//! What Redis says about itself, the stream and its groups: one [`Observation`], read by the
//! ops loop every tick and by `evstream status` once.

use std::collections::BTreeMap;
use std::time::Duration;

use metrics::{counter, gauge};
use redis::aio::MultiplexedConnection;
use redis::{Cmd, FromRedisValue, Value};
use serde::Serialize;

use crate::error::OpsError;

pub use crate::redis::EntryId;

/// Redis server facts that decide how safe the stream is.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RedisInfo {
    /// `redis_version`.
    pub version: String,
    /// `used_memory` in bytes.
    pub used_memory: u64,
    /// `maxmemory` in bytes; 0 means unbounded.
    pub maxmemory: u64,
    /// `maxmemory_policy`, e.g. `noeviction`.
    pub maxmemory_policy: String,
    /// `allocator_frag_ratio` (jemalloc's view; what active defragmentation can fix).
    pub allocator_frag_ratio: f64,
    /// `mem_fragmentation_ratio` (RSS over used memory).
    pub mem_fragmentation_ratio: f64,
    /// `activedefrag` setting, when `CONFIG GET` is allowed.
    pub activedefrag: Option<bool>,
    /// `evicted_keys` since the server started.
    pub evicted_keys: u64,
}

/// What `maxmemory-policy` can do to evstream's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvictionRisk {
    /// `noeviction`: nothing is evicted (writes fail when memory is full).
    None,
    /// `volatile-*`: keys with a TTL can go, among them the producers' high-water marks
    /// that keep retried batches from being appended twice.
    HighWaterMarks,
    /// `allkeys-*`: the stream itself, with its groups and pending lists, can be evicted.
    Stream,
}

impl RedisInfo {
    /// Used memory as a fraction of `maxmemory`, when there is a `maxmemory`.
    pub fn used_ratio(&self) -> Option<f64> {
        (self.maxmemory > 0).then(|| self.used_memory as f64 / self.maxmemory as f64)
    }

    /// What the eviction policy can evict.
    pub fn eviction_risk(&self) -> EvictionRisk {
        if self.maxmemory_policy.starts_with("allkeys-") {
            EvictionRisk::Stream
        } else if self.maxmemory_policy.starts_with("volatile-") {
            EvictionRisk::HighWaterMarks
        } else {
            EvictionRisk::None
        }
    }
}

/// `XINFO STREAM`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StreamInfo {
    /// Entries in the stream now.
    pub length: u64,
    /// Entries ever appended (trimmed ones included).
    pub entries_added: u64,
    /// The oldest entry's id, if any.
    pub first_id: Option<EntryId>,
    /// The newest entry's id, if any.
    pub last_id: Option<EntryId>,
}

/// One consumer of a group (`XINFO CONSUMERS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerInfo {
    /// Its name.
    pub name: String,
    /// Entries delivered to it and not acknowledged.
    pub pending: u64,
    /// Milliseconds since it last read (Redis 7.0's `idle`).
    pub idle_ms: u64,
}

/// One consumer group (`XINFO GROUPS`, `XPENDING`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupInfo {
    /// Its name.
    pub name: String,
    /// Entries delivered and not acknowledged.
    pub pending: u64,
    /// The last entry delivered to any of its consumers.
    pub last_delivered: EntryId,
    /// Entries not delivered yet; `None` when Redis cannot tell (entries deleted in the
    /// middle of the stream, or a group created at an arbitrary id).
    pub lag: Option<u64>,
    /// The oldest pending entry, if any.
    pub oldest_pending: Option<EntryId>,
    /// Entries this group still needs: from its oldest pending entry (or, with nothing
    /// pending, the first undelivered one) to the end; `None` when it cannot be counted
    /// cheaply. Retention never trims them.
    pub unfinished: Option<u64>,
    /// Its consumers.
    pub consumers: Vec<ConsumerInfo>,
}

impl GroupInfo {
    /// The oldest entry this group still needs: its oldest pending entry, or the entry after
    /// the last one delivered.
    pub fn floor(&self) -> EntryId {
        self.oldest_pending
            .unwrap_or_else(|| self.last_delivered.successor())
    }
}

/// The dead letter stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DlqInfo {
    /// Entries in it now.
    pub length: u64,
    /// Entries ever added (poison pills since the stream existed).
    pub entries_added: u64,
    /// The newest entry's id, if any.
    pub last_id: Option<EntryId>,
}

/// Everything one poll learned.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Observation {
    /// Server memory and policy.
    pub redis: RedisInfo,
    /// The stream; `None` when it does not exist yet.
    pub stream: Option<StreamInfo>,
    /// Its groups, by name.
    pub groups: Vec<GroupInfo>,
    /// The dead letter stream.
    pub dlq: DlqInfo,
    /// With an archive (its group `evstream-archive` on the stream): how long ago the
    /// oldest entry it does not hold yet was appended, in milliseconds; 0 when it holds
    /// everything. `None` without an archive.
    pub archive_behind_ms: Option<u64>,
}

impl Observation {
    /// Mirrors what was observed of Redis, `stream`, its groups and its dead letters into the
    /// metrics (the ops loop, every poll; see [`crate::telemetry`]).
    pub(crate) fn record(&self, stream: &str, now_ms: u64) {
        let redis = &self.redis;
        gauge!("evstream_redis_memory_used_bytes").set(redis.used_memory as f64);
        gauge!("evstream_redis_memory_max_bytes").set(redis.maxmemory as f64);
        if let Some(ratio) = redis.used_ratio() {
            gauge!("evstream_redis_memory_used_ratio").set(ratio);
        }
        gauge!("evstream_redis_fragmentation_ratio").set(redis.allocator_frag_ratio);
        let safe = redis.eviction_risk() != EvictionRisk::Stream;
        gauge!("evstream_redis_eviction_policy_safe").set(if safe { 1.0 } else { 0.0 });
        if let Some(on) = redis.activedefrag {
            gauge!("evstream_redis_activedefrag").set(if on { 1.0 } else { 0.0 });
        }
        let label = stream.to_owned();
        if let Some(info) = &self.stream {
            gauge!("evstream_stream_length", "stream" => label.clone()).set(info.length as f64);
            counter!("evstream_stream_entries_added_total", "stream" => label.clone())
                .absolute(info.entries_added);
            let age = info
                .first_id
                .map_or(0.0, |id| now_ms.saturating_sub(id.ms) as f64 / 1000.0);
            gauge!("evstream_stream_first_entry_age_seconds", "stream" => label.clone()).set(age);
        }
        for group in &self.groups {
            let labels = [("stream", label.clone()), ("group", group.name.clone())];
            gauge!("evstream_group_pending", &labels).set(group.pending as f64);
            if let Some(lag) = group.lag {
                gauge!("evstream_group_lag", &labels).set(lag as f64);
            }
            gauge!("evstream_group_consumers", &labels).set(group.consumers.len() as f64);
            for consumer in &group.consumers {
                let labels = [
                    ("stream", label.clone()),
                    ("group", group.name.clone()),
                    ("consumer", consumer.name.clone()),
                ];
                gauge!("evstream_consumer_idle_seconds", &labels)
                    .set(consumer.idle_ms as f64 / 1000.0);
                gauge!("evstream_consumer_pending", &labels).set(consumer.pending as f64);
            }
        }
        if let Some(behind) = self.archive_behind_ms {
            gauge!("evstream_archive_behind_seconds", "stream" => label.clone())
                .set(behind as f64 / 1000.0);
        }
        gauge!("evstream_dlq_length", "stream" => label.clone()).set(self.dlq.length as f64);
        counter!("evstream_dlq_entries_added_total", "stream" => label)
            .absolute(self.dlq.entries_added);
    }
}

/// Counting the entries between a group's oldest pending entry and its last delivered one
/// happens inside Redis, so only a number crosses the network; capped, so that a consumer
/// that died holding an old entry costs one bounded call, not a scan of the stream.
const COUNT_SCRIPT: &str = r"
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])
return #entries
";

/// Pending spans longer than this are not counted; retention by length then waits (the
/// group is reported as holding it back) until the entries are claimed and acknowledged.
pub const MAX_COUNTED_SPAN: u64 = 50_000;

/// Reads the whole observation of `stream` (and `<stream>:dlq`), every call with `timeout`.
///
/// Counting what a group with pending entries still needs ([`GroupInfo::unfinished`]) costs
/// Redis a bounded range scan, so it is done only when the stream is longer than
/// `count_unfinished_above` (retention by length needs it then); otherwise `unfinished` is
/// `None` for such groups.
pub async fn observe(
    connection: &mut MultiplexedConnection,
    stream: &str,
    count_unfinished_above: Option<u64>,
    timeout: Duration,
) -> Result<Observation, OpsError> {
    let mut call = Caller {
        connection,
        timeout,
    };
    let redis = call.redis_info().await?;
    let stream_info = call.stream_info(stream).await?;
    let mut groups = Vec::new();
    if stream_info.is_some() {
        let length = stream_info.as_ref().map_or(0, |s| s.length);
        let count = count_unfinished_above.is_some_and(|above| length > above);
        for fields in call.list(&["XINFO", "GROUPS", stream]).await? {
            groups.push(call.group(stream, &fields, count).await?);
        }
    }
    let dlq = call
        .stream_info(&crate::keys::dead_letters(stream))
        .await?
        .map(|info| DlqInfo {
            length: info.length,
            entries_added: info.entries_added,
            last_id: info.last_id,
        })
        .unwrap_or_default();
    let archive = groups.iter().find(|g| g.name == crate::keys::ARCHIVE_GROUP);
    let archive_behind_ms = match (archive, &stream_info) {
        (Some(group), Some(info)) => Some(
            call.oldest_after(stream, group.last_delivered, info.last_id)
                .await?
                .map_or(0, |ms| super::unix_ms().saturating_sub(ms)),
        ),
        _ => None,
    };
    Ok(Observation {
        redis,
        stream: stream_info,
        groups,
        dlq,
        archive_behind_ms,
    })
}

/// Dead letters by `(dlq_stage, dlq_reason)` after entry `after`, reading at most
/// `max_entries`; returns the counts and the last id read (to continue from).
pub async fn dead_letters_by_reason(
    connection: &mut MultiplexedConnection,
    dlq: &str,
    after: Option<EntryId>,
    max_entries: u64,
    timeout: Duration,
) -> Result<(BTreeMap<(String, String), u64>, Option<EntryId>), OpsError> {
    const PAGE: u64 = 100;
    let mut call = Caller {
        connection,
        timeout,
    };
    let mut counts = BTreeMap::new();
    let mut last = after;
    let mut read = 0;
    while read < max_entries {
        let start = last.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let page = PAGE.min(max_entries - read);
        let what = format!("XRANGE {dlq}");
        let value = call
            .query(
                &what,
                Cmd::new()
                    .arg("XRANGE")
                    .arg(dlq)
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(page),
            )
            .await?;
        let Value::Array(entries) = value else {
            return Err(reply(&what, "not an array"));
        };
        let n = entries.len() as u64;
        for entry in entries {
            let Value::Array(mut parts) = entry else {
                return Err(reply(&what, "entry is not an array"));
            };
            let fields = parts.pop().unwrap_or(Value::Nil);
            let id = parts.pop().map(|v| text(&v)).unwrap_or_default();
            last = Some(id.parse().map_err(|e: String| reply(&what, &e))?);
            let fields = pairs(fields);
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .map_or_else(|| "unknown".to_owned(), |(_, v)| text(v))
            };
            *counts
                .entry((field("dlq_stage"), field("dlq_reason")))
                .or_insert(0) += 1;
        }
        read += n;
        if n < page {
            break;
        }
    }
    Ok((counts, last))
}

/// One connection and the deadline of every call on it.
struct Caller<'a> {
    connection: &'a mut MultiplexedConnection,
    timeout: Duration,
}

impl Caller<'_> {
    async fn query(&mut self, what: &str, cmd: &Cmd) -> Result<Value, OpsError> {
        crate::redis::call(self.connection, what, cmd, self.timeout).await
    }

    async fn redis_info(&mut self) -> Result<RedisInfo, OpsError> {
        let mut info = RedisInfo::default();
        for section in ["server", "memory", "stats"] {
            let what = format!("INFO {section}");
            let value = self
                .query(&what, Cmd::new().arg("INFO").arg(section))
                .await?;
            let text = String::from_redis_value(value).map_err(|e| reply(&what, &e.to_string()))?;
            for line in text.lines() {
                let Some((key, value)) = line.trim_end().split_once(':') else {
                    continue;
                };
                let number = || value.parse::<u64>().unwrap_or(0);
                let ratio = || value.parse::<f64>().unwrap_or(0.0);
                match key {
                    "redis_version" => info.version = value.to_owned(),
                    "used_memory" => info.used_memory = number(),
                    "maxmemory" => info.maxmemory = number(),
                    "maxmemory_policy" => info.maxmemory_policy = value.to_owned(),
                    "allocator_frag_ratio" => info.allocator_frag_ratio = ratio(),
                    "mem_fragmentation_ratio" => info.mem_fragmentation_ratio = ratio(),
                    "evicted_keys" => info.evicted_keys = number(),
                    _ => {}
                }
            }
        }
        // CONFIG may be denied (ACL) or renamed (managed Redis): then it stays unknown.
        if let Ok(value) = self
            .query(
                "CONFIG GET activedefrag",
                Cmd::new().arg("CONFIG").arg("GET").arg("activedefrag"),
            )
            .await
        {
            info.activedefrag = pairs(value)
                .into_iter()
                .find(|(k, _)| k == "activedefrag")
                .map(|(_, v)| text(&v) == "yes");
        }
        Ok(info)
    }

    /// `XINFO STREAM`, or `None` when the key does not exist.
    async fn stream_info(&mut self, key: &str) -> Result<Option<StreamInfo>, OpsError> {
        let what = format!("XINFO STREAM {key}");
        let value = match self
            .query(&what, Cmd::new().arg("XINFO").arg("STREAM").arg(key))
            .await
        {
            Ok(value) => value,
            Err(OpsError::Redis { source, .. })
                if source
                    .to_string()
                    .to_ascii_lowercase()
                    .contains("no such key") =>
            {
                return Ok(None)
            }
            Err(error) => return Err(error),
        };
        let fields = pairs(value);
        let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let entry_id = |name: &str| match get(name) {
            Some(Value::Array(entry)) => entry.first().and_then(|id| text(id).parse().ok()),
            _ => None,
        };
        Ok(Some(StreamInfo {
            length: get("length").map_or(0, number),
            entries_added: get("entries-added").map_or(0, number),
            first_id: entry_id("first-entry"),
            last_id: entry_id("last-entry"),
        }))
    }

    /// An array of field maps (`XINFO GROUPS`, `XINFO CONSUMERS`).
    /// The millisecond of the first entry of `stream` after `after`, when `last` (the
    /// stream's last entry) is past it; `None` when there is none.
    async fn oldest_after(
        &mut self,
        stream: &str,
        after: EntryId,
        last: Option<EntryId>,
    ) -> Result<Option<u64>, OpsError> {
        if last.is_none_or(|last| last <= after) {
            return Ok(None);
        }
        let what = format!("XRANGE {stream} ({after} + COUNT 1");
        let cmd = Cmd::new()
            .arg("XRANGE")
            .arg(stream)
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .clone();
        let entries = crate::redis::parse_entries(self.query(&what, &cmd).await?)
            .map_err(|e| reply(&what, &e))?;
        Ok(entries.first().map(|e| e.id.ms))
    }

    async fn list(&mut self, args: &[&str]) -> Result<Vec<Vec<(String, Value)>>, OpsError> {
        let what = args.join(" ");
        let mut cmd = Cmd::new();
        for arg in args {
            cmd.arg(*arg);
        }
        match self.query(&what, &cmd).await? {
            Value::Array(items) => Ok(items.into_iter().map(pairs).collect()),
            _ => Err(reply(&what, "not an array")),
        }
    }

    async fn group(
        &mut self,
        stream: &str,
        fields: &[(String, Value)],
        count_span: bool,
    ) -> Result<GroupInfo, OpsError> {
        let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let name = get("name").map(text).unwrap_or_default();
        let what = format!("XINFO GROUPS {stream}");
        let last_delivered = get("last-delivered-id")
            .map(text)
            .unwrap_or_default()
            .parse::<EntryId>()
            .map_err(|e| reply(&what, &e))?;
        let pending = get("pending").map_or(0, number);
        let lag = match get("lag") {
            Some(Value::Nil) | None => None,
            Some(value) => Some(number(value)),
        };
        let consumers = self
            .list(&["XINFO", "CONSUMERS", stream, &name])
            .await?
            .into_iter()
            .map(|fields| {
                let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v);
                ConsumerInfo {
                    name: get("name").map(text).unwrap_or_default(),
                    pending: get("pending").map_or(0, number),
                    idle_ms: get("idle").map_or(0, number),
                }
            })
            .collect();
        let mut oldest_pending: Option<EntryId> = None;
        let mut span = Some(0);
        if pending > 0 {
            let what = format!("XPENDING {stream} {name}");
            let summary = self
                .query(&what, Cmd::new().arg("XPENDING").arg(stream).arg(&name))
                .await?;
            if let Value::Array(parts) = summary {
                oldest_pending = parts.get(1).and_then(|id| text(id).parse().ok());
            }
            span = match oldest_pending {
                Some(oldest) if count_span => {
                    let what = format!("counting {name}'s pending span of {stream}");
                    let counted = self
                        .query(
                            &what,
                            Cmd::new()
                                .arg("EVAL")
                                .arg(COUNT_SCRIPT)
                                .arg(1)
                                .arg(stream)
                                .arg(oldest.to_string())
                                .arg(last_delivered.to_string())
                                .arg(MAX_COUNTED_SPAN + 1),
                        )
                        .await?;
                    Some(number(&counted)).filter(|&n| n <= MAX_COUNTED_SPAN)
                }
                _ => None,
            };
        }
        Ok(GroupInfo {
            name,
            pending,
            last_delivered,
            lag,
            oldest_pending,
            unfinished: lag.zip(span).map(|(lag, span)| lag + span),
            consumers,
        })
    }
}

fn reply(what: &str, detail: &str) -> OpsError {
    OpsError::Reply {
        what: what.to_owned(),
        detail: detail.to_owned(),
    }
}

/// A RESP2 flat `[k, v, k, v…]` array or a RESP3 map, as `(key, value)` pairs.
fn pairs(value: Value) -> Vec<(String, Value)> {
    match value {
        Value::Map(map) => map.into_iter().map(|(k, v)| (text(&k), v)).collect(),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                out.push((text(&k), v));
            }
            out
        }
        _ => Vec::new(),
    }
}

pub(super) fn text(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Okay => "OK".to_owned(),
        _ => String::new(),
    }
}

fn number(value: &Value) -> u64 {
    match value {
        Value::Int(n) => u64::try_from(*n).unwrap_or(0),
        other => text(other).parse().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_parse_order_and_step() {
        let id: EntryId = "1700000000000-5".parse().unwrap();
        assert_eq!(
            id,
            EntryId {
                ms: 1_700_000_000_000,
                seq: 5
            }
        );
        assert_eq!("17".parse::<EntryId>().unwrap(), EntryId::from_ms(17));
        assert!("x-1".parse::<EntryId>().is_err());
        assert!(
            EntryId::from_ms(2)
                > EntryId {
                    ms: 1,
                    seq: u64::MAX
                }
        );
        assert_eq!(
            EntryId {
                ms: 1,
                seq: u64::MAX
            }
            .successor(),
            EntryId::from_ms(2)
        );
        assert_eq!(id.successor().to_string(), "1700000000000-6");
    }

    #[test]
    fn eviction_policies_are_classified() {
        let risk = |policy: &str| {
            RedisInfo {
                maxmemory_policy: policy.to_owned(),
                ..RedisInfo::default()
            }
            .eviction_risk()
        };
        assert_eq!(risk("noeviction"), EvictionRisk::None);
        assert_eq!(risk("allkeys-lru"), EvictionRisk::Stream);
        assert_eq!(risk("allkeys-random"), EvictionRisk::Stream);
        assert_eq!(risk("volatile-ttl"), EvictionRisk::HighWaterMarks);
    }
}
