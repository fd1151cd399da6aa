//! What the ops loop does to Redis every `ops.interval_ms`: retention trims (of the stream
//! and of its dead letters), group hygiene, and defragmentation; and the dead letters it
//! counts by reason on the way.

use std::time::Instant;

use redis::aio::MultiplexedConnection;
use redis::Cmd;

use super::observe::{self, EntryId, Observation};
use super::run::Memory;
use super::trim::{self, MemoryLevel};
use super::{unix_ms, OpsLoop, CALL_TIMEOUT};
use crate::archive;
use crate::error::OpsError;
use crate::redis::call;

/// Dead letters read per poll to count them by reason.
const DLQ_SCAN_PER_TICK: u64 = 10_000;

const HYGIENE_SCRIPT: &str = include_str!("hygiene.lua");

impl OpsLoop {
    /// Retention, hygiene and defragmentation. What each step did reaches the state and the
    /// metrics even when a later step fails.
    pub(super) async fn act(
        &self,
        conn: &mut MultiplexedConnection,
        observation: &Observation,
        memory: &mut Memory,
    ) -> Result<(), OpsError> {
        let level = MemoryLevel::of(observation.redis.used_ratio(), &self.config);
        let mut plan = trim::plan(&self.config, observation, level, unix_ms());
        let archive_missing = self.archive
            && observation.stream.is_some()
            && !observation.groups.iter().any(|g| g.name == archive::GROUP);
        if archive_missing {
            // Retention waits for the archive: its group, created at the beginning, keeps
            // everything until the archiver moves it. This pass did not see it: no trim.
            archive::ensure_group(conn, &self.stream).await?;
            if !plan.aggressive {
                plan.min_id = None;
                plan.max_len = None;
                plan.held_back_by = vec![archive::GROUP.to_owned()];
            }
        }
        let (trimmed, result) =
            trim::execute(conn, &self.stream, &plan, observation, CALL_TIMEOUT).await;
        self.record_trim(&plan, &trimmed, memory);
        result?;
        let removed = self.remove_idle_consumers(conn, observation).await;
        self.state.update(|s| {
            for (group, n) in &removed.0 {
                *s.consumers_removed.entry(group.clone()).or_default() += n;
            }
        });
        removed.1?;
        self.defragment(conn, observation, memory).await;
        if memory.dlq_cursor.is_none() {
            // Count the dead letters that arrive from now on; the history is in `status`,
            // and counting it here would show as a burst on every restart.
            memory.dlq_cursor = Some(observation.dlq.last_id.unwrap_or_default());
        }
        let (by_reason, cursor) = observe::dead_letters_by_reason(
            conn,
            &crate::keys::dead_letters(&self.stream),
            memory.dlq_cursor,
            DLQ_SCAN_PER_TICK,
            CALL_TIMEOUT,
        )
        .await?;
        memory.dlq_cursor = cursor.or(memory.dlq_cursor);
        let unreadable: u64 = by_reason
            .iter()
            .filter(|((_, reason), _)| reason == crate::schema::UNREADABLE_VERSION)
            .map(|(_, n)| n)
            .sum();
        if unreadable > 0 {
            memory
                .recent_unreadable
                .push_back((Instant::now(), unreadable));
        }
        for ((stage, reason), n) in &by_reason {
            metrics::counter!("evstream_dlq_entries_total", "stream" => self.stream.clone(), "stage" => stage.clone(), "reason" => reason.clone())
                .increment(*n);
        }
        self.state.update(|s| {
            for ((stage, reason), n) in &by_reason {
                *s.dead_letters
                    .entry(format!("{stage}/{reason}"))
                    .or_default() += n;
            }
        });
        // After counting: what is trimmed was counted first (unless more than a pass's
        // count arrived since the last pass).
        let dlq = crate::keys::dead_letters(&self.stream);
        let archived = if self.archive {
            let mark = match archive::mark(conn, &dlq).await? {
                Some(mark) => mark,
                None => {
                    archive::ensure_group(conn, &dlq).await?;
                    archive::ArchiveMark {
                        archived: EntryId::default(),
                        unarchived: None,
                    }
                }
            };
            Some((mark, observation.dlq.entries_added))
        } else {
            None
        };
        let deleted = match trim::dead_letters(
            conn,
            &dlq,
            &self.config,
            archived,
            unix_ms(),
            CALL_TIMEOUT,
        )
        .await
        {
            Ok(deleted) => deleted,
            // An ACL from before dead-letter retention (read-only on the dead letters):
            // everything else of the pass still works; say what to change, once.
            Err(OpsError::Redis { source, .. }) if source.code() == Some("NOPERM") => {
                if !std::mem::replace(&mut memory.dlq_trim_refused, true) {
                    tracing::warn!(dlq = %dlq, error = %source, "ops: this user may not trim the dead letters, so ops.dlq_max_len and ops.dlq_max_age_s are not applied; grant it write access to the dead-letter stream (docs/security.md, ops role)");
                }
                0
            }
            Err(error) => return Err(error),
        };
        if deleted > 0 {
            metrics::counter!("evstream_dlq_trimmed_entries_total", "stream" => self.stream.clone())
                .increment(deleted);
            tracing::warn!(
                deleted,
                dlq = %dlq,
                "ops: dead letters past ops.dlq_max_len / ops.dlq_max_age_s deleted (a shipper's \
                 dead letter is the only copy of its event)"
            );
            self.state.update(|s| s.dlq_trimmed += deleted);
        }
        Ok(())
    }

    fn record_trim(&self, plan: &trim::TrimPlan, trimmed: &trim::Trimmed, memory: &mut Memory) {
        let mode = if plan.aggressive {
            "aggressive"
        } else {
            "retention"
        };
        if trimmed.entries > 0 {
            metrics::counter!("evstream_trimmed_entries_total", "stream" => self.stream.clone(), "mode" => mode)
                .increment(trimmed.entries);
            tracing::info!(
                entries = trimmed.entries,
                mode,
                length = trimmed.length_after,
                "ops: trimmed"
            );
        }
        for (group, lost) in &trimmed.lost {
            tracing::error!(
                group = %group, lost,
                "ops: critical memory: trimming deleted entries this group had not finished"
            );
            metrics::counter!("evstream_trim_lost_entries_total", "stream" => self.stream.clone(), "group" => group.clone())
                .increment(*lost);
            memory
                .recent_losses
                .push_back((Instant::now(), group.clone(), *lost));
        }
        self.state.update(|s| {
            s.retention_held_back_by.clone_from(&plan.held_back_by);
            if plan.aggressive {
                s.trimmed_aggressive += trimmed.entries;
            } else {
                s.trimmed_retention += trimmed.entries;
            }
            for (group, lost) in &trimmed.lost {
                *s.trim_lost.entry(group.clone()).or_default() += lost;
            }
        });
    }

    /// Group hygiene; returns the consumers removed per group, and the first failure.
    async fn remove_idle_consumers(
        &self,
        conn: &mut MultiplexedConnection,
        observation: &Observation,
    ) -> (Vec<(String, u64)>, Result<(), OpsError>) {
        let mut removed = Vec::new();
        if self.config.consumer_idle_s == 0 {
            return (removed, Ok(()));
        }
        let idle_ms = self.config.consumer_idle_s.saturating_mul(1000);
        for group in &observation.groups {
            if !group
                .consumers
                .iter()
                .any(|c| c.pending == 0 && c.idle_ms > idle_ms)
            {
                continue;
            }
            let cmd = Cmd::new()
                .arg("EVAL")
                .arg(HYGIENE_SCRIPT)
                .arg(1)
                .arg(&self.stream)
                .arg(&group.name)
                .arg(idle_ms)
                .clone();
            let what = format!("removing idle consumers of {}", group.name);
            let names: Vec<String> = match call(conn, &what, &cmd, CALL_TIMEOUT).await {
                Ok(names) => names,
                Err(error) => return (removed, Err(error)),
            };
            for name in &names {
                tracing::info!(group = %group.name, consumer = %name, "ops: removed an idle consumer with nothing pending");
            }
            if !names.is_empty() {
                metrics::counter!("evstream_consumers_removed_total", "stream" => self.stream.clone(), "group" => group.name.clone())
                    .increment(names.len() as u64);
                removed.push((group.name.clone(), names.len() as u64));
            }
        }
        (removed, Ok(()))
    }

    async fn defragment(
        &self,
        conn: &mut MultiplexedConnection,
        observation: &Observation,
        memory: &mut Memory,
    ) {
        let redis = &observation.redis;
        if !self.config.allow_activedefrag
            || memory.defrag_refused
            || redis.allocator_frag_ratio <= self.config.frag_ratio
            || redis.activedefrag != Some(false)
        {
            return;
        }
        let cmd = Cmd::new()
            .arg("CONFIG")
            .arg("SET")
            .arg("activedefrag")
            .arg("yes")
            .clone();
        match call::<()>(conn, "CONFIG SET activedefrag yes", &cmd, CALL_TIMEOUT).await {
            Ok(()) => {
                self.state.update(|s| s.activedefrag_enabled = true);
                tracing::warn!(
                    ratio = redis.allocator_frag_ratio,
                    "ops: fragmentation high; activedefrag switched on"
                );
            }
            Err(error) => {
                // Not retried: a Redis built without jemalloc's defragmentation support
                // (Debian's, for one) refuses it every time.
                memory.defrag_refused = true;
                tracing::warn!(%error, "ops: fragmentation high; Redis refused to switch activedefrag on");
            }
        }
    }
}
