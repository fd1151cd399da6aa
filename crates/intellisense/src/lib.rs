//! IntelliSense: the first analysis service of evstream.
//!
//! It reads the trading engine's order flow through a consumer group and computes, per
//! order (correlation id):
//!
//! - **creation latency**: from the last `MarketDataUpdate` (or `Signal`) of the correlation
//!   to its `OrderCreated`; an alert above `creation_alert` (default 10 ms);
//! - **fill latency**: from `OrderCreated` to the first `OrderFilled`; an alert above
//!   `fill_alert` (default 100 ms). A fill that arrives before its order is kept and matched
//!   when the order comes;
//! - **risk score**: `quantity × price / limit(symbol)`, the order's notional as a fraction of
//!   the symbol's notional limit (default 1,000,000 for every symbol); an alert above 1.0;
//! - **pipeline latency**: from the event's `timestamp_ns` to the moment it is processed.
//!
//! # What it reads
//!
//! `OrderCreated` v1 and v2, `OrderFilled`, `MarketDataUpdate` and `Signal` v1
//! ([`Handler::reads`]); other types are acknowledged unhandled. With a schema registry an
//! older event is migrated up to those versions, and a newer `OrderCreated` (v3, …) of a type
//! registered as `FORWARD` or `FULL` is read as v2, so pushing a new version does not stop
//! it; one it cannot read is dead-lettered (`unreadable_version`) with the fix.
//!
//! # Several consumers, one result
//!
//! The events of one order may be processed by different consumers of the group. Each
//! consumer first pairs what it holds itself, in its bounded correlation [`Tracker`]: a pair
//! whose two halves it handled is completed locally by the later half. A half whose other
//! half it did not hold by the end of its batch is written to a per-correlation pairing hash
//! in Redis, inside the commit that acknowledges it (see [`evstream::consume`]), and the same
//! commit reads the other half back (`HMGET`). Commits are atomic and serialized, so the
//! commit that completes a pair is the only one that sees both halves: each latency is
//! computed once, by whichever consumer completed the pair.
//!
//! # Results in Redis
//!
//! | key | type | content |
//! |---|---|---|
//! | `<stream>:analysis` | stream, `MAXLEN ~ analysis_max_len` | one entry per batch; fields `creation_latency:<SYMBOL>` and `fill_latency:<SYMBOL>`, each a comma-separated list of latencies in ns |
//! | `<stream>:alerts` | stream, `MAXLEN ~ alerts_max_len` | one entry per alert: `kind` (`creation_latency`/`fill_latency`/`risk`), `level`, `correlation_id`, `symbol`, `value`, `threshold`, `message` |
//! | `<stream>:consume:<group>` | hash | counters: `processed`, `duplicates_skipped`, `dead_lettered`, …, and `orders`, `fills`, `signals`, `latencies`, `alerts` |
//! | `<stream>:pairing:<correlation_id>` | hash, TTL `pairing_ttl_s` (24 h) | internal: a half waiting for its other half (`signal_ns`, `created_ns`, `filled_ns`, `symbol`) |
//!
//! `orders`, `fills` and `signals` are counted with each entry's acknowledgement (exactly
//! once); latencies and latency alerts are written right after the commit that computed them
//! (at most once: a crash in between loses that one record, never duplicates it).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod percentiles;
mod report;
mod tracker;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evstream::consume::{Batch, Effects, Envelope, Handler, HandlerError, Outcome, Reads};
use evstream::publish::wall_clock_ns;
use hdrhistogram::Histogram;
use redis::Value;
use serde::{Deserialize, Serialize};

pub use percentiles::Percentiles;
pub use report::{
    for_each_latency, read_partitions, read_report, LatencyKind, Report, ReportBuilder,
    SymbolReport,
};
pub use tracker::{OrderState, Tracker};

/// Settings of the analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntelliSenseConfig {
    /// Creation latency above which an alert is raised, in ms. Default 10.
    pub creation_alert_ms: f64,
    /// Fill latency above which an alert is raised, in ms. Default 100.
    pub fill_alert_ms: f64,
    /// Notional limit per symbol for the risk score. Default: none (every symbol uses
    /// `default_notional_limit`).
    pub notional_limits: BTreeMap<String, f64>,
    /// Notional limit of symbols not in `notional_limits`. Default 1,000,000.
    pub default_notional_limit: f64,
    /// How long a half of a pair waits in Redis for the other half, in seconds. Default
    /// 86,400 (24 h).
    pub pairing_ttl_s: u64,
    /// Correlations the in-process tracker holds at most. Default 100,000.
    pub tracker_capacity: usize,
    /// How long the tracker keeps an unfinished order, in seconds. Default 600.
    pub tracker_ttl_s: u64,
    /// `MAXLEN ~` of `<stream>:analysis` (one entry per batch). Default 100,000.
    pub analysis_max_len: u64,
    /// `MAXLEN ~` of `<stream>:alerts`. Default 100,000.
    pub alerts_max_len: u64,
    /// Symbols with series of their own in the metrics; later ones share `symbol="other"`,
    /// so a venue with thousands of instruments cannot flood Prometheus. Default 100.
    pub metrics_max_symbols: usize,
}

impl Default for IntelliSenseConfig {
    fn default() -> Self {
        Self {
            creation_alert_ms: 10.0,
            fill_alert_ms: 100.0,
            notional_limits: BTreeMap::new(),
            default_notional_limit: 1_000_000.0,
            pairing_ttl_s: 86_400,
            tracker_capacity: 100_000,
            tracker_ttl_s: 600,
            analysis_max_len: 100_000,
            alerts_max_len: 100_000,
            metrics_max_symbols: 100,
        }
    }
}

/// The Redis keys IntelliSense writes for one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalysisKeys {
    /// Prefix of the pairing hashes, `<stream>:pairing:`.
    pub pairing_prefix: String,
    /// `<stream>:analysis`.
    pub analysis: String,
    /// `<stream>:alerts`.
    pub alerts: String,
}

impl AnalysisKeys {
    /// The keys for `stream`.
    pub fn new(stream: &str) -> Self {
        Self {
            pairing_prefix: evstream::keys::pairing_prefix(stream),
            analysis: evstream::keys::analysis(stream),
            alerts: evstream::keys::alerts(stream),
        }
    }
}

/// Latency histograms of one symbol, in nanoseconds.
#[derive(Debug, Clone)]
pub struct SymbolLatencies {
    /// Signal → `OrderCreated`.
    pub creation: Histogram<u64>,
    /// `OrderCreated` → first `OrderFilled`.
    pub fill: Histogram<u64>,
}

/// What this process computed, shared with whoever started it (for live progress and the
/// final summary).
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Latencies per symbol (only pairs completed by this consumer).
    pub symbols: BTreeMap<String, SymbolLatencies>,
    /// Event time → processed, every event this consumer handled.
    pub pipeline: Histogram<u64>,
    /// Alerts raised by this consumer.
    pub alerts: u64,
    /// Orders the tracker dropped unfinished (TTL or capacity).
    pub tracker_evicted: u64,
    /// Orders the tracker holds now.
    pub tracker_open: usize,
    /// Orders (or fills) dropped by the tracker whose other half Redis does not hold either:
    /// never filled, or filled without an order, within `tracker_ttl_s` (or pushed out by
    /// `tracker_capacity`). Those another consumer completed are not counted.
    pub unmatched: u64,
    /// Symbols labelled by name in the metrics (at most `metrics_max_symbols`).
    pub labelled_symbols: std::collections::BTreeSet<String>,
}

fn histogram() -> Histogram<u64> {
    // 1 ns to 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("static bounds are valid")
}

impl Default for Analysis {
    fn default() -> Self {
        Self {
            symbols: BTreeMap::new(),
            pipeline: histogram(),
            alerts: 0,
            tracker_evicted: 0,
            tracker_open: 0,
            unmatched: 0,
            labelled_symbols: std::collections::BTreeSet::new(),
        }
    }
}

/// The two pairs IntelliSense measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pair {
    /// Signal → `OrderCreated`.
    Creation,
    /// `OrderCreated` → first `OrderFilled`.
    Fill,
}

impl Pair {
    fn name(self) -> &'static str {
        match self {
            Pair::Creation => "creation_latency",
            Pair::Fill => "fill_latency",
        }
    }

    /// The `kind` label of `evstream_intellisense_latency_seconds`.
    fn label(self) -> &'static str {
        match self {
            Pair::Creation => "creation",
            Pair::Fill => "fill",
        }
    }
}

/// The kinds of event IntelliSense reads; the discriminant indexes per-kind counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Signal = 0,
    Created = 1,
    Filled = 2,
}

/// A latency computed for an event, confirmed when its commit applies it.
#[derive(Debug, Clone)]
struct Latency {
    pair: Pair,
    symbol: String,
    from_ns: u64,
    to_ns: u64,
}

/// An event of the current batch, until its commit.
#[derive(Debug)]
struct Handled {
    event_id: uuid::Uuid,
    correlation_id: String,
    kind: Kind,
    timestamp_ns: u64,
    symbol: Option<String>,
    /// Pairs completed by this event with a half this consumer already held.
    local: Vec<Latency>,
    /// Pairs whose other half this consumer did not hold when the event was handled.
    open: Vec<Pair>,
    /// Pairs sent to Redis for pairing (their other half was still missing at batch end).
    remote: Vec<Pair>,
    /// An order's risk score, for the metrics once its commit applies it.
    risk: Option<f64>,
    /// A fill paired here with an order whose half is in Redis: its latency counts only if
    /// the commit's `HSETNX` finds it is the order's first fill.
    confirm_first_fill: bool,
    /// Orders the tracker evicted unfinished, looked up in Redis by this event's commit
    /// (one `HMGET` each, its only replies): unmatched unless another consumer paired them.
    unmatched_checks: Vec<String>,
}

impl Handled {
    /// An event with nothing to pair (no correlation id, or its order complete already),
    /// kept for its counts and its risk score.
    fn unpaired(event: &Envelope, kind: Kind, symbol: Option<String>, risk: Option<f64>) -> Self {
        Self {
            event_id: event.event_id,
            correlation_id: event.correlation_id.clone(),
            kind,
            timestamp_ns: event.timestamp_ns,
            symbol,
            local: Vec::new(),
            open: Vec::new(),
            remote: Vec::new(),
            risk,
            confirm_first_fill: false,
            unmatched_checks: Vec::new(),
        }
    }
}

/// A result computed from a commit, written by [`Handler::flush`].
#[derive(Debug)]
struct Derived {
    latency: Latency,
    latency_ns: u64,
    correlation_id: String,
    alert_above_ns: Option<u64>,
}

/// One entry of `<stream>:alerts`.
struct Alert<'a, V, T> {
    kind: &'a str,
    level: &'a str,
    correlation_id: &'a str,
    symbol: &'a str,
    value: V,
    threshold: T,
    message: String,
}

#[derive(Deserialize)]
struct SignalData<'a> {
    #[serde(borrow, default)]
    symbol: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreatedData<'a> {
    /// Required, not used.
    #[serde(rename = "orderId")]
    _order_id: serde::de::IgnoredAny,
    #[serde(borrow)]
    symbol: std::borrow::Cow<'a, str>,
    /// Absent in `OrderCreated` v1.
    #[serde(default)]
    quantity: f64,
    #[serde(default)]
    price: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilledData {
    quantity: f64,
}

/// The IntelliSense [`Handler`].
#[derive(Debug)]
pub struct IntelliSense {
    config: IntelliSenseConfig,
    keys: AnalysisKeys,
    tracker: Tracker,
    /// Events of the batch being handled, in order.
    batch: Vec<Handled>,
    /// Batches handled whose commit has not been reported yet, oldest first (one is in
    /// flight while the next is handled).
    committing: VecDeque<Vec<Handled>>,
    derived: Vec<Derived>,
    shared: Arc<Mutex<Analysis>>,
    /// The tracker's size and evictions last added to `shared`.
    reported: (usize, u64),
    pairing_ttl_ms: u64,
    /// Whether the alert series were created (at the first commit).
    alert_series: bool,
    /// Orders evicted unfinished, to look up in Redis with the next commit.
    unmatched_checks: Vec<String>,
    /// The metric handles of each symbol seen (and `other`).
    symbol_metrics: HashMap<String, SymbolMetrics>,
}

/// The series of one `symbol` label.
#[derive(Debug)]
struct SymbolMetrics {
    creation: metrics::Histogram,
    fill: metrics::Histogram,
    risk: metrics::Histogram,
}

impl SymbolMetrics {
    /// Registers them with the process's recorder (installed before consuming starts).
    fn register(symbol: String) -> Self {
        Self {
            creation: metrics::histogram!(
                "evstream_intellisense_latency_seconds",
                "kind" => Pair::Creation.label(),
                "symbol" => symbol.clone()
            ),
            fill: metrics::histogram!(
                "evstream_intellisense_latency_seconds",
                "kind" => Pair::Fill.label(),
                "symbol" => symbol.clone()
            ),
            risk: metrics::histogram!("evstream_intellisense_risk_score", "symbol" => symbol),
        }
    }
}

impl IntelliSense {
    /// The handler for `stream`.
    pub fn new(stream: &str, config: IntelliSenseConfig) -> Self {
        Self {
            keys: AnalysisKeys::new(stream),
            tracker: Tracker::new(
                config.tracker_capacity,
                Duration::from_secs(config.tracker_ttl_s),
            ),
            batch: Vec::new(),
            committing: VecDeque::new(),
            derived: Vec::new(),
            shared: Arc::default(),
            reported: (0, 0),
            pairing_ttl_ms: config.pairing_ttl_s.saturating_mul(1000),
            alert_series: false,
            unmatched_checks: Vec::new(),
            symbol_metrics: HashMap::new(),
            config,
        }
    }

    /// Creates every alert series at 0, so that Prometheus's `increase()` sees the first
    /// alert as an increase rather than as a series appearing. Done at the first commit, not
    /// in [`IntelliSense::new`]: the process installs its metrics recorder before it consumes,
    /// not necessarily before it builds its handlers.
    fn create_alert_series(&mut self) {
        if std::mem::replace(&mut self.alert_series, true) {
            return;
        }
        for (kind, level) in [
            ("creation_latency", "WARNING"),
            ("fill_latency", "WARNING"),
            ("risk", "WARNING"),
            ("risk", "CRITICAL"),
        ] {
            metrics::counter!("evstream_intellisense_alerts_total", "kind" => kind, "level" => level)
                .increment(0);
        }
    }

    /// Adds into `shared` instead of an analysis of its own: the handlers of one process
    /// over a partitioned stream (one per partition) report as one.
    pub fn with_analysis(mut self, shared: Arc<Mutex<Analysis>>) -> Self {
        self.shared = shared;
        self
    }

    /// The live analysis of this process.
    pub fn analysis(&self) -> Arc<Mutex<Analysis>> {
        Arc::clone(&self.shared)
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Analysis> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notional_limit(&self, symbol: &str) -> f64 {
        self.config
            .notional_limits
            .get(symbol)
            .copied()
            .unwrap_or(self.config.default_notional_limit)
    }

    /// The metric handles of a symbol's series, registered on first use: a lookup in the
    /// registry (building the labels, hashing them) on every record cost IntelliSense 8 % of
    /// its throughput. The first `metrics_max_symbols` symbols the process sees (over every
    /// handler sharing its analysis) have series of their own, later ones share `other`.
    fn symbol_metrics(&mut self, symbol: &str) -> &SymbolMetrics {
        if !self.symbol_metrics.contains_key(symbol) {
            let label = {
                let mut shared = self.shared();
                if shared.labelled_symbols.contains(symbol)
                    || shared.labelled_symbols.len() < self.config.metrics_max_symbols
                {
                    shared.labelled_symbols.insert(symbol.to_owned());
                    symbol.to_owned()
                } else {
                    "other".to_owned()
                }
            };
            // Symbols beyond the cap share one entry: the map stays bounded whatever the
            // events carry.
            let key = if label == "other" { "other" } else { symbol };
            if !self.symbol_metrics.contains_key(key) {
                let handles = SymbolMetrics::register(label);
                self.symbol_metrics.insert(key.to_owned(), handles);
            }
            return &self.symbol_metrics[key];
        }
        &self.symbol_metrics[symbol]
    }

    fn ms_to_ns(ms: f64) -> u64 {
        (ms * 1e6).max(0.0) as u64
    }

    /// Records a pair completed by an applied event (once per pair: see the crate docs).
    fn completed(&mut self, latency: Latency, correlation_id: &str) {
        let Some(latency_ns) = latency.to_ns.checked_sub(latency.from_ns) else {
            return; // the "earlier" event is later: no latency to speak of
        };
        let threshold = Self::ms_to_ns(match latency.pair {
            Pair::Fill => self.config.fill_alert_ms,
            Pair::Creation => self.config.creation_alert_ms,
        });
        let alert = latency_ns > threshold;
        let series = self.symbol_metrics(&latency.symbol);
        match latency.pair {
            Pair::Fill => &series.fill,
            Pair::Creation => &series.creation,
        }
        .record(latency_ns as f64 * 1e-9);
        if alert {
            metrics::counter!(
                "evstream_intellisense_alerts_total",
                "kind" => latency.pair.name(),
                "level" => "WARNING"
            )
            .increment(1);
        }
        {
            let mut shared = self.shared();
            if !shared.symbols.contains_key(&latency.symbol) {
                let histograms = SymbolLatencies {
                    creation: histogram(),
                    fill: histogram(),
                };
                shared.symbols.insert(latency.symbol.clone(), histograms);
            }
            let latencies = shared
                .symbols
                .get_mut(&latency.symbol)
                .expect("inserted above");
            match latency.pair {
                Pair::Fill => &mut latencies.fill,
                Pair::Creation => &mut latencies.creation,
            }
            .saturating_record(latency_ns.max(1));
            shared.alerts += u64::from(alert);
        }
        if alert {
            tracing::warn!(
                kind = latency.pair.name(),
                correlation_id,
                symbol = %latency.symbol,
                latency_ms = latency_ns as f64 / 1e6,
                threshold_ms = threshold as f64 / 1e6,
                "latency alert"
            );
        }
        self.derived.push(Derived {
            latency,
            latency_ns,
            correlation_id: correlation_id.to_owned(),
            alert_above_ns: alert.then_some(threshold),
        });
    }

    /// The effects that record a fill paired here as the order's first fill in Redis, where
    /// another consumer holding a fill of the same order looks (`HSETNX`: the reply says
    /// whether this one was first).
    fn first_fill_effects(&self, event: &Handled, effects: &mut Effects) {
        let key = format!("{}{}", self.keys.pairing_prefix, event.correlation_id);
        effects
            .apply_with_reply(
                redis::cmd("HSETNX")
                    .arg(&key)
                    .arg("filled_ns")
                    .arg(event.timestamp_ns),
            )
            .apply(redis::cmd("PEXPIRE").arg(&key).arg(self.pairing_ttl_ms));
    }

    /// The effects that send one event's half of its open pairs to Redis, where the other
    /// half (held by another consumer, or by this one after its tracker forgot) finds it.
    fn pairing_effects(&self, event: &Handled, effects: &mut Effects) {
        let key = format!("{}{}", self.keys.pairing_prefix, event.correlation_id);
        let mut hset = redis::cmd("HSET");
        hset.arg(&key);
        if let Some(symbol) = &event.symbol {
            hset.arg("symbol").arg(symbol);
        }
        let mut hmget = redis::cmd("HMGET");
        hmget.arg(&key);
        match event.kind {
            Kind::Signal => {
                hset.arg("signal_ns").arg(event.timestamp_ns);
                hmget.arg("created_ns").arg("symbol");
            }
            Kind::Created => {
                hset.arg("created_ns").arg(event.timestamp_ns);
                hmget.arg("signal_ns").arg("filled_ns");
            }
            Kind::Filled => {
                hmget.arg("created_ns").arg("symbol");
            }
        }
        if event.kind == Kind::Filled {
            // Only the first fill counts.
            effects.apply_with_reply(
                redis::cmd("HSETNX")
                    .arg(&key)
                    .arg("filled_ns")
                    .arg(event.timestamp_ns),
            );
        } else {
            effects.apply(&mut hset);
        }
        effects
            .apply(redis::cmd("PEXPIRE").arg(&key).arg(self.pairing_ttl_ms))
            .apply_with_reply(&mut hmget);
    }
}

/// The level of a risk alert: `CRITICAL` above twice the limit.
fn risk_level(risk: f64) -> &'static str {
    if risk > 2.0 {
        "CRITICAL"
    } else {
        "WARNING"
    }
}

/// The `n`-th value of an `HMGET` reply as a number.
fn reply_u64(reply: Option<&Value>, n: usize) -> Option<u64> {
    reply_text(reply, n).and_then(|t| t.parse().ok())
}

fn reply_text(reply: Option<&Value>, n: usize) -> Option<String> {
    match reply? {
        Value::Array(values) => match values.get(n)? {
            Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
            Value::SimpleString(text) => Some(text.clone()),
            _ => None,
        },
        _ => None,
    }
}

impl Handler for IntelliSense {
    /// The versions this code reads (its reader schemas): older events are migrated up to
    /// them, newer forward-compatible ones are read as them, so a schema push never stops
    /// it. Other types are acknowledged unhandled, registered or not.
    fn reads(&self, event_type: &str) -> Reads {
        match event_type {
            "OrderCreated" => Reads::Versions(1..=2),
            "MarketDataUpdate" | "Signal" | "OrderFilled" => Reads::Versions(1..=1),
            _ => Reads::Nothing,
        }
    }

    fn handle(&mut self, event: &Envelope, effects: &mut Effects) -> Result<(), HandlerError> {
        let now = Instant::now();
        let ts = event.timestamp_ns;
        let kind = match event.event_type.as_str() {
            "OrderCreated" => Kind::Created,
            "OrderFilled" => Kind::Filled,
            _ => Kind::Signal,
        };
        let mut symbol = None;
        let mut risk_score = None;
        match kind {
            Kind::Created => {
                let order: CreatedData<'_> = serde_json::from_str(&event.data)?;
                let notional = order.quantity * order.price;
                let risk = notional / self.notional_limit(&order.symbol);
                if risk > 1.0 {
                    self.risk_alert(effects, event, &order.symbol, notional, risk);
                }
                risk_score = Some(risk);
                effects.count("orders", 1);
                symbol = Some(order.symbol.into_owned());
            }
            Kind::Filled => {
                let fill: FilledData = serde_json::from_str(&event.data)?;
                if fill.quantity.is_nan() || fill.quantity <= 0.0 {
                    return Err(format!("fill quantity {} is not positive", fill.quantity).into());
                }
                effects.count("fills", 1);
            }
            Kind::Signal => {
                let signal: SignalData<'_> = serde_json::from_str(&event.data)?;
                effects.count("signals", 1);
                symbol = signal.symbol.map(std::borrow::Cow::into_owned);
            }
        }
        self.shared()
            .pipeline
            .saturating_record(wall_clock_ns().saturating_sub(ts).max(1));
        if event.correlation_id.is_empty() {
            // Not part of an order's life: nothing to pair; counted once committed.
            self.batch
                .push(Handled::unpaired(event, kind, symbol, risk_score));
            return Ok(());
        }
        if self.tracker.was_completed(&event.correlation_id) {
            // A later partial fill (or any event) of an order already complete: nothing to
            // pair, and no new state that would wait for an order that will not come.
            self.batch
                .push(Handled::unpaired(event, kind, symbol, risk_score));
            return Ok(());
        }

        // Pair with what this consumer already holds; what is missing stays open.
        let state = self.tracker.entry(&event.correlation_id, now);
        if let Some(symbol) = &symbol {
            state.symbol.get_or_insert_with(|| symbol.clone());
        }
        let symbol_of =
            |state: &OrderState| state.symbol.clone().unwrap_or_else(|| "unknown".to_owned());
        let mut local = Vec::new();
        let mut open = Vec::new();
        let mut confirm_first_fill = false;
        match kind {
            Kind::Signal => {
                if state.created_ns.is_none() {
                    open.push(Pair::Creation);
                }
                state.signal_ns = Some(ts);
            }
            Kind::Created => {
                match state.signal_ns {
                    Some(signal) => local.push(Latency {
                        pair: Pair::Creation,
                        symbol: symbol_of(state),
                        from_ns: signal,
                        to_ns: ts,
                    }),
                    None => open.push(Pair::Creation),
                }
                match state.filled_ns {
                    Some(filled) => local.push(Latency {
                        pair: Pair::Fill,
                        symbol: symbol_of(state),
                        from_ns: ts,
                        to_ns: filled,
                    }),
                    None => open.push(Pair::Fill),
                }
                state.created_ns = Some(ts);
            }
            Kind::Filled => {
                if state.filled_ns.is_none() {
                    match state.created_ns {
                        Some(created) => {
                            local.push(Latency {
                                pair: Pair::Fill,
                                symbol: symbol_of(state),
                                from_ns: created,
                                to_ns: ts,
                            });
                            confirm_first_fill = state.created_in_redis;
                        }
                        None => open.push(Pair::Fill),
                    }
                    state.filled_ns = Some(ts);
                }
            }
        }
        let symbol = symbol.or_else(|| state.symbol.clone());
        self.batch.push(Handled {
            event_id: event.event_id,
            correlation_id: event.correlation_id.clone(),
            kind,
            timestamp_ns: ts,
            symbol,
            local,
            open,
            remote: Vec::new(),
            risk: risk_score,
            confirm_first_fill,
            unmatched_checks: Vec::new(),
        });
        Ok(())
    }

    fn end_batch(&mut self, batch: &mut Batch<'_>) {
        // An open pair whose other half came later in this batch was completed by that
        // half (locally); the others go to Redis.
        let now = Instant::now();
        let mut handled = std::mem::take(&mut self.batch);
        for event in &mut handled {
            // A fill paired here with an order of this very batch whose half goes to Redis
            // (for its creation pair, below): marked by the order's turn of this loop.
            if event.kind == Kind::Filled
                && !event.confirm_first_fill
                && event.local.iter().any(|l| l.pair == Pair::Fill)
            {
                event.confirm_first_fill = self
                    .tracker
                    .get(&event.correlation_id)
                    .is_some_and(|state| state.created_in_redis);
            }
            if event.confirm_first_fill {
                if let Some(effects) = batch.effects(&event.event_id) {
                    self.first_fill_effects(event, effects);
                }
            }
            if event.open.is_empty() {
                continue;
            }
            let state = self.tracker.entry(&event.correlation_id, now);
            let (signal_ns, created_ns, filled_ns) =
                (state.signal_ns, state.created_ns, state.filled_ns);
            event.remote = event
                .open
                .iter()
                .copied()
                .filter(|pair| match (pair, event.kind) {
                    (Pair::Creation, Kind::Signal) => created_ns.is_none(),
                    (Pair::Creation, _) => signal_ns.is_none(),
                    (Pair::Fill, Kind::Created) => filled_ns.is_none(),
                    (Pair::Fill, _) => created_ns.is_none(),
                })
                .collect();
            if !event.remote.is_empty() {
                if event.kind == Kind::Created {
                    // Marked now, not at the commit: the next batch is handled while this
                    // one commits. (A commit that does not apply leaves the mark; a fill then
                    // asks Redis for nothing it would not have been told anyway.)
                    self.tracker
                        .entry(&event.correlation_id, now)
                        .created_in_redis = true;
                }
                if let Some(effects) = batch.effects(&event.event_id) {
                    self.pairing_effects(event, effects);
                }
            }
        }
        self.attach_unmatched_checks(&mut handled, batch);
        self.committing.push_back(handled);
    }

    fn on_commit(&mut self, outcomes: &[Outcome]) {
        // Outcomes come in the order the events were handled; the batch holds a subset of
        // them (events with a correlation id), in the same order.
        self.create_alert_series();
        let now = Instant::now();
        let handled = self.committing.pop_front().unwrap_or_default();
        let mut handled = handled.into_iter().peekable();
        // Applied events by kind, added to the metrics once per commit.
        let mut applied = [0u64; 3];
        for outcome in outcomes {
            let Some(mut event) = handled.next_if(|e| e.event_id == outcome.event_id) else {
                continue;
            };
            if !outcome.applied {
                // Not this commit's to look up: the next one does.
                self.unmatched_checks.append(&mut event.unmatched_checks);
                continue;
            }
            self.count_unmatched(&event, &outcome.replies);
            applied[event.kind as usize] += 1;
            self.record_risk(&event);
            if event.correlation_id.is_empty() {
                continue;
            }
            // Another consumer handled an earlier fill of this order: not its fill latency.
            let first_fill =
                !event.confirm_first_fill || matches!(outcome.replies.first(), Some(Value::Int(1)));
            for latency in std::mem::take(&mut event.local) {
                if latency.pair == Pair::Fill && !first_fill {
                    continue;
                }
                self.completed(latency, &event.correlation_id);
            }

            // An order whose fill another consumer handled is complete too: the pair was
            // completed through Redis, and the tracker would otherwise keep the order until
            // its TTL and count it unmatched.
            let filled_remotely =
                !event.remote.is_empty() && self.paired_in_redis(&event, &outcome.replies);
            // A fill whose order Redis knows filled already (a later partial fill, handled
            // here without the order): the order is complete.
            let filled_before = event.kind == Kind::Filled
                && event.remote.contains(&Pair::Fill)
                && matches!(outcome.replies.first(), Some(Value::Int(0)));
            let complete = filled_remotely
                || filled_before
                || self
                    .tracker
                    .get(&event.correlation_id)
                    .is_some_and(|state| state.created_ns.is_some() && state.filled_ns.is_some());
            if complete {
                self.tracker.complete(&event.correlation_id, now);
            }
        }
        for (kind, n) in ["signal", "order", "fill"].into_iter().zip(applied) {
            if n > 0 {
                metrics::counter!("evstream_intellisense_events_total", "kind" => kind)
                    .increment(n);
            }
        }
        // Added as changes, so handlers sharing one analysis (one per partition) sum up.
        let (open, evicted) = (self.tracker.len(), self.tracker.evicted());
        let (was_open, was_evicted) = std::mem::replace(&mut self.reported, (open, evicted));
        let mut shared = self.shared();
        shared.tracker_open = (shared.tracker_open + open).saturating_sub(was_open);
        shared.tracker_evicted += evicted - was_evicted;
        metrics::gauge!("evstream_intellisense_orders_open").set(shared.tracker_open as f64);
        metrics::counter!("evstream_intellisense_orders_unmatched_total")
            .absolute(shared.unmatched);
    }

    fn flush(&mut self, effects: &mut Effects) {
        if self.derived.is_empty() {
            return;
        }
        // One analysis entry per batch: per pair kind and symbol, the latencies (ns) joined
        // by commas. One entry per latency would cost Redis more than the whole consumer.
        let mut groups: BTreeMap<(&'static str, String), String> = BTreeMap::new();
        for result in &self.derived {
            let text = groups
                .entry((result.latency.pair.name(), result.latency.symbol.clone()))
                .or_default();
            if !text.is_empty() {
                text.push(',');
            }
            let _ = write!(text, "{}", result.latency_ns);
        }
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&self.keys.analysis)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.config.analysis_max_len)
            .arg("*");
        for ((kind, symbol), latencies) in &groups {
            xadd.arg(format!("{kind}:{symbol}")).arg(latencies);
        }
        effects.apply(&mut xadd);
        effects.count("latencies", self.derived.len() as i64);
        let mut alerts = 0;
        for result in std::mem::take(&mut self.derived) {
            let Some(threshold) = result.alert_above_ns else {
                continue;
            };
            let kind = result.latency.pair.name();
            alerts += 1;
            effects.apply(&mut self.alert_command(Alert {
                kind,
                level: "WARNING",
                correlation_id: &result.correlation_id,
                symbol: &result.latency.symbol,
                value: result.latency_ns,
                threshold,
                message: format!(
                    "{} of {:.3} ms is above {:.3} ms",
                    kind.replace('_', " "),
                    result.latency_ns as f64 / 1e6,
                    threshold as f64 / 1e6
                ),
            }));
        }
        if alerts > 0 {
            effects.count("alerts", alerts);
        }
    }
}

impl IntelliSense {
    /// Completes the pairs an event sent to Redis, from its `HMGET` reply: the commit that
    /// finds the other half there is the one that completes the pair.
    /// Returns whether it completed the order's fill pair (the order is then complete).
    fn paired_in_redis(&mut self, event: &Handled, replies: &[Value]) -> bool {
        let hmget = replies.last();
        let mut filled = false;
        let symbol = || {
            reply_text(hmget, 1)
                .filter(|s| !s.is_empty())
                .or_else(|| event.symbol.clone())
                .unwrap_or_else(|| "unknown".to_owned())
        };
        for pair in event.remote.clone() {
            let latency = match (pair, event.kind) {
                (Pair::Creation, Kind::Signal) => reply_u64(hmget, 0).map(|created| Latency {
                    pair,
                    symbol: symbol(),
                    from_ns: event.timestamp_ns,
                    to_ns: created,
                }),
                (Pair::Creation, _) => reply_u64(hmget, 0).map(|signal| Latency {
                    pair,
                    symbol: event.symbol.clone().unwrap_or_else(symbol),
                    from_ns: signal,
                    to_ns: event.timestamp_ns,
                }),
                (Pair::Fill, Kind::Created) => reply_u64(hmget, 1).map(|filled| Latency {
                    pair,
                    symbol: event.symbol.clone().unwrap_or_else(symbol),
                    from_ns: event.timestamp_ns,
                    to_ns: filled,
                }),
                (Pair::Fill, _) => {
                    let first_fill = matches!(replies.first(), Some(Value::Int(1)));
                    reply_u64(hmget, 0)
                        .filter(|_| first_fill)
                        .map(|created| Latency {
                            pair,
                            symbol: symbol(),
                            from_ns: created,
                            to_ns: event.timestamp_ns,
                        })
                }
            };
            if let Some(latency) = latency {
                filled |= latency.pair == Pair::Fill;
                self.completed(latency, &event.correlation_id);
            }
        }
        filled
    }

    /// Gives the orders the tracker evicted unfinished to an event of this batch with no
    /// replies of its own, whose commit looks each one up in Redis (`HMGET created_ns
    /// filled_ns`); with no such event, the next batch does.
    fn attach_unmatched_checks(&mut self, handled: &mut [Handled], batch: &mut Batch<'_>) {
        /// Lookups per commit at most; the rest wait for the next commits.
        const PER_COMMIT: usize = 1_000;
        self.unmatched_checks
            .extend(self.tracker.take_evicted_orders());
        if self.unmatched_checks.is_empty() {
            return;
        }
        let Some(carrier) = handled
            .iter_mut()
            .find(|e| e.remote.is_empty() && !e.confirm_first_fill)
        else {
            return;
        };
        let Some(effects) = batch.effects(&carrier.event_id) else {
            return;
        };
        let n = self.unmatched_checks.len().min(PER_COMMIT);
        carrier.unmatched_checks = self.unmatched_checks.drain(..n).collect();
        for correlation_id in &carrier.unmatched_checks {
            effects.apply_with_reply(
                redis::cmd("HMGET")
                    .arg(format!("{}{correlation_id}", self.keys.pairing_prefix))
                    .arg("created_ns")
                    .arg("filled_ns"),
            );
        }
    }

    /// Counts the looked-up evicted orders whose other half Redis does not hold.
    fn count_unmatched(&self, event: &Handled, replies: &[Value]) {
        if event.unmatched_checks.is_empty() {
            return;
        }
        let unmatched = replies
            .iter()
            .take(event.unmatched_checks.len())
            .filter(|reply| {
                reply_u64(Some(reply), 0).is_none() || reply_u64(Some(reply), 1).is_none()
            })
            .count() as u64;
        self.shared().unmatched += unmatched;
    }

    /// The metrics of one applied order: its risk score, and its alert.
    fn record_risk(&mut self, event: &Handled) {
        let Some(risk) = event.risk else {
            return;
        };
        self.symbol_metrics(event.symbol.as_deref().unwrap_or("unknown"))
            .risk
            .record(risk);
        if risk > 1.0 {
            metrics::counter!(
                "evstream_intellisense_alerts_total",
                "kind" => "risk",
                "level" => risk_level(risk)
            )
            .increment(1);
        }
    }

    fn risk_alert(
        &self,
        effects: &mut Effects,
        event: &Envelope,
        symbol: &str,
        notional: f64,
        risk: f64,
    ) {
        let message = format!(
            "order notional {notional:.2} is {:.0}% of the {symbol} limit",
            risk * 100.0
        );
        effects
            .apply(&mut self.alert_command(Alert {
                kind: "risk",
                level: risk_level(risk),
                correlation_id: &event.correlation_id,
                symbol,
                value: risk,
                threshold: 1.0,
                message,
            }))
            .count("alerts", 1);
    }

    /// The `XADD` of one alert to `<stream>:alerts`.
    fn alert_command<V, T>(&self, alert: Alert<'_, V, T>) -> redis::Cmd
    where
        V: redis::ToRedisArgs,
        T: redis::ToRedisArgs,
    {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&self.keys.alerts)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.config.alerts_max_len)
            .arg("*")
            .arg("kind")
            .arg(alert.kind)
            .arg("level")
            .arg(alert.level)
            .arg("correlation_id")
            .arg(alert.correlation_id)
            .arg("symbol")
            .arg(alert.symbol)
            .arg("value")
            .arg(alert.value)
            .arg("threshold")
            .arg(alert.threshold)
            .arg("message")
            .arg(alert.message);
        xadd
    }
}
