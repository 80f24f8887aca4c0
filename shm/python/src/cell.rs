//! The Rust agent behind a Python `Agent`, with at most one open claim.
//!
//! A claim (`FrameClaim`) borrows the agent mutably, but a Python claim lives across calls,
//! so the cell keeps both: the agent boxed at a fixed address behind a raw pointer, and the
//! claim with its lifetime erased. The invariant that makes this sound: while a claim is
//! open, nothing but the claim touches the agent ([`AgentCell::agent`] refuses with
//! `ClaimOpen`), and the claim is dropped (committed or aborted) before the agent is.

use crate::errors::Fail;
use agentwire_shm::client::{Agent, FrameClaim, SendOptions};
use agentwire_shm::wire::FrameKind;
use std::ptr::NonNull;

/// The agent and its open claim, if any.
#[derive(Debug)]
pub(crate) struct AgentCell {
    /// From `Box::into_raw`; `None` once closed.
    agent: Option<NonNull<Agent>>,
    /// Borrows `*agent` (see the module's invariant).
    claim: Option<FrameClaim<'static>>,
    /// The open claim's priority (its tx lane), for the confirm after commit.
    claim_priority: u8,
    /// The generation of the held frame whose view Python may still read (0: none). Any
    /// receive releases the held frame, so it waits until Python released that view: with
    /// several Python threads on one agent, one thread's receive must not pull the frame
    /// from under a view another thread just got.
    view_generation: u64,
    /// The last generation handed out.
    generations: u64,
}

// SAFETY: the agent is `Send` and owned by the cell; the claim borrows only that agent, and
// the cell moves (or is locked) as a whole.
unsafe impl Send for AgentCell {}

impl AgentCell {
    pub(crate) fn new(agent: Agent) -> Self {
        Self {
            agent: Some(NonNull::from(Box::leak(Box::new(agent)))),
            claim: None,
            claim_priority: 0,
            view_generation: 0,
            generations: 0,
        }
    }

    /// The agent, unless it is closed or a claim is open.
    pub(crate) fn agent(&mut self) -> Result<&mut Agent, Fail> {
        if self.claim.is_some() {
            return Err(Fail::ClaimOpen);
        }
        match self.agent {
            // SAFETY: the box is alive until `close`/drop, and no claim borrows it.
            Some(p) => Ok(unsafe { &mut *p.as_ptr() }),
            None => Err(Fail::Closed),
        }
    }

    /// The agent for a call that releases the held frame (a receive, a request, a
    /// reconnect): refused with `ViewLive` while Python may still read the held frame.
    pub(crate) fn agent_to_receive(&mut self) -> Result<&mut Agent, Fail> {
        if self.view_generation != 0 {
            return Err(Fail::ViewLive);
        }
        self.agent()
    }

    /// Marks the held frame as viewed by Python; returns the view's generation.
    pub(crate) fn view_taken(&mut self) -> u64 {
        self.generations += 1;
        self.view_generation = self.generations;
        self.generations
    }

    /// Python released the view of generation `generation`; with `release`, the held frame
    /// goes too (`Message.release()`). Nothing happens for an older generation.
    pub(crate) fn view_released(&mut self, generation: u64, release: bool) {
        if generation == 0 || self.view_generation != generation {
            return;
        }
        self.view_generation = 0;
        if release {
            if let Ok(agent) = self.agent() {
                agent.release_held();
            }
        }
    }

    /// Opens a claim for a `len` byte payload; returns where to write it.
    pub(crate) fn open_claim(
        &mut self,
        kind: FrameKind,
        destination: u32,
        len: usize,
        options: SendOptions,
    ) -> Result<(*mut u8, usize), Fail> {
        self.agent()?; // closed or already claiming
        let Some(p) = self.agent else {
            return Err(Fail::Closed);
        };
        // SAFETY: checked above that no claim borrows the agent; the box stays put.
        let agent: &'static mut Agent = unsafe { &mut *p.as_ptr() };
        let mut claim = agent.claim(kind, destination, len, options)?;
        let payload = claim.payload_mut();
        let at = (payload.as_mut_ptr(), payload.len());
        self.claim = Some(claim);
        self.claim_priority = options.priority;
        Ok(at)
    }

    /// Commits (and confirms) or aborts the open claim; false when none was open.
    pub(crate) fn finish_claim(&mut self, commit: bool) -> Result<bool, Fail> {
        let Some(claim) = self.claim.take() else {
            return Ok(false);
        };
        if commit {
            claim.commit();
            let priority = self.claim_priority;
            self.agent()?.confirm(priority)?;
        }
        Ok(true)
    }

    /// Aborts any claim, says goodbye and drops the agent. Idempotent.
    pub(crate) fn close(&mut self) {
        self.claim = None;
        if let Some(p) = self.agent.take() {
            // SAFETY: from Box::leak in `new`, taken once; the claim is gone.
            unsafe { Box::from_raw(p.as_ptr()) }.close();
        }
    }

    /// Whether the agent was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.agent.is_none()
    }
}

impl Drop for AgentCell {
    fn drop(&mut self) {
        self.claim = None;
        if let Some(p) = self.agent.take() {
            // SAFETY: as in `close`.
            drop(unsafe { Box::from_raw(p.as_ptr()) });
        }
    }
}
