//! The compiled half of the Python package `evstream` (`evstream._evstream`): the Rust
//! publisher, shipper and consumer, wrapped with PyO3. The Python half
//! (`python/evstream/__init__.py`) re-exports it and adds `Consumer.events()`.
//!
//! `unsafe` is not forbidden here as in the other crates: PyO3's macros expand to it. This
//! crate writes none.

mod consumer;
mod error;
mod publisher;
mod settings;

use pyo3::prelude::*;

#[pymodule]
fn _evstream(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<publisher::Publisher>()?;
    m.add_class::<consumer::PyConsumer>()?;
    m.add_class::<consumer::Event>()?;
    m.add("EvstreamError", py.get_type::<error::EvstreamError>())?;
    m.add("RingFull", py.get_type::<error::RingFull>())?;
    m.add("TooLarge", py.get_type::<error::TooLarge>())?;
    m.add("InvalidEvent", py.get_type::<error::InvalidEvent>())?;
    m.add("Closed", py.get_type::<error::Closed>())?;
    m.add("ConfigError", py.get_type::<error::ConfigError>())?;
    m.add("SchemaError", py.get_type::<error::SchemaError>())?;
    m.add("ConsumerError", py.get_type::<error::ConsumerError>())?;
    Ok(())
}
