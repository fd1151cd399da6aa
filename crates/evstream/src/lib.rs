//! evstream: the "Everything Stream" of a trading engine.
//!
//! Every internal event of the engine (orders, fills, market data, signals) is captured
//! in-process through a lock-free ring buffer without slowing the engine, then shipped into a
//! Redis stream and consumed through consumer groups.
//!
//! # Lifecycle
//!
//! 1. **Setup**: [`publish::channel`] builds the ring from a [`Config`] and returns the
//!    [`Publisher`] (clone it into every engine thread) and the [`publish::Receiver`] (the
//!    shipper's end).
//! 2. **Publish**: [`Publisher::publish`] or the typed facade
//!    ([`Publisher::on_order_created`], …) copies the event into a pre-allocated slot in
//!    binary and returns at once; the drain writes its JSON. It never blocks, never allocates for events up to `ring.slot_bytes`,
//!    and never truncates: an event is accepted whole or refused with a [`PublishError`].
//! 3. **Drain**: the receiver takes events out in batches, writes their JSON and stamps each
//!    producer's consecutive `sequence`.
//! 4. **Shutdown**: drop every `Publisher`; [`publish::Receiver::is_finished`] turns true once
//!    the ring is empty.
//!
//! ```
//! use evstream::{publish, Config, PublishError};
//! use evstream::publish::{OrderFilled};
//!
//! let (publisher, mut receiver) = publish::channel(&Config::default())?;
//! let engine = {
//!     let publisher = publisher.clone();
//!     std::thread::spawn(move || {
//!         publisher.on_order_filled(&OrderFilled {
//!             correlation_id: "ord-7", order_id: "7", fill_id: "7-1",
//!             quantity: 10.0, price: 99.5,
//!         })
//!     })
//! };
//! engine.join().unwrap()?;
//! drop(publisher);
//!
//! let mut batch = Vec::new();
//! while !receiver.is_finished() {
//!     receiver.drain_into(&mut batch, 512);
//! }
//! assert_eq!(batch[0].correlation_id(), "ord-7");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod archive;
pub mod audit;
pub mod config;
pub mod consume;
pub mod envelope;
pub mod error;
pub mod exporter;
#[doc(hidden)]
pub mod fuzzing;
pub mod history;
pub mod keys;
pub mod ops;
pub mod partitions;
pub mod publish;
pub mod redis;
pub mod schema;
pub mod ship;
pub mod status;
pub mod telemetry;

pub use config::Config;
pub use error::{
    ConfigError, ConsumeError, DlqError, ExporterError, OpsError, PartitionError, PublishError,
    SchemaError, ShipError,
};
pub use publish::Publisher;

/// The README's library example, compiled and run as a doc test.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
