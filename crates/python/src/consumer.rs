//! `evstream.Consumer`: the Rust consumer on a thread of its own, its handler a bridge that
//! hands each event to Python and waits for Python's verdict.
//!
//! Claiming, migration, dead letters and the exactly-once commit all stay the Rust
//! consumer's: Python only says, per event, whether the handler succeeded (`ack()`, the
//! handler's `Ok`) or failed (`fail(reason)`, its `Err`). The consumer runs `handle` inside
//! its async task, so the bridge waits in `block_in_place` on a multi-threaded runtime: the
//! runtime's other worker keeps the connections and the read-ahead going meanwhile.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use evstream::consume::{
    ConsumeReport, ConsumeStats, Consumer as RustConsumer, Effects, Envelope, Handler, HandlerError,
};
use evstream::schema::Registry;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::Error;
use crate::publisher::lock;
use crate::settings::Common;

/// Python's answer for one event.
#[derive(Debug)]
enum Verdict {
    Ack,
    Fail(String),
}

/// Why the bridge returned an error to the Rust consumer (shown in `dlq_error`).
#[derive(Debug, thiserror::Error)]
enum BridgeError {
    #[error("{0}")]
    Failed(String),
    #[error("the Python consumer stopped before giving a verdict")]
    Stopped,
}

/// One event on its way to Python, with the way back.
struct Delivery {
    envelope: Envelope,
    verdict: Sender<Verdict>,
}

/// The Rust consumer's handler: each event to Python, then wait for its verdict.
struct Bridge {
    deliveries: Sender<Delivery>,
}

impl Handler for Bridge {
    fn handle(&mut self, event: &Envelope, _: &mut Effects) -> Result<(), HandlerError> {
        let (verdict, answer) = crossbeam_channel::bounded(1);
        let delivery = Delivery {
            envelope: event.clone(),
            verdict,
        };
        tokio::task::block_in_place(|| {
            self.deliveries
                .send(delivery)
                .map_err(|_| BridgeError::Stopped)?;
            match answer.recv() {
                Ok(Verdict::Ack) => Ok(()),
                Ok(Verdict::Fail(reason)) => Err(BridgeError::Failed(reason).into()),
                Err(_) => Err(BridgeError::Stopped.into()),
            }
        })
    }
}

/// Where the consumer is in its life.
enum State {
    /// Built, not started: nothing connects before the first event is asked for.
    Ready {
        consumer: Box<RustConsumer<Bridge>>,
        deliveries: Receiver<Delivery>,
    },
    Running {
        deliveries: Receiver<Delivery>,
        stop: tokio::sync::oneshot::Sender<()>,
        thread: JoinHandle<Result<ConsumeReport, String>>,
    },
    Closed(ConsumeReport),
}

/// The compiled half of `evstream.Consumer` (python/evstream/__init__.py adds `events()`).
#[pyclass(module = "evstream._evstream", name = "Consumer", subclass, frozen)]
pub(crate) struct PyConsumer {
    state: Mutex<State>,
    stats: Arc<ConsumeStats>,
    /// The verdict slot of the event last handed to Python.
    awaiting: Mutex<Option<Arc<VerdictSlot>>>,
    loads: Py<PyAny>,
}

impl std::fmt::Debug for PyConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").finish_non_exhaustive()
    }
}

type VerdictSlot = Mutex<Option<Sender<Verdict>>>;

#[pymethods]
impl PyConsumer {
    #[new]
    #[pyo3(signature = (
        url = None, *, stream = None, group = None, consumer = None, schemas = None,
        config = None, max_deliveries = None, min_idle_ms = None, batch_size = None,
        block_ms = None, start_id = None,
    ))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments
    fn new(
        py: Python<'_>,
        url: Option<String>,
        stream: Option<String>,
        group: Option<String>,
        consumer: Option<String>,
        schemas: Option<String>,
        config: Option<PathBuf>,
        max_deliveries: Option<u64>,
        min_idle_ms: Option<u64>,
        batch_size: Option<usize>,
        block_ms: Option<u64>,
        start_id: Option<String>,
    ) -> PyResult<Self> {
        let mut config = Common {
            config,
            url,
            stream,
        }
        .load()?;
        let consume = &mut config.consume;
        if let Some(group) = group {
            consume.group = group;
        }
        if let Some(max) = max_deliveries {
            consume.max_deliveries = max;
        }
        if let Some(idle) = min_idle_ms {
            consume.min_idle_ms = idle;
        }
        if let Some(count) = batch_size {
            consume.count = count;
        }
        if let Some(block) = block_ms {
            consume.block_ms = block;
        }
        if let Some(start) = start_id {
            consume.start_id = start;
        }
        let name = consumer.unwrap_or_else(|| format!("python-{}", std::process::id()));
        let (sender, deliveries) = crossbeam_channel::bounded(0);
        let bridge = Bridge { deliveries: sender };
        let mut rust = RustConsumer::new(&config, &name, bridge).map_err(Error::from)?;
        rust = match schemas.as_deref() {
            None | Some("off") => rust,
            Some("redis") => rust.with_schemas_from_redis(),
            Some(dir) => {
                let registry = py
                    .detach(|| Registry::from_dir(std::path::Path::new(dir)))
                    .map_err(Error::from)?;
                rust.with_schemas(registry)
            }
        };
        Ok(Self {
            stats: rust.stats(),
            state: Mutex::new(State::Ready {
                consumer: Box::new(rust),
                deliveries,
            }),
            awaiting: Mutex::new(None),
            loads: py.import("json")?.getattr("loads")?.unbind(),
        })
    }

    /// The next event, or `None` once no event came for `idle` seconds (`None`: wait
    /// forever). Waits without the GIL, checking for signals (Ctrl-C) every 100 ms; on
    /// KeyboardInterrupt the consumer is closed and the exception raised.
    ///
    /// The previous event's verdict is due first: one given neither `ack()` nor `fail()` is
    /// failed now (left pending, retried after `min_idle_ms`).
    #[pyo3(signature = (idle = None))]
    fn _next_event(&self, py: Python<'_>, idle: Option<f64>) -> PyResult<Option<Event>> {
        if let Some(slot) = lock(&self.awaiting).take() {
            if let Some(verdict) = lock(&slot).take() {
                let _ = verdict.send(Verdict::Fail(
                    "the Python code gave neither ack() nor fail() before the next event".into(),
                ));
            }
        }
        let deliveries = self.start()?;
        let deadline = match idle {
            Some(seconds) => Some(
                Instant::now()
                    + Duration::try_from_secs_f64(seconds).map_err(|_| Error::Argument {
                        argument: "stop_when_idle",
                        value: seconds.to_string(),
                        reason: "expected a non-negative number of seconds",
                    })?,
            ),
            None => None,
        };
        loop {
            let slice = Duration::from_millis(100);
            let wait = match deadline {
                Some(deadline) => deadline
                    .saturating_duration_since(Instant::now())
                    .min(slice),
                None => slice,
            };
            match py.detach(|| deliveries.recv_timeout(wait)) {
                Ok(delivery) => return self.hand_over(py, delivery).map(Some),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let report = self.stop(py);
                    return Err(Error::ConsumerStopped {
                        reason: report
                            .last_error
                            .unwrap_or_else(|| "its thread ended".to_owned()),
                    }
                    .into());
                }
            }
            if let Err(interrupt) = py.check_signals() {
                self.stop(py);
                return Err(interrupt);
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Ok(None);
            }
        }
    }

    /// The consumer's counters so far (as Rust's `ConsumeReport`).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        report_dict(py, &self.stats.snapshot())
    }

    /// Stops the consumer: the event awaiting a verdict is failed (left pending), the batches
    /// handled so far are committed, and the final counters returned. Idempotent.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let report = self.stop(py);
        report_dict(py, &report)
    }
}

impl PyConsumer {
    /// Starts the consumer's thread on first use; the channel events come through.
    fn start(&self) -> Result<Receiver<Delivery>, Error> {
        let mut state = lock(&self.state);
        let (consumer, deliveries) =
            match std::mem::replace(&mut *state, State::Closed(ConsumeReport::default())) {
                State::Ready {
                    consumer,
                    deliveries,
                } => (consumer, deliveries),
                running @ State::Running { .. } => {
                    let State::Running { deliveries, .. } = &running else {
                        unreachable!()
                    };
                    let deliveries = deliveries.clone();
                    *state = running;
                    return Ok(deliveries);
                }
                closed @ State::Closed(_) => {
                    *state = closed;
                    return Err(Error::Closed { what: "consumer" });
                }
            };
        // Two workers: one may wait in the bridge for Python while the other keeps the
        // connections and the read-ahead going.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("evstream-consumer")
            .enable_all()
            .build()
            .map_err(|source| Error::Runtime { source })?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("evstream-consumer".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let run = consumer.run(async move {
                        let _ = stopped.await;
                    });
                    tokio::spawn(run).await.map_err(|error| error.to_string())
                })
            })
            .map_err(|source| Error::Runtime { source })?;
        *state = State::Running {
            deliveries: deliveries.clone(),
            stop,
            thread,
        };
        Ok(deliveries)
    }

    /// Turns a delivery into a Python `Event` and remembers its verdict slot.
    fn hand_over(&self, py: Python<'_>, delivery: Delivery) -> PyResult<Event> {
        let Delivery { envelope, verdict } = delivery;
        let slot = Arc::new(Mutex::new(Some(verdict)));
        *lock(&self.awaiting) = Some(Arc::clone(&slot));
        let data = self
            .loads
            .bind(py)
            .call1((envelope.data.as_str(),))?
            .unbind();
        Ok(Event {
            stream_id: envelope.stream_id,
            event_id: envelope.event_id.to_string(),
            event_type: envelope.event_type,
            version: envelope.version,
            correlation_id: envelope.correlation_id,
            timestamp_ns: envelope.timestamp_ns,
            producer_id: envelope.producer_id,
            sequence: envelope.sequence,
            deliveries: envelope.deliveries,
            raw_data: envelope.data,
            data,
            verdict: slot,
        })
    }

    /// Stops the thread (if it runs) and returns the final counters.
    fn stop(&self, py: Python<'_>) -> ConsumeReport {
        let mut state = lock(&self.state);
        match std::mem::replace(&mut *state, State::Closed(ConsumeReport::default())) {
            State::Ready { .. } => ConsumeReport::default(),
            State::Closed(report) => {
                *state = State::Closed(report.clone());
                report
            }
            State::Running {
                deliveries,
                stop,
                thread,
            } => {
                let _ = stop.send(());
                // Unblocks the bridge: no one takes the rest of the batch, and the event
                // Python holds gets no verdict now (left pending, retried later).
                drop(deliveries);
                if let Some(slot) = lock(&self.awaiting).take() {
                    lock(&slot).take();
                }
                let report = py
                    .detach(|| thread.join())
                    .unwrap_or_else(|_| Err("the consumer's thread panicked".to_owned()))
                    .unwrap_or_else(|error| {
                        let mut report = self.stats.snapshot();
                        report.last_error = Some(error);
                        report
                    });
                *state = State::Closed(report.clone());
                report
            }
        }
    }
}

/// One event, decoded, validated and migrated by the Rust consumer.
#[pyclass(module = "evstream", frozen)]
#[derive(Debug)]
pub(crate) struct Event {
    /// The stream entry id, e.g. `"1700000000000-0"`.
    #[pyo3(get)]
    stream_id: String,
    /// The event's UUID, the same across re-deliveries.
    #[pyo3(get)]
    event_id: String,
    #[pyo3(get)]
    event_type: String,
    /// The schema version as handed over (after migration): an int.
    #[pyo3(get)]
    version: u32,
    #[pyo3(get)]
    correlation_id: String,
    #[pyo3(get)]
    timestamp_ns: u64,
    #[pyo3(get)]
    producer_id: String,
    #[pyo3(get)]
    sequence: u64,
    /// How many times this entry was delivered (1 on the first).
    #[pyo3(get)]
    deliveries: u64,
    /// `data` as JSON text.
    #[pyo3(get)]
    raw_data: String,
    /// `data` as a dict.
    #[pyo3(get)]
    data: Py<PyAny>,
    verdict: Arc<VerdictSlot>,
}

#[pymethods]
impl Event {
    /// Handled: acknowledged with the batch's commit, exactly once.
    fn ack(&self) -> PyResult<()> {
        self.decide(Verdict::Ack)
    }

    /// Not handled: left pending, retried after `min_idle_ms`, dead-lettered after
    /// `max_deliveries` deliveries with `reason` as `dlq_error`.
    #[pyo3(signature = (reason = "failed by the Python handler"))]
    fn fail(&self, reason: &str) -> PyResult<()> {
        self.decide(Verdict::Fail(reason.to_owned()))
    }

    fn __repr__(&self) -> String {
        format!(
            "Event(stream_id={:?}, event_type={:?}, version={}, correlation_id={:?}, sequence={})",
            self.stream_id, self.event_type, self.version, self.correlation_id, self.sequence
        )
    }
}

impl Event {
    fn decide(&self, verdict: Verdict) -> PyResult<()> {
        let sender = lock(&self.verdict)
            .take()
            .ok_or_else(|| Error::AlreadyDecided {
                stream_id: self.stream_id.clone(),
            })?;
        // The consumer may have stopped meanwhile; the entry then stays pending.
        let _ = sender.send(verdict);
        Ok(())
    }
}

fn report_dict<'py>(py: Python<'py>, report: &ConsumeReport) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, value) in [
        ("read", report.read),
        ("processed", report.processed),
        ("duplicates_skipped", report.duplicates_skipped),
        ("skipped", report.skipped),
        ("unvalidated", report.unvalidated),
        ("dead_lettered", report.dead_lettered),
        ("failed_attempts", report.failed_attempts),
        ("claimed", report.claimed),
        ("deleted", report.deleted),
        ("redis_errors", report.redis_errors),
    ] {
        dict.set_item(name, value)?;
    }
    dict.set_item("connected", report.connected)?;
    dict.set_item("last_error", report.last_error.as_deref())?;
    Ok(dict)
}
