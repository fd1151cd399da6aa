//! The C ABI of evstream: a C or C++ trading engine publishes on its hot path through the same
//! ring, shipper and guarantees as a Rust one. The header is `include/evstream.h` (generated
//! from this file by cbindgen), the C++ wrapper `include/evstream.hpp`, the guide
//! `docs/cpp.md`.
//!
//! Rules every function keeps:
//! - **No unwinding across the boundary**: each body runs under `catch_unwind`; a panic
//!   becomes `EVSTREAM_PANIC`.
//! - **Pointers are checked** before use: a null handle, string or struct is refused with
//!   `EVSTREAM_NULL_ARGUMENT`; a handle carries a tag checked on every call, so a destroyed or
//!   foreign pointer is refused as long as its memory was not reused (`EVSTREAM_BAD_HANDLE`).
//!   A dangling or misaligned pointer cannot be detected in general: the caller's part of the
//!   contract.
//! - **Every error has a code and a message**: the code is returned, the message of the
//!   calling thread's last failure is copied out by [`evstream_last_error`], without
//!   allocating.
//! - **Thread safety**: every function except [`evstream_destroy`] may be called on one
//!   handle from any number of threads at once.
//! - **The publish functions** keep the Rust path's guarantees: they never block, never
//!   allocate for events up to `ring.slot_bytes`, never truncate.
//!
//! `unsafe` lives in two crates only: the ring (its slots) and this one, where a C caller's
//! raw pointers must be read; every other evstream crate forbids it. Each `unsafe` block here
//! states the caller contract it relies on (`// SAFETY:`).
#![deny(missing_docs)]
#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{c_char, CStr};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::Duration;

use evstream::config::{Config, RingConfig};
use evstream::exporter::{Exporter, ExporterOptions, Sources};
use evstream::publish::{self, MarketDataUpdate, OrderCreated, OrderFilled, Publisher, Side};
use evstream::ship::{self, BreakerState, ShipperHandle, ShipperMonitor};
use evstream::{PublishError, ShipError};

/// A status code; `EVSTREAM_OK` is 0, every failure is positive.
pub type evstream_status = i32;

/// Success.
pub const EVSTREAM_OK: evstream_status = 0;
/// The ring is full: the shipper is behind or Redis is away and no journal takes the excess.
/// The event was not accepted; retry later or count it.
pub const EVSTREAM_FULL: evstream_status = 1;
/// The payload exceeds `ring.max_event_bytes`; refused, never truncated.
pub const EVSTREAM_TOO_LARGE: evstream_status = 2;
/// An invalid argument: event type, correlation id, a string that is not UTF-8, an enum value
/// out of range.
pub const EVSTREAM_INVALID: evstream_status = 3;
/// The handle was shut down; nothing is accepted any more.
pub const EVSTREAM_CLOSED: evstream_status = 4;
/// A required pointer was null.
pub const EVSTREAM_NULL_ARGUMENT: evstream_status = 5;
/// The handle is not a live evstream handle (destroyed, or not from `evstream_create*`).
pub const EVSTREAM_BAD_HANDLE: evstream_status = 6;
/// The configuration (file, URL or options) is invalid.
pub const EVSTREAM_CONFIG: evstream_status = 7;
/// The shipper could not start, or events were left undelivered at shutdown.
pub const EVSTREAM_SHIPPER: evstream_status = 8;
/// A bug in evstream (a panic, caught at the boundary).
pub const EVSTREAM_PANIC: evstream_status = 9;

/// A string as pointer and length (UTF-8, not NUL-terminated): a `std::string_view`.
/// `ptr` may be null only when `len` is 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct evstream_str {
    /// First byte.
    pub ptr: *const c_char,
    /// Length in bytes.
    pub len: usize,
}

/// Order side.
pub type evstream_side = i32;
/// Buy.
pub const EVSTREAM_SIDE_BUY: evstream_side = 0;
/// Sell.
pub const EVSTREAM_SIDE_SELL: evstream_side = 1;

/// An `OrderCreated` event.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct evstream_order_created {
    /// Shared by every event of the order's lifecycle.
    pub correlation_id: evstream_str,
    /// The order id.
    pub order_id: evstream_str,
    /// Instrument symbol.
    pub symbol: evstream_str,
    /// Quantity.
    pub quantity: f64,
    /// Limit price.
    pub price: f64,
    /// `EVSTREAM_SIDE_BUY` or `EVSTREAM_SIDE_SELL`.
    pub side: evstream_side,
}

/// An `OrderFilled` event.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct evstream_order_filled {
    /// The order's correlation id.
    pub correlation_id: evstream_str,
    /// The order id.
    pub order_id: evstream_str,
    /// The fill id.
    pub fill_id: evstream_str,
    /// Filled quantity.
    pub quantity: f64,
    /// Fill price.
    pub price: f64,
}

/// A `MarketDataUpdate` event: top of book.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct evstream_market_data {
    /// A correlation id (e.g. of the order this update triggers), or empty.
    pub correlation_id: evstream_str,
    /// Instrument symbol.
    pub symbol: evstream_str,
    /// Best bid.
    pub bid: f64,
    /// Best ask.
    pub ask: f64,
    /// Last trade price.
    pub last: f64,
    /// Quantity at the best bid.
    pub bid_size: f64,
    /// Quantity at the best ask.
    pub ask_size: f64,
    /// Exchange time of the update, nanoseconds since the Unix epoch.
    pub exchange_ts_ns: u64,
}

/// Options of [`evstream_create`]; zero or null fields take evstream's defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct evstream_options {
    /// Stream key (NUL-terminated); null: `events`.
    pub stream: *const c_char,
    /// Ring slots, a power of two; 0: 65,536.
    pub ring_capacity: u32,
    /// Bytes pre-allocated per slot; 0: 1,024.
    pub slot_bytes: u32,
    /// Largest accepted payload; 0: 65,536.
    pub max_event_bytes: u32,
    /// Directory of the spill journal (NUL-terminated); null: no journal.
    pub journal_dir: *const c_char,
    /// Readable prefix of the producer id (NUL-terminated); null: none.
    pub producer_name: *const c_char,
}

/// A snapshot of the capture ring and the shipper.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct evstream_health {
    /// Ring slots.
    pub ring_capacity: u64,
    /// Events waiting in the ring.
    pub ring_depth: u64,
    /// Events accepted by publish.
    pub published: u64,
    /// Events refused by publish, all reasons.
    pub refused: u64,
    /// Of which because the ring was full.
    pub refused_full: u64,
    /// Events appended to the stream.
    pub shipped: u64,
    /// Events sent to the dead letter stream.
    pub dead_lettered: u64,
    /// Events waiting in the spill journal.
    pub journal_events: u64,
    /// 1 when the shipper's last Redis call succeeded.
    pub redis_connected: u8,
    /// Circuit breaker: 0 closed, 1 half-open, 2 open.
    pub breaker_state: u8,
    /// 1 when the journal's disk budget is used up.
    pub journal_full: u8,
    /// 1 once the handle was shut down.
    pub shut_down: u8,
}

/// Every figure of the capture ring and the shipper that `/metrics` shows, for an engine with
/// a metrics system of its own. Read with [`evstream_metrics_snapshot`]. Fields may be added
/// at the end in later versions, never reordered: the snapshot writes only the `out_size`
/// bytes the caller's header knows.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct evstream_metrics {
    /// Ring slots (all partitions).
    pub ring_capacity: u64,
    /// Events waiting in the ring for the shipper.
    pub ring_depth: u64,
    /// Positions claimed in the ring since start.
    pub ring_cursor: u64,
    /// Events accepted by publish.
    pub published: u64,
    /// Events refused because the ring was full.
    pub refused_ring_full: u64,
    /// Events refused as larger than `ring.max_event_bytes`.
    pub refused_too_large: u64,
    /// Events refused for an invalid event type, correlation id or version.
    pub refused_invalid: u64,
    /// Events refused after shutdown.
    pub refused_closed: u64,
    /// Events appended to the stream.
    pub shipped: u64,
    /// Events of retried batches found already appended and skipped (duplicates prevented).
    pub duplicates_prevented: u64,
    /// Batches confirmed.
    pub batches_ok: u64,
    /// Batch attempts that failed (and were retried).
    pub batches_failed: u64,
    /// Batches sent and not answered yet.
    pub batches_in_flight: u64,
    /// Events taken from the ring and not confirmed yet.
    pub unconfirmed_events: u64,
    /// Events sent to the dead letter stream by the shipper.
    pub dead_lettered: u64,
    /// Events written to the spill journal since start.
    pub spilled: u64,
    /// Events waiting in the spill journal.
    pub journal_events: u64,
    /// Bytes of the spill journal.
    pub journal_bytes: u64,
    /// Events lost to torn or corrupt journal records.
    pub journal_lost: u64,
    /// Journals of earlier processes not replayed (see `docs/operations.md`).
    pub journals_refused: u64,
    /// `publish` calls timed (one in `ring.publish_timing_sample`) since the handle was
    /// created; the percentiles below are over all of them (for a recent window, scrape
    /// `/metrics`: its histogram's rate over time).
    pub publish_timed: u64,
    /// Median duration of the timed calls, in nanoseconds.
    pub publish_p50_ns: u64,
    /// 99th percentile, in nanoseconds.
    pub publish_p99_ns: u64,
    /// 99.9th percentile, in nanoseconds.
    pub publish_p999_ns: u64,
    /// Longest timed call, in nanoseconds.
    pub publish_max_ns: u64,
    /// 1 when the shipper's last Redis call succeeded.
    pub redis_connected: u8,
    /// Circuit breaker: 0 closed, 1 half-open, 2 open.
    pub breaker_state: u8,
    /// 1 when the journal's disk budget is used up.
    pub journal_full: u8,
    /// 1 once the handle was shut down.
    pub shut_down: u8,
}

/// Options of [`evstream_serve_metrics`]; zero or null fields take the defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct evstream_metrics_options {
    /// Address to bind, `host:port` (NUL-terminated); null: `127.0.0.1:9464`, or a free
    /// loopback port when that one is taken. Port 0 picks a free port.
    pub addr: *const c_char,
    /// 1 to allow an address that is not loopback (reachable from the network); otherwise
    /// such an address is refused. Think of `token_file` then.
    pub public: u8,
    /// A file holding a bearer token (NUL-terminated path; at least 16 characters): every
    /// request then needs `Authorization: Bearer <token>`. Null: no token.
    pub token_file: *const c_char,
}

/// What a shutdown achieved.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct evstream_shutdown_report {
    /// Events appended to the stream over the handle's life.
    pub shipped: u64,
    /// Events sent to the dead letter stream.
    pub dead_lettered: u64,
    /// Events left in the spill journal for the next start to replay.
    pub journaled: u64,
    /// Events neither delivered nor journaled: lost.
    pub undelivered: u64,
}

/// A publisher and its shipper. Opaque to C. `tag` comes first (`repr(C)`), so that a
/// call reads only those 8 bytes of a pointer before it knows it is a live handle.
#[derive(Debug)]
#[repr(C)]
pub struct evstream_handle {
    tag: u64,
    publisher: Publisher,
    shipper: Mutex<Option<ShipperHandle>>,
    /// The shipper's figures, readable after its shutdown too.
    shipper_monitor: ShipperMonitor,
    last_report: Mutex<Option<ship::ShutdownReport>>,
    /// `/metrics` and `/health`, once `evstream_serve_metrics` started them.
    exporter: Mutex<Option<Exporter>>,
}

/// The address of the process's `/metrics`, while a handle serves it.
static SERVING: Mutex<Option<std::net::SocketAddr>> = Mutex::new(None);

/// Marks a live handle; cleared by `evstream_destroy`.
const LIVE: u64 = 0x6576_7374_7265_616d; // "evstream"

// Every function but destroy may be called on one handle from many threads at once.
const _: () = {
    const fn shared_between_threads<T: Send + Sync>() {}
    shared_between_threads::<evstream_handle>();
};

thread_local! {
    /// The message of this thread's last failure, NUL-terminated, written without allocating.
    static LAST_ERROR: RefCell<([u8; 512], usize)> = const { RefCell::new(([0; 512], 0)) };
}

/// Records `message` as this thread's last error and returns `code`.
fn fail(code: evstream_status, message: std::fmt::Arguments<'_>) -> evstream_status {
    LAST_ERROR.with(|cell| {
        let (buffer, len) = &mut *cell.borrow_mut();
        let capacity = buffer.len() - 1;
        let mut cursor = std::io::Cursor::new(&mut buffer[..capacity]);
        // A message longer than the buffer is cut at its end; the code says what happened.
        let _ = cursor.write_fmt(message);
        *len = usize::try_from(cursor.position()).unwrap_or(capacity);
        buffer[*len] = 0;
    });
    code
}

/// Runs `body` with panics caught.
fn guarded(body: impl FnOnce() -> evstream_status) -> evstream_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(status) => status,
        Err(_) => fail(
            EVSTREAM_PANIC,
            format_args!("evstream panicked (a bug; please report it); the call had no effect"),
        ),
    }
}

/// Copies the message of the calling thread's last failure into `buffer` (NUL-terminated,
/// cut to `capacity - 1` bytes) and returns the message's full length. With a null `buffer`
/// or `capacity` 0 it only returns the length. Empty if no call failed on this thread yet.
///
/// # Safety
/// `buffer` must be null or point to `capacity` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn evstream_last_error(buffer: *mut c_char, capacity: usize) -> usize {
    LAST_ERROR.with(|cell| {
        let (message, len) = &*cell.borrow();
        // SAFETY: the caller guarantees `buffer` is null or has `capacity` writable bytes.
        unsafe { copy_out(&message[..*len], buffer, capacity) };
        *len
    })
}

/// A static description of a status code (never null).
#[no_mangle]
pub extern "C" fn evstream_status_name(status: evstream_status) -> *const c_char {
    let name: &'static CStr = match status {
        EVSTREAM_OK => c"ok",
        EVSTREAM_FULL => c"ring full",
        EVSTREAM_TOO_LARGE => c"payload too large",
        EVSTREAM_INVALID => c"invalid argument",
        EVSTREAM_CLOSED => c"closed",
        EVSTREAM_NULL_ARGUMENT => c"null argument",
        EVSTREAM_BAD_HANDLE => c"not a live evstream handle",
        EVSTREAM_CONFIG => c"invalid configuration",
        EVSTREAM_SHIPPER => c"shipper failure",
        EVSTREAM_PANIC => c"internal error (panic)",
        _ => c"unknown status",
    };
    name.as_ptr()
}

/// Creates a publisher and starts its shipper from a TOML configuration file (the format of
/// `docs/configuration.md`; NUL-terminated path). On failure returns null with `*status`
/// (if `status` is not null) set and the message in [`evstream_last_error`].
///
/// # Safety
/// `path` must be null or a NUL-terminated string; `status` null or writable.
#[no_mangle]
pub unsafe extern "C" fn evstream_create_from_file(
    path: *const c_char,
    status: *mut evstream_status,
) -> *mut evstream_handle {
    let mut handle = std::ptr::null_mut();
    let code = guarded(|| {
        // SAFETY: the caller guarantees a NUL-terminated string or null.
        let path = match unsafe { c_string(path, "path") } {
            Ok(Some(path)) => path,
            Ok(None) => return fail(EVSTREAM_NULL_ARGUMENT, format_args!("path is null")),
            Err(code) => return code,
        };
        match Config::from_file(std::path::Path::new(path)) {
            Ok(config) => start(config, &mut handle),
            Err(error) => fail(EVSTREAM_CONFIG, format_args!("{error}")),
        }
    });
    // SAFETY: the caller guarantees `status` is null or writable.
    unsafe { set_status(status, code) };
    handle
}

/// Creates a publisher and starts its shipper for `redis_url` (NUL-terminated,
/// `redis://[user:password@]host:port[/db]`) with `options` (null: all defaults). On failure
/// returns null with `*status` set and the message in [`evstream_last_error`].
///
/// # Safety
/// `redis_url` must be null or NUL-terminated; `options` null or a valid struct whose string
/// fields are null or NUL-terminated; `status` null or writable.
#[no_mangle]
pub unsafe extern "C" fn evstream_create(
    redis_url: *const c_char,
    options: *const evstream_options,
    status: *mut evstream_status,
) -> *mut evstream_handle {
    let mut handle = std::ptr::null_mut();
    let code = guarded(|| {
        // SAFETY: the caller guarantees the pointers' validity (see above).
        match unsafe { config_from(redis_url, options) } {
            Ok(config) => start(config, &mut handle),
            Err(code) => code,
        }
    });
    // SAFETY: the caller guarantees `status` is null or writable.
    unsafe { set_status(status, code) };
    handle
}

/// # Safety
/// As [`evstream_create`].
unsafe fn config_from(
    redis_url: *const c_char,
    options: *const evstream_options,
) -> Result<Config, evstream_status> {
    let mut config = Config::default();
    // SAFETY: the caller guarantees a NUL-terminated string or null.
    match unsafe { c_string(redis_url, "redis_url") }? {
        Some(url) => url.clone_into(&mut config.redis.url),
        None => {
            return Err(fail(
                EVSTREAM_NULL_ARGUMENT,
                format_args!("redis_url is null"),
            ))
        }
    }
    // SAFETY: the caller guarantees `options` is null or valid.
    if let Some(options) = unsafe { options.as_ref() } {
        // SAFETY: the caller guarantees the string fields are null or NUL-terminated.
        let (stream, journal, name) = unsafe {
            (
                c_string(options.stream, "options.stream")?,
                c_string(options.journal_dir, "options.journal_dir")?,
                c_string(options.producer_name, "options.producer_name")?,
            )
        };
        if let Some(stream) = stream {
            stream.clone_into(&mut config.redis.stream);
        }
        config.ship.journal_dir = journal.map(std::path::PathBuf::from);
        config.producer.name = name.map(str::to_owned);
        let mut ring = RingConfig::default();
        if options.ring_capacity > 0 {
            ring = ring.set_capacity(options.ring_capacity as usize);
        }
        if options.slot_bytes > 0 {
            ring = ring.set_slot_bytes(options.slot_bytes as usize);
        }
        if options.max_event_bytes > 0 {
            ring = ring.set_max_event_bytes(options.max_event_bytes as usize);
        }
        config.ring = ring;
    }
    config
        .validate()
        .map_err(|error| fail(EVSTREAM_CONFIG, format_args!("{error}")))?;
    Ok(config)
}

fn start(config: Config, out: &mut *mut evstream_handle) -> evstream_status {
    let (publisher, receiver) = match publish::channel(&config) {
        Ok(pair) => pair,
        Err(error) => return fail(EVSTREAM_CONFIG, format_args!("{error}")),
    };
    let shipper = match ship::spawn(&config, receiver) {
        Ok(shipper) => shipper,
        Err(error @ ShipError::Config(_)) => return fail(EVSTREAM_CONFIG, format_args!("{error}")),
        Err(error) => return fail(EVSTREAM_SHIPPER, format_args!("{error}")),
    };
    *out = Box::into_raw(Box::new(evstream_handle {
        tag: LIVE,
        publisher,
        shipper_monitor: shipper.monitor(),
        shipper: Mutex::new(Some(shipper)),
        last_report: Mutex::new(None),
        exporter: Mutex::new(None),
    }));
    EVSTREAM_OK
}

/// Publishes one event whose payload is already JSON (`json`, `json_len` bytes, not
/// NUL-terminated). Never blocks. A payload that is not valid JSON is accepted here and goes
/// to the dead letter stream (`invalid_json`) at shipping.
///
/// # Safety
/// `handle` must come from `evstream_create*` and not be destroyed; the strings and `json`
/// must be valid for their lengths.
#[no_mangle]
pub unsafe extern "C" fn evstream_publish(
    handle: *const evstream_handle,
    event_type: evstream_str,
    correlation_id: evstream_str,
    json: *const u8,
    json_len: usize,
) -> evstream_status {
    // SAFETY: the same contract as the versioned call's.
    unsafe { evstream_publish_versioned(handle, event_type, 1, correlation_id, json, json_len) }
}

/// [`evstream_publish`] with the payload's schema version: the envelope's `version` is
/// `v<version>` (`evstream_publish` says 1). Version 0 is refused (`EVSTREAM_INVALID`).
///
/// # Safety
/// As for [`evstream_publish`].
#[no_mangle]
pub unsafe extern "C" fn evstream_publish_versioned(
    handle: *const evstream_handle,
    event_type: evstream_str,
    version: u32,
    correlation_id: evstream_str,
    json: *const u8,
    json_len: usize,
) -> evstream_status {
    guarded(|| {
        // SAFETY: the caller's contract above.
        let (handle, event_type, correlation_id, json) = match unsafe {
            (
                live(handle),
                text(event_type, "event_type"),
                text(correlation_id, "correlation_id"),
                bytes(json, json_len, "json"),
            )
        } {
            (Ok(h), Ok(t), Ok(c), Ok(j)) => (h, t, c, j),
            (Err(code), ..) | (_, Err(code), ..) | (.., Err(code), _) | (.., Err(code)) => {
                return code
            }
        };
        outcome(
            handle
                .publisher
                .publish_raw_versioned(event_type, version, json, correlation_id),
        )
    })
}

/// Publishes an `OrderCreated`: its fields are copied into the ring slot in binary and the
/// shipper writes the JSON. Never blocks. The fastest way to publish from C or C++.
///
/// # Safety
/// `handle` as for [`evstream_publish`]; `order` null or valid, its strings valid.
#[no_mangle]
pub unsafe extern "C" fn evstream_on_order_created(
    handle: *const evstream_handle,
    order: *const evstream_order_created,
) -> evstream_status {
    guarded(|| {
        // SAFETY: the caller's contract above.
        let (handle, order) = match unsafe { (live(handle), order.as_ref()) } {
            (Ok(handle), Some(order)) => (handle, order),
            (Err(code), _) => return code,
            (_, None) => return fail(EVSTREAM_NULL_ARGUMENT, format_args!("order is null")),
        };
        let side = match order.side {
            EVSTREAM_SIDE_BUY => Side::Buy,
            EVSTREAM_SIDE_SELL => Side::Sell,
            other => {
                return fail(
                    EVSTREAM_INVALID,
                    format_args!(
                        "side is {other}; use EVSTREAM_SIDE_BUY (0) or EVSTREAM_SIDE_SELL (1)"
                    ),
                )
            }
        };
        // SAFETY: the caller guarantees the strings' validity.
        let fields = unsafe {
            (
                text(order.correlation_id, "correlation_id"),
                text(order.order_id, "order_id"),
                text(order.symbol, "symbol"),
            )
        };
        let (correlation_id, order_id, symbol) = match fields {
            (Ok(c), Ok(o), Ok(s)) => (c, o, s),
            (Err(code), ..) | (_, Err(code), _) | (.., Err(code)) => return code,
        };
        outcome(handle.publisher.on_order_created(&OrderCreated {
            correlation_id,
            order_id,
            symbol,
            quantity: order.quantity,
            price: order.price,
            side,
        }))
    })
}

/// Publishes an `OrderFilled`: its fields are copied into the ring slot in binary and the
/// shipper writes the JSON. Never blocks.
///
/// # Safety
/// `handle` as for [`evstream_publish`]; `fill` null or valid, its strings valid.
#[no_mangle]
pub unsafe extern "C" fn evstream_on_order_filled(
    handle: *const evstream_handle,
    fill: *const evstream_order_filled,
) -> evstream_status {
    guarded(|| {
        // SAFETY: the caller's contract above.
        let (handle, fill) = match unsafe { (live(handle), fill.as_ref()) } {
            (Ok(handle), Some(fill)) => (handle, fill),
            (Err(code), _) => return code,
            (_, None) => return fail(EVSTREAM_NULL_ARGUMENT, format_args!("fill is null")),
        };
        // SAFETY: the caller guarantees the strings' validity.
        let fields = unsafe {
            (
                text(fill.correlation_id, "correlation_id"),
                text(fill.order_id, "order_id"),
                text(fill.fill_id, "fill_id"),
            )
        };
        let (correlation_id, order_id, fill_id) = match fields {
            (Ok(c), Ok(o), Ok(f)) => (c, o, f),
            (Err(code), ..) | (_, Err(code), _) | (.., Err(code)) => return code,
        };
        outcome(handle.publisher.on_order_filled(&OrderFilled {
            correlation_id,
            order_id,
            fill_id,
            quantity: fill.quantity,
            price: fill.price,
        }))
    })
}

/// Publishes a `MarketDataUpdate`: its fields are copied into the ring slot in binary and the
/// shipper writes the JSON. Never blocks.
///
/// # Safety
/// `handle` as for [`evstream_publish`]; `update` null or valid, its strings valid.
#[no_mangle]
pub unsafe extern "C" fn evstream_on_market_data(
    handle: *const evstream_handle,
    update: *const evstream_market_data,
) -> evstream_status {
    guarded(|| {
        // SAFETY: the caller's contract above.
        let (handle, update) = match unsafe { (live(handle), update.as_ref()) } {
            (Ok(handle), Some(update)) => (handle, update),
            (Err(code), _) => return code,
            (_, None) => return fail(EVSTREAM_NULL_ARGUMENT, format_args!("update is null")),
        };
        // SAFETY: the caller guarantees the strings' validity.
        let fields = unsafe {
            (
                text(update.correlation_id, "correlation_id"),
                text(update.symbol, "symbol"),
            )
        };
        let (correlation_id, symbol) = match fields {
            (Ok(c), Ok(s)) => (c, s),
            (Err(code), _) | (_, Err(code)) => return code,
        };
        outcome(handle.publisher.on_market_data(&MarketDataUpdate {
            correlation_id,
            symbol,
            bid: update.bid,
            ask: update.ask,
            last: update.last,
            bid_size: update.bid_size,
            ask_size: update.ask_size,
            exchange_ts_ns: update.exchange_ts_ns,
        }))
    })
}

/// Fills `*out` with a snapshot of the ring and the shipper.
///
/// # Safety
/// `handle` as for [`evstream_publish`]; `out` null or writable.
#[no_mangle]
pub unsafe extern "C" fn evstream_health_snapshot(
    handle: *const evstream_handle,
    out: *mut evstream_health,
) -> evstream_status {
    guarded(|| {
        // SAFETY: the caller's contract above.
        let (handle, out) = match unsafe { (live(handle), out.as_mut()) } {
            (Ok(handle), Some(out)) => (handle, out),
            (Err(code), _) => return code,
            (_, None) => return fail(EVSTREAM_NULL_ARGUMENT, format_args!("out is null")),
        };
        let capture = handle.publisher.health();
        let shipper = lock(&handle.shipper).as_ref().map(ShipperHandle::health);
        let report = lock(&handle.last_report).clone();
        *out = evstream_health {
            ring_capacity: capture.capacity,
            ring_depth: capture.depth,
            published: capture.published,
            refused: capture.refused.total(),
            refused_full: capture.refused.ring_full,
            shipped: shipper
                .as_ref()
                .map_or_else(|| report.as_ref().map_or(0, |r| r.shipped), |s| s.shipped),
            dead_lettered: shipper.as_ref().map_or_else(
                || report.as_ref().map_or(0, |r| r.dead_lettered),
                |s| s.dead_letters.values().sum(),
            ),
            journal_events: shipper.as_ref().map_or(0, |s| s.journal_events),
            redis_connected: u8::from(shipper.as_ref().is_some_and(|s| s.redis_connected)),
            breaker_state: match shipper.as_ref().map(|s| s.breaker) {
                Some(BreakerState::HalfOpen) => 1,
                Some(BreakerState::Open) => 2,
                _ => 0,
            },
            journal_full: u8::from(shipper.as_ref().is_some_and(|s| s.journal_full)),
            shut_down: u8::from(shipper.is_none()),
        };
        EVSTREAM_OK
    })
}

/// Fills `*out` with every figure `/metrics` shows of the ring and the shipper (see
/// [`evstream_metrics`]), for an engine that feeds its own metrics system. Pass
/// `sizeof(evstream_metrics)` as `out_size`: only that many bytes are written, so a program
/// built against an older header, with a shorter struct, keeps working. Cheap enough to
/// call every second; it takes a lock the shipper also takes, so not on the hot path.
///
/// # Safety
/// `handle` as for [`evstream_publish`]; `out` null or valid for `out_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn evstream_metrics_snapshot(
    handle: *const evstream_handle,
    out: *mut evstream_metrics,
    out_size: usize,
) -> evstream_status {
    guarded(|| {
        // SAFETY: the caller's contract above.
        let handle = match unsafe { live(handle) } {
            Ok(handle) => handle,
            Err(code) => return code,
        };
        if out.is_null() {
            return fail(EVSTREAM_NULL_ARGUMENT, format_args!("out is null"));
        }
        let capture = handle.publisher.health();
        let shipper = handle.shipper_monitor.health();
        let timing = capture.publish_duration;
        let metrics = evstream_metrics {
            ring_capacity: capture.capacity,
            ring_depth: capture.depth,
            ring_cursor: capture.cursor,
            published: capture.published,
            refused_ring_full: capture.refused.ring_full,
            refused_too_large: capture.refused.too_large,
            refused_invalid: capture.refused.invalid,
            refused_closed: capture.refused.closed,
            shipped: shipper.shipped,
            duplicates_prevented: shipper.duplicates_skipped,
            batches_ok: shipper.batches_ok,
            batches_failed: shipper.batches_failed,
            batches_in_flight: shipper.batches_in_flight,
            unconfirmed_events: shipper.unconfirmed_events,
            dead_lettered: shipper.dead_letters.values().sum(),
            spilled: shipper.spilled,
            journal_events: shipper.journal_events,
            journal_bytes: shipper.journal_bytes,
            journal_lost: shipper.journal_lost,
            journals_refused: shipper.journals_refused,
            publish_timed: timing.timed,
            publish_p50_ns: timing.p50_ns,
            publish_p99_ns: timing.p99_ns,
            publish_p999_ns: timing.p999_ns,
            publish_max_ns: timing.max_ns,
            redis_connected: u8::from(shipper.redis_connected),
            breaker_state: match shipper.breaker {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            },
            journal_full: u8::from(shipper.journal_full),
            shut_down: u8::from(lock(&handle.shipper).is_none()),
        };
        let n = out_size.min(std::mem::size_of::<evstream_metrics>());
        // SAFETY: the caller guarantees `out_size` writable bytes at `out`; `n` is at most
        // that and at most the size of `metrics`, a local that cannot overlap `out`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                std::ptr::addr_of!(metrics).cast::<u8>(),
                out.cast::<u8>(),
                n,
            );
        }
        EVSTREAM_OK
    })
}

/// Serves `/metrics` (Prometheus text) and `/health` (JSON) of this handle's ring and shipper
/// from the engine's process, on a thread of its own, until [`evstream_destroy`]; the same
/// endpoints, metric names and token rule as the `evstream` command's `--metrics-addr`
/// (`docs/operations.md`). `options` null: loopback port 9464, or a free loopback port when
/// that one is taken. The address served is copied into `address` (NUL-terminated, cut to
/// `capacity - 1` bytes) when `address` is not null.
///
/// Returns `EVSTREAM_CONFIG` when the address cannot be bound or is not loopback without
/// `public`, the token file is unreadable or short, or this process installed another
/// metrics recorder; `EVSTREAM_INVALID` when a handle of this process serves already (the
/// metrics registry is the process's: serve from one handle per process).
///
/// # Safety
/// `handle` as for [`evstream_publish`]; `options` null or valid, its strings null or
/// NUL-terminated; `address` null or valid for `capacity` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn evstream_serve_metrics(
    handle: *const evstream_handle,
    options: *const evstream_metrics_options,
    address: *mut c_char,
    capacity: usize,
) -> evstream_status {
    guarded(|| {
        // SAFETY: the caller's contract above.
        let handle = match unsafe { live(handle) } {
            Ok(handle) => handle,
            Err(code) => return code,
        };
        let mut exporter_options = ExporterOptions::default();
        // SAFETY: the caller guarantees `options` is null or valid.
        if let Some(options) = unsafe { options.as_ref() } {
            // SAFETY: the caller guarantees the strings are null or NUL-terminated.
            let (addr, token_file) = match unsafe {
                (
                    c_string(options.addr, "options.addr"),
                    c_string(options.token_file, "options.token_file"),
                )
            } {
                (Ok(addr), Ok(token_file)) => (addr, token_file),
                (Err(code), _) | (_, Err(code)) => return code,
            };
            exporter_options.addr = addr.map(str::to_owned);
            exporter_options.public = options.public != 0;
            if let Some(path) = token_file {
                exporter_options =
                    match exporter_options.with_token_file(std::path::Path::new(path)) {
                        Ok(options) => options,
                        Err(error) => return fail(EVSTREAM_CONFIG, format_args!("{error}")),
                    };
            }
        }
        let mut exporter = lock(&handle.exporter);
        if let Some(running) = &*exporter {
            return fail(
                EVSTREAM_INVALID,
                format_args!("this handle serves /metrics on {} already", running.addr()),
            );
        }
        // The metrics registry is the process's: two handles serving would write their
        // figures over each other's, and Prometheus would read the jumps as resets.
        let mut serving = lock(&SERVING);
        if let Some(addr) = &*serving {
            return fail(
                EVSTREAM_INVALID,
                format_args!(
                    "another handle of this process serves /metrics on {addr} already; \
                     serve from one handle per process"
                ),
            );
        }
        let sources = Sources::engine(handle.publisher.monitor(), handle.shipper_monitor.clone());
        let running = match Exporter::spawn(&exporter_options, sources) {
            Ok(running) => running,
            Err(error) => return fail(EVSTREAM_CONFIG, format_args!("{error}")),
        };
        // SAFETY: the caller guarantees `address` is null or has `capacity` writable bytes.
        unsafe { copy_out(running.addr().to_string().as_bytes(), address, capacity) };
        *serving = Some(running.addr());
        *exporter = Some(running);
        EVSTREAM_OK
    })
}

/// Flushes the ring and every unconfirmed batch to Redis within `timeout_ms`, leaves what it
/// could not deliver in the spill journal (if configured), and stops the shipper; publish
/// returns `EVSTREAM_CLOSED` afterwards. Fills `*report` if not null. Returns
/// `EVSTREAM_SHIPPER` when events were lost (neither delivered nor journaled). A second call
/// reports the first one's result.
///
/// # Safety
/// `handle` as for [`evstream_publish`]; `report` null or writable.
#[no_mangle]
pub unsafe extern "C" fn evstream_shutdown(
    handle: *const evstream_handle,
    timeout_ms: u32,
    report: *mut evstream_shutdown_report,
) -> evstream_status {
    guarded(|| {
        // SAFETY: the caller's contract above.
        let handle = match unsafe { live(handle) } {
            Ok(handle) => handle,
            Err(code) => return code,
        };
        let result = shut_down(handle, Duration::from_millis(u64::from(timeout_ms)));
        // SAFETY: the caller guarantees `report` is null or writable.
        if let Some(out) = unsafe { report.as_mut() } {
            *out = evstream_shutdown_report {
                shipped: result.shipped,
                dead_lettered: result.dead_lettered,
                journaled: result.journaled,
                undelivered: result.undelivered,
            };
        }
        if result.panicked {
            fail(
                EVSTREAM_SHIPPER,
                format_args!("the shipper thread panicked (a bug): undelivered events unknown"),
            )
        } else if result.undelivered > 0 {
            fail(
                EVSTREAM_SHIPPER,
                format_args!(
                    "{} events were neither delivered nor journaled by the deadline (set a \
                     journal_dir to keep them across restarts)",
                    result.undelivered
                ),
            )
        } else {
            EVSTREAM_OK
        }
    })
}

fn shut_down(handle: &evstream_handle, timeout: Duration) -> ship::ShutdownReport {
    let shipper = lock(&handle.shipper).take();
    let mut last = lock(&handle.last_report);
    if let Some(shipper) = shipper {
        *last = Some(shipper.shutdown(timeout));
    }
    last.clone().unwrap_or_default()
}

/// Shuts down (with `ship.shutdown_timeout_ms`, 5 s, if not done yet) and frees the handle.
/// Call it once, after every other call on this handle has returned; null is ignored.
///
/// # Safety
/// `handle` must be null or come from `evstream_create*` and not be destroyed already.
#[no_mangle]
pub unsafe extern "C" fn evstream_destroy(handle: *mut evstream_handle) {
    if handle.is_null() {
        return; // a no-op that leaves the thread's last error alone (moved-from C++ objects)
    }
    let _ = guarded(|| {
        // SAFETY: the caller's contract above.
        if unsafe { live(handle) }.is_err() {
            return EVSTREAM_BAD_HANDLE;
        }
        // SAFETY: `handle` is live (checked) and came from `Box::into_raw` in `start`; the
        // caller guarantees no other call uses it any more. Clearing the tag first makes a
        // second destroy of the same (not yet reused) memory a refused call.
        let owned = unsafe {
            (*handle).tag = 0;
            Box::from_raw(handle)
        };
        shut_down(&owned, Duration::from_secs(5));
        if lock(&owned.exporter).take().is_some() {
            *lock(&SERVING) = None;
        }
        drop(owned);
        EVSTREAM_OK
    });
}

fn outcome(result: Result<(), PublishError>) -> evstream_status {
    match result {
        Ok(()) => EVSTREAM_OK,
        Err(error) => {
            let code = match &error {
                PublishError::RingFull { .. } => EVSTREAM_FULL,
                PublishError::TooLarge { .. } => EVSTREAM_TOO_LARGE,
                PublishError::Closed => EVSTREAM_CLOSED,
                _ => EVSTREAM_INVALID,
            };
            fail(code, format_args!("{error}"))
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// # Safety
/// `handle` must be null, or point to memory readable as an `evstream_handle`.
unsafe fn live<'a>(handle: *const evstream_handle) -> Result<&'a evstream_handle, evstream_status> {
    if handle.is_null() {
        return Err(fail(EVSTREAM_NULL_ARGUMENT, format_args!("handle is null")));
    }
    if !handle.is_aligned() {
        return Err(fail(
            EVSTREAM_BAD_HANDLE,
            format_args!("handle is misaligned"),
        ));
    }
    // SAFETY: non-null and aligned; the caller guarantees at least the first 8 bytes are
    // readable. Only the tag is read before it is known to be a handle. (A destroyed handle's
    // memory is freed: reading it is the caller's contract broken; the check catches it in
    // practice while the memory is not reused, it cannot make it sound.)
    let tag = unsafe { std::ptr::addr_of!((*handle).tag).read() };
    if tag != LIVE {
        return Err(fail(
            EVSTREAM_BAD_HANDLE,
            format_args!("not a live evstream handle (destroyed, or not from evstream_create)"),
        ));
    }
    // SAFETY: the tag says this is a handle made by `start` and not destroyed.
    Ok(unsafe { &*handle })
}

/// # Safety
/// `s.ptr` must be valid for `s.len` bytes unless null.
unsafe fn text<'a>(s: evstream_str, what: &str) -> Result<&'a str, evstream_status> {
    // SAFETY: forwarded contract.
    let raw = unsafe { bytes(s.ptr.cast::<u8>(), s.len, what) }?;
    // Ids and symbols are ASCII nearly always: `is_ascii` checks a word at a time, where
    // `from_utf8` checks a short string byte by byte (callgrind: 128 instructions per string
    // of a typed call, 3 strings per `evstream_on_order_created`).
    if raw.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(raw) });
    }
    std::str::from_utf8(raw)
        .map_err(|_| fail(EVSTREAM_INVALID, format_args!("{what} is not UTF-8")))
}

/// # Safety
/// `ptr` must be valid for `len` bytes unless null.
unsafe fn bytes<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8], evstream_status> {
    if len > isize::MAX as usize {
        return Err(fail(
            EVSTREAM_INVALID,
            format_args!("{what} has an impossible length {len}"),
        ));
    }
    if ptr.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(fail(
                EVSTREAM_NULL_ARGUMENT,
                format_args!("{what} is null with length {len}"),
            ))
        };
    }
    // SAFETY: non-null; the caller guarantees `len` readable bytes that outlive the call.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// # Safety
/// `ptr` must be null or NUL-terminated.
unsafe fn c_string<'a>(ptr: *const c_char, what: &str) -> Result<Option<&'a str>, evstream_status> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null; the caller guarantees NUL termination.
    let c = unsafe { CStr::from_ptr(ptr) };
    c.to_str()
        .map(Some)
        .map_err(|_| fail(EVSTREAM_INVALID, format_args!("{what} is not UTF-8")))
}

/// Copies `text` into `buffer` as a NUL-terminated string, cut to `capacity - 1` bytes;
/// nothing when `buffer` is null or `capacity` is 0.
///
/// # Safety
/// `buffer` must be null or valid for `capacity` writable bytes, not overlapping `text`.
unsafe fn copy_out(text: &[u8], buffer: *mut c_char, capacity: usize) {
    if buffer.is_null() || capacity == 0 {
        return;
    }
    let n = text.len().min(capacity - 1);
    // SAFETY: `n + 1 <= capacity` bytes are written, which the caller guarantees writable;
    // `text` is our own memory, which cannot overlap the caller's buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), buffer, n);
        *buffer.add(n) = 0;
    }
}

/// # Safety
/// `status` must be null or writable.
unsafe fn set_status(status: *mut evstream_status, code: evstream_status) {
    // SAFETY: forwarded contract.
    if let Some(status) = unsafe { status.as_mut() } {
        *status = code;
    }
}
