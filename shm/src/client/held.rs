//! Receiving without a borrow, and waking on an fd: the parts of the client that the C and
//! Python bindings need, because a frame they hand out outlives the call that read it and
//! their event loops wait on descriptors, not on [`Agent::recv`].
//!
//! A held frame stays in the rx ring, unreleased, until [`Agent::release_held`], the next
//! receive of any kind, a reconnect, or the agent's drop. One frame is held at a time:
//! every receive releases the one before it first, so the ring's head never moves under a
//! frame still handed out, and no frame is seen twice.
//!
//! ```no_run
//! # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
//! if let Some(frame) = agent.recv_held(Some(std::time::Duration::from_millis(10)))? {
//!     let header = agentwire_shm::wire::FrameHeader::validate(frame).unwrap();
//!     let payload = &frame[agentwire_shm::wire::HEADER_BYTES..];
//!     println!("{} bytes from {}", payload.len(), header.source());
//! }
//! agent.release_held();
//! # Ok::<(), agentwire_shm::client::ClientError>(())
//! ```

use super::{count_empty_poll, Agent, ClientError, OwnedMessage};
use crate::ring::{Consumer, HeldRecord};
use crate::wire::FrameHeader;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

/// A frame an agent holds between calls.
#[derive(Debug)]
pub(super) enum Held {
    /// Still in the rx ring, unreleased.
    InRing(HeldRecord),
    /// Copied aside while a request waited (the stash).
    Owned(OwnedMessage),
}

impl Agent {
    /// Receives one frame if one is ready and keeps it, in place when it is in the ring,
    /// until [`release_held`](Self::release_held) or the next receive. Returns the whole
    /// frame, header first (validated). Releases the frame held before, if any.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// let held = agent.try_recv_held()?.map(|frame| frame.len());
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn try_recv_held(&mut self) -> Result<Option<&[u8]>, ClientError> {
        self.release_held();
        if let Some(owned) = self.stash.pop_front() {
            self.held = Some(Held::Owned(owned));
            return Ok(self.held_frame());
        }
        let record = match self.link.rx.peek()? {
            Some(frame) => {
                // Dropping the guard of a bad frame releases it: it is reported once, then
                // the stream goes on.
                FrameHeader::validate(frame.bytes())?;
                frame.hold()
            }
            None => {
                count_empty_poll(&mut self.idle_polls, &self.link.segment);
                return Ok(None);
            }
        };
        self.held = Some(Held::InRing(record));
        Ok(self.held_frame())
    }

    /// [`try_recv_held`](Self::try_recv_held), waiting up to `timeout` (`None`: until a
    /// frame arrives or the daemon goes away) with the builder's idle strategy.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// let got = agent.recv_held(Some(std::time::Duration::from_secs(1)))?.is_some();
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn recv_held(&mut self, timeout: Option<Duration>) -> Result<Option<&[u8]>, ClientError> {
        if self.wait_for_frame(timeout)? {
            self.try_recv_held()
        } else {
            Ok(None)
        }
    }

    /// The frame held now (header and payload), if any.
    ///
    /// ```no_run
    /// # let agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// assert!(agent.held_frame().is_none());
    /// ```
    pub fn held_frame(&self) -> Option<&[u8]> {
        match self.held.as_ref()? {
            Held::InRing(record) => Some(self.link.rx.held_bytes(record)),
            Held::Owned(owned) => Some(&owned.frame),
        }
    }

    /// Releases the held frame (the ring may reuse its bytes); false when none was held.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.try_recv_held()?;
    /// agent.release_held();
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn release_held(&mut self) -> bool {
        match self.held.take() {
            Some(Held::InRing(record)) => {
                self.link.rx.release_held(record);
                true
            }
            Some(Held::Owned(_)) => true,
            None => false,
        }
    }

    /// The descriptor that becomes readable when frames arrive for this agent, for an
    /// event loop (asyncio, epoll) to wait on. It fires only after
    /// [`arm_wakeup`](Self::arm_wakeup), and stays readable until
    /// [`clear_wakeup`](Self::clear_wakeup). It is replaced by a reconnect. Once the daemon
    /// is gone it stays readable (the end of a pipe whose writer closed, which no clear
    /// empties): a wake that brings no frame should call
    /// [`ensure_connected`](Self::ensure_connected), which then reports `Disconnected`.
    ///
    /// ```no_run
    /// # let agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// use std::os::fd::AsRawFd;
    /// let fd = agent.wakeup_fd().as_raw_fd();
    /// ```
    pub fn wakeup_fd(&self) -> BorrowedFd<'_> {
        self.link
            .rx
            .doorbell()
            .expect("an agent's rx ring always has a doorbell")
            .as_fd()
    }

    /// Tells the daemon this agent is about to sleep on [`wakeup_fd`](Self::wakeup_fd), so
    /// its next frame rings it. Returns true when frames are already waiting (then receive
    /// them instead of waiting). The flag stays set until frames are taken.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// if !agent.arm_wakeup() {
    ///     // wait for agent.wakeup_fd() to become readable, then clear_wakeup()
    /// }
    /// ```
    pub fn arm_wakeup(&mut self) -> bool {
        if !self.stash.is_empty() {
            return true;
        }
        if Consumer::arm_park(std::slice::from_mut(&mut self.link.rx)) {
            crate::doorbell::asymmetric_barrier();
        }
        match &self.held {
            // A held frame is still at the head: only the frames behind it are news.
            Some(Held::InRing(record)) => self.link.rx.pending_past_held(record),
            _ => Consumer::any_pending(std::slice::from_ref(&self.link.rx)),
        }
    }

    /// Empties the wakeup descriptor after it fired (non-blocking).
    ///
    /// ```no_run
    /// # let agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.clear_wakeup();
    /// ```
    pub fn clear_wakeup(&self) {
        if let Some(bell) = self.link.rx.doorbell() {
            bell.wait(Duration::ZERO);
        }
    }

    /// `Ok` while the daemon serves this agent, `Disconnected` once it is gone (its
    /// control socket closed or the segment no longer active): for an event loop that waits
    /// on [`wakeup_fd`](Self::wakeup_fd) and must notice a dead daemon now and then.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.ensure_connected()?;
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn ensure_connected(&mut self) -> Result<(), ClientError> {
        self.check_alive()
    }
}
