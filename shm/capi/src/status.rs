//! Status codes, the thread-local error message, and the guard every entry point runs its
//! body in so that no panic unwinds into C.

use agentwire_shm::client::ClientError;
use agentwire_shm::ring::ClaimError;
use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a call returns: `AW_OK`, or why it failed. The thread's `aw_last_error()` then says
/// more.
///
/// ```c
/// aw_status status = aw_send(agent, peer_id, "hi", 2);
/// if (status != AW_OK) fprintf(stderr, "%s: %s\n", aw_status_name(status), aw_last_error());
/// ```
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum aw_status {
    /// Success.
    AW_OK = 0,
    /// A NULL pointer, a string that is not UTF-8, or a value out of range; the message
    /// names the argument.
    AW_ERR_INVALID_ARGUMENT = 1,
    /// The daemon refused the connection (not permitted, full, per-uid limit, version).
    AW_ERR_REFUSED = 2,
    /// The process serving the socket runs as a uid this agent does not trust (see
    /// `aw_options_add_daemon_uid`). Nothing was sent.
    AW_ERR_UNTRUSTED_DAEMON = 3,
    /// The daemon is gone; call `aw_reconnect`.
    AW_ERR_DISCONNECTED = 4,
    /// Every reconnect attempt failed.
    AW_ERR_RECONNECT_FAILED = 5,
    /// The tx ring stayed full past the send timeout (the daemon is not draining).
    AW_ERR_BACKPRESSURE = 6,
    /// The frame can never fit the ring.
    AW_ERR_TOO_LARGE = 7,
    /// No response (or no message) within the timeout.
    AW_ERR_TIMEOUT = 8,
    /// The daemon nacked the request; `aw_last_nack_reason()` gives its reason code.
    AW_ERR_NACKED = 9,
    /// Too many frames arrived while a request waited for its response (they stay queued).
    AW_ERR_STASH_FULL = 10,
    /// The daemon answered something unexpected, or a received frame failed validation.
    AW_ERR_PROTOCOL = 11,
    /// The control socket or the segment failed (a system call, a mapping).
    AW_ERR_IO = 12,
    /// The agent is in a state that forbids the call: a claim is open (commit or abort it
    /// first), or there is no claim to commit.
    AW_ERR_BUSY = 13,
    /// The library panicked (a bug); the message says what. The handle stays safe to
    /// close, but its state may be inconsistent: close it rather than use it on.
    AW_ERR_PANIC = 14,
    /// The rx ring broke its protocol (a daemon bug or memory corruption).
    AW_ERR_RING_CORRUPT = 15,
    /// Not a failure: no message was ready (`aw_try_recv`) or none came within the timeout
    /// (`aw_recv`). `aw_last_error()` is left as it was.
    AW_NO_MESSAGE = 16,
}

impl aw_status {
    const ALL: [aw_status; 17] = [
        Self::AW_OK,
        Self::AW_ERR_INVALID_ARGUMENT,
        Self::AW_ERR_REFUSED,
        Self::AW_ERR_UNTRUSTED_DAEMON,
        Self::AW_ERR_DISCONNECTED,
        Self::AW_ERR_RECONNECT_FAILED,
        Self::AW_ERR_BACKPRESSURE,
        Self::AW_ERR_TOO_LARGE,
        Self::AW_ERR_TIMEOUT,
        Self::AW_ERR_NACKED,
        Self::AW_ERR_STASH_FULL,
        Self::AW_ERR_PROTOCOL,
        Self::AW_ERR_IO,
        Self::AW_ERR_BUSY,
        Self::AW_ERR_PANIC,
        Self::AW_ERR_RING_CORRUPT,
        Self::AW_NO_MESSAGE,
    ];

    /// The variant's name, NUL-terminated.
    fn name(self) -> &'static CStr {
        match self {
            Self::AW_OK => c"AW_OK",
            Self::AW_ERR_INVALID_ARGUMENT => c"AW_ERR_INVALID_ARGUMENT",
            Self::AW_ERR_REFUSED => c"AW_ERR_REFUSED",
            Self::AW_ERR_UNTRUSTED_DAEMON => c"AW_ERR_UNTRUSTED_DAEMON",
            Self::AW_ERR_DISCONNECTED => c"AW_ERR_DISCONNECTED",
            Self::AW_ERR_RECONNECT_FAILED => c"AW_ERR_RECONNECT_FAILED",
            Self::AW_ERR_BACKPRESSURE => c"AW_ERR_BACKPRESSURE",
            Self::AW_ERR_TOO_LARGE => c"AW_ERR_TOO_LARGE",
            Self::AW_ERR_TIMEOUT => c"AW_ERR_TIMEOUT",
            Self::AW_ERR_NACKED => c"AW_ERR_NACKED",
            Self::AW_ERR_STASH_FULL => c"AW_ERR_STASH_FULL",
            Self::AW_ERR_PROTOCOL => c"AW_ERR_PROTOCOL",
            Self::AW_ERR_IO => c"AW_ERR_IO",
            Self::AW_ERR_BUSY => c"AW_ERR_BUSY",
            Self::AW_ERR_PANIC => c"AW_ERR_PANIC",
            Self::AW_ERR_RING_CORRUPT => c"AW_ERR_RING_CORRUPT",
            Self::AW_NO_MESSAGE => c"AW_NO_MESSAGE",
        }
    }
}

impl From<()> for aw_status {
    /// A body that finished: `AW_OK`.
    fn from((): ()) -> Self {
        aw_status::AW_OK
    }
}

/// A failed call: the code C sees and the message `aw_last_error` returns.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: aw_status,
    pub(crate) message: String,
    /// The nack reason code, for `AW_ERR_NACKED`.
    pub(crate) nack_reason: u32,
}

impl Failure {
    pub(crate) fn new(status: aw_status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            nack_reason: 0,
        }
    }

    /// An invalid argument, named.
    pub(crate) fn argument(name: &str, why: &str) -> Self {
        Self::new(
            aw_status::AW_ERR_INVALID_ARGUMENT,
            format!("argument `{name}`: {why}"),
        )
    }

    /// The open claim forbids the call.
    pub(crate) fn claim_open() -> Self {
        Self::new(
            aw_status::AW_ERR_BUSY,
            "a claim is open on this agent: aw_commit or aw_abort it first",
        )
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        use aw_status::*;
        let status = match &e {
            ClientError::Refused { .. } => AW_ERR_REFUSED,
            ClientError::UntrustedDaemon { .. } => AW_ERR_UNTRUSTED_DAEMON,
            ClientError::Disconnected => AW_ERR_DISCONNECTED,
            ClientError::ReconnectFailed { .. } => AW_ERR_RECONNECT_FAILED,
            ClientError::Backpressure(_) => AW_ERR_BACKPRESSURE,
            ClientError::Claim(ClaimError::TooLarge { .. }) => AW_ERR_TOO_LARGE,
            // A claim reports Full only when the wait for room was skipped; it is the
            // same condition as a send that timed out on a full ring.
            ClientError::Claim(_) => AW_ERR_BACKPRESSURE,
            ClientError::Timeout { .. } => AW_ERR_TIMEOUT,
            ClientError::StashFull(_) => AW_ERR_STASH_FULL,
            ClientError::Nacked(_) => AW_ERR_NACKED,
            ClientError::Control(_) | ClientError::Segment(_) | ClientError::Remote { .. } => {
                AW_ERR_IO
            }
            ClientError::Ring(_) => AW_ERR_RING_CORRUPT,
            ClientError::Frame(_) | ClientError::Protocol(_) => AW_ERR_PROTOCOL,
        };
        let nack_reason = match &e {
            ClientError::Nacked(body) => body.reason,
            _ => 0,
        };
        Self {
            status,
            message: e.to_string(),
            nack_reason,
        }
    }
}

thread_local! {
    /// The message of the last failed call on this thread.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    /// The nack reason of the last failed call on this thread (0: it was not a nack).
    static LAST_NACK_REASON: Cell<u32> = const { Cell::new(0) };
}

fn record(failure: &Failure) {
    // An interior NUL cannot come from our messages except through a caller's string
    // echoed back; cut there rather than lose the message.
    let bytes = failure.message.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let message = CString::new(&bytes[..end]).unwrap_or_default();
    LAST_ERROR.with(|last| *last.borrow_mut() = message);
    LAST_NACK_REASON.with(|last| last.set(failure.nack_reason));
}

/// Runs an entry point's body: its error becomes a status code and the thread's message,
/// and a panic becomes `AW_ERR_PANIC` instead of unwinding into C (undefined behaviour).
///
/// ```
/// use agentwire::{aw_last_error, aw_status};
/// let status = agentwire::guard_for_tests(|| panic!("boom"));
/// assert_eq!(status, aw_status::AW_ERR_PANIC);
/// // SAFETY: aw_last_error returns a NUL-terminated string owned by this thread.
/// let message = unsafe { std::ffi::CStr::from_ptr(aw_last_error()) };
/// assert!(message.to_str().unwrap().contains("boom"));
/// ```
pub(crate) fn guard<R: Into<aw_status>>(body: impl FnOnce() -> Result<R, Failure>) -> aw_status {
    // AssertUnwindSafe: after a panic the handle may hold a half-updated Rust value, but
    // every Rust type here stays memory-safe when a panic interrupts it (no unsafe code
    // relies on an invariant across a call that can panic); the caller learns of it by
    // AW_ERR_PANIC.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(done)) => done.into(),
        Ok(Err(failure)) => {
            record(&failure);
            failure.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            let failure = Failure::new(
                aw_status::AW_ERR_PANIC,
                format!("libagentwire panicked (a bug; please report it): {what}"),
            );
            record(&failure);
            failure.status
        }
    }
}

/// Runs `body` in the entry-point guard: for the doc example and the tests that prove a
/// panic becomes `AW_ERR_PANIC` (no exported function panics on purpose).
///
/// ```
/// let status = agentwire::guard_for_tests(|| Ok(()));
/// assert_eq!(status, agentwire::aw_status::AW_OK);
/// ```
#[doc(hidden)]
pub fn guard_for_tests(body: impl FnOnce() -> Result<(), ()>) -> aw_status {
    guard(|| body().map_err(|()| Failure::new(aw_status::AW_ERR_INVALID_ARGUMENT, "test")))
}

/// The message of the last failed call on this thread: a NUL-terminated string, empty when
/// no call failed yet. It stays valid until the next failing call on this thread; a call that
/// succeeds leaves it as it is. Never NULL.
///
/// ```c
/// if (aw_send(agent, 7, "hi", 2) != AW_OK) fprintf(stderr, "%s\n", aw_last_error());
/// ```
#[no_mangle]
pub extern "C" fn aw_last_error() -> *const c_char {
    LAST_ERROR.with(|last| last.borrow().as_ptr())
}

/// The daemon's reason code for the last `AW_ERR_NACKED` on this thread (an `AW_NACK_*`
/// value), or 0 when the last failed call on this thread was not a nack.
///
/// ```c
/// if (aw_request(agent, 99, "x", 1, 1000, &reply) == AW_ERR_NACKED
///     && aw_last_nack_reason() == AW_NACK_NO_SUCH_AGENT) { ... }
/// ```
#[no_mangle]
pub extern "C" fn aw_last_nack_reason() -> u32 {
    LAST_NACK_REASON.with(Cell::get)
}

/// The name of a status code (`"AW_OK"`, `"AW_ERR_TIMEOUT"`, ...): a static NUL-terminated
/// string, never NULL (`"AW_UNKNOWN_STATUS"` for a value that is no `aw_status`).
///
/// ```c
/// printf("%s\n", aw_status_name(AW_ERR_TIMEOUT)); // AW_ERR_TIMEOUT
/// ```
#[no_mangle]
pub extern "C" fn aw_status_name(status: c_int) -> *const c_char {
    // An int, not the enum: C may pass any value, and an out-of-range enum is undefined
    // behaviour in Rust.
    aw_status::ALL
        .iter()
        .find(|s| **s as c_int == status)
        .map_or(c"AW_UNKNOWN_STATUS", |s| s.name())
        .as_ptr()
}
