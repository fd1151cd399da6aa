//! Retention that respects consumer groups, and the aggressive trim of last resort.
//!
//! Redis trims a stream from its head, by length (`MAXLEN`) or by id (`MINID`), and knows
//! nothing of the groups reading it: a plain `MAXLEN ~ 1000000` deletes entries a slow group
//! has not read yet, and its pending entries, which then vanish from its consumers'
//! recovery. So the plan is made here, from one [`Observation`]:
//!
//! - by age, the trim id is the older of the age cutoff and the oldest entry any group still
//!   needs ([`GroupInfo::floor`]);
//! - by length, the kept length is the larger of `ops.max_len` and the most entries any group
//!   still needs ([`GroupInfo::unfinished`]); when that count is unknown, retention by length
//!   waits;
//! - at critical memory only, the stream is cut to `ops.aggressive_len` and to the age
//!   cutoff regardless of groups, and what each group loses is counted.
//!
//! Every trim is approximate (`~`): Redis removes whole macro nodes only, so it keeps a few
//! more entries than asked, never fewer, and each call is bounded (Redis's default `LIMIT`).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Cmd;
use serde::Serialize;

use super::observe::{EntryId, GroupInfo, Observation};
use crate::archive::ArchiveMark;
use crate::config::OpsConfig;
use crate::error::OpsError;
use crate::redis::call;

/// Where used memory stands against the thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryLevel {
    /// No `maxmemory`: nothing to compare with.
    Unbounded,
    /// Below `ops.memory_warning_percent`.
    Normal,
    /// At or above the warning threshold.
    Warning,
    /// At or above `ops.memory_critical_percent`: aggressive trimming.
    Critical,
}

impl MemoryLevel {
    /// The level of `used_ratio` (0..1, `None` without `maxmemory`).
    pub fn of(used_ratio: Option<f64>, config: &OpsConfig) -> Self {
        match used_ratio.map(|r| r * 100.0) {
            None => Self::Unbounded,
            Some(p) if p >= config.memory_critical_percent => Self::Critical,
            Some(p) if p >= config.memory_warning_percent => Self::Warning,
            Some(_) => Self::Normal,
        }
    }
}

/// What one tick will trim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TrimPlan {
    /// Memory is critical: groups are not protected.
    pub aggressive: bool,
    /// `XTRIM MINID ~` to this id.
    pub min_id: Option<EntryId>,
    /// `XTRIM MAXLEN ~` to this length.
    pub max_len: Option<u64>,
    /// Groups that keep retention from trimming as much as configured (they have not read,
    /// or not acknowledged, entries it would delete).
    pub held_back_by: Vec<String>,
}

/// Plans the trim of the observed stream at `now_ms` (Unix milliseconds).
pub fn plan(
    config: &OpsConfig,
    observation: &Observation,
    level: MemoryLevel,
    now_ms: u64,
) -> TrimPlan {
    let Some(stream) = &observation.stream else {
        return TrimPlan::default();
    };
    let groups = &observation.groups;
    let age_cutoff = (config.max_age_s > 0)
        .then(|| EntryId::from_ms(now_ms.saturating_sub(config.max_age_s.saturating_mul(1000))));
    let first = stream.first_id.unwrap_or_default();
    let mut plan = TrimPlan {
        aggressive: level == MemoryLevel::Critical,
        ..TrimPlan::default()
    };
    if plan.aggressive {
        plan.min_id = age_cutoff.filter(|&cutoff| cutoff > first);
        let keep = match config.max_len {
            0 => config.aggressive_len,
            max_len => config.aggressive_len.min(max_len),
        };
        plan.max_len = Some(keep).filter(|&n| stream.length > n);
        return plan;
    }
    let mut held_back = std::collections::BTreeSet::new();

    if let Some(cutoff) = age_cutoff {
        let slowest = groups.iter().min_by_key(|g| g.floor());
        let min_id = match slowest {
            Some(group) if group.floor() < cutoff => {
                held_back.insert(group.name.clone());
                group.floor()
            }
            _ => cutoff,
        };
        plan.min_id = Some(min_id).filter(|&id| id > first);
    }

    if config.max_len > 0 && stream.length > config.max_len {
        let unknown: Vec<&GroupInfo> = groups.iter().filter(|g| g.unfinished.is_none()).collect();
        if unknown.is_empty() {
            let needed = groups
                .iter()
                .filter_map(|g| g.unfinished)
                .max()
                .unwrap_or(0);
            let keep = config.max_len.max(needed);
            if needed > config.max_len {
                for group in groups
                    .iter()
                    .filter(|g| g.unfinished > Some(config.max_len))
                {
                    held_back.insert(group.name.clone());
                }
            }
            plan.max_len = Some(keep).filter(|&keep| stream.length > keep);
        } else {
            held_back.extend(unknown.into_iter().map(|g| g.name.clone()));
        }
    }
    plan.held_back_by = held_back.into_iter().collect();
    plan
}

/// What a trim removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Trimmed {
    /// Entries deleted.
    pub entries: u64,
    /// Stream length afterwards.
    pub length_after: u64,
    /// Per group, entries it still needed that were deleted (aggressive trims only).
    pub lost: Vec<(String, u64)>,
}

/// Bounds the number of `XTRIM` calls of one tick (each removes at most Redis's default
/// limit, 100 macro nodes), so that a huge backlog is trimmed over several ticks without
/// long stalls of Redis.
const MAX_CALLS_PER_TICK: usize = 200;

/// `XTRIM MAXLEN ~` to `ARGV[1]` entries plus those appended since the observation
/// (`ARGV[2]` was `entries-added` then): appends racing the trim must not push entries a
/// group still needs out of the kept tail. One call trims at most Redis's default `LIMIT`.
const MAXLEN_SCRIPT: &str = r"
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local added = tonumber(ARGV[2])
for i = 1, #info, 2 do
  if info[i] == 'entries-added' then added = info[i + 1] end
end
local keep = tonumber(ARGV[1]) + math.max(0, added - tonumber(ARGV[2]))
return redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', string.format('%d', keep))
";

/// Applies `plan` to the observed stream. Returns what was trimmed even when a call failed
/// part-way (with that failure), so that every deletion is counted.
pub async fn execute(
    connection: &mut MultiplexedConnection,
    stream: &str,
    plan: &TrimPlan,
    observation: &Observation,
    timeout: Duration,
) -> (Trimmed, Result<(), OpsError>) {
    let mut trimmed = Trimmed::default();
    let result = trim_calls(connection, stream, plan, observation, timeout, &mut trimmed).await;
    if plan.aggressive && trimmed.entries > 0 {
        trimmed.lost = losses(observation, trimmed.entries);
    }
    (trimmed, result)
}

async fn trim_calls(
    connection: &mut MultiplexedConnection,
    stream: &str,
    plan: &TrimPlan,
    observation: &Observation,
    timeout: Duration,
    trimmed: &mut Trimmed,
) -> Result<(), OpsError> {
    let added_then = observation.stream.as_ref().map_or(0, |s| s.entries_added);
    let mut calls = Vec::new();
    if let Some(id) = plan.min_id {
        // Appends get larger ids: trimming by id never reaches them.
        let cmd = Cmd::new()
            .arg("XTRIM")
            .arg(stream)
            .arg("MINID")
            .arg("~")
            .arg(id.to_string())
            .clone();
        calls.push((format!("XTRIM {stream} MINID ~ {id}"), cmd));
    }
    if let Some(keep) = plan.max_len {
        let cmd = Cmd::new()
            .arg("EVAL")
            .arg(MAXLEN_SCRIPT)
            .arg(1)
            .arg(stream)
            .arg(keep)
            .arg(added_then)
            .clone();
        calls.push((format!("XTRIM {stream} MAXLEN ~ {keep} (+ appends)"), cmd));
    }
    for (what, cmd) in calls {
        for _ in 0..MAX_CALLS_PER_TICK {
            let deleted: u64 = call(connection, &what, &cmd, timeout).await?;
            trimmed.entries += deleted;
            if deleted == 0 {
                break;
            }
        }
    }
    let length_cmd = Cmd::new().arg("XLEN").arg(stream).clone();
    trimmed.length_after =
        call(connection, &format!("XLEN {stream}"), &length_cmd, timeout).await?;
    Ok(())
}

/// Dead-letter retention: `dlq` cut to `ops.dlq_max_len` entries and to `ops.dlq_max_age_s`
/// (approximately, whole macro nodes, like every trim here). No consumer group reads dead
/// letters; with an archive, `archived` is its mark on `dlq` and the number of dead letters
/// ever added when the loop observed them: nothing it does not hold is trimmed (by age, not
/// past its mark; by length, keeping at least what it has not archived plus what arrived
/// since, and not at all while Redis cannot count that). Returns how many were deleted.
pub async fn dead_letters(
    connection: &mut MultiplexedConnection,
    dlq: &str,
    config: &OpsConfig,
    archived: Option<(ArchiveMark, u64)>,
    now_ms: u64,
    timeout: Duration,
) -> Result<u64, OpsError> {
    let mut calls = Vec::new();
    if config.dlq_max_age_s > 0 {
        let mut cutoff =
            EntryId::from_ms(now_ms.saturating_sub(config.dlq_max_age_s.saturating_mul(1000)));
        if let Some((mark, _)) = archived {
            cutoff = cutoff.min(mark.next());
        }
        let cmd = Cmd::new()
            .arg("XTRIM")
            .arg(dlq)
            .arg("MINID")
            .arg("~")
            .arg(cutoff.to_string())
            .clone();
        calls.push((format!("XTRIM {dlq} MINID ~ {cutoff}"), cmd));
    }
    match (config.dlq_max_len, archived) {
        (0, _) => {}
        (keep, None) => {
            let cmd = Cmd::new()
                .arg("XTRIM")
                .arg(dlq)
                .arg("MAXLEN")
                .arg("~")
                .arg(keep)
                .clone();
            calls.push((format!("XTRIM {dlq} MAXLEN ~ {keep}"), cmd));
        }
        (keep, Some((mark, added_then))) => {
            if let Some(unarchived) = mark.unarchived {
                let keep = keep.max(unarchived);
                let cmd = Cmd::new()
                    .arg("EVAL")
                    .arg(MAXLEN_SCRIPT)
                    .arg(1)
                    .arg(dlq)
                    .arg(keep)
                    .arg(added_then)
                    .clone();
                calls.push((format!("XTRIM {dlq} MAXLEN ~ {keep} (+ appends)"), cmd));
            }
        }
    }
    let mut deleted = 0;
    for (what, cmd) in calls {
        for _ in 0..MAX_CALLS_PER_TICK {
            let n: u64 = call(connection, &what, &cmd, timeout).await?;
            deleted += n;
            if n == 0 {
                break;
            }
        }
    }
    Ok(deleted)
}

/// Per group, how many of `deleted` head entries it still needed. Trims only cut the head:
/// of the observed entries, the oldest `length - needed` are ones the group is done with;
/// whatever was deleted beyond those was needed.
fn losses(observation: &Observation, deleted: u64) -> Vec<(String, u64)> {
    let length = observation.stream.as_ref().map_or(0, |s| s.length);
    observation
        .groups
        .iter()
        .filter_map(|group| {
            let needed = group
                .unfinished
                .unwrap_or_else(|| group.lag.unwrap_or(0) + group.pending)
                .min(length);
            let lost = deleted.saturating_sub(length - needed);
            (lost > 0).then(|| (group.name.clone(), lost))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::observe::StreamInfo;

    const NOW: u64 = 10_000_000;

    fn config(max_len: u64, max_age_s: u64) -> OpsConfig {
        OpsConfig {
            max_len,
            max_age_s,
            aggressive_len: 10,
            ..OpsConfig::default()
        }
    }

    fn group(name: &str, last_ms: u64, unfinished: Option<u64>) -> GroupInfo {
        GroupInfo {
            name: name.to_owned(),
            pending: 0,
            last_delivered: EntryId::from_ms(last_ms),
            lag: unfinished,
            oldest_pending: None,
            unfinished,
            consumers: Vec::new(),
        }
    }

    fn observation(length: u64, first_ms: u64, groups: Vec<GroupInfo>) -> Observation {
        Observation {
            stream: Some(StreamInfo {
                length,
                entries_added: length,
                first_id: Some(EntryId::from_ms(first_ms)),
                last_id: Some(EntryId::from_ms(NOW)),
            }),
            groups,
            ..Observation::default()
        }
    }

    #[test]
    fn without_groups_retention_applies_as_configured() {
        let plan = plan(
            &config(100, 60),
            &observation(500, 1000, vec![]),
            MemoryLevel::Normal,
            NOW,
        );
        assert_eq!(plan.max_len, Some(100));
        assert_eq!(plan.min_id, Some(EntryId::from_ms(NOW - 60_000)));
        assert!(plan.held_back_by.is_empty());
    }

    #[test]
    fn a_lagging_group_holds_both_limits_back() {
        // The group still needs 300 entries, from id 2000 on.
        let lagging = group("slow", 1999, Some(300));
        let plan = plan(
            &config(100, 60),
            &observation(500, 1000, vec![lagging, group("fast", NOW, Some(0))]),
            MemoryLevel::Warning,
            NOW,
        );
        assert_eq!(plan.max_len, Some(300));
        assert_eq!(plan.min_id, Some(EntryId { ms: 1999, seq: 1 }));
        assert_eq!(plan.held_back_by, vec!["slow".to_owned()]);
    }

    #[test]
    fn a_pending_entry_is_protected_like_an_unread_one() {
        let mut holding = group("g", NOW, Some(250));
        holding.pending = 1;
        holding.oldest_pending = Some(EntryId::from_ms(1500));
        let plan = plan(
            &config(100, 60),
            &observation(500, 1000, vec![holding]),
            MemoryLevel::Normal,
            NOW,
        );
        assert_eq!(plan.min_id, Some(EntryId::from_ms(1500)));
        assert_eq!(plan.max_len, Some(250));
    }

    #[test]
    fn an_uncountable_group_suspends_length_retention_only() {
        let plan = plan(
            &config(100, 60),
            &observation(500, 1000, vec![group("odd", NOW, None)]),
            MemoryLevel::Normal,
            NOW,
        );
        assert_eq!(plan.max_len, None);
        assert_eq!(plan.min_id, Some(EntryId::from_ms(NOW - 60_000)));
        assert_eq!(plan.held_back_by, vec!["odd".to_owned()]);
    }

    #[test]
    fn critical_memory_ignores_groups() {
        let plan = plan(
            &config(100, 60),
            &observation(500, 1000, vec![group("slow", 1000, Some(500))]),
            MemoryLevel::Critical,
            NOW,
        );
        assert!(plan.aggressive);
        assert_eq!(plan.max_len, Some(10));
        assert_eq!(plan.min_id, Some(EntryId::from_ms(NOW - 60_000)));
    }

    #[test]
    fn losses_count_only_deleted_entries_a_group_still_needed() {
        // 500 entries; "slow" needs the newest 300, "done" nothing, "gone" more than exist.
        let observation = observation(
            500,
            1000,
            vec![
                group("slow", 1999, Some(300)),
                group("done", NOW, Some(0)),
                group("gone", 10, Some(5000)),
            ],
        );
        assert_eq!(losses(&observation, 150), vec![("gone".to_owned(), 150)]);
        assert_eq!(
            losses(&observation, 400),
            vec![("slow".to_owned(), 200), ("gone".to_owned(), 400)]
        );
    }

    #[test]
    fn nothing_to_trim_plans_nothing() {
        let plan = plan(
            &config(1000, 60),
            &observation(500, NOW - 1000, vec![]),
            MemoryLevel::Normal,
            NOW,
        );
        assert_eq!(plan, TrimPlan::default());
        assert_eq!(
            MemoryLevel::of(Some(0.85), &OpsConfig::default()),
            MemoryLevel::Critical
        );
        assert_eq!(
            MemoryLevel::of(Some(0.6), &OpsConfig::default()),
            MemoryLevel::Warning
        );
        assert_eq!(
            MemoryLevel::of(None, &OpsConfig::default()),
            MemoryLevel::Unbounded
        );
    }
}
