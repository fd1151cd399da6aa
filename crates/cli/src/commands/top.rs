//! `evstream top`: a live view of the stream in one screen, like `redis-cli --stat` or
//! `kafka-consumer-groups`, refreshed every `--interval`: events/s by type, each group's
//! consumers, pending entries and lag, dead letters, Redis memory and the alerts firing.
//!
//! Each reading observes every partition as `evstream status` does ([`observe::observe`],
//! then the alert rules), over a connection kept from one reading to the next. It does not
//! call [`evstream::status::StreamStatus::read`]: that connects anew and counts the dead
//! letters by reason (up to 100,000 entries read) every time, too much once a second; the
//! frame shows how many there are and how fast they come, `evstream status` the reasons. The
//! alert rules get this frame's dead letters per second, so `PoisonPillsHigh` is evaluated
//! too, and an unreachable partition fires `RedisUnreachable`. Rates come
//! from the difference between two readings: `entries-added` of the stream and of its dead
//! letters. The split by event type reads the entries appended in between, newest first
//! (`XREVRANGE` from this reading's last id down to the previous one's, at most [`SAMPLE_CAP`]
//! per partition) and, when the cap cuts it short, scales the sample's shares to the rate
//! from `entries-added`.
//!
//! On a terminal the frame is redrawn in place on the alternate screen, which is left on
//! Ctrl-C, SIGTERM or an error; Redis going away is shown in the frame and retried at every
//! reading. Elsewhere frames are printed one after the other; `--once` prints one.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use evstream::config::OpsConfig;
use evstream::envelope::FIELD_EVENT_TYPE;
use evstream::ops::alerts::{self, Alert, Inputs, Severity};
use evstream::ops::observe::{self, Observation};
use evstream::redis::{parse_entries, EntryId};
use evstream::Config;
use redis::aio::MultiplexedConnection;
use serde::Serialize;

use super::status::bytes;
use crate::args::TopArgs;

/// Entries read per partition and frame to split the rate by event type: enough for shares
/// to about a percent, and a short call on Redis's one thread (a few hundred KB a second per
/// viewer on a busy stream).
const SAMPLE_CAP: u64 = 1_000;

/// Deadline of each Redis call of a reading.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Columns a frame fits in.
const WIDTH: usize = 100;

/// Event types listed; the others are counted in one line.
const MAX_TYPES: usize = 15;

pub(crate) fn run(config: &Config, args: &TopArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !args.interval.is_zero(),
        "--interval must be longer than 0 (e.g. 500ms, 1s)"
    );
    let mut top = Top::new(config, args.interval);
    let stdout = std::io::stdout();
    super::block_on(async {
        if args.once {
            once(&mut top, args).await
        } else if stdout.is_terminal() {
            live(&mut top, Screen::enter(stdout.lock())?).await
        } else {
            live(&mut top, Lines(stdout.lock())).await
        }
    })?
}

/// `--once`: two readings `--interval` apart, one frame from them; a partition that cannot
/// be read is an error.
async fn once(top: &mut Top, args: &TopArgs) -> anyhow::Result<ExitCode> {
    top.read().await.into_result()?;
    tokio::time::sleep(args.interval).await;
    let readings = top.read().await.into_result()?;
    let frame = Frame::build(top, readings.into_iter().map(Ok).collect());
    let mut out = std::io::stdout().lock();
    if args.json {
        // Written whole, so that a closed pipe is an I/O error (a success, see main).
        let json = serde_json::to_string_pretty(&frame)?;
        writeln!(out, "{json}")?;
    } else {
        out.write_all(frame.text().as_bytes())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// A frame at every tick until SIGINT or SIGTERM; Redis errors are shown, not returned.
async fn live(top: &mut Top, mut output: impl Output) -> anyhow::Result<ExitCode> {
    let stop = super::termination();
    tokio::pin!(stop);
    let mut ticks = tokio::time::interval(top.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticks.tick() => {}
        }
        let readings = tokio::select! {
            _ = &mut stop => break,
            readings = top.read() => readings,
        };
        let frame = Frame::build(top, readings.0);
        output.show(&frame.text())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Where live frames go.
trait Output {
    /// Shows one frame (its lines, each ending in `\n`).
    fn show(&mut self, frame: &str) -> std::io::Result<()>;
}

/// Frames one after the other, as plain text (stdout is a pipe or a file).
struct Lines<W: Write>(W);

impl<W: Write> Output for Lines<W> {
    fn show(&mut self, frame: &str) -> std::io::Result<()> {
        writeln!(self.0, "{frame}")?;
        self.0.flush()
    }
}

/// The terminal's alternate screen, the cursor hidden, each frame drawn over the previous
/// one; the terminal is given back as it was when this is dropped (on Ctrl-C, SIGTERM, an
/// error or a panic).
struct Screen<W: Write>(W);

impl<W: Write> Screen<W> {
    fn enter(mut out: W) -> std::io::Result<Self> {
        // Alternate screen, cursor hidden.
        out.write_all(b"\x1b[?1049h\x1b[?25l")?;
        out.flush()?;
        Ok(Self(out))
    }
}

impl<W: Write> Output for Screen<W> {
    fn show(&mut self, frame: &str) -> std::io::Result<()> {
        // Cursor home, then each line over the previous frame's, the rest of the line and of
        // the screen cleared: no blank flash between frames.
        let mut screen = String::with_capacity(frame.len() + 256);
        screen.push_str("\x1b[H");
        for line in frame.lines() {
            screen.push_str(line);
            screen.push_str("\x1b[K\r\n");
        }
        screen.push_str("\x1b[J");
        self.0.write_all(screen.as_bytes())?;
        self.0.flush()
    }
}

impl<W: Write> Drop for Screen<W> {
    fn drop(&mut self) {
        // Cursor shown, main screen back. Nothing more can be done if the terminal is gone.
        let _ = self.0.write_all(b"\x1b[?25h\x1b[?1049l");
        let _ = self.0.flush();
    }
}

/// The stream's partitions, each with its connection and previous reading.
struct Top {
    /// The stream's name as messages give it (`events (3 partitions)`).
    stream: String,
    /// The Redis URL, password hidden.
    redis: String,
    /// Time between readings.
    interval: Duration,
    /// The alert thresholds.
    ops: OpsConfig,
    /// Whether the stream is partitioned (then frames name each group's partition).
    partitioned: bool,
    partitions: Vec<Partition>,
}

/// One partition (the whole stream when it is not partitioned).
struct Partition {
    /// Its configuration: `redis.stream` is its key.
    config: Config,
    /// Kept between readings; `None` until connected and after an error, so that the next
    /// reading connects again.
    connection: Option<MultiplexedConnection>,
    /// `host:port` of the server holding it, once connected.
    server: String,
    /// What the previous reading saw, for the rates; `None` before the first and after an
    /// error (rates start again from the next good reading).
    previous: Option<Mark>,
}

/// What one reading saw of a partition, for the next reading's rates.
struct Mark {
    at: Instant,
    entries_added: u64,
    dead_letters_added: u64,
    last_id: EntryId,
    lags: HashMap<String, u64>,
}

/// A partition as one reading saw it.
struct Reading {
    stream: String,
    server: String,
    observation: Observation,
    /// Since the previous reading; `None` on the first.
    window: Option<Window>,
}

/// What happened in a partition between two readings.
#[derive(Debug, Default)]
struct Window {
    seconds: f64,
    /// Entries appended (`entries-added` difference).
    appended: u64,
    /// Dead letters added.
    dead_letters: u64,
    /// Event types of the entries read of those appended, and how many were read.
    types: BTreeMap<String, u64>,
    sampled: u64,
    /// Each group's change of lag per second.
    lag_per_s: HashMap<String, f64>,
}

/// Every partition's reading, or why it failed, in partition order.
struct Readings(Vec<Result<Reading, (String, anyhow::Error)>>);

impl Readings {
    /// Every partition's reading, or the first failure.
    fn into_result(self) -> anyhow::Result<Vec<Reading>> {
        self.0
            .into_iter()
            .map(|r| r.map_err(|(_, error)| error))
            .collect()
    }
}

impl Top {
    fn new(config: &Config, interval: Duration) -> Self {
        Self {
            stream: super::stream_name(config),
            redis: evstream::redis::redact_url(&config.redis.url),
            interval,
            ops: config.ops.clone(),
            partitioned: config.redis.partitions.is_some(),
            partitions: config
                .partition_configs()
                .into_iter()
                .map(|config| Partition {
                    config,
                    connection: None,
                    server: String::new(),
                    previous: None,
                })
                .collect(),
        }
    }

    /// Reads every partition, one after the other.
    async fn read(&mut self) -> Readings {
        let mut readings = Vec::with_capacity(self.partitions.len());
        for partition in &mut self.partitions {
            readings.push(
                partition
                    .read()
                    .await
                    .map_err(|error| (partition.config.redis.stream.clone(), error)),
            );
        }
        Readings(readings)
    }
}

impl Partition {
    /// Observes the partition and, after a previous reading, what was appended since. An
    /// error drops the connection and the previous reading.
    async fn read(&mut self) -> anyhow::Result<Reading> {
        let result = self.read_connected().await;
        if result.is_err() {
            self.connection = None;
            self.previous = None;
        }
        result
    }

    async fn read_connected(&mut self) -> anyhow::Result<Reading> {
        let key = self.config.redis.stream.clone();
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => {
                let settings =
                    redis::AsyncConnectionConfig::new().set_response_timeout(Some(CALL_TIMEOUT));
                let (connection, client) = evstream::partitions::connect(&self.config, &settings)
                    .await
                    .map_err(super::partition_error)?;
                self.server = client.get_connection_info().addr().to_string();
                self.connection.insert(connection)
            }
        };
        let observation = observe::observe(connection, &key, None, CALL_TIMEOUT)
            .await
            .with_context(|| format!("cannot read the status of {key}"))?;
        let at = Instant::now();
        let stream = observation.stream.clone().unwrap_or_default();
        let last_id = stream.last_id.unwrap_or_default();
        let lags: HashMap<String, u64> = observation
            .groups
            .iter()
            .filter_map(|g| Some((g.name.clone(), g.lag?)))
            .collect();
        let window = match &self.previous {
            None => None,
            Some(previous) => {
                let seconds = at.duration_since(previous.at).as_secs_f64().max(1e-3);
                let (types, sampled) = if last_id > previous.last_id {
                    sample_types(connection, &key, previous.last_id, last_id).await?
                } else {
                    (BTreeMap::new(), 0)
                };
                Some(Window {
                    seconds,
                    appended: stream.entries_added.saturating_sub(previous.entries_added),
                    dead_letters: observation
                        .dlq
                        .entries_added
                        .saturating_sub(previous.dead_letters_added),
                    types,
                    sampled,
                    lag_per_s: lags
                        .iter()
                        .filter_map(|(name, &lag)| {
                            let before = *previous.lags.get(name)?;
                            Some((name.clone(), (lag as f64 - before as f64) / seconds))
                        })
                        .collect(),
                })
            }
        };
        self.previous = Some(Mark {
            at,
            entries_added: stream.entries_added,
            dead_letters_added: observation.dlq.entries_added,
            last_id,
            lags,
        });
        Ok(Reading {
            stream: key,
            server: self.server.clone(),
            observation,
            window,
        })
    }
}

/// The event types of the entries of `key` after `after` up to `to`, the newest
/// [`SAMPLE_CAP`] of them: how many of each type, and how many entries were read.
async fn sample_types(
    connection: &mut MultiplexedConnection,
    key: &str,
    after: EntryId,
    to: EntryId,
) -> anyhow::Result<(BTreeMap<String, u64>, u64)> {
    let reply: redis::Value = redis::cmd("XREVRANGE")
        .arg(key)
        .arg(to.to_string())
        .arg(format!("({after}"))
        .arg("COUNT")
        .arg(SAMPLE_CAP)
        .query_async(connection)
        .await
        .with_context(|| format!("cannot read the entries of {key} after {after}"))?;
    let entries = parse_entries(reply)
        .map_err(|detail| anyhow::anyhow!("unexpected XREVRANGE reply from {key}: {detail}"))?;
    let mut types = BTreeMap::new();
    for entry in &entries {
        let name = entry
            .get(FIELD_EVENT_TYPE)
            .map_or_else(|| "(no event_type)".into(), String::from_utf8_lossy);
        *types.entry(name.into_owned()).or_insert(0) += 1;
    }
    Ok((types, entries.len() as u64))
}

/// One frame's data: what `--once --json` prints and the text is drawn from.
#[derive(Debug, Serialize)]
struct Frame {
    /// The stream (`events`, or `events (3 partitions)`).
    stream: String,
    /// The Redis URL, password hidden.
    redis: String,
    /// When the frame was read (RFC 3339, UTC).
    at: String,
    /// Time between readings, in seconds.
    interval_s: f64,
    /// Events appended per second since the previous reading, all partitions; `None` on the
    /// first reading.
    events_per_s: Option<f64>,
    /// Entries appended since the previous reading.
    appended: u64,
    /// Of those, how many were read to split the rate by type (fewer than `appended` when
    /// the sample was capped: the shares are then the sample's).
    sampled: u64,
    /// Entries in the stream now.
    length: u64,
    /// Dead letters in the dead-letter stream(s) now.
    dead_letters: u64,
    /// Dead letters added per second since the previous reading.
    dead_letters_per_s: Option<f64>,
    /// Each Redis server's memory (one without Cluster).
    memory: Vec<ServerMemory>,
    /// Events per second by `event_type`, the busiest first.
    event_types: Vec<TypeRate>,
    /// Every consumer group of every partition.
    groups: Vec<GroupRow>,
    /// The alert rules firing (Redis-side rules, as `evstream status` evaluates them, with
    /// the dead-letter rate of this frame).
    alerts: Vec<AlertRow>,
    /// Partitions that could not be read, and why.
    unreachable: Vec<Unreachable>,
    /// Whether the stream is partitioned (the groups then name their partition).
    #[serde(skip)]
    partitioned: bool,
}

/// One server's memory.
#[derive(Debug, Serialize)]
struct ServerMemory {
    /// `host:port`.
    server: String,
    used_bytes: u64,
    /// `maxmemory`; 0 when unbounded.
    max_bytes: u64,
    /// `used_bytes / max_bytes`; `None` without a `maxmemory`.
    used_ratio: Option<f64>,
    maxmemory_policy: String,
}

/// One event type's rate.
#[derive(Debug, Serialize)]
struct TypeRate {
    event_type: String,
    per_s: f64,
    /// Fraction of all events, 0 to 1.
    share: f64,
}

/// One consumer group.
#[derive(Debug, Serialize)]
struct GroupRow {
    /// The stream key (the partition's, when partitioned).
    stream: String,
    name: String,
    consumers: usize,
    /// Delivered and not acknowledged.
    pending: u64,
    /// Not delivered yet; `None` when Redis cannot tell.
    lag: Option<u64>,
    /// Change of the lag per second since the previous reading (positive: falling behind).
    lag_per_s: Option<f64>,
}

/// One alert firing, once however many partitions it fires on.
#[derive(Debug, Serialize)]
struct AlertRow {
    severity: Severity,
    alert: Alert,
    /// What it is about (a group's name), or empty.
    subject: String,
    message: String,
    /// The stream keys it fires on.
    streams: Vec<String>,
}

/// A partition that could not be read.
#[derive(Debug, Serialize)]
struct Unreachable {
    stream: String,
    error: String,
}

impl Frame {
    /// The frame of one reading of every partition.
    fn build(top: &Top, readings: Vec<Result<Reading, (String, anyhow::Error)>>) -> Self {
        let mut frame = Frame {
            stream: top.stream.clone(),
            redis: top.redis.clone(),
            at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            interval_s: top.interval.as_secs_f64(),
            events_per_s: None,
            appended: 0,
            sampled: 0,
            length: 0,
            dead_letters: 0,
            dead_letters_per_s: None,
            memory: Vec::new(),
            event_types: Vec::new(),
            groups: Vec::new(),
            alerts: Vec::new(),
            unreachable: Vec::new(),
            partitioned: top.partitioned,
        };
        let mut type_rates: BTreeMap<String, f64> = BTreeMap::new();
        for reading in readings {
            match reading {
                Ok(reading) => frame.add(&top.ops, reading, &mut type_rates),
                Err((stream, error)) => {
                    let error = crate::causes(&error);
                    frame.add_alerts(
                        &stream,
                        alerts::evaluate(
                            &top.ops,
                            &Inputs {
                                redis_error: Some(&error),
                                ..Inputs::default()
                            },
                        ),
                    );
                    frame.unreachable.push(Unreachable { stream, error });
                }
            }
        }
        let total = frame.events_per_s.unwrap_or(0.0);
        frame.event_types = type_rates
            .into_iter()
            .map(|(event_type, per_s)| TypeRate {
                share: if total > 0.0 { per_s / total } else { 0.0 },
                event_type,
                per_s,
            })
            .collect();
        frame
            .event_types
            .sort_by(|a, b| b.per_s.total_cmp(&a.per_s));
        frame.alerts.sort_by_key(|a| std::cmp::Reverse(a.severity));
        frame
    }

    /// Adds a partition's reading: its totals, rates, groups, memory and alerts.
    fn add(&mut self, ops: &OpsConfig, reading: Reading, type_rates: &mut BTreeMap<String, f64>) {
        let o = &reading.observation;
        self.length += o.stream.as_ref().map_or(0, |s| s.length);
        self.dead_letters += o.dlq.length;
        if !self.memory.iter().any(|m| m.server == reading.server) {
            self.memory.push(ServerMemory {
                server: reading.server.clone(),
                used_bytes: o.redis.used_memory,
                max_bytes: o.redis.maxmemory,
                used_ratio: o.redis.used_ratio(),
                maxmemory_policy: o.redis.maxmemory_policy.clone(),
            });
        }
        let window = reading.window.as_ref();
        let poison_rate = window.map(|w| w.dead_letters as f64 / w.seconds);
        if let Some(w) = window {
            let rate = w.appended as f64 / w.seconds;
            *self.events_per_s.get_or_insert(0.0) += rate;
            *self.dead_letters_per_s.get_or_insert(0.0) += w.dead_letters as f64 / w.seconds;
            self.appended += w.appended;
            self.sampled += w.sampled;
            for (event_type, n) in &w.types {
                // The sample's share of this partition's rate: exact when every entry
                // appended was read, an estimate when the sample was capped.
                *type_rates.entry(event_type.clone()).or_insert(0.0) +=
                    *n as f64 / w.sampled as f64 * rate;
            }
        }
        for g in &o.groups {
            self.groups.push(GroupRow {
                stream: reading.stream.clone(),
                name: g.name.clone(),
                consumers: g.consumers.len(),
                pending: g.pending,
                lag: g.lag,
                lag_per_s: window.and_then(|w| w.lag_per_s.get(&g.name).copied()),
            });
        }
        let findings = alerts::evaluate(
            ops,
            &Inputs {
                observation: Some(o),
                poison_rate,
                ..Inputs::default()
            },
        );
        self.add_alerts(&reading.stream, findings);
    }

    /// Adds `stream`'s findings; one already listed for another partition names it too.
    fn add_alerts(&mut self, stream: &str, findings: Vec<alerts::Finding>) {
        for f in findings {
            let same = self.alerts.iter_mut().find(|a| {
                a.alert == f.alert
                    && a.severity == f.severity
                    && a.subject == f.subject
                    && a.message == f.message
            });
            match same {
                Some(row) => row.streams.push(stream.to_owned()),
                None => self.alerts.push(AlertRow {
                    severity: f.severity,
                    alert: f.alert,
                    subject: f.subject,
                    message: f.message,
                    streams: vec![stream.to_owned()],
                }),
            }
        }
    }

    /// The frame as text, every line at most [`WIDTH`] columns.
    fn text(&self) -> String {
        let mut lines = Vec::new();
        let head = format!(
            "evstream top   stream {}   redis {}",
            self.stream, self.redis
        );
        let when = format!("{}   every {}", self.at, seconds(self.interval_s));
        if head.chars().count() + 3 + when.chars().count() <= WIDTH {
            lines.push(format!("{head}   {when}"));
        } else {
            // A long stream name or URL: the time goes on a line of its own.
            lines.push(head);
            lines.push(format!("{:13}{when}", ""));
        }
        for u in &self.unreachable {
            let error = if self.partitioned {
                format!("Redis unreachable ({}): {}", u.stream, u.error)
            } else {
                format!("Redis unreachable: {}", u.error)
            };
            lines.extend(wrap(&error, "", "    "));
        }
        if self.memory.is_empty() {
            // Nothing was read: no figures rather than zeros.
            lines.push(String::new());
            self.alert_lines(&mut lines);
            return frame_text(lines);
        }
        let rate_or_wait = |rate: Option<f64>| rate.map_or_else(|| "…".to_owned(), per_s);
        lines.push(format!(
            "events       {}   length {}   dead letters {} ({})",
            rate_or_wait(self.events_per_s),
            count(self.length),
            count(self.dead_letters),
            rate_or_wait(self.dead_letters_per_s),
        ));
        lines.push(format!("memory       {}", self.memory_text()));
        lines.push(String::new());
        lines.push(format!(
            "{:<56} {:>14} {:>8}",
            "EVENT TYPE", "EVENTS/S", "SHARE"
        ));
        if self.events_per_s.is_none() {
            lines.push("(rates from the next reading on)".to_owned());
        } else if self.event_types.is_empty() {
            lines.push("(no events appended)".to_owned());
        }
        for t in self.event_types.iter().take(MAX_TYPES) {
            lines.push(format!(
                "{:<56} {:>14} {:>7.1}%",
                cut(&t.event_type, 56),
                per_s(t.per_s),
                t.share * 100.0
            ));
        }
        if self.event_types.len() > MAX_TYPES {
            lines.push(format!(
                "(and {} more types)",
                self.event_types.len() - MAX_TYPES
            ));
        }
        if self.sampled < self.appended && self.sampled > 0 {
            lines.push(format!(
                "(types sampled: {} of {} entries appended read, shares scaled to the total)",
                count(self.sampled),
                count(self.appended)
            ));
        }
        lines.push(String::new());
        let stream_column = |key: &str| {
            if self.partitioned {
                format!("{:<16} ", cut(key, 16))
            } else {
                String::new()
            }
        };
        let name_width = if self.partitioned { 31 } else { 48 };
        lines.push(format!(
            "{}{:<name_width$} {:>9} {:>12} {:>12} {:>12}",
            stream_column("STREAM"),
            "GROUP",
            "CONSUMERS",
            "PENDING",
            "LAG",
            "LAG TREND"
        ));
        if self.groups.is_empty() {
            lines.push("(no consumer groups)".to_owned());
        }
        for g in &self.groups {
            lines.push(format!(
                "{}{:<name_width$} {:>9} {:>12} {:>12} {:>12}",
                stream_column(&g.stream),
                cut(&g.name, name_width),
                g.consumers,
                count(g.pending),
                g.lag.map_or_else(|| "?".to_owned(), count),
                g.lag_per_s.map_or_else(String::new, trend),
            ));
        }
        lines.push(String::new());
        self.alert_lines(&mut lines);
        frame_text(lines)
    }

    /// `ALERTS none`, or one row per alert, its message wrapped under itself.
    fn alert_lines(&self, lines: &mut Vec<String>) {
        if self.alerts.is_empty() {
            lines.push("ALERTS       none".to_owned());
            return;
        }
        lines.push("ALERTS".to_owned());
        for a in &self.alerts {
            let level = match a.severity {
                Severity::Critical => "CRITICAL",
                Severity::Warning => "WARNING",
            };
            let mut message = a.message.clone();
            if self.partitioned {
                let _ = write!(message, " [{}]", a.streams.join(", "));
            }
            let first = format!("{level:<9} {:<24} ", a.alert.name());
            let indent = " ".repeat(first.len());
            lines.extend(wrap(&message, &first, &indent));
        }
    }

    /// The fullest server's memory, and how many servers there are.
    fn memory_text(&self) -> String {
        let fullest = self.memory.iter().max_by(|a, b| {
            let fill = |m: &ServerMemory| (m.used_ratio.unwrap_or(0.0), m.used_bytes);
            fill(a)
                .0
                .total_cmp(&fill(b).0)
                .then(fill(a).1.cmp(&fill(b).1))
        });
        let Some(m) = fullest else {
            return "unknown (Redis not read)".to_owned();
        };
        let mut text = match m.used_ratio {
            Some(ratio) => format!(
                "{} of {} ({:.1}%)",
                bytes(m.used_bytes),
                bytes(m.max_bytes),
                ratio * 100.0
            ),
            None => format!("{} (no maxmemory)", bytes(m.used_bytes)),
        };
        let _ = write!(text, ", {}", m.maxmemory_policy);
        if self.memory.len() > 1 {
            let _ = write!(
                text,
                "   fullest of {} servers: {}",
                self.memory.len(),
                m.server
            );
        }
        text
    }
}

/// The lines of a frame, each cut to [`WIDTH`] columns, as one text.
fn frame_text(lines: Vec<String>) -> String {
    let mut text = String::new();
    for line in lines {
        text.push_str(&cut(line.trim_end(), WIDTH));
        text.push('\n');
    }
    text
}

/// `text` in lines of at most [`WIDTH`] columns, broken at spaces, the first line after
/// `first`, the others after `indent`.
fn wrap(text: &str, first: &str, indent: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split(' ') {
        if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
            lines.push(std::mem::replace(&mut line, indent.to_owned()));
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    lines.push(line);
    lines
}

/// `text` cut to `width` characters, `…` marking the cut.
fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `1,234,567`.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// `0.5/s`, `12.3/s`, `1,234/s`.
fn per_s(rate: f64) -> String {
    if rate < 100.0 {
        format!("{rate:.1}/s")
    } else {
        format!("{}/s", count(rate.round() as u64))
    }
}

/// A lag's change: `+120/s` (falling behind), `-30/s` (catching up), `steady`.
fn trend(change: f64) -> String {
    if change.abs() < 0.05 {
        "steady".to_owned()
    } else if change > 0.0 {
        format!("+{}", per_s(change))
    } else {
        format!("-{}", per_s(-change))
    }
}

/// `1s`, `500ms`, `2.5s`.
fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{}ms", (s * 1000.0).round())
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(partitions: Option<u16>) -> Top {
        let mut config = Config::default();
        config.redis.partitions = partitions;
        Top::new(&config, Duration::from_secs(1))
    }

    fn reading(stream: &str, window: Option<Window>) -> Reading {
        let observation = Observation {
            stream: Some(observe::StreamInfo {
                length: 40_000,
                ..Default::default()
            }),
            ..Default::default()
        };
        Reading {
            stream: stream.to_owned(),
            server: "127.0.0.1:6379".to_owned(),
            observation,
            window,
        }
    }

    #[test]
    fn a_capped_sample_is_scaled_to_the_rate_from_entries_added() {
        let window = Window {
            seconds: 2.0,
            appended: 20_000,
            types: BTreeMap::from([("OrderCreated".into(), 7_500), ("Fill".into(), 2_500)]),
            sampled: 10_000,
            ..Window::default()
        };
        let frame = Frame::build(&top(None), vec![Ok(reading("events", Some(window)))]);
        assert_eq!(frame.events_per_s, Some(10_000.0));
        let rates: Vec<(&str, f64, f64)> = frame
            .event_types
            .iter()
            .map(|t| (t.event_type.as_str(), t.per_s, t.share))
            .collect();
        assert_eq!(
            rates,
            [("OrderCreated", 7_500.0, 0.75), ("Fill", 2_500.0, 0.25)]
        );
        let text = frame.text();
        assert!(
            text.contains("(types sampled: 10,000 of 20,000 entries appended read"),
            "{text}"
        );
        assert!(
            text.contains("events       10,000/s   length 40,000"),
            "{text}"
        );
    }

    #[test]
    fn partitions_add_up_and_alerts_fire_once_naming_their_partitions() {
        let window = |appended, n| Window {
            seconds: 1.0,
            appended,
            types: BTreeMap::from([("A".into(), n)]),
            sampled: n,
            ..Window::default()
        };
        let frame = Frame::build(
            &top(Some(2)),
            vec![
                Ok(reading("events:{0}", Some(window(30, 30)))),
                Ok(reading("events:{1}", Some(window(10, 10)))),
            ],
        );
        assert_eq!(frame.events_per_s, Some(40.0));
        assert_eq!(frame.length, 80_000);
        assert_eq!(frame.memory.len(), 1, "one server, counted once");
        // Observation::default() has no maxmemory: one finding for both partitions.
        let unset: Vec<_> = frame
            .alerts
            .iter()
            .filter(|a| a.alert == Alert::RedisMaxmemoryUnset)
            .collect();
        assert_eq!(unset.len(), 1);
        assert_eq!(unset[0].streams, ["events:{0}", "events:{1}"]);
    }

    #[test]
    fn every_line_fits_and_unreachable_redis_shows_no_figures() {
        let mut long = reading("events", None);
        long.observation.groups.push(observe::GroupInfo {
            name: "a-group-with-a-name-far-too-long-for-its-column-of-the-table".repeat(2),
            pending: 12_345_678_901,
            last_delivered: EntryId::default(),
            lag: Some(98_765_432_109),
            oldest_pending: None,
            unfinished: None,
            consumers: Vec::new(),
        });
        let failed = (
            "events:{1}".to_owned(),
            anyhow::anyhow!("Connection refused (os error 111)")
                .context("cannot connect to Redis at redis://10.0.0.5:6379; is it running?"),
        );
        for frame in [
            Frame::build(&top(None), vec![Ok(long)]),
            Frame::build(&top(Some(2)), vec![Err(failed)]),
        ] {
            let text = frame.text();
            for line in text.lines() {
                assert!(line.chars().count() <= WIDTH, "{line:?}");
            }
            if frame.memory.is_empty() {
                assert!(text.contains("Redis unreachable (events:{1}): cannot connect"));
                assert!(text.contains("os error 111"), "wrapped, not cut: {text}");
                assert!(text.contains("CRITICAL  RedisUnreachable"), "{text}");
                assert!(!text.contains("length"), "no zeros for unknowns: {text}");
            } else {
                assert!(text.contains("12,345,678,901"), "{text}");
                assert!(text.contains("(rates from the next reading on)"), "{text}");
            }
        }
    }

    #[test]
    fn figures_read_well() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(per_s(0.5), "0.5/s");
        assert_eq!(per_s(1234.4), "1,234/s");
        assert_eq!(trend(120.0), "+120/s");
        assert_eq!(trend(-3.0), "-3.0/s");
        assert_eq!(trend(0.0), "steady");
        assert_eq!(seconds(0.5), "500ms");
        assert_eq!(seconds(2.0), "2s");
        assert_eq!(cut("abcdef", 4), "abc…");
    }
}
