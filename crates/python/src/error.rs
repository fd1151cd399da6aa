//! The package's errors: typed in Rust, raised in Python as `evstream.<Class>` carrying the
//! Rust message.

use evstream::error::{self as rust, ConsumeError, PublishError, ShipError};
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::{create_exception, PyErr};

create_exception!(
    evstream,
    EvstreamError,
    PyException,
    "Base class of every error evstream raises."
);
create_exception!(
    evstream,
    RingFull,
    EvstreamError,
    "The ring is full: the shipper is behind (or Redis unreachable and the journal off)."
);
create_exception!(
    evstream,
    TooLarge,
    EvstreamError,
    "The serialized event exceeds ring.max_event_bytes."
);
create_exception!(
    evstream,
    InvalidEvent,
    EvstreamError,
    "An invalid event type, version or correlation id, or data that is not JSON."
);
create_exception!(
    evstream,
    Closed,
    EvstreamError,
    "The publisher or consumer was closed."
);
create_exception!(
    evstream,
    ConfigError,
    EvstreamError,
    "An invalid configuration: a keyword argument or the TOML file."
);
create_exception!(
    evstream,
    SchemaError,
    EvstreamError,
    "The schema registry could not be loaded."
);
create_exception!(
    evstream,
    ConsumerError,
    EvstreamError,
    "The consumer could not start or stopped unexpectedly."
);

/// Everything that can go wrong in the bindings, mapped to an exception class by
/// [`From<Error> for PyErr`](PyErr).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Error {
    /// `publish` refused the event.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The configuration file or a keyword argument.
    #[error(transparent)]
    Config(#[from] rust::ConfigError),
    /// The shipper could not start.
    #[error(transparent)]
    Ship(#[from] ShipError),
    /// The consumer could not be built.
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    /// The consumer's schema registry.
    #[error(transparent)]
    Schema(#[from] rust::SchemaError),
    /// A keyword argument the configuration cannot express.
    #[error("invalid {argument} {value:?}: {reason}")]
    Argument {
        argument: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A call after `close()`.
    #[error("the {what} is closed")]
    Closed { what: &'static str },
    /// `ack()` or `fail()` twice, or after the consumer closed.
    #[error("event {stream_id} already has a verdict (ack, fail, or its consumer closed)")]
    AlreadyDecided { stream_id: String },
    /// The consumer's thread or runtime.
    #[error("cannot start the consumer: {source}")]
    Runtime {
        #[source]
        source: std::io::Error,
    },
    /// The consumer's thread ended on its own (a bug: it only stops when asked).
    #[error("the consumer stopped unexpectedly: {reason}")]
    ConsumerStopped { reason: String },
}

impl From<Error> for PyErr {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::Publish(PublishError::RingFull { .. }) => RingFull::new_err(message),
            Error::Publish(PublishError::TooLarge { .. }) => TooLarge::new_err(message),
            Error::Publish(PublishError::Closed) | Error::Closed { .. } => Closed::new_err(message),
            Error::Publish(_)
            | Error::Argument {
                argument: "version" | "side",
                ..
            } => InvalidEvent::new_err(message),
            Error::Config(_) | Error::Ship(ShipError::Config(_)) | Error::Argument { .. } => {
                ConfigError::new_err(message)
            }
            Error::Consume(ConsumeError::Config(_)) => ConfigError::new_err(message),
            Error::Schema(_) | Error::Ship(ShipError::Schemas { .. }) => {
                SchemaError::new_err(message)
            }
            Error::AlreadyDecided { .. } => PyValueError::new_err(message),
            Error::Ship(_)
            | Error::Consume(_)
            | Error::Runtime { .. }
            | Error::ConsumerStopped { .. } => ConsumerError::new_err(message),
        }
    }
}
