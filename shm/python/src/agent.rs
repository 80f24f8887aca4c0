//! `Agent`: the Rust client for Python. Every wait (connect, a receive with a timeout, a
//! request, a send that meets backpressure, reconnect) runs with the GIL released.
//!
//! Locking: the Rust agent sits in a mutex that is only ever waited for with the GIL
//! released (or taken with `try_lock` while holding it), and never held while the GIL is
//! acquired, so two Python threads sharing an agent cannot deadlock; they take turns.

use crate::cell::AgentCell;
use crate::errors::{Fail, IntoPy};
use crate::message::{release_view, slot, Fields, MvSlot, PyAgentInfo, PyClaim, PyMessage};
use crate::view;
use agentwire_shm::client::{Agent, ClientError, OwnedMessage, SendOptions};
use agentwire_shm::idle::IdleStrategy;
use agentwire_shm::segment::Segment;
use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long one GIL-released slice of a longer wait lasts: between slices the wait checks
/// for signals (Ctrl-C), so `recv(timeout=None)` stays interruptible.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// A held message's payload, as the agent tracks it to release it at the next receive.
struct HeldView {
    exporter: Py<PyAny>,
    mv: MvSlot,
    /// The cell's view generation for it.
    generation: u64,
}

/// What the Python agent and its held messages share.
pub(crate) struct Shared {
    cell: Mutex<AgentCell>,
    /// The held message's view. Locked only with the GIL held and never across a wait.
    held: Mutex<Option<HeldView>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Runs `f` on the cell without waiting with the GIL held: `try_lock` first, and if
    /// another thread has the agent, waits for it with the GIL released. For calls that
    /// never block.
    fn quick<R: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut AgentCell) -> R + Send) -> R {
        match self.cell.try_lock() {
            Ok(mut cell) => f(&mut cell),
            Err(std::sync::TryLockError::Poisoned(p)) => f(&mut p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => py.detach(|| f(&mut lock(&self.cell))),
        }
    }

    /// Runs `f` on the cell with the GIL released: for anything that may wait.
    fn blocking<R: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut AgentCell) -> R + Send) -> R {
        py.detach(|| f(&mut lock(&self.cell)))
    }

    /// Releases the held message's view (BufferError if buffers of it live on). The Rust
    /// frame itself is released by the receive that follows (or `release_held`).
    fn release_current(&self, py: Python<'_>) -> PyResult<()> {
        let generation = {
            let mut held = lock(&self.held);
            let Some(h) = held.as_ref() else {
                return Ok(());
            };
            release_view(py, "held message's payload", &h.exporter, &h.mv)?;
            let generation = h.generation;
            *held = None;
            generation
        };
        self.quick(py, |cell| cell.view_released(generation, false));
        Ok(())
    }

    /// `Message.release()`: releases the message's view and, if it is still the agent's held
    /// message, the frame in the ring.
    pub(crate) fn release_message(
        &self,
        py: Python<'_>,
        exporter: &Py<PyAny>,
        mv: &MvSlot,
        generation: u64,
    ) -> PyResult<()> {
        release_view(py, "message's payload", exporter, mv)?;
        {
            let mut held = lock(&self.held);
            if held.as_ref().is_some_and(|h| h.generation == generation) {
                *held = None;
            }
        }
        // The cell releases the frame only if it is still this message's.
        self.quick(py, |cell| cell.view_released(generation, true));
        Ok(())
    }

    pub(crate) fn finish_claim(&self, py: Python<'_>, commit: bool) -> PyResult<()> {
        self.blocking(py, |cell| cell.finish_claim(commit))
            .py_err(py)
            .map(|_| ())
    }
}

/// A frame taken by a receive, ready to become a `Message`.
enum Got {
    /// In the rx ring, held: the payload's address and length, the segment to keep, and
    /// the view generation.
    InRing(Fields, usize, usize, Segment, u64),
    /// A copy (a frame stashed while a request waited).
    Owned(Fields, Vec<u8>),
}

/// Takes the held frame (after `try_recv_held` / `recv_held` returned one).
fn take_held(agent: &mut Agent) -> Option<Got> {
    let frame = agent.held_frame()?;
    let header = FrameHeader::validate(frame).expect("validated by the receive");
    let fields = Fields::of(header);
    let payload = &frame[HEADER_BYTES..];
    let segment = agent.segment();
    if segment.address_range().contains(&(frame.as_ptr() as usize)) {
        Some(Got::InRing(
            fields,
            payload.as_ptr() as usize,
            payload.len(),
            segment.clone(),
            0,
        ))
    } else {
        let copy = payload.to_vec();
        agent.release_held();
        Some(Got::Owned(fields, copy))
    }
}

/// Takes the held frame and, if Python will view it in the ring, marks it viewed.
fn take_viewed(cell: &mut AgentCell) -> Result<Option<Got>, Fail> {
    let got = take_held(cell.agent()?);
    Ok(match got {
        Some(Got::InRing(f, p, l, s, _)) => Some(Got::InRing(f, p, l, s, cell.view_taken())),
        other => other,
    })
}

fn owned_message(py: Python<'_>, msg: &OwnedMessage) -> PyResult<PyMessage> {
    let bytes = PyBytes::new(py, msg.payload());
    Ok(PyMessage {
        fields: Fields::of(msg.header()),
        mv: slot(view::memoryview(bytes.as_any())?.unbind()),
        exporter: None,
        agent: None,
        generation: 0,
    })
}

fn duration(seconds: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds.max(0.0))
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("bad timeout: {e}")))
}

/// A connected agent. Use it as a context manager (`with Agent(...) as a:`), which closes
/// it on exit. Payloads may be any contiguous buffer (bytes, bytearray, memoryview).
#[pyclass(module = "agentwire._native", name = "Agent", frozen, subclass)]
pub(crate) struct PyAgent {
    shared: Arc<Shared>,
    id: u32,
    name: String,
}

#[pymethods]
impl PyAgent {
    /// Connects to the daemon at `socket` (default: the daemon's default socket) and
    /// registers `name` with its capabilities (`{"name": "semver"}`), topics and feature ids.
    #[new]
    #[pyo3(signature = (
        name, *, socket=None, capabilities=None, topics=None, features=None,
        ring_capacity=None, idle=None, send_timeout=None, reconnect_attempts=None,
        reconnect_backoff=None, request_stash_max=None, daemon_uid=None,
        protocol_versions=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: String,
        socket: Option<std::path::PathBuf>,
        capabilities: Option<Bound<'_, PyDict>>,
        topics: Option<Vec<String>>,
        features: Option<Vec<u32>>,
        ring_capacity: Option<u32>,
        idle: Option<String>,
        send_timeout: Option<f64>,
        reconnect_attempts: Option<u32>,
        reconnect_backoff: Option<f64>,
        request_stash_max: Option<usize>,
        daemon_uid: Option<u32>,
        protocol_versions: Option<(u16, u16)>,
    ) -> PyResult<Self> {
        let mut builder = Agent::builder(&name);
        if let Some(socket) = socket {
            builder = builder.socket(socket);
        }
        if let Some(caps) = capabilities {
            for (k, v) in caps.iter() {
                builder = builder.capability(&k.extract::<String>()?, &v.extract::<String>()?);
            }
        }
        for topic in topics.unwrap_or_default() {
            builder = builder.topic(&topic);
        }
        for feature in features.unwrap_or_default() {
            builder = builder.feature(feature);
        }
        if let Some(bytes) = ring_capacity {
            builder = builder.ring_capacity(bytes);
        }
        if let Some(idle) = idle {
            let strategy: IdleStrategy = idle
                .parse()
                .map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("idle: {e}")))?;
            builder = builder.idle(strategy);
        }
        if let Some(t) = send_timeout {
            builder = builder.send_timeout(duration(t)?);
        }
        if reconnect_attempts.is_some() || reconnect_backoff.is_some() {
            builder = builder.reconnect(
                reconnect_attempts.unwrap_or(10),
                duration(reconnect_backoff.unwrap_or(0.01))?,
            );
        }
        if let Some(n) = request_stash_max {
            builder = builder.request_stash_frames_max(n);
        }
        if let Some(uid) = daemon_uid {
            builder = builder.daemon_uid(uid);
        }
        if let Some((min, max)) = protocol_versions {
            builder = builder.protocol_versions(min, max);
        }
        let agent = py.detach(|| builder.connect()).py_err(py)?;
        Ok(Self {
            id: agent.id(),
            name,
            shared: Arc::new(Shared {
                cell: Mutex::new(AgentCell::new(agent)),
                held: Mutex::new(None),
            }),
        })
    }

    /// This agent's id, as other agents address it (changes on reconnect).
    #[getter]
    fn agent_id(&self, py: Python<'_>) -> PyResult<u32> {
        self.with(py, |a| Ok(a.id()))
    }

    /// The name it registered.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The negotiated protocol version.
    #[getter]
    fn protocol_version(&self, py: Python<'_>) -> PyResult<u16> {
        self.with(py, |a| Ok(a.protocol_version()))
    }

    /// Whether `close()` ran.
    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        self.shared.quick(py, |cell| cell.is_closed())
    }

    /// Sends `payload` to agent `to`.
    #[pyo3(signature = (to, payload, *, priority=2, ack=false, correlation_id=0, feature_id=0))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments
    fn send(
        &self,
        py: Python<'_>,
        to: u32,
        payload: &Bound<'_, PyAny>,
        priority: u8,
        ack: bool,
        correlation_id: u64,
        feature_id: u32,
    ) -> PyResult<()> {
        let options = SendOptions {
            priority,
            ack,
            feature_id,
            correlation_id,
        };
        self.send_kind(py, FrameKind::Send, to, payload, options)
    }

    /// Sends several payloads to `to` with one publish; returns how many were sent (fewer
    /// than given only if the ring stayed full past the send timeout after some were sent).
    fn send_batch(&self, py: Python<'_>, to: u32, payloads: &Bound<'_, PyList>) -> PyResult<usize> {
        let items: Vec<Bound<'_, PyAny>> = payloads.iter().collect();
        // `bytes` are borrowed in place; other buffers are copied (their export could not
        // outlive the loop that takes them).
        let copies = items
            .iter()
            .map(|p| match p.cast::<PyBytes>() {
                Ok(_) => Ok(None),
                Err(_) => view::with_bytes(p, |b| Some(b.to_vec())),
            })
            .collect::<PyResult<Vec<Option<Vec<u8>>>>>()?;
        let slices: Vec<&[u8]> = items
            .iter()
            .zip(&copies)
            .map(|(p, copy)| match copy {
                Some(c) => c.as_slice(),
                None => p
                    .cast::<PyBytes>()
                    .map(|b| b.as_bytes())
                    .unwrap_or_default(),
            })
            .collect();
        self.shared
            .blocking(py, |cell| -> Result<usize, Fail> {
                Ok(cell.agent()?.send_batch(to, slices.iter().copied())?)
            })
            .py_err(py)
    }

    /// Sends events to the streaming engine serving `feature_id` (by default the engine's
    /// own, `STREAM_FEATURE_ID`), all in one frame. `events`: an iterable of
    /// `(key, event_time_ns, value)` or `(key, event_time_ns, value, {name: value})`
    /// tuples, the key an int or a short str. The engine answers only when it refused some
    /// (use `stream_batch_acked` to wait for its count every time).
    #[pyo3(signature = (events, *, feature_id=agentwire_shm::stream_events::STREAM_FEATURE_ID))]
    fn stream_batch(
        &self,
        py: Python<'_>,
        events: &Bound<'_, PyAny>,
        feature_id: u32,
    ) -> PyResult<()> {
        let batch = crate::stream::batch(events)?;
        self.shared
            .blocking(py, |cell| -> Result<(), Fail> {
                Ok(cell.agent()?.stream_batch(feature_id, &batch)?)
            })
            .py_err(py)
    }

    /// Sends events (as `stream_batch`) as a request to the engine's agent `engine` (found
    /// with `discover(STREAM_CAPABILITY, "^1")`) and waits up to `timeout` seconds for its
    /// `IngestAck`: how many events it took and refused. Releases the held message first.
    #[pyo3(signature = (engine, events, *, timeout=1.0))]
    fn stream_batch_acked(
        &self,
        py: Python<'_>,
        engine: u32,
        events: &Bound<'_, PyAny>,
        timeout: f64,
    ) -> PyResult<crate::stream::PyIngestAck> {
        let timeout = duration(timeout)?;
        let batch = crate::stream::batch(events)?;
        let ack = self.receiving(py, true, |cell| -> Result<_, Fail> {
            Ok(cell
                .agent_to_receive()?
                .stream_batch_acked(engine, &batch, timeout)?)
        })?;
        Ok(ack.into())
    }

    /// Publishes `payload` to every subscriber of `topic`.
    fn publish(&self, py: Python<'_>, topic: &str, payload: &Bound<'_, PyAny>) -> PyResult<()> {
        self.sending(py, payload, |agent, b| agent.publish(topic, b))
    }

    /// Sends `payload` to one live agent offering `capability` at a version satisfying
    /// `requirement` (semver, e.g. "^1").
    fn anycast(
        &self,
        py: Python<'_>,
        capability: &str,
        requirement: &str,
        payload: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.sending(py, payload, |agent, b| {
            agent.anycast(capability, requirement, b)
        })
    }

    /// Like `anycast`, but the least-loaded matching agent of the whole cluster may take
    /// it: an agent of a linked node competes with this node's on equal terms instead of
    /// being chosen only when no local one can take it.
    fn anycast_any_node(
        &self,
        py: Python<'_>,
        capability: &str,
        requirement: &str,
        payload: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.sending(py, payload, |agent, b| {
            agent.anycast_any_node(capability, requirement, b)
        })
    }

    /// Sends `payload` to the agent or engine registered for `feature_id`.
    fn send_feature(
        &self,
        py: Python<'_>,
        feature_id: u32,
        payload: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.sending(py, payload, |agent, b| agent.send_feature(feature_id, b))
    }

    /// Sends a request to agent `to` and waits up to `timeout` seconds for its response
    /// (a `Message` holding a copy). Raises `Timeout`, or `Nacked` when the daemon refuses
    /// it (e.g. no such agent). Releases the held message first.
    #[pyo3(signature = (to, payload, *, timeout=1.0))]
    fn request(
        &self,
        py: Python<'_>,
        to: u32,
        payload: &Bound<'_, PyAny>,
        timeout: f64,
    ) -> PyResult<PyMessage> {
        let timeout = duration(timeout)?;
        let reply = view::with_bytes(payload, |b| {
            self.receiving(py, true, |cell| -> Result<OwnedMessage, Fail> {
                Ok(cell.agent_to_receive()?.request(to, b, timeout)?)
            })
        })??;
        owned_message(py, &reply)
    }

    /// Answers `request` (a received request message) with `payload`.
    fn respond(
        &self,
        py: Python<'_>,
        request: &PyMessage,
        payload: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let options = SendOptions {
            correlation_id: request.fields.correlation_id,
            priority: request.fields.priority,
            ..Default::default()
        };
        self.send_kind(
            py,
            FrameKind::Response,
            request.fields.source,
            payload,
            options,
        )
    }

    /// Subscribes to `topic`; returns its id.
    fn subscribe(&self, py: Python<'_>, topic: &str) -> PyResult<u32> {
        self.shared
            .blocking(py, |cell| -> Result<u32, Fail> {
                Ok(cell.agent()?.subscribe(topic)?)
            })
            .py_err(py)
    }

    /// Unsubscribes from `topic`.
    fn unsubscribe(&self, py: Python<'_>, topic: &str) -> PyResult<()> {
        self.shared
            .blocking(py, |cell| -> Result<(), Fail> {
                Ok(cell.agent()?.unsubscribe(topic)?)
            })
            .py_err(py)
    }

    /// Lists live agents offering `capability` at a version satisfying `requirement`.
    #[pyo3(signature = (capability, requirement="*"))]
    fn discover(
        &self,
        py: Python<'_>,
        capability: &str,
        requirement: &str,
    ) -> PyResult<Vec<PyAgentInfo>> {
        let found = self
            .shared
            .blocking(py, |cell| -> Result<_, Fail> {
                Ok(cell.agent()?.discover(capability, requirement)?)
            })
            .py_err(py)?;
        Ok(found
            .into_iter()
            .map(|a| PyAgentInfo {
                agent_id: a.agent_id,
                name: a.name,
                capability: capability.to_string(),
                version: a.version,
            })
            .collect())
    }

    /// Receives one message, waiting up to `timeout` seconds (None: until one arrives; 0:
    /// only what is ready) with the GIL released. Returns None on timeout. The message is
    /// held: its payload is a view onto the ring until the next receive (or its release).
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<PyMessage>> {
        let got = self.receiving(py, false, |cell| -> Result<Option<Got>, Fail> {
            if cell.agent_to_receive()?.try_recv_held()?.is_none() {
                return Ok(None);
            }
            take_viewed(cell)
        })?;
        if let Some(got) = got {
            return self.message(py, got).map(Some);
        }
        let deadline = match timeout {
            Some(t) if t <= 0.0 => return Ok(None),
            Some(t) => Some(Instant::now() + duration(t)?),
            None => None,
        };
        loop {
            let slice = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()).min(WAIT_SLICE),
                None => WAIT_SLICE,
            };
            let got = self.receiving(py, true, |cell| -> Result<Option<Got>, Fail> {
                if cell.agent_to_receive()?.recv_held(Some(slice))?.is_none() {
                    return Ok(None);
                }
                take_viewed(cell)
            })?;
            if let Some(got) = got {
                return self.message(py, got).map(Some);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            py.check_signals()?;
        }
    }

    /// `recv(timeout=0)`: a message if one is ready, else None.
    fn try_recv(&self, py: Python<'_>) -> PyResult<Option<PyMessage>> {
        self.recv(py, Some(0.0))
    }

    /// Receives up to `max` ready messages at once (one release for the batch), each with
    /// a copy of its payload (they are not held). Waits up to `timeout` seconds for the
    /// first one; returns an empty list on timeout.
    #[pyo3(signature = (max=64, timeout=0.0))]
    fn recv_batch(
        &self,
        py: Python<'_>,
        max: usize,
        timeout: Option<f64>,
    ) -> PyResult<Vec<PyMessage>> {
        let mut frames: Vec<(Fields, Vec<u8>)> = Vec::new();
        let deadline = match timeout {
            Some(t) => Some(Instant::now() + duration(t)?),
            None => None,
        };
        loop {
            // After a wait, the frame that ended it is already taken.
            let room = max - frames.len();
            let batch =
                self.receiving(py, false, |cell| -> Result<Vec<(Fields, Vec<u8>)>, Fail> {
                    let mut out = Vec::new();
                    cell.agent_to_receive()?
                        .recv_batch(room, |header, payload| {
                            out.push((Fields::of(header), payload.to_vec()));
                        })?;
                    Ok(out)
                })?;
            frames.extend(batch);
            if !frames.is_empty() || max == 0 || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            // Wait for the first frame with the GIL released, then take the batch.
            let slice = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()).min(WAIT_SLICE),
                None => WAIT_SLICE,
            };
            let first = self.receiving(py, true, |cell| -> Result<Option<Got>, Fail> {
                let agent = cell.agent_to_receive()?;
                if agent.recv_held(Some(slice))?.is_none() {
                    return Ok(None);
                }
                // Copy it and release at once: batch messages are owned.
                let got = take_held(agent).map(|g| match g {
                    Got::InRing(f, ptr, len, _, _) => {
                        // SAFETY: the frame is held (not yet released) at ptr..ptr+len.
                        let b = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
                        Got::Owned(f, b.to_vec())
                    }
                    owned => owned,
                });
                agent.release_held();
                Ok(got)
            })?;
            if let Some(Got::Owned(f, b)) = first {
                frames.push((f, b));
            }
            py.check_signals()?;
        }
        frames
            .into_iter()
            .map(|(fields, payload)| {
                let bytes = PyBytes::new(py, &payload);
                Ok(PyMessage {
                    fields,
                    mv: slot(view::memoryview(bytes.as_any())?.unbind()),
                    exporter: None,
                    agent: None,
                    generation: 0,
                })
            })
            .collect()
    }

    /// Claims room in the tx ring for a `length` byte payload to `to` (zero-copy send):
    /// write `claim.buffer`, then commit. See `Claim`.
    #[pyo3(signature = (to, length, *, priority=2, correlation_id=0))]
    fn claim(
        &self,
        py: Python<'_>,
        to: u32,
        length: usize,
        priority: u8,
        correlation_id: u64,
    ) -> PyResult<PyClaim> {
        let options = SendOptions {
            priority,
            correlation_id,
            ..Default::default()
        };
        let (ptr, len, segment) = self
            .shared
            .blocking(py, |cell| {
                // The view keeps the segment mapped: a buffer written after the agent closed
                // (which aborts the claim) lands in a ring nobody reads, never in freed memory.
                let segment = cell.agent()?.segment().clone();
                cell.open_claim(FrameKind::Send, to, length, options)
                    .map(|(p, l)| (p as usize, l, segment))
            })
            .py_err(py)?;
        let exporter = view::new_view(py, ptr as *mut u8, len, false, Some(segment))?;
        let mv = view::memoryview(&exporter)?;
        Ok(PyClaim {
            agent: self.shared.clone(),
            exporter: exporter.unbind(),
            mv: slot(mv.unbind()),
        })
    }

    /// Publishes frames committed but not yet visible (none with this API; kept for parity).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |a| {
            a.flush();
            Ok(())
        })
    }

    /// Shows the daemon this agent is alive (receives do it while waiting).
    fn heartbeat(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |a| {
            a.heartbeat();
            Ok(())
        })
    }

    /// Connects again after `Disconnected`, re-registering the same name, capabilities and
    /// topics (the agent id may change). Releases the held message first.
    fn reconnect(&self, py: Python<'_>) -> PyResult<()> {
        self.receiving(py, true, |cell| -> Result<(), Fail> {
            Ok(cell.agent_to_receive()?.reconnect()?)
        })
    }

    /// Leaves cleanly (the daemon reclaims the agent). Releases the held message; a claim
    /// still open is aborted. Idempotent. If buffers derived from the held payload are still
    /// alive they stay readable: they keep the closed agent's segment mapped, and nothing
    /// writes it any more.
    fn close(&self, py: Python<'_>) {
        let _ = self.shared.release_current(py);
        *lock(&self.shared.held) = None;
        self.shared.blocking(py, |cell| cell.close());
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
    ) -> bool {
        self.close(py);
        false
    }

    /// The descriptor that becomes readable when frames arrive, once `arm_wakeup()` said
    /// none were waiting (for event loops; replaced by a reconnect).
    fn wakeup_fd(&self, py: Python<'_>) -> PyResult<i32> {
        self.with(py, |a| Ok(a.wakeup_fd().as_raw_fd()))
    }

    /// Asks the daemon to ring `wakeup_fd()` at the next frame; returns True when frames
    /// are already waiting (receive them instead of waiting).
    fn arm_wakeup(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |a| Ok(a.arm_wakeup()))
    }

    /// Empties `wakeup_fd()` after it fired.
    fn clear_wakeup(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |a| {
            a.clear_wakeup();
            Ok(())
        })
    }

    /// Raises `Disconnected` if the daemon is gone (for event loops that wait on the fd).
    fn ensure_connected(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |a| Ok(a.ensure_connected()?))
    }

    /// `(start, length)` of the mapped segment, for tests that check zero-copy.
    fn _segment_range(&self, py: Python<'_>) -> PyResult<(usize, usize)> {
        self.with(py, |a| {
            let r = a.segment().address_range();
            Ok((r.start, r.len()))
        })
    }

    fn __repr__(&self) -> String {
        format!("Agent(name={:?}, agent_id={})", self.name, self.id)
    }
}

impl PyAgent {
    /// Runs `f`, which releases the held frame (a receive, a request, a reconnect), after
    /// releasing the held message's view; while another thread's fresh view is not released
    /// yet (`ViewLive`), releases that one and tries again. `wait`: `f` may block, so it
    /// runs with the GIL released.
    fn receiving<R: Send>(
        &self,
        py: Python<'_>,
        wait: bool,
        mut f: impl FnMut(&mut AgentCell) -> Result<R, Fail> + Send,
    ) -> PyResult<R> {
        loop {
            self.shared.release_current(py)?;
            let result = if wait {
                self.shared.blocking(py, &mut f)
            } else {
                self.shared.quick(py, &mut f)
            };
            match result {
                // The other thread publishes its view with the GIL: let it run.
                Err(Fail::ViewLive) => py.detach(std::thread::yield_now),
                result => return result.py_err(py),
            }
        }
    }

    /// Runs a non-blocking `f` on the agent.
    fn with<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Agent) -> Result<R, Fail> + Send,
    ) -> PyResult<R> {
        self.shared.quick(py, |cell| f(cell.agent()?)).py_err(py)
    }

    fn send_kind(
        &self,
        py: Python<'_>,
        kind: FrameKind,
        to: u32,
        payload: &Bound<'_, PyAny>,
        options: SendOptions,
    ) -> PyResult<()> {
        self.sending(py, payload, |agent, b| {
            agent.send_with(kind, to, b, options)
        })
    }

    /// Runs the send `f` with `payload`'s bytes read in place (any contiguous buffer), the
    /// GIL released (a send may wait for room in the ring).
    fn sending(
        &self,
        py: Python<'_>,
        payload: &Bound<'_, PyAny>,
        f: impl FnOnce(&mut Agent, &[u8]) -> Result<(), ClientError> + Send,
    ) -> PyResult<()> {
        view::with_bytes(payload, |b| {
            self.shared
                .blocking(py, |cell| -> Result<(), Fail> { Ok(f(cell.agent()?, b)?) })
                .py_err(py)
        })?
    }

    /// Builds the message for a received frame; a frame in the ring becomes the held one.
    fn message(&self, py: Python<'_>, got: Got) -> PyResult<PyMessage> {
        match got {
            Got::Owned(fields, payload) => {
                let bytes = PyBytes::new(py, &payload);
                Ok(PyMessage {
                    fields,
                    mv: slot(view::memoryview(bytes.as_any())?.unbind()),
                    exporter: None,
                    agent: None,
                    generation: 0,
                })
            }
            Got::InRing(fields, ptr, len, segment, generation) => {
                let exporter = view::new_view(py, ptr as *mut u8, len, true, Some(segment))?;
                let mv = slot(view::memoryview(&exporter)?.unbind());
                let exporter = exporter.unbind();
                *lock(&self.shared.held) = Some(HeldView {
                    exporter: exporter.clone_ref(py),
                    mv: mv.clone(),
                    generation,
                });
                Ok(PyMessage {
                    fields,
                    mv,
                    exporter: Some(exporter),
                    agent: Some(self.shared.clone()),
                    generation,
                })
            }
        }
    }
}
