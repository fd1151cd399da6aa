//! The simulated market of `evstream demo`: engine threads that trade a few symbols on a
//! few venues, so that IntelliSense has something to find.
//!
//! A run is planned in full before it starts, from `--seed` alone ([`Market::plan`]):
//!
//! - **market data**: each symbol's price follows a random walk; quotes (`MarketDataUpdate`)
//!   come several times as often as orders, most with an empty correlation id;
//! - **orders** (`OrderCreated`): each one triggered by a quote of its symbol that carries
//!   the order's correlation id, so IntelliSense's creation latency is the engine's decision
//!   time (tens of microseconds, now and then a few milliseconds); sizes in round lots (some
//!   odd lots), limit prices at or across the quote;
//! - **what the venue answers**: one or several fills (`OrderFilled`, fill ids `<order>-1`,
//!   `<order>-2`, …) after a log-normal venue latency in milliseconds with a heavy tail;
//!   cancels (`OrderCancelled`) and rejects (`OrderRejected`) with a reason; some orders
//!   rest on the book and are never filled;
//! - **incidents**: one venue turns slow for a tenth of the run (its fills come 150–600 ms
//!   after the order, above IntelliSense's 100 ms fill alert), and each engine thread sends
//!   two orders above the notional limit (risk 1.5, a warning, and 3, critical).
//!
//! Then [`Market::run`] plays the plan in real time, one thread per producer: latencies come
//! from the envelopes' `timestamp_ns`, stamped at publish, so a fill is published its
//! latency after its order. Each thread keeps the steps it has to publish in a min-heap by
//! due time; a step's delay counts from the moment the step before it in the same order was
//! published, so a thread that falls behind never shortens a planned latency.
//!
//! Every planned latency keeps clear of IntelliSense's alert thresholds (no value within
//! ±30 % of 10 ms or 100 ms) and every normal order's notional clear of the risk limit: which
//! orders alert depends on the seed, not on the machine's timing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::thread;
use std::time::{Duration, Instant};

use evstream::publish::{wall_clock_ns, Event, MarketDataUpdate, OrderCreated, OrderFilled, Side};
use evstream::{PublishError, Publisher};
use serde::Serialize;

use crate::engine::{new_histogram, EngineReport};

/// A small seeded generator: xoshiro256** seeded through splitmix64.
///
/// Written here rather than taken from `rand`: `rand`'s `StdRng` does not promise the same
/// sequence across versions, and `--seed N` promises the same run today and after an
/// upgrade. Both algorithms are public domain and fixed (Vigna, <https://prng.di.unimi.it>).
#[derive(Debug, Clone)]
struct Rng {
    state: [u64; 4],
}

/// One step of splitmix64: the seeding generator xoshiro's authors recommend.
fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        Self {
            state: [
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
            ],
        }
    }

    /// The seed of an independent stream number `stream` derived from `seed`.
    fn derive(seed: u64, stream: u64) -> u64 {
        let mut x = seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        splitmix64(&mut x)
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [low, high).
    fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        // Multiply-shift: no modulo bias worth speaking of for the small n used here.
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit(); // (0, 1]: ln is finite
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Log-normal with the given median and shape (σ of its logarithm).
    fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Log-uniform in [low, high): as many values per decade.
    fn log_uniform(&mut self, low: f64, high: f64) -> f64 {
        (low.ln() + (high.ln() - low.ln()) * self.unit()).exp()
    }
}

/// A traded instrument.
#[derive(Debug, Clone, Copy)]
struct Instrument {
    symbol: &'static str,
    /// Price at the start of the run.
    price: f64,
    /// Standard deviation of the relative price change per quote.
    volatility: f64,
}

const INSTRUMENTS: [Instrument; 5] = [
    Instrument {
        symbol: "AAPL",
        price: 189.0,
        volatility: 0.0002,
    },
    Instrument {
        symbol: "MSFT",
        price: 411.0,
        volatility: 0.00015,
    },
    Instrument {
        symbol: "NVDA",
        price: 131.0,
        volatility: 0.0004,
    },
    Instrument {
        symbol: "TSLA",
        price: 242.0,
        volatility: 0.0005,
    },
    Instrument {
        symbol: "SPY",
        price: 563.0,
        volatility: 0.0001,
    },
];

/// An execution venue: its normal answer latency is log-normal.
#[derive(Debug, Clone, Copy)]
struct Venue {
    name: &'static str,
    /// Median time from the order to the venue's first answer, ms.
    median_ms: f64,
    /// σ of the latency's logarithm: the larger, the heavier the tail.
    sigma: f64,
}

const VENUES: [Venue; 3] = [
    Venue {
        name: "XNAS",
        median_ms: 1.8,
        sigma: 0.7,
    },
    Venue {
        name: "ARCX",
        median_ms: 3.5,
        sigma: 0.8,
    },
    Venue {
        name: "BATS",
        median_ms: 2.5,
        sigma: 0.9,
    },
];

/// Bounds of what the plan may contain, chosen clear of IntelliSense's default thresholds
/// (creation 10 ms, fill 100 ms, risk 1.0) by more than 30 % either way.
pub(crate) mod bounds {
    use std::time::Duration;

    /// A normal decision (quote → order) takes at most this long…
    pub(crate) const DECISION_MAX: Duration = Duration::from_micros(500);
    /// …and a slow one (2 % of orders) between these.
    pub(crate) const SLOW_DECISION: (Duration, Duration) =
        (Duration::from_millis(1), Duration::from_millis(5));
    /// A normal venue answers within this.
    pub(crate) const VENUE_MAX: Duration = Duration::from_millis(60);
    /// The slow venue's first answers during its episode.
    pub(crate) const SLOW_VENUE: (Duration, Duration) =
        (Duration::from_millis(150), Duration::from_millis(600));
    /// A normal order's notional stays under this.
    pub(crate) const NOTIONAL_MAX: f64 = 650_000.0;
    /// The notionals of the two risky orders of each engine thread: 1.5 and 3 times the
    /// default limit of 1,000,000.
    pub(crate) const RISKY_NOTIONALS: [f64; 2] = [1_500_000.0, 3_000_000.0];
}

/// Events planned per order, all kinds together: about 3.5 of its own life (trigger quote,
/// order, answers) and the rest uncorrelated quotes, so market data comes about five times
/// as often as orders.
const EVENTS_PER_ORDER: u64 = 8;

/// `--seed`, `--rate`, `--duration`, `--producers`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MarketSpec {
    pub(crate) seed: u64,
    /// Events per second, all engine threads together.
    pub(crate) rate: u64,
    pub(crate) duration: Duration,
    pub(crate) producers: usize,
}

/// A top-of-book quote.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Quote {
    symbol: &'static str,
    bid: f64,
    ask: f64,
    last: f64,
    bid_size: f64,
    ask_size: f64,
    /// How long before publishing the exchange stamped it (the feed's delay): the
    /// `exchangeTsNs` published is the wall clock at publish minus this.
    feed_delay_ns: u64,
}

/// What the venue (or the strategy) does with an order after it is created.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Fill {
        quantity: f64,
        price: f64,
    },
    Cancelled {
        /// The quantity that was still open.
        leaves: f64,
        reason: &'static str,
    },
    Rejected {
        reason: &'static str,
    },
}

/// One order's life.
#[derive(Debug, Clone, PartialEq)]
struct OrderPlan {
    /// Order id and correlation id: `ord-<seed>-<producer>-<n>`.
    id: String,
    symbol: &'static str,
    side: Side,
    quantity: f64,
    price: f64,
    venue: &'static str,
    /// The quote that triggered it (published with the order's correlation id).
    trigger: Quote,
    /// Sent to the slow venue during its episode.
    slow_venue: bool,
    /// Quote → `OrderCreated`.
    decision: Duration,
    /// After the order, each answer with its delay after the step before it.
    replies: Vec<(Duration, Reply)>,
}

/// Something published at a fixed offset from the start of the run.
#[derive(Debug, Clone, PartialEq)]
enum Start {
    /// An uncorrelated quote.
    Quote(Quote),
    /// The trigger quote of `orders[i]`, then its life.
    Order(usize),
}

/// The plan of one engine thread.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    /// By offset from the start of the run.
    starts: Vec<(Duration, Start)>,
    orders: Vec<OrderPlan>,
}

/// One venue slow for a while.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct SlowEpisode {
    pub(crate) venue: &'static str,
    /// Seconds from the start of the run.
    pub(crate) from_s: f64,
    pub(crate) to_s: f64,
}

/// The whole run, decided by the seed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Market {
    pub(crate) seed: u64,
    pub(crate) slow: SlowEpisode,
    /// One per engine thread.
    plans: Vec<Plan>,
}

/// What the engine was planned to publish (and, unless the ring refused some, published).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Tally {
    /// Every event, all types.
    pub(crate) events: u64,
    /// `MarketDataUpdate`s, the orders' trigger quotes included.
    pub(crate) market_data: u64,
    pub(crate) orders: u64,
    /// `OrderFilled` events.
    pub(crate) fills: u64,
    /// Fills that left part of their order open.
    pub(crate) partial_fills: u64,
    /// Orders filled completely.
    pub(crate) filled: u64,
    /// Orders cancelled (some after partial fills).
    pub(crate) cancelled: u64,
    pub(crate) rejected: u64,
    /// Orders still open at the end with nothing filled: resting on the book.
    pub(crate) open: u64,
    /// Orders whose notional exceeds the risk limit.
    pub(crate) risky: u64,
    /// Orders answered by the slow venue during its episode.
    pub(crate) slow_venue: u64,
}

impl Market {
    /// Plans a run: everything the engine threads will publish, and when.
    pub(crate) fn plan(spec: &MarketSpec) -> Self {
        let producers = spec.producers.max(1);
        let mut rng = Rng::new(Rng::derive(spec.seed, 0));
        let duration = spec.duration.as_secs_f64();
        let from_s = duration * rng.between(0.3, 0.6);
        let slow = SlowEpisode {
            venue: VENUES[rng.below(VENUES.len())].name,
            from_s,
            to_s: from_s + duration * 0.1,
        };
        let total = (spec.rate as f64 * duration).round() as u64;
        let plans = (0..producers)
            .map(|producer| {
                let share = total / producers as u64
                    + u64::from((producer as u64) < total % producers as u64);
                plan_producer(spec, producer, share, &slow)
            })
            .collect();
        Self {
            seed: spec.seed,
            slow,
            plans,
        }
    }

    /// What the plan holds.
    pub(crate) fn tally(&self) -> Tally {
        let mut tally = Tally::default();
        for plan in &self.plans {
            let quotes = plan
                .starts
                .iter()
                .filter(|(_, start)| matches!(start, Start::Quote(_)))
                .count() as u64;
            tally.market_data += quotes;
            tally.events += quotes;
            for order in &plan.orders {
                tally.orders += 1;
                tally.market_data += 1;
                tally.events += 2 + order.replies.len() as u64;
                if order.quantity * order.price > bounds::NOTIONAL_MAX {
                    tally.risky += 1;
                }
                let mut filled = 0.0;
                let mut ended = false;
                for (_, reply) in &order.replies {
                    match reply {
                        Reply::Fill { quantity, .. } => {
                            tally.fills += 1;
                            filled += quantity;
                            if filled < order.quantity {
                                tally.partial_fills += 1;
                            } else {
                                tally.filled += 1;
                            }
                        }
                        Reply::Cancelled { .. } => {
                            tally.cancelled += 1;
                            ended = true;
                        }
                        Reply::Rejected { .. } => {
                            tally.rejected += 1;
                            ended = true;
                        }
                    }
                }
                if !ended && filled == 0.0 {
                    tally.open += 1;
                }
                tally.slow_venue += u64::from(order.slow_venue);
            }
        }
        tally
    }

    /// Plays the plan in real time, one thread per engine thread of the plan, until every
    /// step is published.
    pub(crate) fn run(self, publisher: &Publisher) -> EngineReport {
        let started = Instant::now();
        let threads: Vec<_> = self
            .plans
            .into_iter()
            .map(|plan| {
                let publisher = publisher.clone();
                thread::spawn(move || Player::new(publisher).play(&plan, started))
            })
            .collect();
        let mut report = EngineReport {
            published: 0,
            refused: 0,
            latency_ns: new_histogram(),
            elapsed: Duration::ZERO,
        };
        for handle in threads {
            // A panicking engine thread is a bug of this module: pass it on.
            let player = handle
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            report.published += player.published;
            report.refused += player.refused;
            // Both histograms come from `new_histogram`: same bounds, so adding cannot fail.
            let _ = report.latency_ns.add(&player.latency_ns);
        }
        report.elapsed = started.elapsed();
        report
    }
}

/// The outcome an order is planned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Filled in this many fills.
    Filled(u8),
    /// Partly filled in this many fills, the rest cancelled.
    PartlyFilledThenCancelled(u8),
    Cancelled,
    Rejected,
    /// Rests on the book, never filled.
    Open,
}

impl Outcome {
    /// 4 % rejected, 8 % cancelled, 6 % partly filled (1–2 fills) then cancelled, 10 % left
    /// open, 22 % filled in 2–4 parts, 50 % filled at once.
    fn draw(rng: &mut Rng) -> Self {
        match rng.unit() {
            p if p < 0.04 => Outcome::Rejected,
            p if p < 0.12 => Outcome::Cancelled,
            p if p < 0.18 => Outcome::PartlyFilledThenCancelled(1 + rng.below(2) as u8),
            p if p < 0.28 => Outcome::Open,
            p if p < 0.50 => Outcome::Filled(2 + rng.below(3) as u8),
            _ => Outcome::Filled(1),
        }
    }

    /// Events after `OrderCreated`.
    fn replies(self) -> u64 {
        match self {
            Outcome::Filled(fills) => u64::from(fills),
            Outcome::PartlyFilledThenCancelled(fills) => u64::from(fills) + 1,
            Outcome::Cancelled | Outcome::Rejected => 1,
            Outcome::Open => 0,
        }
    }
}

const REJECT_REASONS: [&str; 3] = [
    "price outside the venue's collar",
    "venue throttle: order rate limit exceeded",
    "post-only order would cross the spread",
];
const CANCEL_REASONS: [&str; 3] = [
    "strategy: quote moved away",
    "strategy: time in force expired",
    "risk: position limit reached",
];
const REMAINDER_CANCELLED: &str = "immediate-or-cancel: remainder cancelled";
const FAT_FINGER: &str = "notional above the venue's fat-finger limit";

/// Everything about an order that does not depend on the price, drawn first (the number of
/// events it makes is known before the quotes are).
#[derive(Debug, Clone, Copy)]
struct Sketch {
    at: Duration,
    instrument: usize,
    side: Side,
    /// Shares before the notional cap.
    shares: f64,
    venue: usize,
    slow: bool,
    /// Index into [`bounds::RISKY_NOTIONALS`].
    risky: Option<usize>,
    aggressive: bool,
    decision: Duration,
    outcome: Outcome,
}

fn plan_producer(spec: &MarketSpec, producer: usize, budget: u64, slow: &SlowEpisode) -> Plan {
    let producer_seed = Rng::derive(spec.seed, 1 + producer as u64);
    let mut orders_rng = Rng::new(Rng::derive(producer_seed, 1));
    let mut market_rng = Rng::new(Rng::derive(producer_seed, 2));
    let duration = spec.duration.as_secs_f64();
    let offset = |rng: &mut Rng| Duration::from_secs_f64(duration * rng.unit());
    let n = (budget / EVENTS_PER_ORDER).max(1) as usize;
    // The symbols of this thread: the instruments dealt round-robin over the threads (a
    // thread beyond the fifth shares a symbol, its price walking on its own).
    let dealt = spec.producers.clamp(1, INSTRUMENTS.len());
    let instruments: Vec<usize> = (0..INSTRUMENTS.len())
        .filter(|i| i % dealt == producer % dealt)
        .collect();
    let slow_venue = VENUES.iter().position(|v| v.name == slow.venue);

    let mut times: Vec<Duration> = (0..n).map(|_| offset(&mut orders_rng)).collect();
    times.sort_unstable();
    let risky = risky_orders(&mut orders_rng, n);
    let mut forced_slow = false;
    let mut sketches: Vec<Sketch> = times
        .into_iter()
        .enumerate()
        .map(|(i, at)| {
            let mut venue = orders_rng.below(VENUES.len());
            let in_episode = (slow.from_s..slow.to_s).contains(&at.as_secs_f64());
            // The first order of the episode of the first thread goes to the slow venue and
            // is filled: every run long enough to have an order in the episode (a few
            // milliseconds at the default rate) has its latency alert.
            let force = in_episode && producer == 0 && !forced_slow;
            if let (true, Some(slow_venue)) = (force, slow_venue) {
                venue = slow_venue;
                forced_slow = true;
            }
            let decision = if orders_rng.chance(0.02) {
                let (low, high) = bounds::SLOW_DECISION;
                Duration::from_secs_f64(orders_rng.between(low.as_secs_f64(), high.as_secs_f64()))
            } else {
                Duration::from_secs_f64(orders_rng.log_normal(25e-6, 0.5))
                    .clamp(Duration::from_micros(5), bounds::DECISION_MAX)
            };
            let risky = risky.iter().position(|&r| r == i);
            let mut outcome = Outcome::draw(&mut orders_rng);
            if force {
                outcome = Outcome::Filled(1);
            } else if risky == Some(1) {
                outcome = Outcome::Rejected;
            }
            // Round lots mostly; now and then an odd lot.
            let shares = if orders_rng.chance(0.1) {
                (10 + orders_rng.below(90)) as f64
            } else {
                100.0 * orders_rng.log_normal(3.0, 0.8).round().clamp(1.0, 50.0)
            };
            Sketch {
                at,
                instrument: instruments[orders_rng.below(instruments.len())],
                side: if orders_rng.chance(0.5) {
                    Side::Buy
                } else {
                    Side::Sell
                },
                shares,
                venue,
                slow: in_episode && Some(venue) == slow_venue,
                risky,
                aggressive: orders_rng.chance(0.4),
                decision,
                outcome,
            }
        })
        .collect();
    let own_events: u64 = sketches.iter().map(|s| 2 + s.outcome.replies()).sum();
    let quotes = budget.saturating_sub(own_events);

    // The market: quotes and orders in time order, each moving its symbol's price.
    let mut starts: Vec<(Duration, Option<Sketch>)> = (0..quotes)
        .map(|_| (offset(&mut market_rng), None))
        .chain(sketches.drain(..).map(|s| (s.at, Some(s))))
        .collect();
    starts.sort_by_key(|(at, _)| *at);
    let mut prices: Vec<f64> = INSTRUMENTS.iter().map(|i| i.price).collect();
    let mut plan = Plan {
        starts: Vec::with_capacity(starts.len()),
        orders: Vec::with_capacity(n),
    };
    for (at, sketch) in starts {
        let instrument = match &sketch {
            Some(s) => s.instrument,
            None => instruments[market_rng.below(instruments.len())],
        };
        let quote = next_quote(&mut market_rng, instrument, &mut prices[instrument]);
        let start = match sketch {
            None => Start::Quote(quote),
            Some(sketch) => {
                let id = format!("ord-{}-{producer}-{}", spec.seed, plan.orders.len());
                plan.orders.push(order(&mut market_rng, &sketch, id, quote));
                Start::Order(plan.orders.len() - 1)
            }
        };
        plan.starts.push((at, start));
    }
    plan
}

/// The indices of the two risky orders of a thread of `n` orders, in its middle three fifths
/// (fewer when `n` is tiny).
fn risky_orders(rng: &mut Rng, n: usize) -> Vec<usize> {
    let (low, span) = (n / 5, (n * 3 / 5).max(1));
    let first = (low + rng.below(span)).min(n - 1);
    let mut second = (low + rng.below(span)).min(n - 1);
    if second == first {
        second = (first + 1) % n;
    }
    let mut risky = vec![first];
    if second != first {
        risky.push(second);
    }
    risky
}

/// Moves the price one step and quotes it.
fn next_quote(rng: &mut Rng, instrument: usize, price: &mut f64) -> Quote {
    let i = &INSTRUMENTS[instrument];
    *price *= (i.volatility * rng.normal()).exp();
    let spread_cents = 1.0 + rng.below(3) as f64;
    let bid = cents(*price - spread_cents / 200.0);
    let ask = cents(bid + spread_cents / 100.0);
    Quote {
        symbol: i.symbol,
        bid,
        ask,
        last: if rng.chance(0.5) { bid } else { ask },
        bid_size: 100.0 * (1 + rng.below(20)) as f64,
        ask_size: 100.0 * (1 + rng.below(20)) as f64,
        feed_delay_ns: 20_000 + rng.below(280_000) as u64,
    }
}

fn cents(price: f64) -> f64 {
    (price * 100.0).round() / 100.0
}

/// The shortest time between two answers to an order.
const MIN_GAP: Duration = Duration::from_micros(100);

/// An order from its sketch and the quote that triggered it.
fn order(rng: &mut Rng, sketch: &Sketch, id: String, trigger: Quote) -> OrderPlan {
    // Passive orders join their side of the book; aggressive ones cross the spread.
    let price = match (sketch.side, sketch.aggressive) {
        (Side::Buy, false) | (Side::Sell, true) => trigger.bid,
        (Side::Buy, true) | (Side::Sell, false) => trigger.ask,
    };
    let quantity = match sketch.risky {
        Some(r) => (bounds::RISKY_NOTIONALS[r] / price).round(),
        None => sketch.shares.min((bounds::NOTIONAL_MAX / price).floor()),
    };
    let venue = VENUES[sketch.venue];
    let first_answer = |rng: &mut Rng| {
        if sketch.slow {
            let (low, high) = bounds::SLOW_VENUE;
            Duration::from_secs_f64(rng.log_uniform(low.as_secs_f64(), high.as_secs_f64()))
        } else {
            // The heavy tail: one answer in fifty takes several times longer.
            let tail = if rng.chance(0.02) {
                rng.between(3.0, 10.0)
            } else {
                1.0
            };
            Duration::from_secs_f64(rng.log_normal(venue.median_ms, venue.sigma) * tail / 1e3)
                .clamp(Duration::from_micros(200), bounds::VENUE_MAX)
        }
    };
    // The strategy gives up on an order after 20–200 ms; the venue confirms the cancel.
    let give_up = |rng: &mut Rng| Duration::from_secs_f64(rng.between(0.02, 0.2));
    let next_fill = |rng: &mut Rng| {
        Duration::from_secs_f64(rng.log_normal(3e-3, 1.0))
            .clamp(MIN_GAP, Duration::from_millis(200))
    };
    let mut replies = Vec::new();
    let fills = |rng: &mut Rng, count: u8, quantity: f64, replies: &mut Vec<(Duration, Reply)>| {
        // `count` parts of at least one share each, the last taking the remainder.
        let mut left = quantity;
        let mut since_order = Duration::ZERO;
        for n in 0..count {
            let part = if n + 1 == count {
                left
            } else {
                let most = left - f64::from(count - n - 1);
                (quantity * rng.between(0.15, 0.6)).round().clamp(1.0, most)
            };
            left -= part;
            let delay = match n {
                0 => first_answer(rng),
                // A normal venue's later fills too come within its bound of the order:
                // should IntelliSense measure one of them instead of the first (it can,
                // when two consumers each see a different fill of the order first), no
                // alert depends on it.
                _ if !sketch.slow => next_fill(rng)
                    .min(bounds::VENUE_MAX.saturating_sub(since_order))
                    .max(MIN_GAP),
                _ => next_fill(rng),
            };
            since_order += delay;
            replies.push((
                delay,
                Reply::Fill {
                    quantity: part,
                    price,
                },
            ));
        }
    };
    match sketch.outcome {
        Outcome::Filled(count) => fills(rng, count, quantity, &mut replies),
        Outcome::PartlyFilledThenCancelled(count) => {
            let filled = (quantity * rng.between(0.2, 0.8))
                .round()
                .clamp(f64::from(count), quantity - 1.0);
            fills(rng, count, filled, &mut replies);
            replies.push((
                next_fill(rng),
                Reply::Cancelled {
                    leaves: quantity - filled,
                    reason: REMAINDER_CANCELLED,
                },
            ));
        }
        Outcome::Cancelled => {
            let delay = give_up(rng) + first_answer(rng);
            let reason = CANCEL_REASONS[rng.below(CANCEL_REASONS.len())];
            replies.push((
                delay,
                Reply::Cancelled {
                    leaves: quantity,
                    reason,
                },
            ));
        }
        Outcome::Rejected => {
            let reason = if sketch.risky.is_some() {
                FAT_FINGER
            } else {
                REJECT_REASONS[rng.below(REJECT_REASONS.len())]
            };
            replies.push((first_answer(rng), Reply::Rejected { reason }));
        }
        Outcome::Open => {}
    }
    OrderPlan {
        id,
        symbol: trigger.symbol,
        side: sketch.side,
        quantity,
        price,
        venue: venue.name,
        slow_venue: sketch.slow,
        trigger,
        decision: sketch.decision,
        replies,
    }
}

/// `OrderCancelled`: the order is off the book; `cancelledQuantity` was still open.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderCancelled<'a> {
    #[serde(skip)]
    correlation_id: &'a str,
    order_id: &'a str,
    symbol: &'a str,
    venue: &'a str,
    cancelled_quantity: f64,
    reason: &'a str,
}

impl Event for OrderCancelled<'_> {
    const EVENT_TYPE: &'static str = "OrderCancelled";

    fn correlation_id(&self) -> &str {
        self.correlation_id
    }
}

/// `OrderRejected`: the venue refused the order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderRejected<'a> {
    #[serde(skip)]
    correlation_id: &'a str,
    order_id: &'a str,
    symbol: &'a str,
    venue: &'a str,
    reason: &'a str,
}

impl Event for OrderRejected<'_> {
    const EVENT_TYPE: &'static str = "OrderRejected";

    fn correlation_id(&self) -> &str {
        self.correlation_id
    }
}

/// A step of an order waiting in the heap: due time, then a sequence number so that steps
/// due at the same instant keep the order they were scheduled in.
type Due = Reverse<(Instant, u64, usize, usize)>;

/// One engine thread playing its plan.
struct Player {
    publisher: Publisher,
    published: u64,
    refused: u64,
    /// Nanoseconds per accepted `publish` call.
    latency_ns: hdrhistogram::Histogram<u64>,
    /// The fill id being published (reused).
    fill_id: String,
    /// The publisher was closed: stop.
    closed: bool,
}

impl Player {
    fn new(publisher: Publisher) -> Self {
        Self {
            publisher,
            published: 0,
            refused: 0,
            latency_ns: new_histogram(),
            fill_id: String::with_capacity(48),
            closed: false,
        }
    }

    fn play(mut self, plan: &Plan, started: Instant) -> Self {
        let mut heap: BinaryHeap<Due> = BinaryHeap::new();
        let mut next_start = 0;
        let mut sequence = 0u64;
        let mut schedule = |heap: &mut BinaryHeap<Due>, order: usize, step: usize| {
            let delay = match step {
                0 => plan.orders[order].decision,
                n => match plan.orders[order].replies.get(n - 1) {
                    Some((delay, _)) => *delay,
                    None => return,
                },
            };
            sequence += 1;
            heap.push(Reverse((Instant::now() + delay, sequence, order, step)));
        };
        while !self.closed {
            let now = Instant::now();
            let start_due = plan.starts.get(next_start).map(|(at, _)| started + *at);
            let step_due = heap.peek().map(|Reverse((due, ..))| *due);
            let due = match (start_due, step_due) {
                (None, None) => break,
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(now),
            };
            if due > now {
                thread::sleep(due - now);
                continue;
            }
            if step_due == Some(due) {
                if let Some(Reverse((_, _, order, step))) = heap.pop() {
                    self.publish_step(&plan.orders[order], step);
                    schedule(&mut heap, order, step + 1);
                }
            } else {
                match &plan.starts[next_start].1 {
                    Start::Quote(quote) => self.publish_quote(quote, ""),
                    Start::Order(order) => {
                        let o = &plan.orders[*order];
                        self.publish_quote(&o.trigger, &o.id);
                        schedule(&mut heap, *order, 0);
                    }
                }
                next_start += 1;
            }
        }
        self
    }

    /// Publishes, timing the call.
    fn timed(&mut self, publish: impl FnOnce(&Publisher) -> Result<(), PublishError>) {
        let start = Instant::now();
        let result = publish(&self.publisher);
        let took = start.elapsed().as_nanos() as u64;
        match result {
            Ok(()) => {
                self.published += 1;
                self.latency_ns.saturating_record(took.max(1));
            }
            Err(PublishError::Closed) => self.closed = true,
            Err(_) => self.refused += 1,
        }
    }

    fn publish_quote(&mut self, quote: &Quote, correlation_id: &str) {
        self.timed(|publisher| {
            publisher.on_market_data(&MarketDataUpdate {
                correlation_id,
                symbol: quote.symbol,
                bid: quote.bid,
                ask: quote.ask,
                last: quote.last,
                bid_size: quote.bid_size,
                ask_size: quote.ask_size,
                exchange_ts_ns: wall_clock_ns().saturating_sub(quote.feed_delay_ns),
            })
        });
    }

    /// Step 0 is the order, step n its n-th reply.
    fn publish_step(&mut self, order: &OrderPlan, step: usize) {
        let id = order.id.as_str();
        let Some(n) = step.checked_sub(1) else {
            self.timed(|publisher| {
                publisher.on_order_created(&OrderCreated {
                    correlation_id: id,
                    order_id: id,
                    symbol: order.symbol,
                    quantity: order.quantity,
                    price: order.price,
                    side: order.side,
                })
            });
            return;
        };
        let Some((_, reply)) = order.replies.get(n) else {
            return;
        };
        match reply {
            Reply::Fill { quantity, price } => {
                let mut fill_id = std::mem::take(&mut self.fill_id);
                fill_id.clear();
                let fills = order.replies[..=n]
                    .iter()
                    .filter(|(_, r)| matches!(r, Reply::Fill { .. }))
                    .count();
                let _ = write!(fill_id, "{id}-{fills}");
                self.timed(|publisher| {
                    publisher.on_order_filled(&OrderFilled {
                        correlation_id: id,
                        order_id: id,
                        fill_id: &fill_id,
                        quantity: *quantity,
                        price: *price,
                    })
                });
                self.fill_id = fill_id;
            }
            Reply::Cancelled { leaves, reason } => self.timed(|publisher| {
                publisher.publish_event(&OrderCancelled {
                    correlation_id: id,
                    order_id: id,
                    symbol: order.symbol,
                    venue: order.venue,
                    cancelled_quantity: *leaves,
                    reason,
                })
            }),
            Reply::Rejected { reason } => self.timed(|publisher| {
                publisher.publish_event(&OrderRejected {
                    correlation_id: id,
                    order_id: id,
                    symbol: order.symbol,
                    venue: order.venue,
                    reason,
                })
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evstream_intellisense::IntelliSenseConfig;

    fn spec(seed: u64) -> MarketSpec {
        MarketSpec {
            seed,
            rate: 3000,
            duration: Duration::from_secs(2),
            producers: 2,
        }
    }

    #[test]
    fn the_generator_is_the_published_xoshiro256starstar() {
        // splitmix64's first outputs from 0, as in its reference implementation.
        let mut x = 0;
        assert_eq!(splitmix64(&mut x), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(&mut x), 0x6E78_9E6A_A1B9_65F4);
        // xoshiro256** from the state [1, 2, 3, 4] (reference implementation).
        let mut rng = Rng {
            state: [1, 2, 3, 4],
        };
        assert_eq!(rng.next_u64(), 11_520);
        assert_eq!(rng.next_u64(), 0);
        assert_eq!(rng.next_u64(), 1_509_978_240);
        assert_eq!(rng.next_u64(), 1_215_971_899_390_074_240);
    }

    #[test]
    fn a_seed_gives_one_plan_and_another_seed_another() {
        assert_eq!(Market::plan(&spec(1)), Market::plan(&spec(1)));
        assert_ne!(Market::plan(&spec(1)), Market::plan(&spec(2)));
        // Threads do not share ids.
        let market = Market::plan(&spec(1));
        let mut ids: Vec<&str> = market
            .plans
            .iter()
            .flat_map(|p| p.orders.iter().map(|o| o.id.as_str()))
            .collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }

    #[test]
    fn the_plan_holds_every_kind_of_order_life_and_keeps_the_rate() {
        let market = Market::plan(&spec(1));
        let tally = market.tally();
        assert_eq!(tally.events, 6000, "{tally:?}");
        assert!(tally.orders >= 700, "{tally:?}");
        assert!(tally.market_data >= 4 * tally.orders, "{tally:?}");
        for (what, count) in [
            ("partial fills", tally.partial_fills),
            ("filled", tally.filled),
            ("cancelled", tally.cancelled),
            ("rejected", tally.rejected),
            ("open", tally.open),
            ("slow venue", tally.slow_venue),
        ] {
            assert!(count > 0, "no {what}: {tally:?}");
        }
        assert_eq!(tally.risky, 4, "two per thread: {tally:?}");
    }

    #[test]
    fn fills_add_up_and_ids_are_the_orders() {
        for plan in Market::plan(&spec(7)).plans {
            for order in &plan.orders {
                assert_eq!(order.symbol, order.trigger.symbol);
                assert!(order.quantity >= 1.0 && order.price > 0.0, "{order:?}");
                let filled: f64 = order
                    .replies
                    .iter()
                    .filter_map(|(_, r)| match r {
                        Reply::Fill { quantity, .. } => Some(*quantity),
                        _ => None,
                    })
                    .sum();
                assert!(filled <= order.quantity, "{order:?}");
                match order.replies.last() {
                    Some((_, Reply::Cancelled { leaves, .. })) => {
                        assert_eq!(filled + leaves, order.quantity, "{order:?}");
                    }
                    Some((_, Reply::Fill { .. })) => assert_eq!(filled, order.quantity),
                    Some((_, Reply::Rejected { .. })) | None => assert_eq!(filled, 0.0),
                }
            }
        }
    }

    #[test]
    fn latencies_and_notionals_keep_clear_of_the_alert_thresholds() {
        let defaults = IntelliSenseConfig::default();
        let clear = |value: f64, threshold: f64| (value - threshold).abs() > 0.3 * threshold;
        for seed in 0..20 {
            let market = Market::plan(&MarketSpec { seed, ..spec(seed) });
            let mut slow_fills = 0;
            for plan in &market.plans {
                for order in &plan.orders {
                    let decision_ms = order.decision.as_secs_f64() * 1e3;
                    assert!(clear(decision_ms, defaults.creation_alert_ms), "{order:?}");
                    assert!(decision_ms < defaults.creation_alert_ms);
                    // IntelliSense measures the first fill; every fill keeps clear, in case
                    // it measures a later one (cancels and rejects are not fills).
                    let mut since_order = Duration::ZERO;
                    for (n, (delay, reply)) in order.replies.iter().enumerate() {
                        since_order += *delay;
                        if !matches!(reply, Reply::Fill { .. }) {
                            continue;
                        }
                        let ms = since_order.as_secs_f64() * 1e3;
                        assert!(clear(ms, defaults.fill_alert_ms), "{order:?}");
                        assert!(ms >= 0.2, "{order:?}");
                        assert_eq!(ms > defaults.fill_alert_ms, order.slow_venue, "{order:?}");
                        if n == 0 && order.slow_venue {
                            assert_eq!(order.venue, market.slow.venue);
                            slow_fills += 1;
                        }
                    }
                    // Rounding to whole shares moves a risky order's risk by a thousandth:
                    // its level (above 2 is critical) does not depend on it either.
                    let risk = order.quantity * order.price / defaults.default_notional_limit;
                    assert!(clear(risk, 1.0) && (risk - 2.0).abs() > 0.1, "{order:?}");
                }
            }
            assert!(slow_fills >= 1, "seed {seed}: no latency alert planned");
        }
    }

    #[test]
    fn a_tiny_run_still_plans_an_order_per_thread() {
        let market = Market::plan(&MarketSpec {
            seed: 3,
            rate: 1,
            duration: Duration::from_millis(100),
            producers: 3,
        });
        assert!(market.plans.iter().all(|p| p.orders.len() == 1));
    }
}
