//! `aw_agent`: the connected agent handle, and its lifecycle (connect, reconnect, close)
//! and the calls about the connection itself (id, heartbeat, flush, confirm, the wakeup
//! descriptor for event loops, the segment's address range).
//!
//! Thread safety: an agent handle may move between threads but is used by one thread at a
//! time (the Rust `Agent` is `Send`, not `Sync`).

use crate::args;
use crate::options::aw_options;
use crate::status::{aw_status, guard, Failure};
use agentwire_shm::client::{Agent, FrameClaim, OwnedMessage};
use std::ffi::c_int;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

/// A connected agent (opaque). Create with `aw_connect`, free with `aw_close`.
///
/// Thread safety: usable from any thread, by one thread at a time (serialise calls on one
/// handle yourself); its message views and claim belong to it.
///
/// ```c
/// aw_agent *agent;
/// if (aw_connect(options, &agent) == AW_OK) { /* ... */ aw_close(agent); }
/// ```
#[allow(non_camel_case_types)]
pub struct aw_agent {
    /// The agent, from `Box::into_raw`: a raw pointer, not a `Box`, because `claim` may
    /// hold a mutable borrow of it that a `Box` (a unique owner) would invalidate when the
    /// handle is used.
    agent: NonNull<Agent>,
    /// The open zero-copy claim, if any. Its lifetime is erased: it really borrows
    /// `*agent` mutably, so while it is `Some` nothing else may touch `*agent` (every
    /// access goes through [`aw_agent::agent`], which refuses then), and it is dropped
    /// before `*agent` is (`Drop`).
    pub(crate) claim: Option<FrameClaim<'static>>,
    /// The open claim's priority class (its lane, for the confirm after commit).
    pub(crate) claim_priority: u8,
    /// The reply of the last `aw_request`, handed out as a view until the next receive.
    pub(crate) reply: Option<OwnedMessage>,
    /// The agent's id, readable while a claim is open.
    pub(crate) id: u32,
}

impl aw_agent {
    /// The agent, unless a claim is open (it holds the agent's only mutable borrow).
    pub(crate) fn agent(&mut self) -> Result<&mut Agent, Failure> {
        if self.claim.is_some() {
            return Err(Failure::claim_open());
        }
        // SAFETY: `agent` came from Box::into_raw and lives until Drop; no claim is open, so
        // no other borrow of it exists; `&mut self` makes this the only one.
        Ok(unsafe { self.agent.as_mut() })
    }

    /// Refuses the call while a claim is open, before it changes anything.
    pub(crate) fn no_claim_open(&self) -> Result<(), Failure> {
        match self.claim {
            Some(_) => Err(Failure::claim_open()),
            None => Ok(()),
        }
    }

    /// The agent for a new claim: the returned borrow is stored in `claim`, which keeps
    /// every other access out until it is committed or aborted.
    ///
    /// # Safety
    /// The caller stores what it derives from the borrow in `self.claim` (or drops it before
    /// returning), and `self.claim` is `None` now.
    pub(crate) unsafe fn agent_for_claim(&mut self) -> &'static mut Agent {
        debug_assert!(self.claim.is_none());
        // SAFETY: no claim is open (caller), so no other borrow of the agent exists; the
        // 'static borrow lives in `self.claim`, dropped before the agent (Drop), and every
        // other access checks `claim` first.
        unsafe { &mut *self.agent.as_ptr() }
    }
}

impl Drop for aw_agent {
    fn drop(&mut self) {
        // An open claim aborts (the region is never published), before the agent goes.
        self.claim = None;
        // SAFETY: from Box::into_raw in aw_connect, dropped once, and no borrow remains.
        let agent = unsafe { Box::from_raw(self.agent.as_ptr()) };
        agent.close();
    }
}

/// Runs `body` on the agent behind `agent`.
pub(crate) fn with_agent<R: Into<aw_status>>(
    agent: *mut aw_agent,
    body: impl FnOnce(&mut aw_agent) -> Result<R, Failure>,
) -> aw_status {
    guard(|| {
        // SAFETY: the caller passes a live agent handle used by this thread only (header).
        let handle = unsafe { args::handle(agent, "agent") }?;
        body(handle)
    })
}

/// Connects to the daemon with `options` (which stay the caller's: free them when done),
/// registers, and maps the agent's segment. Writes the handle to `*agent_out`.
///
/// ```c
/// aw_agent *agent;
/// if (aw_connect(options, &agent) != AW_OK) fprintf(stderr, "%s\n", aw_last_error());
/// ```
///
/// # Safety
/// `options` is NULL or a live options handle; `agent_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aw_connect(
    options: *const aw_options,
    agent_out: *mut *mut aw_agent,
) -> aw_status {
    guard(|| {
        let out = args::out(agent_out, "agent_out")?;
        // SAFETY: the caller passes NULL or a live options handle.
        let options = unsafe { args::value(options, "options") }?;
        let agent = options.builder().clone().connect()?;
        let handle = Box::new(aw_agent {
            id: agent.id(),
            agent: NonNull::from(Box::leak(Box::new(agent))),
            claim: None,
            claim_priority: 0,
            reply: None,
        });
        // SAFETY: `out` was checked not NULL and the caller guarantees it writable.
        unsafe { out.write(Box::into_raw(handle)) };
        Ok(())
    })
}

/// Leaves cleanly (tells the daemon, which reclaims the segment) and frees the handle.
/// An open claim is aborted; message views of this agent become invalid. NULL is accepted
/// (nothing happens).
///
/// ```c
/// aw_close(agent);
/// ```
///
/// # Safety
/// `agent` is NULL or a handle from `aw_connect` not closed yet; it is invalid after.
#[no_mangle]
pub unsafe extern "C" fn aw_close(agent: *mut aw_agent) {
    let _ = guard(|| {
        if !agent.is_null() {
            // SAFETY: a handle from aw_connect (Box::into_raw), closed once (caller).
            drop(unsafe { Box::from_raw(agent) });
        }
        Ok(())
    });
}

/// This agent's id (what other agents send to), written to `*id_out`.
///
/// ```c
/// uint32_t id;
/// aw_agent_id(agent, &id);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; `id_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aw_agent_id(agent: *mut aw_agent, id_out: *mut u32) -> aw_status {
    with_agent(agent, |a| {
        let out = args::out(id_out, "id_out")?;
        // SAFETY: checked not NULL; writable (caller).
        unsafe { out.write(a.id) };
        Ok(())
    })
}

/// Drops the current connection and connects again with bounded retries and backoff
/// (`aw_options_set_reconnect`), re-registering with the same name, capabilities, topics
/// (subscriptions included) and features. The agent id may change; message views of this
/// agent become invalid. `AW_ERR_BUSY` while a claim is open.
///
/// ```c
/// if (aw_recv(agent, &msg, 1000) == AW_ERR_DISCONNECTED) aw_reconnect(agent);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle.
#[no_mangle]
pub unsafe extern "C" fn aw_reconnect(agent: *mut aw_agent) -> aw_status {
    with_agent(agent, |a| {
        a.no_claim_open()?;
        a.reply = None;
        let inner = a.agent()?;
        inner.reconnect()?;
        a.id = inner.id();
        Ok(())
    })
}

/// Shows the daemon this agent is alive. Receives do it while waiting; an agent that
/// computes for longer than the daemon's liveness timeout (5 s by default) without sending
/// or receiving calls it now and then.
///
/// ```c
/// aw_heartbeat(agent);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle.
#[no_mangle]
pub unsafe extern "C" fn aw_heartbeat(agent: *mut aw_agent) -> aw_status {
    with_agent(agent, |a| {
        a.agent()?.heartbeat();
        Ok(())
    })
}

/// Publishes frames committed with `aw_commit_deferred`.
///
/// ```c
/// aw_flush(agent);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle.
#[no_mangle]
pub unsafe extern "C" fn aw_flush(agent: *mut aw_agent) -> aw_status {
    with_agent(agent, |a| {
        a.agent()?.flush();
        Ok(())
    })
}

/// Whether the daemon accepted every frame committed at `priority` (0 to 3) so far:
/// `AW_OK` while it serves this agent; while it shuts down, `AW_OK` only if it took them
/// before it stopped, else `AW_ERR_DISCONNECTED`. For after `aw_commit_deferred` +
/// `aw_flush`, which cannot say.
///
/// ```c
/// aw_confirm(agent, 2);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle.
#[no_mangle]
pub unsafe extern "C" fn aw_confirm(agent: *mut aw_agent, priority: u8) -> aw_status {
    with_agent(agent, |a| {
        a.agent()?.confirm(priority)?;
        Ok(())
    })
}

/// The descriptor that becomes readable when frames arrive, for `poll`/`epoll`: written
/// to `*fd_out`. It fires only after `aw_arm_wakeup`, stays readable until
/// `aw_clear_wakeup`, belongs to the agent (do not close it) and is replaced by
/// `aw_reconnect`.
///
/// ```c
/// int fd;
/// aw_wakeup_fd(agent, &fd);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; `fd_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aw_wakeup_fd(agent: *mut aw_agent, fd_out: *mut c_int) -> aw_status {
    with_agent(agent, |a| {
        let out = args::out(fd_out, "fd_out")?;
        let fd = a.agent()?.wakeup_fd().as_raw_fd();
        // SAFETY: checked not NULL; writable (caller).
        unsafe { out.write(fd) };
        Ok(())
    })
}

/// Tells the daemon this agent is about to sleep on its wakeup descriptor, so its next
/// frame rings it. Sets `*pending_out` to 1 when frames are already waiting (receive them
/// instead of sleeping), else 0.
///
/// ```c
/// int pending;
/// aw_arm_wakeup(agent, &pending);
/// if (!pending) poll(&(struct pollfd){ .fd = fd, .events = POLLIN }, 1, -1);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; `pending_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aw_arm_wakeup(agent: *mut aw_agent, pending_out: *mut c_int) -> aw_status {
    with_agent(agent, |a| {
        let out = args::out(pending_out, "pending_out")?;
        let pending = a.agent()?.arm_wakeup();
        // SAFETY: checked not NULL; writable (caller).
        unsafe { out.write(c_int::from(pending)) };
        Ok(())
    })
}

/// Empties the wakeup descriptor after it fired (never blocks).
///
/// ```c
/// aw_clear_wakeup(agent);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle.
#[no_mangle]
pub unsafe extern "C" fn aw_clear_wakeup(agent: *mut aw_agent) -> aw_status {
    with_agent(agent, |a| {
        a.agent()?.clear_wakeup();
        Ok(())
    })
}

/// `AW_OK` while the daemon serves this agent, `AW_ERR_DISCONNECTED` once it is gone: for
/// an event loop sleeping on the wakeup descriptor, to notice a dead daemon now and then.
///
/// ```c
/// if (aw_ensure_connected(agent) == AW_ERR_DISCONNECTED) aw_reconnect(agent);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle.
#[no_mangle]
pub unsafe extern "C" fn aw_ensure_connected(agent: *mut aw_agent) -> aw_status {
    with_agent(agent, |a| {
        a.agent()?.ensure_connected()?;
        Ok(())
    })
}

/// The addresses the agent's shared segment spans in this process (`*start_out`,
/// `*len_bytes_out`): a received view's payload lies inside it (zero-copy). For checks and
/// diagnostics.
///
/// ```c
/// uintptr_t start; size_t len;
/// aw_agent_segment_range(agent, &start, &len);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; the out-pointers are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aw_agent_segment_range(
    agent: *mut aw_agent,
    start_out: *mut usize,
    len_bytes_out: *mut usize,
) -> aw_status {
    with_agent(agent, |a| {
        let start_out = args::out(start_out, "start_out")?;
        let len_out = args::out(len_bytes_out, "len_bytes_out")?;
        let range = a.agent()?.segment().address_range();
        // SAFETY: both checked not NULL; writable (caller).
        unsafe {
            start_out.write(range.start);
            len_out.write(range.len());
        }
        Ok(())
    })
}
