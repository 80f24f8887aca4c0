//! `Message`, `AgentInfo` and `Claim`: what the Python agent hands out.

use crate::agent::Shared;
use crate::view;
use agentwire_shm::wire::{FrameHeader, FrameKind};
use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::sync::{Arc, Mutex};

/// The header fields a message carries to Python.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields {
    pub source: u32,
    pub destination: u32,
    pub kind: u8,
    pub priority: u8,
    pub correlation_id: u64,
    pub feature_id: u32,
    pub flags: u32,
}

impl Fields {
    pub(crate) fn of(header: &FrameHeader) -> Self {
        Self {
            source: header.source(),
            destination: header.destination(),
            kind: header.kind() as u8,
            priority: header.priority(),
            correlation_id: header.correlation(),
            feature_id: header.feature_id.get(),
            flags: header.routing_flags.get(),
        }
    }
}

pub(crate) fn kind_name(kind: u8) -> &'static str {
    match FrameKind::from_u8(kind) {
        Some(FrameKind::Send) => "send",
        Some(FrameKind::Publish) => "publish",
        Some(FrameKind::Request) => "request",
        Some(FrameKind::Response) => "response",
        Some(FrameKind::Ack) => "ack",
        Some(FrameKind::Nack) => "nack",
        Some(FrameKind::Control) => "control",
        None => "unknown",
    }
}

/// The BufferError raised when a payload cannot be released because views of it live on.
pub(crate) fn views_alive(what: &str, count: isize) -> PyErr {
    PyBufferError::new_err(format!(
        "agentwire: {count} buffer(s) derived from the {what} (a slice, memoryview or array of \
         it) are still alive, so it cannot be released: copy what you keep with \
         bytes(msg.payload) and drop those views first"
    ))
}

/// The cached memoryview of a payload, shared by the message (or claim) and the agent.
pub(crate) type MvSlot = Arc<Mutex<Py<PyAny>>>;

pub(crate) fn slot(mv: Py<PyAny>) -> MvSlot {
    Arc::new(Mutex::new(mv))
}

pub(crate) fn get(slot: &MvSlot, py: Python<'_>) -> Py<PyAny> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).clone_ref(py)
}

/// Releases a memoryview and its exporter: afterwards the view raises ValueError on use.
/// Fails with BufferError while buffers of it live on; the exporter then stays valid and
/// the slot gets a fresh memoryview (the old one was released on the way).
pub(crate) fn release_view(
    py: Python<'_>,
    what: &str,
    exporter: &Py<PyAny>,
    mv: &MvSlot,
) -> PyResult<()> {
    let exporter = exporter.bind(py);
    if !view::is_valid(exporter) {
        return Ok(());
    }
    let mut mv = mv.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = mv.bind(py).call_method0(pyo3::intern!(py, "release")) {
        if e.is_instance_of::<PyBufferError>(py) {
            return Err(views_alive(what, 1));
        }
        return Err(e);
    }
    if let Err(n) = view::invalidate(exporter) {
        *mv = view::memoryview(exporter)?.unbind();
        return Err(views_alive(what, n));
    }
    Ok(())
}

/// A received message. Its `payload` is a read-only memoryview: onto the frame in the rx
/// ring while the message is held (zero-copy), onto a private copy otherwise.
#[pyclass(module = "agentwire._native", name = "Message", frozen)]
pub(crate) struct PyMessage {
    pub(crate) fields: Fields,
    /// The payload's memoryview.
    pub(crate) mv: MvSlot,
    /// The exporter in the ring, for a held message (`None`: an owned copy).
    pub(crate) exporter: Option<Py<PyAny>>,
    /// The agent, for a held message.
    pub(crate) agent: Option<Arc<Shared>>,
    /// The agent cell's view generation of a held message (0: a copy).
    pub(crate) generation: u64,
}

#[pymethods]
impl PyMessage {
    /// The sending agent's id (0: the daemon).
    #[getter]
    fn source(&self) -> u32 {
        self.fields.source
    }
    /// Where the frame was addressed: this agent, a topic id, a route id.
    #[getter]
    fn destination(&self) -> u32 {
        self.fields.destination
    }
    /// "send", "publish", "request", "response", "ack", "nack" or "control".
    #[getter]
    fn kind(&self) -> &'static str {
        kind_name(self.fields.kind)
    }
    /// Priority class 0 (most urgent) to 3.
    #[getter]
    fn priority(&self) -> u8 {
        self.fields.priority
    }
    /// The correlation id (requests and their responses; 0 otherwise).
    #[getter]
    fn correlation_id(&self) -> u64 {
        self.fields.correlation_id
    }
    /// The feature id (0: none).
    #[getter]
    fn feature_id(&self) -> u32 {
        self.fields.feature_id
    }
    /// The routing flags.
    #[getter]
    fn flags(&self) -> u32 {
        self.fields.flags
    }
    /// Whether the payload is a view onto the rx ring (released by the next receive).
    #[getter]
    fn held(&self, py: Python<'_>) -> bool {
        self.exporter
            .as_ref()
            .is_some_and(|e| view::is_valid(e.bind(py)))
    }

    /// The payload as a read-only memoryview. For a held message it is the frame's bytes in
    /// the rx ring, valid until the message is released (`release()`, the end of a `with`
    /// block, the agent's next receive, request or close); then it raises `Released`.
    #[getter]
    fn payload(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(exporter) = &self.exporter {
            if !view::is_valid(exporter.bind(py)) {
                return Err(crate::errors::raise(
                    py,
                    "Released",
                    (
                        "agentwire: this message was released (by release(), the end of its \
                      with block, or the agent's next receive, request or close); copy \
                      payloads you keep with bytes(msg.payload)",
                    ),
                ));
            }
        }
        Ok(get(&self.mv, py))
    }

    /// A copy of the payload.
    fn __bytes__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let mv = self.payload(py)?;
        view::with_bytes(mv.bind(py), |b| PyBytes::new(py, b))
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.payload(py)?.bind(py).len()
    }

    /// Releases the message: the ring may reuse its bytes and the payload view becomes
    /// invalid. Raises BufferError if buffers derived from the payload are still alive.
    /// Does nothing for a message already released or not held.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let (Some(exporter), Some(agent)) = (&self.exporter, &self.agent) else {
            return Ok(());
        };
        agent.release_message(py, exporter, &self.mv, self.generation)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Py<PyAny>,
        _exc: Py<PyAny>,
        _tb: Py<PyAny>,
    ) -> PyResult<bool> {
        self.release(py)?;
        Ok(false)
    }

    /// The payload's address (0 once released), for tests that check zero-copy.
    fn _payload_address(&self, py: Python<'_>) -> usize {
        self.exporter
            .as_ref()
            .map_or(0, |e| view::address(e.bind(py)))
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let len = get(&self.mv, py).bind(py).len().unwrap_or(0);
        format!(
            "Message(kind={:?}, source={}, destination={}, correlation_id={}, {} bytes{})",
            kind_name(self.fields.kind),
            self.fields.source,
            self.fields.destination,
            self.fields.correlation_id,
            len,
            if self.held(py) { ", held" } else { "" }
        )
    }
}

/// A live agent found by `Agent.discover`.
#[pyclass(module = "agentwire._native", name = "AgentInfo", frozen, get_all)]
pub(crate) struct PyAgentInfo {
    /// The agent's id (the destination of `send` and `request`).
    pub agent_id: u32,
    /// Its name.
    pub name: String,
    /// The capability asked for.
    pub capability: String,
    /// The version of it that the agent offers.
    pub version: String,
}

#[pymethods]
impl PyAgentInfo {
    /// `{capability: version}` for the capability asked for.
    #[getter]
    fn capabilities<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item(&self.capability, &self.version)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "AgentInfo(agent_id={}, name={:?}, capabilities={{{:?}: {:?}}})",
            self.agent_id, self.name, self.capability, self.version
        )
    }
}

/// Room claimed in the tx ring for one frame: write the payload into `buffer` (a writable
/// memoryview onto the ring), then `commit()`; `abort()` drops it. As a context manager it
/// commits on a clean exit and aborts on an exception. While it is open the agent refuses
/// every other call (ClaimOpen).
#[pyclass(module = "agentwire._native", name = "Claim", frozen)]
pub(crate) struct PyClaim {
    pub(crate) agent: Arc<Shared>,
    pub(crate) exporter: Py<PyAny>,
    pub(crate) mv: MvSlot,
}

#[pymethods]
impl PyClaim {
    /// The writable payload area (a memoryview onto the tx ring).
    #[getter]
    fn buffer(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if !view::is_valid(self.exporter.bind(py)) {
            return Err(crate::errors::raise(
                py,
                "Released",
                ("agentwire: this claim was committed or aborted",),
            ));
        }
        Ok(get(&self.mv, py))
    }

    /// Publishes the frame. Raises BufferError while buffers derived from `buffer` live on.
    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        self.finish(py, true)
    }

    /// Drops the frame: nothing of it is sent.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        self.finish(py, false)
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.buffer(py)
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Py<PyAny>,
        _exc: Py<PyAny>,
        _tb: Py<PyAny>,
    ) -> PyResult<bool> {
        self.finish(py, exc_type.is_none(py))?;
        Ok(false)
    }
}

impl PyClaim {
    fn finish(&self, py: Python<'_>, commit: bool) -> PyResult<()> {
        if !view::is_valid(self.exporter.bind(py)) {
            return Ok(());
        }
        release_view(py, "claim's buffer", &self.exporter, &self.mv)?;
        self.agent.finish_claim(py, commit)
    }
}
