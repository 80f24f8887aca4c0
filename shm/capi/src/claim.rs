//! The zero-copy send: claim room in the tx ring, write the payload in place, commit (or
//! abort). One claim may be open per agent; while it is, the agent accepts only
//! `aw_commit`, `aw_commit_deferred`, `aw_abort`, `aw_agent_id` and `aw_close` (others
//! return `AW_ERR_BUSY`), because the Rust claim borrows the whole agent.

use crate::agent::{aw_agent, with_agent};
use crate::args;
use crate::send::{aw_send_options, kind, send_options};
use crate::status::{aw_status, Failure};

/// Claims room for a frame of kind `kind` (`AW_KIND_*`) to `destination` with a payload of
/// `payload_len` bytes, with `options` (NULL: the defaults); writes the address of the
/// payload area (in the shared ring, 8-byte aligned, `payload_len` bytes) to
/// `*payload_out`. Fill it, then `aw_commit` (or `aw_abort`). `AW_ERR_TOO_LARGE` if it can
/// never fit the ring; `AW_ERR_BUSY` if a claim is already open.
///
/// ```c
/// uint8_t *buf;
/// if (aw_claim(agent, AW_KIND_SEND, peer_id, 8, NULL, &buf) == AW_OK) {
///     memcpy(buf, &value, 8);
///     aw_commit(agent);
/// }
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; `options` is NULL or a valid `aw_send_options`;
/// `payload_out` is NULL or writable. The payload area is valid until the commit, abort or
/// close; write only within its `payload_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn aw_claim(
    agent: *mut aw_agent,
    kind: u8,
    destination: u32,
    payload_len: usize,
    options: *const aw_send_options,
    payload_out: *mut *mut u8,
) -> aw_status {
    with_agent(agent, |a| {
        let out = args::out(payload_out, "payload_out")?;
        let kind = self::kind(kind)?;
        // SAFETY: NULL or a valid aw_send_options (caller).
        let options = unsafe { send_options(options) };
        if a.claim.is_some() {
            return Err(Failure::claim_open());
        }
        // SAFETY: no claim is open (checked above), and the borrow goes into `a.claim`
        // below or is dropped with the error.
        let inner = unsafe { a.agent_for_claim() };
        let mut claim = inner.claim(kind, destination, payload_len, options)?;
        let payload = claim.payload_mut().as_mut_ptr();
        a.claim = Some(claim);
        a.claim_priority = options.priority;
        // SAFETY: checked not NULL; writable (caller).
        unsafe { out.write(payload) };
        Ok(())
    })
}

/// Commits the open claim and publishes it, then confirms the daemon accepts frames (as a
/// send does): `AW_ERR_DISCONNECTED` if it stopped first. `AW_ERR_BUSY` if no claim is
/// open.
///
/// ```c
/// aw_commit(agent);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle.
#[no_mangle]
pub unsafe extern "C" fn aw_commit(agent: *mut aw_agent) -> aw_status {
    with_agent(agent, |a| {
        let claim = a.claim.take().ok_or_else(no_claim)?;
        claim.commit();
        let priority = a.claim_priority;
        a.agent()?.confirm(priority)?;
        Ok(())
    })
}

/// Commits the open claim without publishing it: it becomes visible at the next
/// `aw_flush` (or when a later claim at the same priority finds the ring full), so a batch
/// costs one publish. `AW_ERR_BUSY` if no claim is open.
///
/// ```c
/// for (int i = 0; i < n; i++) { aw_claim(agent, AW_KIND_SEND, peer, 8, NULL, &buf); fill(buf); aw_commit_deferred(agent); }
/// aw_flush(agent);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle.
#[no_mangle]
pub unsafe extern "C" fn aw_commit_deferred(agent: *mut aw_agent) -> aw_status {
    with_agent(agent, |a| {
        a.claim.take().ok_or_else(no_claim)?.commit_deferred();
        Ok(())
    })
}

/// Aborts the open claim: nothing of it is ever published. No open claim is not an error.
///
/// ```c
/// aw_abort(agent);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle.
#[no_mangle]
pub unsafe extern "C" fn aw_abort(agent: *mut aw_agent) -> aw_status {
    with_agent(agent, |a| {
        // Dropping a claim aborts it.
        a.claim = None;
        Ok(())
    })
}

fn no_claim() -> Failure {
    Failure::new(
        aw_status::AW_ERR_BUSY,
        "no claim is open on this agent: aw_claim first",
    )
}
