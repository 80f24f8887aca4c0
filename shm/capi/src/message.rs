//! Receiving in place, and request/response: the `aw_message` view and the calls that fill
//! it.
//!
//! A view points into the agent's rx ring (zero-copy) or, for a frame kept aside while a
//! request waited and for a request's reply, into memory the agent handle owns. Either way
//! it stays valid until `aw_message_release`, the next receive on that agent (`aw_try_recv`,
//! `aw_recv`, `aw_recv_batch`, `aw_request`), `aw_reconnect` or `aw_close`: the rule of the
//! Rust client's held receive (`Agent::try_recv_held`).

use crate::agent::{aw_agent, with_agent};
use crate::args;
use crate::status::{aw_status, Failure};
use agentwire_shm::client::SendOptions;
use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
use std::ffi::c_void;
use std::time::{Duration, Instant};

/// A received message, read in place. Valid until `aw_message_release`, the next receive
/// on its agent, `aw_reconnect` or `aw_close` (see the header's introduction); copy what
/// must live longer. It belongs to its agent: use it on the thread using that agent.
///
/// ```c
/// aw_message msg;
/// if (aw_try_recv(agent, &msg) == AW_OK && msg.kind == AW_KIND_PUBLISH) consume(msg.payload, msg.payload_len);
/// ```
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct aw_message {
    /// Correlation id pairing requests, responses, acks and nacks (0: none).
    pub correlation_id: u64,
    /// The sending agent's id (0: the daemon), stamped by the daemon.
    pub source: u32,
    /// This agent's id, or the topic id of a publish.
    pub destination: u32,
    /// Feature id (0: none).
    pub feature_id: u32,
    /// Routing flags (`AW_FLAG_*`).
    pub flags: u32,
    /// Frame kind (`AW_KIND_*`).
    pub kind: u8,
    /// Priority class, 0 (most urgent) to 3.
    pub priority: u8,
    /// The payload (NULL only when `payload_len` is 0 and nothing was received).
    pub payload: *const u8,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl aw_message {
    /// A view of a validated frame (header first).
    pub(crate) fn of_frame(frame: &[u8]) -> Result<Self, Failure> {
        let header =
            FrameHeader::validate(frame).map_err(agentwire_shm::client::ClientError::from)?;
        Ok(Self::of(header, &frame[HEADER_BYTES..]))
    }

    pub(crate) fn of(header: &FrameHeader, payload: &[u8]) -> Self {
        Self {
            correlation_id: header.correlation(),
            source: header.source(),
            destination: header.destination(),
            feature_id: header.feature_id.get(),
            flags: header.routing_flags.get(),
            kind: header.kind,
            priority: header.priority(),
            payload: payload.as_ptr(),
            payload_len: payload.len(),
        }
    }
}

/// Writes a view of the agent's held frame to `out`.
fn hand_out(frame: Option<&[u8]>, out: *mut aw_message) -> Result<aw_status, Failure> {
    let Some(frame) = frame else {
        return Ok(aw_status::AW_NO_MESSAGE);
    };
    let view = aw_message::of_frame(frame)?;
    // SAFETY: checked not NULL by the caller; writable (the C caller's guarantee).
    unsafe { out.write(view) };
    Ok(aw_status::AW_OK)
}

/// Receives one message if one is ready, without waiting: `AW_OK` with `*msg_out` filled
/// (a view, valid until the next receive or `aw_message_release`), or `AW_NO_MESSAGE`.
/// Releases the message received before, if any.
///
/// ```c
/// aw_message msg;
/// while (aw_try_recv(agent, &msg) == AW_OK) handle(msg.payload, msg.payload_len);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; `msg_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aw_try_recv(agent: *mut aw_agent, msg_out: *mut aw_message) -> aw_status {
    with_agent(agent, |a| {
        let out = args::out(msg_out, "msg_out")?;
        a.no_claim_open()?;
        a.reply = None;
        let frame = a.agent()?.try_recv_held()?;
        hand_out(frame, out)
    })
}

/// A timeout in ms from C: negative waits forever, and so does one too far away to add to
/// the clock.
fn timeout(timeout_ms: i64) -> Option<Duration> {
    let ms = u64::try_from(timeout_ms).ok()?;
    let timeout = Duration::from_millis(ms);
    Instant::now().checked_add(timeout).map(|_| timeout)
}

/// Receives one message, waiting up to `timeout_ms` (negative, e.g. `AW_WAIT_FOREVER`:
/// until one arrives or the daemon goes away) with the agent's idle strategy: `AW_OK` with
/// `*msg_out` filled (a view, as for `aw_try_recv`), or `AW_NO_MESSAGE` at the timeout.
///
/// ```c
/// aw_message msg;
/// if (aw_recv(agent, &msg, 1000) == AW_OK) printf("%zu bytes from %u\n", msg.payload_len, msg.source);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; `msg_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aw_recv(
    agent: *mut aw_agent,
    msg_out: *mut aw_message,
    timeout_ms: i64,
) -> aw_status {
    with_agent(agent, |a| {
        let out = args::out(msg_out, "msg_out")?;
        a.no_claim_open()?;
        a.reply = None;
        let frame = a.agent()?.recv_held(timeout(timeout_ms))?;
        hand_out(frame, out)
    })
}

/// Releases the message handed out last (its ring space may be reused; its view becomes
/// invalid). Receives release it anyway; call this when a message is done with and no
/// receive follows soon, so the daemon may reuse the room. Nothing held is not an error.
///
/// ```c
/// aw_message_release(agent);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle.
#[no_mangle]
pub unsafe extern "C" fn aw_message_release(agent: *mut aw_agent) -> aw_status {
    with_agent(agent, |a| {
        a.no_claim_open()?;
        a.reply = None;
        a.agent()?.release_held();
        Ok(())
    })
}

/// Called by `aw_recv_batch` for each message, in place: `message` is valid only during the
/// call. `user_data` is what was passed to `aw_recv_batch`. It must not call into the same
/// agent, nor unwind (no C++ exception, no longjmp out of it).
///
/// ```c
/// static void count(void *n, const aw_message *m) { (void)m; ++*(size_t *)n; }
/// ```
#[allow(non_camel_case_types)]
pub type aw_message_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, message: *const aw_message)>;

/// Receives up to `frames_max` ready messages without waiting, calling `on_message` for
/// each in place (one release of ring space for the whole batch); writes how many were
/// handled to `*handled_out` (NULL: not written). Releases the message received before.
///
/// ```c
/// static void on_message(void *total, const aw_message *m) { *(size_t *)total += m->payload_len; }
/// size_t bytes = 0, handled;
/// aw_recv_batch(agent, 64, on_message, &bytes, &handled);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; `on_message` is a function as described at
/// `aw_message_fn`; `handled_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aw_recv_batch(
    agent: *mut aw_agent,
    frames_max: usize,
    on_message: aw_message_fn,
    user_data: *mut c_void,
    handled_out: *mut usize,
) -> aw_status {
    with_agent(agent, |a| {
        let Some(on_message) = on_message else {
            return Err(Failure::argument("on_message", "is NULL"));
        };
        a.no_claim_open()?;
        a.reply = None;
        let handled = a.agent()?.recv_batch(frames_max, |header, payload| {
            let view = aw_message::of(header, payload);
            // SAFETY: a C function pointer of the documented signature (caller); the view
            // points at bytes valid for the duration of the call.
            unsafe { on_message(user_data, &view) };
        })?;
        if !handled_out.is_null() {
            // SAFETY: not NULL; writable (caller).
            unsafe { handled_out.write(handled) };
        }
        Ok(())
    })
}

/// Sends a request of `len` bytes to agent `to_agent` and waits up to `timeout_ms` for its
/// response: `AW_OK` with `*reply_out` filled (a view owned by the agent, valid until the
/// next receive or `aw_message_release`, like a received message), `AW_ERR_TIMEOUT`, or
/// `AW_ERR_NACKED` when the daemon refused it (`aw_last_nack_reason()` says why, e.g.
/// `AW_NACK_NO_SUCH_AGENT`). Messages that arrive meanwhile are kept and returned by later
/// receives. Releases the message received before.
///
/// ```c
/// aw_message reply;
/// if (aw_request(agent, server_id, "ping", 4, 1000, &reply) == AW_OK) use(reply.payload, reply.payload_len);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; `payload` is NULL (with `len` 0) or `len`
/// readable bytes; `reply_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aw_request(
    agent: *mut aw_agent,
    to_agent: u32,
    payload: *const c_void,
    len: usize,
    timeout_ms: u32,
    reply_out: *mut aw_message,
) -> aw_status {
    with_agent(agent, |a| {
        let out = args::out(reply_out, "reply_out")?;
        // SAFETY: NULL with 0, or `len` readable bytes (caller).
        let payload = unsafe { args::bytes(payload, len, "payload") }?;
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        let result = a.agent()?.request(to_agent, payload, timeout);
        // Released only now: `payload` may be the last reply's bytes (a chained request).
        a.reply = None;
        let reply = result?;
        let view = aw_message::of(reply.header(), reply.payload());
        // The view points into the reply's heap buffer, which moving it does not move.
        a.reply = Some(reply);
        // SAFETY: checked not NULL; writable (caller).
        unsafe { out.write(view) };
        Ok(())
    })
}

/// Answers `request` (a received `AW_KIND_REQUEST` message, still valid or copied) with
/// `len` bytes: a response to its source with its correlation id and priority.
///
/// ```c
/// aw_message req;
/// if (aw_recv(agent, &req, AW_WAIT_FOREVER) == AW_OK && req.kind == AW_KIND_REQUEST)
///     aw_respond(agent, &req, "pong", 4);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; `request` is NULL or a valid `aw_message`
/// (only its header fields are read); `payload` is NULL (with `len` 0) or `len` readable
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn aw_respond(
    agent: *mut aw_agent,
    request: *const aw_message,
    payload: *const c_void,
    len: usize,
) -> aw_status {
    with_agent(agent, |a| {
        // SAFETY: NULL or a valid aw_message (caller); its fields are plain integers.
        let request = unsafe { args::value(request, "request") }?;
        // SAFETY: NULL with 0, or `len` readable bytes (caller).
        let payload = unsafe { args::bytes(payload, len, "payload") }?;
        let options = SendOptions {
            correlation_id: request.correlation_id,
            priority: request.priority,
            ..Default::default()
        };
        a.agent()?
            .send_with(FrameKind::Response, request.source, payload, options)?;
        Ok(())
    })
}
