//! Events for the streaming engine from Python: an iterable of `(key, event_time_ns, value)`
//! or `(key, event_time_ns, value, {name: value})` tuples, the key an int (u64) or a short
//! str, encoded into one rkyv batch (`agentwire_shm::stream_events`), the engine's schema.
//! The engine checks every event and counts what it refuses; this side only refuses what
//! cannot be encoded at all (a wrong shape or type, more than `EVENTS_PER_BATCH_MAX`).

use agentwire_shm::stream_events::{
    EventBatch, IngestAck, WireAttribute, WireEvent, WireKey, EVENTS_PER_BATCH_MAX,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

/// The streaming engine's answer to a batch sent with `Agent.stream_batch_acked`.
#[pyclass(module = "agentwire._native", name = "IngestAck", frozen, get_all)]
pub(crate) struct PyIngestAck {
    /// Events the engine took.
    accepted: u32,
    /// Events it refused (and counted).
    malformed: u32,
    /// What was wrong with the first refused event ("" if none).
    first_problem: String,
}

#[pymethods]
impl PyIngestAck {
    fn __repr__(&self) -> String {
        format!(
            "IngestAck(accepted={}, malformed={}, first_problem={:?})",
            self.accepted, self.malformed, self.first_problem
        )
    }
}

impl From<IngestAck> for PyIngestAck {
    fn from(ack: IngestAck) -> Self {
        Self {
            accepted: ack.accepted,
            malformed: ack.malformed,
            first_problem: ack.first_problem,
        }
    }
}

/// The batch for `events` (see the module doc), built with the GIL held.
pub(crate) fn batch(events: &Bound<'_, PyAny>) -> PyResult<EventBatch> {
    let mut batch = EventBatch::default();
    for (i, item) in events.try_iter()?.enumerate() {
        if i == EVENTS_PER_BATCH_MAX {
            return Err(PyValueError::new_err(format!(
                "more than {EVENTS_PER_BATCH_MAX} events in one batch: split it"
            )));
        }
        batch
            .events
            .push(event(&item?).map_err(|e| with_index(events.py(), e, i))?);
    }
    Ok(batch)
}

/// `e` with the index of the event it is about, so a caller finds it in a long batch.
fn with_index(py: Python<'_>, e: PyErr, i: usize) -> PyErr {
    let text = e.value(py).to_string();
    PyErr::from_type(e.get_type(py), format!("event {i}: {text}"))
}

fn event(item: &Bound<'_, PyAny>) -> PyResult<WireEvent> {
    let tuple = item.cast::<PyTuple>().map_err(|_| {
        PyTypeError::new_err("an event is a tuple (key, event_time_ns, value[, attributes])")
    })?;
    if !(3..=4).contains(&tuple.len()) {
        return Err(PyTypeError::new_err(format!(
            "an event is a tuple (key, event_time_ns, value[, attributes]), not {} items",
            tuple.len()
        )));
    }
    let key = tuple.get_item(0)?;
    let key = match key.cast::<PyString>() {
        Ok(name) => WireKey::Name(name.to_cow()?.into_owned()),
        Err(_) => WireKey::Id(
            key.extract::<u64>()
                .map_err(|_| PyTypeError::new_err("a key is an int from 0 to 2**64-1 or a str"))?,
        ),
    };
    let attributes = match tuple.len() {
        4 => attributes(&tuple.get_item(3)?)?,
        _ => Vec::new(),
    };
    Ok(WireEvent {
        key,
        event_time_ns: tuple.get_item(1)?.extract::<i64>().map_err(|_| {
            PyTypeError::new_err("event_time_ns is an int (ns since the Unix epoch)")
        })?,
        value: tuple
            .get_item(2)?
            .extract::<f64>()
            .map_err(|_| PyTypeError::new_err("value is a float"))?,
        attributes,
    })
}

fn attributes(item: &Bound<'_, PyAny>) -> PyResult<Vec<WireAttribute>> {
    let dict = item
        .cast::<PyDict>()
        .map_err(|_| PyTypeError::new_err("attributes are a dict of str to str"))?;
    dict.iter()
        .map(|(name, value)| {
            Ok(WireAttribute {
                name: name.extract()?,
                value: value.extract()?,
            })
        })
        .collect::<PyResult<_>>()
        .map_err(|_: PyErr| PyTypeError::new_err("attributes are a dict of str to str"))
}
