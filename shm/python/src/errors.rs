//! The client's typed errors as the Python exceptions of `agentwire._errors`.
//!
//! Failures are plain Rust values while the GIL is released (`Fail`) and become Python
//! exceptions once it is held again: the exception classes are Python classes, looked up by
//! name in `agentwire._errors`.

use agentwire_shm::client::ClientError;
use agentwire_shm::ring::ClaimError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

/// Why a call failed, before it is raised in Python.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The client's error.
    Client(ClientError),
    /// The agent was closed.
    Closed,
    /// A claim is open: nothing else may touch the agent.
    ClaimOpen,
    /// Another thread's receive holds a frame whose view Python has not released yet: the
    /// caller releases it and tries again (never raised).
    ViewLive,
}

impl From<ClientError> for Fail {
    fn from(e: ClientError) -> Self {
        Fail::Client(e)
    }
}

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let module = ERRORS.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("agentwire._errors")?.unbind())
    })?;
    module.bind(py).getattr(name)
}

/// An exception of class `name` (in `agentwire._errors`) built from `args`.
pub(crate) fn raise<'py, A>(py: Python<'py>, name: &str, args: A) -> PyErr
where
    A: pyo3::call::PyCallArgs<'py>,
{
    match class(py, name).and_then(|c| c.call1(args)) {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

impl Fail {
    /// The Python exception for this failure.
    pub(crate) fn into_pyerr(self, py: Python<'_>) -> PyErr {
        match self {
            Fail::Closed => raise(py, "Closed", ("the agent is closed",)),
            Fail::ClaimOpen => raise(
                py,
                "ClaimOpen",
                ("a claim is open on this agent: commit or abort it first",),
            ),
            Fail::ViewLive => raise(
                py,
                "Error",
                ("agentwire: internal: a held view was not released before a receive",),
            ),
            Fail::Client(e) => client_error(py, e),
        }
    }
}

/// Maps every `ClientError` variant to its exception.
pub(crate) fn client_error(py: Python<'_>, e: ClientError) -> PyErr {
    let text = e.to_string();
    match e {
        ClientError::Refused { reason, detail } => {
            raise(py, "Refused", (text, format!("{reason:?}"), detail))
        }
        ClientError::UntrustedDaemon { .. } => raise(py, "UntrustedDaemon", (text,)),
        ClientError::Disconnected | ClientError::ReconnectFailed { .. } => {
            raise(py, "Disconnected", (text,))
        }
        ClientError::Backpressure(_) | ClientError::Claim(ClaimError::Full { .. }) => {
            raise(py, "Backpressure", (text,))
        }
        ClientError::Claim(ClaimError::TooLarge { .. }) => raise(py, "TooLarge", (text,)),
        ClientError::Timeout { .. } => raise(py, "Timeout", (text,)),
        ClientError::Nacked(body) => raise(py, "Nacked", (text, body.reason, body.detail)),
        ClientError::StashFull(_)
        | ClientError::Control(_)
        | ClientError::Segment(_)
        | ClientError::Ring(_)
        | ClientError::Frame(_)
        | ClientError::Protocol(_) => raise(py, "ProtocolError", (text,)),
        // A remote daemon unreachable or its TLS failed: the base class (Python agents
        // cannot connect remotely yet; the arm keeps the match whole).
        ClientError::Remote { .. } => raise(py, "Error", (text,)),
    }
}

/// `Result<T, Fail>` to `PyResult<T>`.
pub(crate) trait IntoPy<T> {
    /// Raises the failure, if any.
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, Fail> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| e.into_pyerr(py))
    }
}

impl<T> IntoPy<T> for Result<T, ClientError> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| client_error(py, e))
    }
}
