//! The analysis services' alerts, through the ops loop's alert path: IntelliSense writes one
//! entry per slow or risky order to `<stream>:alerts` (fields `kind`, `level`,
//! `correlation_id`, `symbol`, `message`, …); the loop reads the new ones every tick and
//! keeps those of the last `ops.analysis_alert_window_s`, from which `OrderLatencyHigh` and
//! `OrderRiskHigh` fire to the log, the webhook and `evstream_alert_firing`, as every other
//! alert does.
//!
//! Read from Redis rather than from the analysing process, so one ops loop alerts for every
//! consumer of the group, wherever it runs.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Cmd;

use crate::error::OpsError;
use crate::redis::{call, parse_entries, EntryId};

/// Entries read per tick at most: a storm of alerts is counted up to this many per tick,
/// and the rest read on the next ticks.
const READ_PER_TICK: u64 = 10_000;

/// Entries per `XRANGE` call.
const PAGE: u64 = 1_000;

/// What the alerts of one kind (`fill_latency`, `creation_latency`, `risk`) amount to over
/// the window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnalysisAlerts {
    /// Alerts in the window.
    pub count: u64,
    /// Of which at level `CRITICAL`.
    pub critical: u64,
    /// The latest one's message, with its symbol and correlation id.
    pub latest: String,
}

/// The alerts read, by the second they were raised in (their entry id's time), for the
/// window: bounded by the window's seconds and the kinds, however many alerts arrive.
#[derive(Debug, Default)]
pub(super) struct RecentAnalysisAlerts {
    /// The last entry read; `None` before the first read, which starts a window back.
    cursor: Option<EntryId>,
    /// By Unix second, then by kind.
    seconds: BTreeMap<u64, BTreeMap<String, AnalysisAlerts>>,
}

impl RecentAnalysisAlerts {
    /// Reads the entries appended to `key` since the last call (the first call reads the
    /// last `window`), then forgets what is older than `window`.
    pub(super) async fn read(
        &mut self,
        conn: &mut MultiplexedConnection,
        key: &str,
        window: Duration,
        now_ms: u64,
        timeout: Duration,
    ) -> Result<(), OpsError> {
        let mut start = match self.cursor {
            Some(id) => format!("({id}"),
            None => EntryId::from_ms(now_ms.saturating_sub(duration_ms(window))).to_string(),
        };
        let mut read = 0;
        let what = format!("XRANGE {key}");
        while read < READ_PER_TICK {
            let mut xrange = Cmd::new();
            xrange
                .arg("XRANGE")
                .arg(key)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(PAGE);
            let reply = call(conn, &what, &xrange, timeout).await?;
            let entries = parse_entries(reply).map_err(|detail| OpsError::Reply {
                what: what.clone(),
                detail,
            })?;
            let n = entries.len() as u64;
            for entry in entries {
                self.cursor = Some(entry.id);
                start = format!("({}", entry.id);
                let field = |name: &str| {
                    entry
                        .get(name)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default()
                };
                let kind = field("kind");
                if kind.is_empty() {
                    continue;
                }
                let alerts = self
                    .seconds
                    .entry(entry.id.ms / 1000)
                    .or_default()
                    .entry(kind)
                    .or_default();
                alerts.count += 1;
                alerts.critical += u64::from(field("level") == "CRITICAL");
                alerts.latest = format!(
                    "{} order {}: {}",
                    field("symbol"),
                    field("correlation_id"),
                    field("message")
                );
            }
            read += n;
            if n < PAGE {
                break;
            }
        }
        if self.cursor.is_none() {
            // Nothing in the window: later reads start from here, not a window back again.
            self.cursor = Some(EntryId::from_ms(now_ms.saturating_sub(duration_ms(window))));
        }
        self.forget_older_than(window, now_ms);
        Ok(())
    }

    /// Forgets the alerts raised more than `window` before `now_ms`.
    pub(super) fn forget_older_than(&mut self, window: Duration, now_ms: u64) {
        let oldest = now_ms.saturating_sub(duration_ms(window)) / 1000;
        self.seconds = self.seconds.split_off(&oldest);
    }

    /// The window's alerts by kind.
    pub(super) fn by_kind(&self) -> BTreeMap<String, AnalysisAlerts> {
        let mut total: BTreeMap<String, AnalysisAlerts> = BTreeMap::new();
        for second in self.seconds.values() {
            for (kind, alerts) in second {
                let sum = total.entry(kind.clone()).or_default();
                sum.count += alerts.count;
                sum.critical += alerts.critical;
                sum.latest.clone_from(&alerts.latest);
            }
        }
        total
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
