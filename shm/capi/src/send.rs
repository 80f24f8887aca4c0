//! Sending: to an agent, with options, to a topic, to a capability (anycast), to a feature;
//! and the control calls around it (subscribe, unsubscribe, discover).

use crate::agent::{aw_agent, with_agent};
use crate::args;
use crate::consts::{AW_AGENT_NAME_BYTES, AW_VERSION_BYTES};
use crate::status::{aw_status, Failure};
use agentwire_shm::client::SendOptions;
use agentwire_shm::wire::FrameKind;
use std::ffi::{c_char, c_void};

/// Options for one outgoing frame. Start from `aw_send_options_default()`.
///
/// ```c
/// aw_send_options o = aw_send_options_default();
/// o.ack = 1;
/// aw_send_with(agent, AW_KIND_SEND, peer_id, "x", 1, &o);
/// ```
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct aw_send_options {
    /// Correlation id (0: none).
    pub correlation_id: u64,
    /// Feature id (0: none).
    pub feature_id: u32,
    /// Priority class, 0 (most urgent) to 3; larger values mean 3. Default 2.
    pub priority: u8,
    /// Non-zero: ask the daemon for an ack (an `AW_KIND_ACK` frame) once delivered.
    pub ack: u8,
}

impl From<&aw_send_options> for SendOptions {
    fn from(o: &aw_send_options) -> Self {
        SendOptions {
            priority: o.priority,
            ack: o.ack != 0,
            feature_id: o.feature_id,
            correlation_id: o.correlation_id,
        }
    }
}

/// The options a plain `aw_send` uses: priority 2, no ack, no feature, no correlation id.
///
/// ```c
/// aw_send_options o = aw_send_options_default();
/// o.priority = 0;
/// ```
#[no_mangle]
pub extern "C" fn aw_send_options_default() -> aw_send_options {
    // Cannot panic: copies constants.
    let d = SendOptions::default();
    aw_send_options {
        correlation_id: d.correlation_id,
        feature_id: d.feature_id,
        priority: d.priority,
        ack: u8::from(d.ack),
    }
}

/// Reads optional send options (NULL: the defaults).
///
/// # Safety
/// `options` is NULL or points to a valid `aw_send_options`.
pub(crate) unsafe fn send_options(options: *const aw_send_options) -> SendOptions {
    // SAFETY: NULL or valid (caller).
    match unsafe { options.as_ref() } {
        Some(o) => o.into(),
        None => SendOptions::default(),
    }
}

/// A frame kind byte from C, checked.
pub(crate) fn kind(kind: u8) -> Result<FrameKind, Failure> {
    FrameKind::from_u8(kind).ok_or_else(|| Failure::argument("kind", "is not an AW_KIND_* value"))
}

/// Sends `len` bytes at `payload` to agent `to_agent` (priority 2, no ack). Returns once the
/// frame is in the tx ring; waits up to the send timeout for room.
///
/// ```c
/// aw_send(agent, peer_id, "hello", 5);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; `payload` is NULL (with `len` 0) or `len`
/// readable bytes.
#[no_mangle]
pub unsafe extern "C" fn aw_send(
    agent: *mut aw_agent,
    to_agent: u32,
    payload: *const c_void,
    len: usize,
) -> aw_status {
    with_agent(agent, |a| {
        // SAFETY: NULL with 0, or `len` readable bytes (caller).
        let payload = unsafe { args::bytes(payload, len, "payload") }?;
        a.agent()?.send(to_agent, payload)?;
        Ok(())
    })
}

/// Sends with an explicit kind (`AW_KIND_*`) and options (NULL: the defaults) to
/// `destination` (an agent id, or a topic id for `AW_KIND_PUBLISH`).
///
/// ```c
/// aw_send_options o = aw_send_options_default();
/// o.priority = 0; o.ack = 1;
/// aw_send_with(agent, AW_KIND_SEND, peer_id, "urgent", 6, &o);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; `payload` is NULL (with `len` 0) or `len`
/// readable bytes; `options` is NULL or a valid `aw_send_options`.
#[no_mangle]
pub unsafe extern "C" fn aw_send_with(
    agent: *mut aw_agent,
    kind: u8,
    destination: u32,
    payload: *const c_void,
    len: usize,
    options: *const aw_send_options,
) -> aw_status {
    with_agent(agent, |a| {
        let kind = self::kind(kind)?;
        // SAFETY: NULL with 0, or `len` readable bytes (caller).
        let payload = unsafe { args::bytes(payload, len, "payload") }?;
        // SAFETY: NULL or a valid aw_send_options (caller).
        let options = unsafe { send_options(options) };
        a.agent()?.send_with(kind, destination, payload, options)?;
        Ok(())
    })
}

/// Publishes `len` bytes to every subscriber of `topic` (UTF-8; its id is resolved once
/// and cached).
///
/// ```c
/// aw_publish(agent, "alerts", "disk full", 9);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; `topic` is NULL or a NUL-terminated string;
/// `payload` is NULL (with `len` 0) or `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn aw_publish(
    agent: *mut aw_agent,
    topic: *const c_char,
    payload: *const c_void,
    len: usize,
) -> aw_status {
    with_agent(agent, |a| {
        // SAFETY: NULL or a NUL-terminated string (caller).
        let topic = unsafe { args::text(topic, "topic") }?;
        // SAFETY: NULL with 0, or `len` readable bytes (caller).
        let payload = unsafe { args::bytes(payload, len, "payload") }?;
        a.agent()?.publish(topic, payload)?;
        Ok(())
    })
}

/// Sends to one live agent offering `capability` at a version satisfying the semver
/// `requirement` (e.g. `"^2"`); the daemon picks one (anycast).
///
/// ```c
/// aw_anycast(agent, "ocr", "^2", image, image_len);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; `capability` and `requirement` are NULL or
/// NUL-terminated strings; `payload` is NULL (with `len` 0) or `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn aw_anycast(
    agent: *mut aw_agent,
    capability: *const c_char,
    requirement: *const c_char,
    payload: *const c_void,
    len: usize,
) -> aw_status {
    with_agent(agent, |a| {
        // SAFETY: NULL or NUL-terminated strings (caller).
        let (capability, requirement) = unsafe {
            (
                args::text(capability, "capability")?,
                args::text(requirement, "requirement")?,
            )
        };
        // SAFETY: NULL with 0, or `len` readable bytes (caller).
        let payload = unsafe { args::bytes(payload, len, "payload") }?;
        a.agent()?.anycast(capability, requirement, payload)?;
        Ok(())
    })
}

/// Like `aw_anycast`, but the least-loaded matching agent of the whole cluster may take it:
/// an agent of a linked node competes with this node's on equal terms instead of being
/// chosen only when no local one can take the frame (`AW_FLAG_ANY_NODE`, wire 1.2).
///
/// ```c
/// aw_anycast_any_node(agent, "ocr", "^2", image, image_len);
/// ```
///
/// # Safety
/// As `aw_anycast`.
#[no_mangle]
pub unsafe extern "C" fn aw_anycast_any_node(
    agent: *mut aw_agent,
    capability: *const c_char,
    requirement: *const c_char,
    payload: *const c_void,
    len: usize,
) -> aw_status {
    with_agent(agent, |a| {
        // SAFETY: NULL or NUL-terminated strings (caller).
        let (capability, requirement) = unsafe {
            (
                args::text(capability, "capability")?,
                args::text(requirement, "requirement")?,
            )
        };
        // SAFETY: NULL with 0, or `len` readable bytes (caller).
        let payload = unsafe { args::bytes(payload, len, "payload") }?;
        a.agent()?
            .anycast_any_node(capability, requirement, payload)?;
        Ok(())
    })
}

/// Sends to one live agent (or engine) registered for `feature_id`: the least loaded when
/// several are. `options` (NULL: the defaults) give priority, ack and correlation id; their
/// `feature_id` is replaced by `feature_id`.
///
/// ```c
/// aw_send_feature(agent, 12, "embed this", 10, NULL);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; `payload` is NULL (with `len` 0) or `len`
/// readable bytes; `options` is NULL or a valid `aw_send_options`.
#[no_mangle]
pub unsafe extern "C" fn aw_send_feature(
    agent: *mut aw_agent,
    feature_id: u32,
    payload: *const c_void,
    len: usize,
    options: *const aw_send_options,
) -> aw_status {
    with_agent(agent, |a| {
        // SAFETY: NULL with 0, or `len` readable bytes (caller).
        let payload = unsafe { args::bytes(payload, len, "payload") }?;
        // SAFETY: NULL or a valid aw_send_options (caller).
        let options = unsafe { send_options(options) };
        a.agent()?.send_feature_with(feature_id, payload, options)?;
        Ok(())
    })
}

/// Subscribes to `topic` (kept across reconnects); writes its topic id to `*topic_id_out`
/// unless that is NULL.
///
/// ```c
/// uint32_t topic_id;
/// aw_subscribe(agent, "alerts", &topic_id);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; `topic` is NULL or a NUL-terminated string;
/// `topic_id_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aw_subscribe(
    agent: *mut aw_agent,
    topic: *const c_char,
    topic_id_out: *mut u32,
) -> aw_status {
    with_agent(agent, |a| {
        // SAFETY: NULL or a NUL-terminated string (caller).
        let topic = unsafe { args::text(topic, "topic") }?;
        let id = a.agent()?.subscribe(topic)?;
        if !topic_id_out.is_null() {
            // SAFETY: not NULL; writable (caller).
            unsafe { topic_id_out.write(id) };
        }
        Ok(())
    })
}

/// Unsubscribes from `topic`.
///
/// ```c
/// aw_unsubscribe(agent, "alerts");
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; `topic` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn aw_unsubscribe(agent: *mut aw_agent, topic: *const c_char) -> aw_status {
    with_agent(agent, |a| {
        // SAFETY: NULL or a NUL-terminated string (caller).
        let topic = unsafe { args::text(topic, "topic") }?;
        a.agent()?.unsubscribe(topic)?;
        Ok(())
    })
}

/// One live agent found by `aw_discover`.
///
/// ```c
/// aw_agent_info info[1]; size_t found;
/// if (aw_discover(agent, "ocr", "^2", info, 1, &found) == AW_OK && found > 0) printf("%s\n", info[0].name);
/// ```
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct aw_agent_info {
    /// The agent's id.
    pub agent_id: u32,
    /// Non-zero when `name` or `version` was cut to fit (it stays NUL-terminated).
    pub truncated: u8,
    /// The agent's name, NUL-terminated (UTF-8, cut at a character boundary if too long).
    pub name: [c_char; AW_AGENT_NAME_BYTES],
    /// The matching capability version, NUL-terminated.
    pub version: [c_char; AW_VERSION_BYTES],
}

/// Copies `text` into `out` NUL-terminated, cut at a character boundary; true if cut.
pub(crate) fn copy_text(text: &str, out: &mut [c_char]) -> bool {
    let room = out.len() - 1;
    let mut end = text.len().min(room);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    for (o, &b) in out.iter_mut().zip(&text.as_bytes()[..end]) {
        *o = b as c_char;
    }
    out[end] = 0;
    end < text.len()
}

/// Lists live agents offering `capability` at a version satisfying `requirement`. Fills
/// up to `infos_max` entries of `infos` (which may be NULL when `infos_max` is 0) and
/// writes the number found to `*found_out`, which may exceed `infos_max` (call again with
/// a larger array to see them all).
///
/// ```c
/// aw_agent_info infos[8]; size_t found;
/// aw_discover(agent, "ocr", ">=2.0, <3", infos, 8, &found);
/// for (size_t i = 0; i < found && i < 8; i++) printf("%u %s\n", infos[i].agent_id, infos[i].name);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; `capability` and `requirement` are NULL or
/// NUL-terminated strings; `infos` is NULL or has room for `infos_max` entries;
/// `found_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aw_discover(
    agent: *mut aw_agent,
    capability: *const c_char,
    requirement: *const c_char,
    infos: *mut aw_agent_info,
    infos_max: usize,
    found_out: *mut usize,
) -> aw_status {
    with_agent(agent, |a| {
        let found_out = args::out(found_out, "found_out")?;
        if infos.is_null() && infos_max > 0 {
            return Err(Failure::argument("infos", "is NULL with infos_max > 0"));
        }
        // SAFETY: NULL or NUL-terminated strings (caller).
        let (capability, requirement) = unsafe {
            (
                args::text(capability, "capability")?,
                args::text(requirement, "requirement")?,
            )
        };
        let agents = a.agent()?.discover(capability, requirement)?;
        for (i, found) in agents.iter().take(infos_max).enumerate() {
            let mut info = aw_agent_info {
                agent_id: found.agent_id,
                truncated: 0,
                name: [0; AW_AGENT_NAME_BYTES],
                version: [0; AW_VERSION_BYTES],
            };
            let cut_name = copy_text(&found.name, &mut info.name);
            let cut_version = copy_text(&found.version, &mut info.version);
            info.truncated = u8::from(cut_name || cut_version);
            // SAFETY: i < infos_max and `infos` has room for infos_max entries (caller).
            unsafe { infos.add(i).write(info) };
        }
        // SAFETY: checked not NULL; writable (caller).
        unsafe { found_out.write(agents.len()) };
        Ok(())
    })
}
