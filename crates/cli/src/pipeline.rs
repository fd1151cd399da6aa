//! What `demo` and `bench` share: a Redis to ship to (private unless one is given), the
//! whole path (ring → shipper → stream), and the read-back audit that measures loss and
//! duplicates instead of assuming them.

use std::time::{Duration, Instant};

use anyhow::Context;
use evstream::audit::Audit;
use evstream::ship::ShutdownReport;
use evstream::Config;
use evstream_intellisense::Percentiles;
use redis::streams::StreamId;
use serde::Serialize;

use crate::local_redis::LocalRedis;

/// The Redis a run ships to. Holds a private server alive for the run.
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) private: Option<LocalRedis>,
}

impl Target {
    /// The URL from the flags or config if one was given; otherwise a private
    /// `redis-server` (temp dir, free loopback port, AOF on), stopped when dropped.
    pub(crate) fn resolve(config: &Config, given_url: Option<&str>) -> anyhow::Result<Self> {
        if let Some(url) = given_url {
            check_reachable(config, url)?;
            return Ok(Self {
                url: url.to_owned(),
                private: None,
            });
        }
        let server = LocalRedis::start().context(
            "cannot start a private redis-server; install it (Debian: apt-get install \
                 redis-server) or pass --redis-url",
        )?;
        Ok(Self {
            url: server.url(),
            private: Some(server),
        })
    }

    /// A private server's runs also get a spill journal (in its temporary directory) unless
    /// the configuration names one: the demo shows the whole path.
    pub(crate) fn configure(&self, config: &mut Config) {
        config.redis.url.clone_from(&self.url);
        if let (Some(server), None) = (&self.private, &config.ship.journal_dir) {
            config.ship.journal_dir = Some(server.dir().join("journal"));
        }
    }

    pub(crate) fn describe(&self) -> String {
        match &self.private {
            Some(server) => format!("private redis-server on port {} (AOF on)", server.port()),
            None => evstream::redis::redact_url(&self.url),
        }
    }
}

/// Fails fast, with the reason, when the given Redis does not answer.
fn check_reachable(config: &Config, url: &str) -> anyhow::Result<()> {
    let shown = evstream::redis::redact_url(url);
    let mut settings = config.redis.clone();
    url.clone_into(&mut settings.url);
    let client = settings.client()?;
    let mut connection = client
        .get_connection_with_timeout(Duration::from_secs(3))
        .with_context(|| {
            format!(
                "cannot connect to Redis at {shown}: is it running? (without --redis-url, \
                 a private redis-server is started)"
            )
        })?;
    redis::cmd("PING")
        .query::<String>(&mut connection)
        .with_context(|| format!("Redis at {shown} did not answer PING"))?;
    Ok(())
}

/// One line: `<label> p50 … p99 … p99.9 … max …`, in nanoseconds.
pub(crate) fn write_percentiles_ns(
    label: &str,
    p: &Percentiles,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let ns = |d: std::time::Duration| d.as_nanos();
    writeln!(
        out,
        "{label:<13} p50 {} ns  p99 {} ns  p99.9 {} ns  max {} ns",
        ns(p.p50),
        ns(p.p99),
        ns(p.p999),
        ns(p.max)
    )
}

/// Reads the whole stream (every partition, each from the node holding it) back and checks
/// it; `check` judges each payload.
pub(crate) fn audit(
    config: &Config,
    url: &str,
    check: impl FnMut(&StreamId, &[u8]) -> bool,
) -> anyhow::Result<Audit> {
    let mut config = config.clone();
    url.clone_into(&mut config.redis.url);
    crate::commands::block_on(evstream::audit::audit_partitions(&config, 5000, check))?
        .map_err(crate::commands::partition_error)
}

/// What a run measured, for the summaries.
#[derive(Debug, Serialize)]
pub(crate) struct Delivery {
    pub(crate) published: u64,
    pub(crate) delivered: u64,
    pub(crate) dead_letters: u64,
    pub(crate) lost: u64,
    pub(crate) duplicates: u64,
    pub(crate) out_of_order: u64,
    pub(crate) corrupt: u64,
}

impl Delivery {
    /// Compares what was published with what the audit found. `delivered` counts the entries
    /// of this run's producer only.
    pub(crate) fn measure(
        published: u64,
        producer_id: &str,
        audit: &Audit,
        report: &ShutdownReport,
    ) -> Self {
        let found = audit.producers.get(producer_id);
        let delivered = found.map_or(0, |p| p.distinct);
        Self {
            published,
            delivered,
            dead_letters: report.dead_lettered,
            lost: published.saturating_sub(delivered + report.dead_lettered),
            duplicates: audit.duplicates + audit.duplicate_event_ids,
            out_of_order: audit.out_of_order,
            corrupt: audit.corrupt,
        }
    }

    /// For a run longer than the stream keeps: `appended` is Redis's count of this run's
    /// appends (`entries-added`), and the audit covers the entries still in the stream. Of
    /// the trimmed part only the net is proven (a loss and a duplicate there would cancel
    /// out); in the kept part, gaps and repeats are seen one by one. Each figure is the
    /// larger of the two views, so nothing is counted twice.
    pub(crate) fn counted(
        published: u64,
        appended: u64,
        producer_id: &str,
        audit: &Audit,
        report: &ShutdownReport,
    ) -> Self {
        let gaps = audit.producers.get(producer_id).map_or(0, |p| p.gaps());
        let handled = appended + report.dead_lettered;
        Self {
            published,
            delivered: appended,
            dead_letters: report.dead_lettered,
            lost: published.saturating_sub(handled).max(gaps),
            duplicates: handled
                .saturating_sub(published)
                .max(audit.duplicates.max(audit.duplicate_event_ids)),
            out_of_order: audit.out_of_order,
            corrupt: audit.corrupt,
        }
    }

    /// The human-readable lines of a summary.
    pub(crate) fn write_text(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        for (label, value) in [
            ("published", self.published),
            ("delivered", self.delivered),
            ("dead letters", self.dead_letters),
            ("lost", self.lost),
            ("duplicates", self.duplicates),
            ("out of order", self.out_of_order),
            ("corrupt", self.corrupt),
        ] {
            writeln!(out, "{label:<13} {value:>12}")?;
        }
        Ok(())
    }

    pub(crate) fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.out_of_order == 0 && self.corrupt == 0
    }
}

/// Waits until the shipper has handled `published` events; returns when. Gives up, with the
/// shipper's last error, when nothing moved for `stall`.
pub(crate) fn wait_until_shipped(
    shipper: &evstream::ship::ShipperHandle,
    published: u64,
    stall: Duration,
) -> anyhow::Result<Instant> {
    let mut last = (0, Instant::now());
    loop {
        let now = Instant::now();
        let health = shipper.health();
        let handled = health.shipped + health.dead_letters.values().sum::<u64>();
        if handled >= published {
            return Ok(now);
        }
        if handled > last.0 {
            last = (handled, now);
        } else if now.duration_since(last.1) >= stall {
            anyhow::bail!(
                "shipping stalled at {handled} of {published} events for {stall:?}; last error: {}",
                health.last_error.as_deref().unwrap_or("none")
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
