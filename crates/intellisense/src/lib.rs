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
//! # Several consumers, one result
//!
//! The events of one order may be processed by different consumers of the group. So the
//! state that pairs them lives in Redis, in the per-order hash, written by each event's
//! effects atomically with its acknowledgement (see [`evstream::consume`]). Each effect also
//! reads back the other half (`HMGET`), and because commits are atomic and serialized, the
//! commit that completes a pair is the one that sees both halves: each latency is computed
//! exactly once, by whichever consumer completed the pair.
//!
//! # Results in Redis
//!
//! | key | type | content |
//! |---|---|---|
//! | `<stream>:order:<correlation_id>` | hash, TTL `order_ttl` (24 h) | `symbol`, `order_id`, `side`, `quantity`, `price`, `notional`, `risk`, `signal_ns`, `created_ns`, `filled_ns` (first fill), `filled_quantity`, `creation_latency_ns`, `fill_latency_ns` |
//! | `<stream>:analysis` | stream, `MAXLEN ~ analysis_max_len` | one entry per latency: `kind` (`creation_latency`/`fill_latency`), `correlation_id`, `symbol`, `latency_ns` |
//! | `<stream>:alerts` | stream, `MAXLEN ~ alerts_max_len` | `kind` (`creation_latency`/`fill_latency`/`risk`), `level`, `correlation_id`, `symbol`, `value`, `threshold`, `message` |
//! | `<stream>:consume:<group>` | hash | counters: `processed`, `duplicates_skipped`, `dead_lettered`, …, and `orders`, `fills`, `signals`, `alerts` |
//!
//! `orders`, `fills` and `signals` are counted with each entry's acknowledgement (exactly
//! once); latencies and latency alerts are written right after the commit that computed them
//! (at most once: a crash in between loses that one record, never duplicates it).

mod report;
mod tracker;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evstream::consume::{Accept, Effects, Envelope, Handler, HandlerError, Outcome};
use evstream::publish::wall_clock_ns;
use hdrhistogram::Histogram;
use redis::Value;
use serde::{Deserialize, Serialize};

pub use report::{read_report, LatencySummary, Report, SymbolReport};
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
    /// How long per-order hashes live in Redis, in seconds. Default 86,400 (24 h).
    pub order_ttl_s: u64,
    /// Correlations the in-process tracker holds at most. Default 100,000.
    pub tracker_capacity: usize,
    /// How long the tracker keeps an unfinished order, in seconds. Default 600.
    pub tracker_ttl_s: u64,
    /// `MAXLEN ~` of `<stream>:analysis`. Default 1,000,000.
    pub analysis_max_len: u64,
    /// `MAXLEN ~` of `<stream>:alerts`. Default 100,000.
    pub alerts_max_len: u64,
}

impl Default for IntelliSenseConfig {
    fn default() -> Self {
        Self {
            creation_alert_ms: 10.0,
            fill_alert_ms: 100.0,
            notional_limits: BTreeMap::new(),
            default_notional_limit: 1_000_000.0,
            order_ttl_s: 86_400,
            tracker_capacity: 100_000,
            tracker_ttl_s: 600,
            analysis_max_len: 1_000_000,
            alerts_max_len: 100_000,
        }
    }
}

/// The Redis keys IntelliSense writes for one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalysisKeys {
    /// Prefix of the per-order hashes, `<stream>:order:`.
    pub order_prefix: String,
    /// `<stream>:analysis`.
    pub analysis: String,
    /// `<stream>:alerts`.
    pub alerts: String,
}

impl AnalysisKeys {
    /// The keys for `stream`.
    pub fn new(stream: &str) -> Self {
        Self {
            order_prefix: format!("{stream}:order:"),
            analysis: format!("{stream}:analysis"),
            alerts: format!("{stream}:alerts"),
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
        }
    }
}

/// What an event handled in this batch waits for from its commit.
#[derive(Debug)]
struct Pending {
    correlation_id: String,
    symbol: Option<String>,
    timestamp_ns: u64,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Signal,
    Created,
    Filled,
}

/// A result computed from a commit, written by [`Handler::flush`].
#[derive(Debug)]
struct Derived {
    kind: &'static str,
    correlation_id: String,
    symbol: String,
    latency_ns: u64,
    alert_above_ns: Option<u64>,
}

#[derive(Deserialize)]
struct SignalData<'a> {
    #[serde(borrow, default)]
    symbol: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreatedData<'a> {
    #[serde(borrow)]
    order_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    symbol: std::borrow::Cow<'a, str>,
    /// Absent in `OrderCreated` v1.
    #[serde(default)]
    quantity: f64,
    #[serde(default)]
    price: f64,
    #[serde(borrow, default)]
    side: Option<std::borrow::Cow<'a, str>>,
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
    pending: HashMap<uuid::Uuid, Pending>,
    derived: Vec<Derived>,
    shared: Arc<Mutex<Analysis>>,
    order_ttl_ms: u64,
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
            pending: HashMap::new(),
            derived: Vec::new(),
            shared: Arc::default(),
            order_ttl_ms: config.order_ttl_s.saturating_mul(1000),
            config,
        }
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

    fn ms_to_ns(ms: f64) -> u64 {
        (ms * 1e6).max(0.0) as u64
    }

    /// Records a completed pair (once per pair: see the crate docs).
    fn completed(&mut self, kind: &'static str, correlation_id: &str, symbol: &str, from: u64, to: u64) {
        let Some(latency_ns) = to.checked_sub(from) else {
            return; // the "earlier" event is later: no latency to speak of
        };
        let threshold = Self::ms_to_ns(if kind == "fill_latency" {
            self.config.fill_alert_ms
        } else {
            self.config.creation_alert_ms
        });
        {
            let mut shared = self.shared();
            let latencies = shared
                .symbols
                .entry(symbol.to_owned())
                .or_insert_with(|| SymbolLatencies {
                    creation: histogram(),
                    fill: histogram(),
                });
            let histogram = if kind == "fill_latency" {
                &mut latencies.fill
            } else {
                &mut latencies.creation
            };
            histogram.saturating_record(latency_ns.max(1));
            if latency_ns > threshold {
                shared.alerts += 1;
            }
        }
        if latency_ns > threshold {
            tracing::warn!(kind, correlation_id, symbol, latency_ms = latency_ns as f64 / 1e6, threshold_ms = threshold as f64 / 1e6, "latency alert");
        }
        self.derived.push(Derived {
            kind,
            correlation_id: correlation_id.to_owned(),
            symbol: symbol.to_owned(),
            latency_ns,
            alert_above_ns: (latency_ns > threshold).then_some(threshold),
        });
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
    fn accepts(&self, event_type: &str, version: u32) -> Accept {
        match (event_type, version) {
            ("MarketDataUpdate" | "Signal" | "OrderFilled", 1) | ("OrderCreated", 1 | 2) => {
                Accept::Handle
            }
            ("MarketDataUpdate" | "Signal" | "OrderFilled" | "OrderCreated", _) => {
                Accept::UnknownVersion
            }
            _ => Accept::Skip,
        }
    }

    fn handle(&mut self, event: &Envelope, effects: &mut Effects) -> Result<(), HandlerError> {
        let now = Instant::now();
        self.shared()
            .pipeline
            .saturating_record(wall_clock_ns().saturating_sub(event.timestamp_ns).max(1));
        let ts = event.timestamp_ns;
        let key = format!("{}{}", self.keys.order_prefix, event.correlation_id);
        let (kind, symbol) = match event.event_type.as_str() {
            "OrderCreated" => {
                let order: CreatedData<'_> = serde_json::from_str(&event.data)?;
                let notional = order.quantity * order.price;
                let risk = notional / self.notional_limit(&order.symbol);
                if event.correlation_id.is_empty() {
                    return Err("OrderCreated without a correlation id".into());
                }
                effects
                    .apply(
                        redis::cmd("HSET")
                            .arg(&key)
                            .arg("symbol")
                            .arg(order.symbol.as_ref())
                            .arg("order_id")
                            .arg(order.order_id.as_ref())
                            .arg("side")
                            .arg(order.side.as_deref().unwrap_or(""))
                            .arg("quantity")
                            .arg(order.quantity)
                            .arg("price")
                            .arg(order.price)
                            .arg("notional")
                            .arg(notional)
                            .arg("risk")
                            .arg(risk)
                            .arg("created_ns")
                            .arg(ts),
                    )
                    .apply(redis::cmd("PEXPIRE").arg(&key).arg(self.order_ttl_ms))
                    .apply_with_reply(redis::cmd("HMGET").arg(&key).arg("signal_ns").arg("filled_ns"))
                    .count("orders", 1);
                if risk > 1.0 {
                    let message = format!(
                        "order notional {notional:.2} is {:.0}% of the {} limit",
                        risk * 100.0,
                        order.symbol
                    );
                    effects
                        .apply(
                            redis::cmd("XADD")
                                .arg(&self.keys.alerts)
                                .arg("MAXLEN")
                                .arg("~")
                                .arg(self.config.alerts_max_len)
                                .arg("*")
                                .arg("kind")
                                .arg("risk")
                                .arg("level")
                                .arg(if risk > 2.0 { "CRITICAL" } else { "WARNING" })
                                .arg("correlation_id")
                                .arg(&event.correlation_id)
                                .arg("symbol")
                                .arg(order.symbol.as_ref())
                                .arg("value")
                                .arg(risk)
                                .arg("threshold")
                                .arg(1.0)
                                .arg("message")
                                .arg(message),
                        )
                        .count("alerts", 1);
                }
                let state = self.tracker.entry(&event.correlation_id, now);
                state.created_ns = Some(ts);
                state.symbol = Some(order.symbol.to_string());
                (Kind::Created, Some(order.symbol.into_owned()))
            }
            "OrderFilled" => {
                let fill: FilledData = serde_json::from_str(&event.data)?;
                if event.correlation_id.is_empty() {
                    return Err("OrderFilled without a correlation id".into());
                }
                effects
                    .apply_with_reply(redis::cmd("HSETNX").arg(&key).arg("filled_ns").arg(ts))
                    .apply(redis::cmd("HINCRBYFLOAT").arg(&key).arg("filled_quantity").arg(fill.quantity))
                    .apply(redis::cmd("PEXPIRE").arg(&key).arg(self.order_ttl_ms))
                    .apply_with_reply(redis::cmd("HMGET").arg(&key).arg("created_ns").arg("symbol"))
                    .count("fills", 1);
                let state = self.tracker.entry(&event.correlation_id, now);
                state.filled_ns.get_or_insert(ts);
                (Kind::Filled, state.symbol.clone())
            }
            _ => {
                // MarketDataUpdate or Signal.
                let signal: SignalData<'_> = serde_json::from_str(&event.data)?;
                effects.count("signals", 1);
                if event.correlation_id.is_empty() {
                    return Ok(()); // market data not tied to an order
                }
                let mut hset = redis::cmd("HSET");
                hset.arg(&key).arg("signal_ns").arg(ts);
                if let Some(symbol) = &signal.symbol {
                    hset.arg("symbol").arg(symbol.as_ref());
                }
                effects
                    .apply(&mut hset)
                    .apply(redis::cmd("PEXPIRE").arg(&key).arg(self.order_ttl_ms))
                    .apply_with_reply(redis::cmd("HMGET").arg(&key).arg("created_ns").arg("symbol"));
                let state = self.tracker.entry(&event.correlation_id, now);
                state.signal_ns = Some(ts);
                if let Some(symbol) = signal.symbol {
                    state.symbol = Some(symbol.into_owned());
                }
                (Kind::Signal, state.symbol.clone())
            }
        };
        self.pending.insert(
            event.event_id,
            Pending {
                correlation_id: event.correlation_id.clone(),
                symbol,
                timestamp_ns: ts,
                kind,
            },
        );
        Ok(())
    }

    fn on_commit(&mut self, outcomes: &[Outcome]) {
        let now = Instant::now();
        for outcome in outcomes {
            let Some(pending) = self.pending.remove(&outcome.event_id) else {
                continue;
            };
            if !outcome.applied {
                continue;
            }
            let replies = &outcome.replies;
            let id = pending.correlation_id.as_str();
            let known_symbol = |n: usize| {
                reply_text(replies.last(), n)
                    .filter(|s| !s.is_empty())
                    .or_else(|| pending.symbol.clone())
                    .unwrap_or_else(|| "unknown".to_owned())
            };
            match pending.kind {
                Kind::Signal => {
                    if let Some(created) = reply_u64(replies.first(), 0) {
                        let symbol = known_symbol(1);
                        self.completed("creation_latency", id, &symbol, pending.timestamp_ns, created);
                    }
                }
                Kind::Created => {
                    let symbol = pending.symbol.clone().unwrap_or_default();
                    if let Some(signal) = reply_u64(replies.first(), 0) {
                        self.completed("creation_latency", id, &symbol, signal, pending.timestamp_ns);
                    }
                    if let Some(filled) = reply_u64(replies.first(), 1) {
                        self.completed("fill_latency", id, &symbol, pending.timestamp_ns, filled);
                    }
                }
                Kind::Filled => {
                    let first_fill = matches!(replies.first(), Some(Value::Int(1)));
                    if let (true, Some(created)) = (first_fill, reply_u64(replies.get(1), 0)) {
                        let symbol = known_symbol(1);
                        self.completed("fill_latency", id, &symbol, created, pending.timestamp_ns);
                    }
                }
            }
            // What the commit told us completes the tracker's view of the order.
            let state = self.tracker.entry(id, now);
            if pending.kind == Kind::Filled {
                if let Some(created) = reply_u64(replies.get(1), 0) {
                    state.created_ns.get_or_insert(created);
                }
            }
            if pending.kind == Kind::Created {
                if let Some(filled) = reply_u64(replies.first(), 1) {
                    state.filled_ns.get_or_insert(filled);
                }
            }
            if state.created_ns.is_some() && state.filled_ns.is_some() {
                self.tracker.remove(id);
            }
        }
        let (open, evicted) = (self.tracker.len(), self.tracker.evicted());
        let mut shared = self.shared();
        shared.tracker_open = open;
        shared.tracker_evicted = evicted;
    }

    fn flush(&mut self, effects: &mut Effects) {
        for result in self.derived.drain(..) {
            let key = format!("{}{}", self.keys.order_prefix, result.correlation_id);
            effects
                .apply(
                    redis::cmd("XADD")
                        .arg(&self.keys.analysis)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(self.config.analysis_max_len)
                        .arg("*")
                        .arg("kind")
                        .arg(result.kind)
                        .arg("correlation_id")
                        .arg(&result.correlation_id)
                        .arg("symbol")
                        .arg(&result.symbol)
                        .arg("latency_ns")
                        .arg(result.latency_ns),
                )
                .apply(
                    redis::cmd("HSET")
                        .arg(&key)
                        .arg(format!("{}_ns", result.kind))
                        .arg(result.latency_ns),
                );
            if let Some(threshold) = result.alert_above_ns {
                effects
                    .apply(
                        redis::cmd("XADD")
                            .arg(&self.keys.alerts)
                            .arg("MAXLEN")
                            .arg("~")
                            .arg(self.config.alerts_max_len)
                            .arg("*")
                            .arg("kind")
                            .arg(result.kind)
                            .arg("level")
                            .arg("WARNING")
                            .arg("correlation_id")
                            .arg(&result.correlation_id)
                            .arg("symbol")
                            .arg(&result.symbol)
                            .arg("value")
                            .arg(result.latency_ns)
                            .arg("threshold")
                            .arg(threshold)
                            .arg("message")
                            .arg(format!(
                                "{} of {:.3} ms is above {:.3} ms",
                                result.kind.replace('_', " "),
                                result.latency_ns as f64 / 1e6,
                                threshold as f64 / 1e6
                            )),
                    )
                    .count("alerts", 1);
            }
        }
    }
}
