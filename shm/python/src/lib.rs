//! agentwire for Python agents: the client library (`agentwire_shm::client`) as the CPython
//! extension `agentwire._native`, which the pure-Python package `agentwire` wraps (asyncio,
//! exceptions). Built by maturin as an abi3 wheel for CPython 3.9 and later.
//!
//! - [`agent`]: `Agent`, every wait with the GIL released.
//! - [`message`]: `Message` (payload as a zero-copy memoryview onto the rx ring while held),
//!   `AgentInfo`, `Claim` (a writable memoryview onto the tx ring).
//! - [`view`]: the buffer exporter behind those memoryviews, which counts its exports so a
//!   payload is never released while Python still holds a view of it.
//! - [`cell`]: the Rust agent and its open claim.
//! - [`errors`]: the client's typed errors as Python exceptions.
//! - [`stream`]: events for the streaming engine, from tuples.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
// PyO3's generated glue is not documented item by item; the Python API is (docstrings and
// the .pyi stubs).
#![allow(missing_docs)]

mod agent;
mod cell;
mod errors;
mod message;
mod stream;
mod view;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    view::init_type(m.py())?;
    m.add_class::<agent::PyAgent>()?;
    m.add_class::<message::PyMessage>()?;
    m.add_class::<message::PyAgentInfo>()?;
    m.add_class::<message::PyClaim>()?;
    m.add_class::<stream::PyIngestAck>()?;
    m.add("HEADER_BYTES", agentwire_shm::wire::HEADER_BYTES)?;
    m.add(
        "STREAM_FEATURE_ID",
        agentwire_shm::stream_events::STREAM_FEATURE_ID,
    )?;
    m.add(
        "STREAM_CAPABILITY",
        agentwire_shm::stream_events::STREAM_CAPABILITY,
    )?;
    Ok(())
}
