//! `evstream.Publisher`: the ring and its shipper thread, as in Rust.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use evstream::publish::{self, OrderCreated, Side};
use evstream::ship::{self, ShipperHandle, ShutdownReport};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::error::Error;
use crate::settings::{self, Common, VersionArg};

/// Publishes events into the in-process ring; a shipper thread sends them to Redis.
#[pyclass(module = "evstream", frozen)]
pub(crate) struct Publisher {
    publisher: publish::Publisher,
    /// Set by `close()`; checked before each publish so that an event published after it is
    /// refused at once (`evstream.Closed`) rather than left in a ring nobody drains.
    closed: AtomicBool,
    /// `None` once closed; its report is kept for a second `close()`.
    shipper: Mutex<Option<ShipperHandle>>,
    report: Mutex<Option<ShutdownReport>>,
    /// `ship.shutdown_timeout_ms`: `close()`'s deadline when none is given.
    default_timeout: Duration,
    /// `json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode`.
    encode: Py<PyAny>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("producer_id", &self.publisher.producer_id())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

#[pymethods]
impl Publisher {
    #[new]
    #[pyo3(signature = (
        url = None, *, stream = None, config = None, producer_name = None, journal_dir = None,
        ring_capacity = None, max_event_bytes = None, when_full = None,
    ))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments
    fn new(
        py: Python<'_>,
        url: Option<String>,
        stream: Option<String>,
        config: Option<PathBuf>,
        producer_name: Option<String>,
        journal_dir: Option<PathBuf>,
        ring_capacity: Option<usize>,
        max_event_bytes: Option<usize>,
        when_full: Option<&str>,
    ) -> PyResult<Self> {
        let mut config = Common {
            config,
            url,
            stream,
        }
        .load()?;
        if producer_name.is_some() {
            config.producer.name = producer_name;
        }
        if journal_dir.is_some() {
            config.ship.journal_dir = journal_dir;
        }
        if let Some(capacity) = ring_capacity {
            config.ring.capacity = capacity;
        }
        if let Some(max) = max_event_bytes {
            config.ring.max_event_bytes = max;
        }
        if let Some(when_full) = when_full {
            config.ring.when_full = settings::when_full(when_full)?;
        }
        // The ring's memory is allocated and touched here: without the GIL.
        let (publisher, shipper) = py.detach(|| -> Result<_, Error> {
            let (publisher, receiver) = publish::channel(&config)?;
            let shipper = ship::spawn(&config, receiver)?;
            Ok((publisher, shipper))
        })?;
        let options = PyDict::new(py);
        options.set_item("separators", (",", ":"))?;
        options.set_item("ensure_ascii", false)?;
        options.set_item("allow_nan", false)?;
        let encode = py
            .import("json")?
            .getattr("JSONEncoder")?
            .call((), Some(&options))?
            .getattr("encode")?
            .unbind();
        Ok(Self {
            publisher,
            closed: AtomicBool::new(false),
            shipper: Mutex::new(Some(shipper)),
            report: Mutex::new(None),
            default_timeout: Duration::from_millis(config.ship.shutdown_timeout_ms),
            encode,
        })
    }

    /// Publishes one event. `data` is a dict (or anything `json` encodes), or already
    /// serialized JSON as `str` or `bytes`, copied byte for byte.
    #[pyo3(signature = (event_type, data, correlation_id = "", version = VersionArg::Number(1)))]
    fn publish(
        &self,
        py: Python<'_>,
        event_type: &str,
        data: &Bound<'_, PyAny>,
        correlation_id: &str,
        version: VersionArg,
    ) -> PyResult<()> {
        self.check_open()?;
        let version = settings::version(version)?;
        let encoded;
        let json: &[u8] = if let Ok(bytes) = data.cast::<PyBytes>() {
            bytes.as_bytes()
        } else if let Ok(text) = data.cast::<PyString>() {
            text.to_str()?.as_bytes()
        } else {
            encoded = self.encode.bind(py).call1((data,))?;
            encoded.cast::<PyString>()?.to_str()?.as_bytes()
        };
        py.detach(|| {
            self.publisher
                .publish_raw_versioned(event_type, version, json, correlation_id)
        })
        .map_err(|error| Error::from(error).into())
    }

    /// An order was created: the typed fast path (fields copied in binary, the shipper writes
    /// the JSON).
    #[pyo3(signature = (*, order_id, symbol, quantity, price, side, correlation_id = ""))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments
    fn on_order_created(
        &self,
        py: Python<'_>,
        order_id: &str,
        symbol: &str,
        quantity: f64,
        price: f64,
        side: &str,
        correlation_id: &str,
    ) -> PyResult<()> {
        self.check_open()?;
        let side = match side {
            "BUY" | "buy" => Side::Buy,
            "SELL" | "sell" => Side::Sell,
            _ => {
                return Err(Error::Argument {
                    argument: "side",
                    value: side.to_owned(),
                    reason: "expected \"BUY\" or \"SELL\"",
                }
                .into())
            }
        };
        let order = OrderCreated {
            correlation_id,
            order_id,
            symbol,
            quantity,
            price,
            side,
        };
        py.detach(|| self.publisher.on_order_created(&order))
            .map_err(|error| Error::from(error).into())
    }

    /// This publisher's id (the envelope's `producer_id`).
    #[getter]
    fn producer_id(&self) -> &str {
        self.publisher.producer_id()
    }

    /// Flushes the ring and every unconfirmed batch to Redis within `timeout` seconds
    /// (default `ship.shutdown_timeout_ms`), stops the shipper and reports what happened.
    /// Later calls return the same report.
    #[pyo3(signature = (timeout = None))]
    fn close<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyDict>> {
        self.closed.store(true, Ordering::Release);
        let shipper = lock(&self.shipper).take();
        if let Some(shipper) = shipper {
            let timeout = match timeout {
                Some(seconds) => {
                    Duration::try_from_secs_f64(seconds).map_err(|_| Error::Argument {
                        argument: "timeout",
                        value: seconds.to_string(),
                        reason: "expected a non-negative number of seconds",
                    })?
                }
                None => self.default_timeout,
            };
            let report = py.detach(|| shipper.shutdown(timeout));
            *lock(&self.report) = Some(report);
        }
        let report = lock(&self.report).clone().unwrap_or_default();
        let dict = PyDict::new(py);
        dict.set_item("shipped", report.shipped)?;
        dict.set_item("dead_lettered", report.dead_lettered)?;
        dict.set_item("journaled", report.journaled)?;
        dict.set_item("undelivered", report.undelivered)?;
        dict.set_item("panicked", report.panicked)?;
        Ok(dict)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<()> {
        self.close(py, None).map(drop)
    }
}

impl Publisher {
    #[inline]
    fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed { what: "publisher" });
        }
        Ok(())
    }
}

/// A poisoned lock only means a panic elsewhere; the state it guards stays usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
