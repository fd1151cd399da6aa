//! The capture stage: [`Publisher`], the handle the trading engine's threads call, and
//! [`Receiver`], the one end that drains the ring (the shipper).
//!
//! `publish` claims a pre-allocated ring slot, copies the event type and correlation id into
//! it, stamps the time (the CPU's counter, `publish/clock.rs`), copies the payload into the slot in
//! binary and commits: the typed events (`on_order_created`, …) in a fixed layout, any
//! `Serialize` value as a record of what the serializer would write (`publish/tape.rs`). The
//! [`Receiver`] writes the JSON when it drains the slot, on the shipper's thread, byte for
//! byte what formatting in the call would have written. So the engine's thread pays for a
//! copy, not for formatting numbers and escaping strings. `publish` never blocks (unless
//! `ring.when_full = "wait"`, and then only for a bounded time), never allocates for payloads
//! up to `ring.slot_bytes`, and never truncates: the size limit applies to the JSON, exactly.
//!
//! The per-producer `sequence` of the envelope is stamped when the event leaves the ring, by
//! the single [`Receiver`], in ring order. Ring order is the order in which events were
//! accepted, so each thread's events keep their order, and because refused events never
//! reach the receiver, sequences are consecutive over accepted events with no gaps.

mod clock;
pub(crate) mod config;
mod events;
mod json;
mod slot;
mod tape;
mod timing;

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge};
use serde::Serialize;

use crate::config::{Config, WhenFull};
use crate::error::{ConfigError, PublishError};

pub use events::{Event, MarketDataUpdate, OrderCreated, OrderFilled, Side};
pub use slot::PayloadKind;
use slot::{Body, EventSlot, InlineStr};
pub use timing::PublishDurations;

/// Longest accepted event type, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 64;
/// Longest accepted correlation id, in bytes.
pub const MAX_CORRELATION_ID_LEN: usize = 128;

thread_local! {
    /// `publish` calls of this thread, for sampling the ones to time.
    static PUBLISH_CALLS: Cell<u32> = const { Cell::new(0) };
}

/// Whether this call is one of the sampled ones.
///
/// Timing is two clock reads (~40 ns); sampling keeps it off most calls (`ring.
/// publish_timing_sample`), and the figure travels in the slot to the drain, so the hot path
/// never touches the metrics registry (which may allocate).
#[inline]
fn sample_timing(mask: Option<u32>) -> bool {
    mask.is_some_and(|mask| {
        PUBLISH_CALLS.with(|calls| {
            let n = calls.get().wrapping_add(1);
            calls.set(n);
            n & mask == 0
        })
    })
}

/// Builds the ring described by `config` and returns its two ends.
///
/// The ring's memory (`capacity × slot_bytes`) is allocated here, once. With
/// `redis.partitions = P`, there are P rings of that size, one per partition of the stream:
/// `publish` puts an event in the ring of its correlation id's partition
/// ([`partition_of`](crate::keys::partition_of)), and each ring's events are numbered on
/// their own (`sequence` counts a producer's events in one partition).
pub fn channel(config: &Config) -> Result<(Publisher, Receiver), ConfigError> {
    config.validate()?;
    let ring = &config.ring;
    let slot_bytes = ring.slot_bytes();
    let count = usize::from(config.redis.partitions.unwrap_or(1));
    let mut producers = Vec::with_capacity(count);
    let mut parts = Vec::with_capacity(count);
    for _ in 0..count {
        let (producer, consumer) =
            evstream_ring::channel(ring.capacity(), || EventSlot::with_capacity(slot_bytes))
                .map_err(|_| ConfigError::Invalid {
                    field: "ring.capacity",
                    value: ring.capacity().to_string(),
                    reason: "must be a power of two of at least 2, e.g. 65536",
                })?;
        producers.push(producer);
        parts.push(Part {
            consumer,
            next_sequence: 1,
        });
    }
    let instance = uuid::Uuid::now_v7();
    let producer_id: Arc<str> = match &config.producer.name {
        Some(name) => format!("{name}:{instance}").into(),
        None => instance.to_string().into(),
    };
    let shared = Arc::new(Shared {
        producer_id: Arc::clone(&producer_id),
        max_event_bytes: ring.max_event_bytes(),
        when_full: ring.when_full(),
        wait_timeout: ring.wait_timeout(),
        refused: RefusalCounters::default(),
        timing_mask: ring.publish_timing_sample().checked_sub(1),
        timings: Mutex::new(timing::histogram()),
        clock: clock::Clock::new(),
    });
    let publisher = Publisher {
        producers: producers.into(),
        shared: Arc::clone(&shared),
    };
    let receiver = Receiver {
        parts,
        first_partition: 0,
        next_part: 0,
        shared,
        slot_bytes,
        spare: Vec::new(),
    };
    Ok((publisher, receiver))
}

/// State shared by every clone of a [`Publisher`] and its [`Receiver`].
#[derive(Debug)]
struct Shared {
    producer_id: Arc<str>,
    max_event_bytes: usize,
    when_full: WhenFull,
    wait_timeout: Duration,
    refused: RefusalCounters,
    /// `ring.publish_timing_sample - 1`, or `None` when no call is timed.
    timing_mask: Option<u32>,
    /// The timed calls' durations, for [`CaptureHealth::publish_duration`]; written by the
    /// drain (one sampled call in `publish_timing_sample`), never by `publish`.
    timings: Mutex<hdrhistogram::Histogram<u64>>,
    /// Stamps events in `publish`; converted to wall-clock time by the drain.
    clock: clock::Clock,
}

/// Refusals by reason. Only touched on the refusal path, never for an accepted event.
#[derive(Debug, Default)]
struct RefusalCounters {
    ring_full: AtomicU64,
    too_large: AtomicU64,
    invalid: AtomicU64,
    serialize: AtomicU64,
    closed: AtomicU64,
}

impl RefusalCounters {
    fn count(&self, error: &PublishError) {
        let counter = match error {
            PublishError::RingFull { .. } => &self.ring_full,
            PublishError::TooLarge { .. } => &self.too_large,
            PublishError::InvalidEventType { .. }
            | PublishError::CorrelationIdTooLong { .. }
            | PublishError::InvalidVersion => &self.invalid,
            PublishError::Serialize { .. } => &self.serialize,
            PublishError::Closed => &self.closed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RefusedCounts {
        RefusedCounts {
            ring_full: self.ring_full.load(Ordering::Relaxed),
            too_large: self.too_large.load(Ordering::Relaxed),
            invalid: self.invalid.load(Ordering::Relaxed),
            serialize: self.serialize.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
        }
    }
}

/// Events refused by `publish`, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RefusedCounts {
    /// The ring was full ([`PublishError::RingFull`]).
    pub ring_full: u64,
    /// The payload exceeded `ring.max_event_bytes` ([`PublishError::TooLarge`]).
    pub too_large: u64,
    /// Invalid event type or correlation id.
    pub invalid: u64,
    /// The payload's `Serialize` failed.
    pub serialize: u64,
    /// The receiver was gone.
    pub closed: u64,
}

impl RefusedCounts {
    /// All refusals.
    pub fn total(&self) -> u64 {
        self.ring_full + self.too_large + self.invalid + self.serialize + self.closed
    }
}

/// A snapshot of the capture stage, for health checks and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaptureHealth {
    /// This process's `producer_id`.
    pub producer_id: String,
    /// Ring capacity in events.
    pub capacity: u64,
    /// Events in the ring, accepted but not yet taken by the shipper.
    pub depth: u64,
    /// Positions claimed in the ring since start (its write cursor).
    pub cursor: u64,
    /// Events accepted since start (an event being written right now is counted already).
    pub published: u64,
    /// Events refused, by reason.
    pub refused: RefusedCounts,
    /// How long the timed `publish` calls took (one in `ring.publish_timing_sample`).
    pub publish_duration: PublishDurations,
}

impl CaptureHealth {
    /// Mirrors the ring and refusal counters into the metrics (see [`crate::telemetry`]).
    pub fn record(&self) {
        gauge!("evstream_ring_depth").set(self.depth as f64);
        gauge!("evstream_ring_capacity").set(self.capacity as f64);
        gauge!("evstream_ring_cursor").set(self.cursor as f64);
        counter!("evstream_events_published_total").absolute(self.published);
        let refused = &self.refused;
        for (reason, n) in [
            ("ring_full", refused.ring_full),
            ("too_large", refused.too_large),
            ("invalid", refused.invalid),
            ("serialize", refused.serialize),
            ("closed", refused.closed),
        ] {
            counter!("evstream_events_refused_total", "reason" => reason).absolute(n);
        }
    }

    /// The health of one ring or, summed, of several (one per partition).
    fn new(shared: &Shared, stats: impl IntoIterator<Item = evstream_ring::Stats>) -> Self {
        let stats = stats
            .into_iter()
            .fold(evstream_ring::Stats::default(), |sum, s| {
                evstream_ring::Stats {
                    capacity: sum.capacity + s.capacity,
                    claimed: sum.claimed + s.claimed,
                    drained: sum.drained + s.drained,
                    abandoned: sum.abandoned + s.abandoned,
                    full: sum.full + s.full,
                }
            });
        Self {
            producer_id: shared.producer_id.to_string(),
            capacity: stats.capacity,
            depth: stats.depth(),
            cursor: stats.claimed,
            published: stats.claimed - stats.abandoned,
            refused: shared.refused.snapshot(),
            publish_duration: timing::durations(&shared.timings),
        }
    }
}

/// Reads a publisher's [`CaptureHealth`] without being a publisher; see
/// [`Publisher::monitor`].
#[derive(Clone)]
pub struct CaptureMonitor {
    rings: Vec<evstream_ring::Monitor<EventSlot>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CaptureMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CaptureMonitor")
            .field(&self.health())
            .finish()
    }
}

impl CaptureMonitor {
    /// Ring occupancy and counters.
    pub fn health(&self) -> CaptureHealth {
        CaptureHealth::new(&self.shared, self.rings.iter().map(|r| r.stats()))
    }
}

/// The handle the trading engine publishes through: cheap to clone, `Send + Sync`.
///
/// ```
/// use evstream::config::Config;
/// use evstream::publish::{channel, OrderCreated, Side};
///
/// let (publisher, mut receiver) = channel(&Config::default())?;
/// publisher.on_order_created(&OrderCreated {
///     correlation_id: "ord-42",
///     order_id: "42",
///     symbol: "AAPL",
///     quantity: 100.0,
///     price: 189.25,
///     side: Side::Buy,
/// })?;
/// publisher.publish("Signal", &serde_json::json!({"name": "momentum"}), "")?;
///
/// let mut batch = Vec::new();
/// receiver.drain_into(&mut batch, 256);
/// assert_eq!(batch.len(), 2);
/// assert_eq!(batch[0].event_type(), "OrderCreated");
/// assert_eq!(batch[0].sequence(), 1);
/// assert_eq!(batch[1].data(), br#"{"name":"momentum"}"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Publisher {
    /// One ring per partition of the stream (one without partitions).
    producers: Box<[evstream_ring::Producer<EventSlot>]>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("producer_id", &self.shared.producer_id)
            .field("health", &self.health())
            .finish()
    }
}

impl Publisher {
    /// Serializes `payload` as JSON straight into a ring slot and hands the event to the
    /// shipper. Returns at once; the event is accepted whole or refused with a typed error.
    ///
    /// `correlation_id` may be empty; it is refused beyond [`MAX_CORRELATION_ID_LEN`] bytes.
    #[inline]
    pub fn publish<T: Serialize + ?Sized>(
        &self,
        event_type: &str,
        payload: &T,
        correlation_id: &str,
    ) -> Result<(), PublishError> {
        self.publish_versioned(event_type, 1, payload, correlation_id)
    }

    /// [`publish`](Self::publish) with the payload's schema version (the envelope's
    /// `version` is `v<version>`; [`publish`](Self::publish) says 1). A version of 0 is
    /// refused.
    ///
    /// ```
    /// # let (publisher, mut receiver) = evstream::publish::channel(&evstream::Config::default())?;
    /// publisher.publish_versioned("OrderCreated", 2, &serde_json::json!({"orderId": "42"}), "ord-42")?;
    /// # let mut batch = Vec::new();
    /// # receiver.drain_into(&mut batch, 1);
    /// # assert_eq!(batch[0].version(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn publish_versioned<T: Serialize + ?Sized>(
        &self,
        event_type: &str,
        version: u32,
        payload: &T,
        correlation_id: &str,
    ) -> Result<(), PublishError> {
        let head = Head {
            event_type,
            version,
            correlation_id,
            body: Body::Tape,
            checked: false,
        };
        self.publish_serialize(head, payload)
    }

    /// Records `payload` into a slot (see [`tape`]) under `head`.
    #[inline]
    fn publish_serialize<T: Serialize + ?Sized>(
        &self,
        head: Head<'_>,
        payload: &T,
    ) -> Result<(), PublishError> {
        let max = self.shared.max_event_bytes;
        self.publish_with(head, |slot| {
            let mut tape = slot.tape();
            let recorder = tape::Recorder::new(&mut tape, max);
            let mut serializer = json::Serializer(recorder);
            let refused = match payload.serialize(&mut serializer) {
                Ok(()) => match serializer.0.finish() {
                    tape::Fit::Fits => return Ok(()),
                    // Near the limit: measure exactly (only such events pay for it).
                    tape::Fit::Unsure => match json::measure(payload) {
                        size if size <= max => return Ok(()),
                        size => PublishError::TooLarge { size, max },
                    },
                },
                Err(json::JsonError::TooLarge) => PublishError::TooLarge {
                    size: json::measure(payload),
                    max,
                },
                Err(json::JsonError::Custom(message)) => PublishError::Serialize {
                    source: serde::ser::Error::custom(*message),
                },
            };
            Err(refused)
        })
    }

    /// Publishes an already-serialized JSON payload, copied byte for byte.
    ///
    /// The bytes are not parsed here (that would cost the hot path); the shipper checks them
    /// and sends a payload that is not valid JSON to the dead letter queue.
    #[inline]
    pub fn publish_raw(
        &self,
        event_type: &str,
        json: &[u8],
        correlation_id: &str,
    ) -> Result<(), PublishError> {
        self.publish_raw_versioned(event_type, 1, json, correlation_id)
    }

    /// [`publish_raw`](Self::publish_raw) with the payload's schema version (see
    /// [`publish_versioned`](Self::publish_versioned)).
    #[inline]
    pub fn publish_raw_versioned(
        &self,
        event_type: &str,
        version: u32,
        json: &[u8],
        correlation_id: &str,
    ) -> Result<(), PublishError> {
        let max = self.shared.max_event_bytes;
        if json.len() > max {
            let error = PublishError::TooLarge {
                size: json.len(),
                max,
            };
            self.shared.refused.count(&error);
            return Err(error);
        }
        let head = Head {
            event_type,
            version,
            correlation_id,
            body: Body::Raw,
            checked: false,
        };
        self.publish_with(head, |slot| {
            slot.data.clear();
            slot.data.extend_from_slice(json);
            Ok(())
        })
    }

    /// Publishes a typed [`Event`] under its own type name and correlation id.
    ///
    /// The event type is checked when this compiles: an `EVENT_TYPE` outside the allowed
    /// characters or a `VERSION` of 0 is a compile error, not a refusal.
    #[inline]
    pub fn publish_event<E: Event>(&self, event: &E) -> Result<(), PublishError> {
        self.publish_serialize(Head::of(event), event)
    }

    /// Integration facade: an order was created. The fastest way to publish one: its fields
    /// are copied into the slot in a fixed binary layout, and the shipper writes the JSON.
    #[inline]
    pub fn on_order_created(&self, order: &OrderCreated<'_>) -> Result<(), PublishError> {
        self.publish_binary(order)
    }

    /// Integration facade: an order was filled (copied in binary, as
    /// [`on_order_created`](Self::on_order_created)).
    #[inline]
    pub fn on_order_filled(&self, fill: &OrderFilled<'_>) -> Result<(), PublishError> {
        self.publish_binary(fill)
    }

    /// Integration facade: the market moved (copied in binary, as
    /// [`on_order_created`](Self::on_order_created)).
    #[inline]
    pub fn on_market_data(&self, update: &MarketDataUpdate<'_>) -> Result<(), PublishError> {
        self.publish_binary(update)
    }

    /// Publishes one of the typed events that have a binary layout of their own.
    #[inline]
    fn publish_binary<'a, E: Event + tape::Binary<'a>>(
        &self,
        event: &E,
    ) -> Result<(), PublishError> {
        let max = self.shared.max_event_bytes;
        if event.json_upper() > max {
            // Near the limit: measure exactly (only such events pay for it).
            let size = json::measure(event);
            if size > max {
                let error = PublishError::TooLarge { size, max };
                self.shared.refused.count(&error);
                return Err(error);
            }
        }
        self.publish_with(Head::of(event), |slot| {
            event.record(&mut slot.tape());
            Ok(())
        })
    }

    /// The `producer_id` stamped on this process's events.
    pub fn producer_id(&self) -> &str {
        &self.shared.producer_id
    }

    /// Ring occupancy and counters.
    pub fn health(&self) -> CaptureHealth {
        CaptureHealth::new(&self.shared, self.producers.iter().map(|p| p.stats()))
    }

    /// A handle that reads [`health`](Self::health) from anywhere (metrics, `/health`) and,
    /// unlike a clone of the publisher, does not keep the ring open.
    pub fn monitor(&self) -> CaptureMonitor {
        CaptureMonitor {
            rings: self.producers.iter().map(|p| p.monitor()).collect(),
            shared: Arc::clone(&self.shared),
        }
    }

    #[inline]
    fn publish_with(
        &self,
        head: Head<'_>,
        write_payload: impl FnOnce(&mut EventSlot) -> Result<(), PublishError>,
    ) -> Result<(), PublishError> {
        let Head {
            event_type,
            version,
            correlation_id,
            body,
            checked,
        } = head;
        let started = sample_timing(self.shared.timing_mask).then(Instant::now);
        let ids = if checked {
            check_correlation_id(correlation_id)
        } else {
            check_ids(event_type, version, correlation_id)
        };
        let result = ids.and_then(|()| {
            let ticks = self.shared.clock.ticks();
            let write = |slot: &mut EventSlot| {
                slot.event_type.set(event_type);
                slot.correlation_id.set(correlation_id);
                slot.ticks = ticks;
                slot.body = body;
                slot.version = version;
                let written = write_payload(slot);
                // Up to here: checks, claim, the payload's copy; only the commit's store is left.
                slot.publish_ns = started.map_or(0, |started| {
                    u32::try_from(started.elapsed().as_nanos()).map_or(u32::MAX, |ns| ns.max(1))
                });
                written
            };
            let producer = match &*self.producers {
                [one] => one,
                all => &all[crate::keys::partition_of(correlation_id, all.len())],
            };
            let published = match self.shared.when_full {
                WhenFull::Refuse => producer.try_publish(write),
                WhenFull::Wait => producer.publish_timeout(write, self.shared.wait_timeout),
            };
            published.map(drop).map_err(|error| match error {
                evstream_ring::PublishError::Full => PublishError::RingFull {
                    capacity: producer.capacity(),
                },
                evstream_ring::PublishError::Closed => PublishError::Closed,
                evstream_ring::PublishError::Rejected(error) => error,
            })
        });
        if let Err(error) = &result {
            self.shared.refused.count(error);
        }
        result
    }
}

/// What an event is, besides its payload.
struct Head<'a> {
    event_type: &'a str,
    version: u32,
    correlation_id: &'a str,
    body: Body,
    /// The type and version were checked at compile time ([`ValidEvent`]).
    checked: bool,
}

impl<'a> Head<'a> {
    /// The head of a typed event, its type and version checked when this compiles.
    #[inline]
    fn of<E: Event>(event: &'a E) -> Self {
        let () = ValidEvent::<E>::CHECKED;
        Self {
            event_type: E::EVENT_TYPE,
            version: E::VERSION,
            correlation_id: event.correlation_id(),
            body: Body::Tape,
            checked: true,
        }
    }
}

/// Checks an [`Event`]'s type and version when the code that publishes it compiles.
struct ValidEvent<E>(std::marker::PhantomData<E>);

impl<E: Event> ValidEvent<E> {
    const CHECKED: () = {
        assert!(E::VERSION > 0, "an Event's VERSION must be at least 1");
        assert!(
            event_type_problem(E::EVENT_TYPE.as_bytes()).is_none(),
            "an Event's EVENT_TYPE must be 1 to 64 of A-Z a-z 0-9 _ . : -"
        );
    };
}

/// Why `event_type` is not a valid event type, if it is not.
const fn event_type_problem(event_type: &[u8]) -> Option<&'static str> {
    if event_type.is_empty() {
        return Some("it is empty");
    }
    if event_type.len() > MAX_EVENT_TYPE_LEN {
        return Some("it is too long");
    }
    let mut at = 0;
    while at < event_type.len() {
        let b = event_type[at];
        if !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')) {
            return Some("it contains a character outside the allowed set");
        }
        at += 1;
    }
    None
}

#[inline]
fn check_ids(event_type: &str, version: u32, correlation_id: &str) -> Result<(), PublishError> {
    if version == 0 {
        return Err(PublishError::InvalidVersion);
    }
    if let Some(reason) = event_type_problem(event_type.as_bytes()) {
        return Err(PublishError::InvalidEventType {
            reason,
            len: event_type.len(),
            max: MAX_EVENT_TYPE_LEN,
        });
    }
    check_correlation_id(correlation_id)
}

#[inline]
fn check_correlation_id(correlation_id: &str) -> Result<(), PublishError> {
    if correlation_id.len() > MAX_CORRELATION_ID_LEN {
        return Err(PublishError::CorrelationIdTooLong {
            len: correlation_id.len(),
            max: MAX_CORRELATION_ID_LEN,
        });
    }
    Ok(())
}

/// Nanoseconds since the Unix epoch, from the wall clock (comparable across machines, unlike
/// a cycle counter). A clock set before 1970 reads as 0.
#[inline]
pub fn wall_clock_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One event taken out of the ring, with its `sequence` stamped.
///
/// Its payload buffer came from the ring slot (the slot got a spare of the same capacity
/// back), so taking it copied no payload bytes. Give drained events back with
/// [`Receiver::recycle`] to reuse their buffers.
pub struct CapturedEvent {
    sequence: u64,
    partition: u16,
    timestamp_ns: u64,
    kind: PayloadKind,
    version: u32,
    event_type: InlineStr<MAX_EVENT_TYPE_LEN>,
    correlation_id: InlineStr<MAX_CORRELATION_ID_LEN>,
    data: Vec<u8>,
}

impl std::fmt::Debug for CapturedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapturedEvent")
            .field("sequence", &self.sequence)
            .field("event_type", &self.event_type())
            .field("correlation_id", &self.correlation_id())
            .field("timestamp_ns", &self.timestamp_ns)
            .field("kind", &self.kind)
            .field("version", &self.version)
            .field("data_len", &self.data.len())
            .finish()
    }
}

impl CapturedEvent {
    /// Rebuilds an event read back from the spill journal. `event_type` and
    /// `correlation_id` must be within their limits (the journal checks).
    pub(crate) fn from_parts(
        sequence: u64,
        timestamp_ns: u64,
        kind: PayloadKind,
        event_type: &str,
        correlation_id: &str,
        data: Vec<u8>,
    ) -> Self {
        let mut event = Self {
            sequence,
            partition: 0,
            timestamp_ns,
            kind,
            version: 1,
            event_type: InlineStr::new(),
            correlation_id: InlineStr::new(),
            data,
        };
        event.event_type.set(event_type);
        event.correlation_id.set(correlation_id);
        event
    }

    /// The same event with schema version `version` (the journal's records carry it).
    pub(crate) fn with_version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// The payload's schema version (the envelope's `version` is `v<N>`).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Per-producer sequence: consecutive over accepted events, starting at 1 (per partition
    /// of a partitioned stream).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The partition of the stream the event goes to (0 without partitions).
    pub fn partition(&self) -> u16 {
        self.partition
    }

    /// Wall-clock nanoseconds since the Unix epoch, stamped by `publish`.
    pub fn timestamp_ns(&self) -> u64 {
        self.timestamp_ns
    }

    /// Whether evstream serialized the payload or the caller handed it over raw.
    pub fn kind(&self) -> PayloadKind {
        self.kind
    }

    /// The event type.
    pub fn event_type(&self) -> &str {
        self.event_type.as_str()
    }

    /// The correlation id (may be empty).
    pub fn correlation_id(&self) -> &str {
        self.correlation_id.as_str()
    }

    /// The JSON payload, byte for byte as serialized.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

/// The draining end of the ring (of every partition's ring); there is one, owned by the
/// shipper.
pub struct Receiver {
    /// One per ring, in partition order from `first_partition`.
    parts: Vec<Part>,
    /// The partition of `parts[0]` (a receiver split per partition has one part).
    first_partition: u16,
    /// The part drained first next time, so no partition starves the others.
    next_part: usize,
    shared: Arc<Shared>,
    slot_bytes: usize,
    /// Payload buffers to swap into slots as events are taken out.
    spare: Vec<Vec<u8>>,
}

/// One ring's draining end and the sequence of its next event.
struct Part {
    consumer: evstream_ring::Consumer<EventSlot>,
    next_sequence: u64,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("producer_id", &self.shared.producer_id)
            .field("partitions", &self.parts.len())
            .field("next_sequence", &self.next_sequence())
            .finish_non_exhaustive()
    }
}

/// Spare buffers kept beyond this many are freed; enough for several in-flight batches.
const MAX_SPARE_BUFFERS: usize = 16 * 1024;

impl Receiver {
    /// Moves up to `max` events from the ring to the end of `out`, stamping their sequences,
    /// and returns how many it moved.
    ///
    /// With several partitions, their rings are drained in turn, starting with a different one
    /// each call; [`CapturedEvent::partition`] tells each event's.
    pub fn drain_into(&mut self, out: &mut Vec<CapturedEvent>, max: usize) -> usize {
        let before = out.len();
        let slot_bytes = self.slot_bytes;
        let count = self.parts.len();
        let start = self.next_part % count;
        self.next_part = self.next_part.wrapping_add(1);
        for index in (0..count).map(|i| (start + i) % count) {
            let room = max - (out.len() - before);
            if room == 0 {
                break;
            }
            let partition = self.first_partition + index as u16;
            let spare = &mut self.spare;
            let part = &mut self.parts[index];
            let next_sequence = &mut part.next_sequence;
            let shared = &self.shared;
            part.consumer.drain(room, |slot| {
                if slot.publish_ns != 0 {
                    metrics::histogram!("evstream_publish_duration_seconds")
                        .record(f64::from(slot.publish_ns) * 1e-9);
                    timing::record(&shared.timings, slot.publish_ns);
                }
                let mut data = spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(slot_bytes));
                let kind = match slot.body {
                    // The JSON is written here, on the shipper's thread, not in `publish`.
                    Body::InlineTape | Body::Tape => {
                        data.clear();
                        match tape::replay(slot.tape_bytes(), &mut data) {
                            Ok(()) => PayloadKind::Json,
                            // Never expected (a bug): let the shipper's JSON check send the
                            // event to the dead letters, where it can be seen, not lost.
                            Err(tape::Corrupt) => PayloadKind::Raw,
                        }
                    }
                    Body::Raw => {
                        std::mem::swap(&mut data, &mut slot.data);
                        PayloadKind::Raw
                    }
                };
                out.push(CapturedEvent {
                    sequence: *next_sequence,
                    partition,
                    // Ticks for now; converted below, once every event of the call is in.
                    timestamp_ns: slot.ticks,
                    kind,
                    version: slot.version,
                    event_type: slot.event_type,
                    correlation_id: slot.correlation_id,
                    data,
                });
                *next_sequence += 1;
            });
        }
        let drained = &mut out[before..];
        if !drained.is_empty() {
            // Read after the events were published: each one's ticks are before the anchor.
            let clock = &self.shared.clock;
            let anchor = clock.anchor();
            for event in drained {
                event.timestamp_ns = clock.wall_ns(anchor, event.timestamp_ns);
            }
        }
        out.len() - before
    }

    /// One receiver per partition, in partition order: the shipper's lanes.
    pub(crate) fn split(self) -> Vec<Receiver> {
        let Self {
            parts,
            first_partition,
            shared,
            slot_bytes,
            ..
        } = self;
        parts
            .into_iter()
            .enumerate()
            .map(|(index, part)| Receiver {
                parts: vec![part],
                first_partition: first_partition + index as u16,
                next_part: 0,
                shared: Arc::clone(&shared),
                slot_bytes,
                spare: Vec::new(),
            })
            .collect()
    }

    /// Takes back drained events' buffers for reuse. Buffers that grew for a large event are
    /// shrunk back to `ring.slot_bytes`, so the ring's memory stays bounded.
    pub fn recycle(&mut self, events: impl IntoIterator<Item = CapturedEvent>) {
        for event in events {
            if self.spare.len() >= MAX_SPARE_BUFFERS {
                break;
            }
            let mut data = event.data;
            data.clear();
            if data.capacity() > self.slot_bytes {
                data.shrink_to(self.slot_bytes);
            }
            self.spare.push(data);
        }
    }

    /// Refuses further events: `publish` returns [`PublishError::Closed`] from now on, while
    /// what was accepted before can still be drained.
    ///
    /// The cut is clean: a `publish` racing this either claimed its slot before (it returns
    /// Ok, and a drain until [`is_drained`](Self::is_drained) gets its event) or returns
    /// `Closed`. So a final drain misses no accepted event.
    pub fn close(&self) {
        for part in &self.parts {
            part.consumer.close();
        }
    }

    /// Whether the receiver is closed and every event accepted before the close has been
    /// drained: nothing can arrive any more. An event still being written when the receiver
    /// closed keeps this false until its `publish` commits it (or refuses it).
    pub fn is_drained(&self) -> bool {
        self.parts.iter().all(|p| p.consumer.is_drained())
    }

    /// Whether every [`Publisher`] is gone and the ring is empty: nothing more will arrive.
    pub fn is_finished(&self) -> bool {
        self.parts
            .iter()
            .all(|p| p.consumer.is_disconnected() && !p.consumer.has_ready())
    }

    /// Whether an event (or a skipped slot) is ready to drain.
    pub fn has_ready(&self) -> bool {
        self.parts.iter().any(|p| p.consumer.has_ready())
    }

    /// The sequence the next drained event will get (of the first partition's ring).
    pub fn next_sequence(&self) -> u64 {
        self.parts.first().map_or(1, |p| p.next_sequence)
    }

    /// The partition of this receiver's first ring (0 without partitions).
    pub fn partition(&self) -> u16 {
        self.first_partition
    }

    /// The `producer_id` of the events in this ring.
    pub fn producer_id(&self) -> &str {
        &self.shared.producer_id
    }

    /// Ring occupancy and counters.
    pub fn health(&self) -> CaptureHealth {
        CaptureHealth::new(&self.shared, self.parts.iter().map(|p| p.consumer.stats()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RingConfig;

    fn small(capacity: usize, slot_bytes: usize, max: usize) -> (Publisher, Receiver) {
        let config = Config {
            ring: RingConfig::default()
                .set_capacity(capacity)
                .set_slot_bytes(slot_bytes)
                .set_max_event_bytes(max),
            ..Config::default()
        };
        channel(&config).unwrap()
    }

    fn drain(receiver: &mut Receiver) -> Vec<CapturedEvent> {
        let mut out = Vec::new();
        receiver.drain_into(&mut out, usize::MAX);
        out
    }

    #[test]
    fn partitions_have_rings_of_their_own_numbered_on_their_own() {
        let mut config = Config::default();
        config.redis.partitions = Some(3);
        let (publisher, mut receiver) = channel(&config).unwrap();
        for n in 0..300u64 {
            let id = format!("order-{}", n % 30);
            publisher.publish_raw("Tick", b"{}", &id).unwrap();
        }
        publisher.publish_raw("Tick", b"{}", "").unwrap();
        assert_eq!(publisher.health().published, 301);
        assert_eq!(publisher.health().capacity, 3 * 65_536);
        let events = drain(&mut receiver);
        assert_eq!(events.len(), 301);
        let mut next = [1u64; 3];
        for event in &events {
            let partition = usize::from(event.partition());
            assert_eq!(
                partition,
                crate::keys::partition_of(event.correlation_id(), 3),
                "{event:?}"
            );
            // Each partition's events are numbered 1, 2, 3, … in the order drained.
            assert_eq!(event.sequence(), next[partition], "{event:?}");
            next[partition] += 1;
        }
        assert!(
            next.iter().all(|&n| n > 1),
            "every partition got events: {next:?}"
        );
        // The shipper's lanes: one receiver per partition.
        let lanes = receiver.split();
        assert_eq!(
            lanes.iter().map(Receiver::partition).collect::<Vec<_>>(),
            [0, 1, 2]
        );
    }

    #[test]
    fn accepted_events_get_consecutive_sequences_and_exact_bytes() {
        let (publisher, mut receiver) = small(8, 64, 1024);
        publisher
            .publish("A", &serde_json::json!({"x": 1}), "c1")
            .unwrap();
        publisher.publish("B", &"x".repeat(2000), "c2").unwrap_err();
        publisher.publish_raw("C", b"not json", "c3").unwrap();
        let events = drain(&mut receiver);
        let seen: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.sequence(),
                    e.event_type(),
                    e.correlation_id(),
                    e.data(),
                    e.kind(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, "A", "c1", &br#"{"x":1}"#[..], PayloadKind::Json),
                (2, "C", "c3", &b"not json"[..], PayloadKind::Raw),
            ]
        );
        assert!(
            events[0].timestamp_ns() > 1_600_000_000_000_000_000,
            "wall clock ns"
        );
    }

    #[test]
    fn oversize_is_refused_with_both_sizes_never_truncated() {
        let (publisher, mut receiver) = small(8, 16, 100);
        let payload = "y".repeat(150);
        match publisher.publish("Big", &payload, "") {
            Err(PublishError::TooLarge { size, max }) => assert_eq!((size, max), (152, 100)),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let error = publisher.publish_raw("Big", &[b'1'; 101], "").unwrap_err();
        assert!(error.to_string().contains("101 bytes"), "{error}");
        assert!(error.to_string().contains("100 bytes"), "{error}");
        // Exactly at the limit is accepted whole, growing the 16-byte slot buffer.
        let at_limit = "z".repeat(98);
        publisher.publish("Edge", &at_limit, "").unwrap();
        let events = drain(&mut receiver);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data().len(), 100);
        assert_eq!(publisher.health().refused.too_large, 2);
        receiver.recycle(events);
        assert!(receiver.spare.iter().all(|b| b.capacity() <= 16));
    }

    /// The limit applies to the JSON the drain writes, exactly, on every path: typed, any
    /// `Serialize`, raw.
    #[test]
    fn the_size_limit_is_the_json_length_exactly_on_every_path() {
        let (publisher, mut receiver) = small(8, 64, 100);
        let order = |order_id| OrderCreated {
            correlation_id: "c",
            order_id,
            symbol: "AAPL",
            quantity: 1.5,
            price: 2.0,
            side: Side::Sell,
        };
        // {"orderId":"…","symbol":"AAPL","quantity":1.5,"price":2.0,"side":"SELL"} is 71
        // bytes plus the id: an id of 29 makes exactly 100.
        let at_limit = "i".repeat(29);
        let past_limit = "i".repeat(30);
        assert_eq!(serde_json::to_vec(&order(&at_limit)).unwrap().len(), 100);
        publisher.on_order_created(&order(&at_limit)).unwrap();
        publisher.publish_event(&order(&at_limit)).unwrap();
        for refused in [
            publisher.on_order_created(&order(&past_limit)),
            publisher.publish_event(&order(&past_limit)),
        ] {
            assert!(
                matches!(
                    refused,
                    Err(PublishError::TooLarge {
                        size: 101,
                        max: 100
                    })
                ),
                "{refused:?}"
            );
        }
        // Escapes count: a quote is two bytes of JSON.
        let quoted = format!("{}\"", "i".repeat(27));
        assert!(matches!(
            publisher.on_order_created(&order(&quoted)),
            Ok(())
        ));
        let events = drain(&mut receiver);
        assert_eq!(events.len(), 3);
        for event in &events {
            assert_eq!(event.kind(), PayloadKind::Json);
            assert_eq!(event.data().len(), 100, "{event:?}");
        }
        assert_eq!(publisher.health().refused.too_large, 2);
    }

    #[test]
    fn ids_beyond_their_limits_are_refused() {
        let (publisher, _receiver) = small(8, 64, 1024);
        let long_type = "T".repeat(MAX_EVENT_TYPE_LEN + 1);
        assert!(matches!(
            publisher.publish(&long_type, &1, ""),
            Err(PublishError::InvalidEventType { len: 65, .. })
        ));
        assert!(matches!(
            publisher.publish("", &1, ""),
            Err(PublishError::InvalidEventType { len: 0, .. })
        ));
        assert!(matches!(
            publisher.publish("has space", &1, ""),
            Err(PublishError::InvalidEventType { .. })
        ));
        let long_id = "c".repeat(MAX_CORRELATION_ID_LEN + 1);
        assert!(matches!(
            publisher.publish("Ok", &1, &long_id),
            Err(PublishError::CorrelationIdTooLong { len: 129, max: 128 })
        ));
        let exact_id = "c".repeat(MAX_CORRELATION_ID_LEN);
        publisher.publish("Ok", &1, &exact_id).unwrap();
        assert_eq!(publisher.health().refused.invalid, 4);
        assert_eq!(publisher.health().published, 1);
    }

    #[test]
    fn full_ring_is_refused_and_counted_then_accepts_again() {
        let (publisher, mut receiver) = small(4, 64, 1024);
        for i in 0..4 {
            publisher.publish("E", &i, "").unwrap();
        }
        let error = publisher.publish("E", &4, "").unwrap_err();
        assert!(matches!(error, PublishError::RingFull { capacity: 4 }));
        assert!(error.is_transient());
        let health = publisher.health();
        assert_eq!(
            (health.depth, health.published, health.refused.ring_full),
            (4, 4, 1)
        );
        assert_eq!(drain(&mut receiver).len(), 4);
        publisher.publish("E", &5, "").unwrap();
        let events = drain(&mut receiver);
        assert_eq!(
            events[0].sequence(),
            5,
            "a refused event takes no sequence number"
        );
    }

    #[test]
    fn wait_policy_waits_then_refuses() {
        let config = Config {
            ring: RingConfig::default()
                .set_capacity(2)
                .set_slot_bytes(64)
                .set_when_full(WhenFull::Wait, Duration::from_millis(5)),
            ..Config::default()
        };
        let (publisher, _receiver) = channel(&config).unwrap();
        publisher.publish("E", &1, "").unwrap();
        publisher.publish("E", &2, "").unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(
            publisher.publish("E", &3, ""),
            Err(PublishError::RingFull { .. })
        ));
        assert!(started.elapsed() >= Duration::from_millis(5));
    }

    #[test]
    fn failing_serialize_is_refused_and_does_not_stall() {
        struct Broken;
        impl Serialize for Broken {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("broken"))
            }
        }
        let (publisher, mut receiver) = small(4, 64, 1024);
        assert!(matches!(
            publisher.publish("E", &Broken, ""),
            Err(PublishError::Serialize { .. })
        ));
        publisher.publish("E", &1, "").unwrap();
        let events = drain(&mut receiver);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].sequence(), 1);
        assert_eq!(publisher.health().refused.serialize, 1);
    }

    #[test]
    fn closed_after_receiver_dropped_and_finished_after_publishers_dropped() {
        let (publisher, receiver) = small(4, 64, 1024);
        drop(receiver);
        assert!(matches!(
            publisher.publish("E", &1, ""),
            Err(PublishError::Closed)
        ));

        let (publisher, mut receiver) = small(4, 64, 1024);
        publisher.publish("E", &1, "").unwrap();
        drop(publisher);
        assert!(!receiver.is_finished(), "one event still in the ring");
        assert_eq!(drain(&mut receiver).len(), 1);
        assert!(receiver.is_finished());
    }

    #[test]
    fn a_closed_receiver_refuses_and_is_drained_once_the_accepted_events_are_taken() {
        let (publisher, mut receiver) = small(4, 64, 1024);
        publisher.publish("E", &1, "").unwrap();
        receiver.close();
        assert!(matches!(
            publisher.publish("E", &2, ""),
            Err(PublishError::Closed)
        ));
        assert!(!receiver.is_drained(), "one accepted event not drained yet");
        assert_eq!(drain(&mut receiver).len(), 1);
        assert!(receiver.is_drained());
    }

    #[test]
    fn producer_id_is_a_fresh_uuid_v7_per_instance_prefixed_by_the_configured_name() {
        let (a, _ra) = small(4, 64, 1024);
        let (b, _rb) = small(4, 64, 1024);
        assert_ne!(a.producer_id(), b.producer_id());
        let parsed = uuid::Uuid::parse_str(a.producer_id()).unwrap();
        assert_eq!(parsed.get_version_num(), 7);

        let mut config = Config::default();
        config.ring = config.ring.set_capacity(4);
        config.producer.name = Some("engine-1".into());
        let (p, r) = channel(&config).unwrap();
        assert_eq!(p.producer_id(), r.producer_id());
        let (name, instance) = p.producer_id().split_once(':').unwrap();
        assert_eq!(name, "engine-1");
        assert_eq!(
            uuid::Uuid::parse_str(instance).unwrap().get_version_num(),
            7
        );
        let (again, _r) = channel(&config).unwrap();
        assert_ne!(
            again.producer_id(),
            p.producer_id(),
            "a restart is a new instance"
        );
    }
}
