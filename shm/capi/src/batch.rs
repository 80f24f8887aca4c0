//! Sending many frames to one agent with one publish (`aw_send_batch`), as the Rust
//! client's `send_batch` does.

use crate::agent::{aw_agent, with_agent};
use crate::args;
use crate::status::{aw_status, Failure};
use std::ffi::c_void;

/// One payload of a batch: `len` bytes at `data` (NULL only with `len` 0).
///
/// ```c
/// aw_buffer b = { .data = "hello", .len = 5 };
/// ```
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct aw_buffer {
    /// The bytes.
    pub data: *const c_void,
    /// How many.
    pub len: usize,
}

/// Sends `count` payloads to agent `to_agent`, published together (one release store) when
/// the ring has room for them all. Writes how many were sent to `*sent_out` (NULL: not
/// wanted): fewer than `count` only if the ring stayed full past the send timeout after
/// some were sent, in which case the status is still `AW_OK`; an error only if none was.
///
/// ```c
/// aw_buffer batch[2] = {{"a", 1}, {"b", 1}};
/// size_t sent;
/// aw_send_batch(agent, peer_id, batch, 2, &sent);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; `payloads` is NULL (with `count` 0) or `count`
/// readable `aw_buffer`s, each NULL with `len` 0 or `len` readable bytes; `sent_out` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aw_send_batch(
    agent: *mut aw_agent,
    to_agent: u32,
    payloads: *const aw_buffer,
    count: usize,
    sent_out: *mut usize,
) -> aw_status {
    with_agent(agent, |a| {
        // SAFETY: NULL with 0, or `count` readable aw_buffers (caller).
        let buffers = unsafe { args::slice(payloads, count, "payloads") }?;
        let slices = buffers
            .iter()
            .map(|b| {
                // SAFETY: NULL with 0, or `len` readable bytes (caller).
                unsafe { args::bytes(b.data, b.len, "payloads[].data") }
            })
            .collect::<Result<Vec<&[u8]>, Failure>>()?;
        let sent = if slices.is_empty() {
            a.agent()?;
            0
        } else {
            a.agent()?.send_batch(to_agent, slices.iter().copied())?
        };
        if !sent_out.is_null() {
            // SAFETY: not NULL; writable (caller).
            unsafe { sent_out.write(sent) };
        }
        Ok(())
    })
}
