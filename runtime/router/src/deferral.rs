//! Per-destination deferral: where the router parks frames for a destination whose rx ring is
//! full, so only the flows to that destination wait (no head-of-line blocking of the sender's
//! other destinations). Each deferral is an in-process SPSC ring allocated once when the
//! destination registers, so deferring a frame allocates nothing. A record is a 16-byte
//! prefix (deadline in monotonic nanoseconds, flags) followed by the frame as it will be
//! delivered (source already stamped).
//!
//! Order: while a destination has deferred frames, every new frame for it is deferred behind
//! them, so per-flow order holds. A full deferral makes the router leave the frame in the
//! sender's tx ring: backpressure on that sender, bounded memory in the daemon.
//!
//! ```
//! use agentwire_router::deferral::Deferral;
//! let mut d = Deferral::new(4096).unwrap();
//! assert!(d.push(b"a frame", 1_000, true));
//! let mut seen = Vec::new();
//! d.service(8, |f| { seen.push((f.deadline_ns, f.ack_owed, f.frame.to_vec())); std::ops::ControlFlow::Continue(()) });
//! assert_eq!(seen, vec![(1_000, true, b"a frame".to_vec())]);
//! assert!(d.is_empty());
//! ```

use agentwire_shm::ring::{ring_pair, Consumer, Producer, RingConfigError};
use std::ops::ControlFlow;

/// Bytes before the frame in a deferral record.
pub const DEFERRAL_PREFIX_BYTES: usize = 16;
const FLAG_ACK_OWED: u32 = 1;

/// One destination's queue of frames waiting for room in its rx ring.
#[derive(Debug)]
pub struct Deferral {
    tx: Producer,
    rx: Consumer,
    frames: usize,
    /// Frames ever queued.
    frames_pushed: u64,
}

/// A deferred frame handed to [`Deferral::service`].
#[derive(Debug)]
pub struct DeferredFrame<'a> {
    /// Monotonic time (ns) after which the frame is dead-lettered.
    pub deadline_ns: u64,
    /// The sender asked for an ack that is sent when the frame lands.
    pub ack_owed: bool,
    /// The frame, ready to copy into the destination ring.
    pub frame: &'a [u8],
}

impl Deferral {
    /// A deferral of `capacity_bytes` (a power of two, 1 KiB..1 GiB; frames up to a quarter
    /// of it, less the prefix, fit).
    ///
    /// ```
    /// assert!(agentwire_router::deferral::Deferral::new(1000).is_err());
    /// ```
    pub fn new(capacity_bytes: usize) -> Result<Self, RingConfigError> {
        let (tx, rx) = ring_pair(capacity_bytes, false)?;
        Ok(Self {
            tx,
            rx,
            frames: 0,
            frames_pushed: 0,
        })
    }

    /// True when nothing waits.
    ///
    /// ```
    /// assert!(agentwire_router::deferral::Deferral::new(4096).unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Frames waiting.
    ///
    /// ```
    /// let mut d = agentwire_router::deferral::Deferral::new(4096).unwrap();
    /// d.push(b"x", 0, false);
    /// assert_eq!(d.frames(), 1);
    /// ```
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Frames ever queued (wrapping).
    ///
    /// ```
    /// let mut d = agentwire_router::deferral::Deferral::new(4096).unwrap();
    /// d.push(b"x", 0, false);
    /// d.service(8, |_| std::ops::ControlFlow::Continue(()));
    /// assert_eq!((d.frames(), d.frames_pushed()), (0, 1));
    /// ```
    pub fn frames_pushed(&self) -> u64 {
        self.frames_pushed
    }

    /// Whether a frame of `frame_bytes` fits now.
    ///
    /// ```
    /// let mut d = agentwire_router::deferral::Deferral::new(4096).unwrap();
    /// assert!(d.can_take(100));
    /// assert!(!d.can_take(4096));
    /// ```
    pub fn can_take(&mut self, frame_bytes: usize) -> bool {
        self.tx.can_claim(DEFERRAL_PREFIX_BYTES + frame_bytes)
    }

    /// Bytes free in the deferral ring now.
    ///
    /// ```
    /// let mut d = agentwire_router::deferral::Deferral::new(4096).unwrap();
    /// d.push(b"x", 0, false);
    /// assert_eq!(d.room_bytes(), 4096 - 32);
    /// ```
    pub fn room_bytes(&mut self) -> usize {
        self.tx.capacity_bytes() - self.tx.occupied_bytes()
    }

    /// Queues a copy of `frame`; false (nothing queued) when it does not fit.
    ///
    /// ```
    /// let mut d = agentwire_router::deferral::Deferral::new(1024).unwrap();
    /// assert!(d.push(&[0; 200], 5, false));
    /// assert!(!d.push(&[0; 300], 5, false)); // over a quarter of the capacity
    /// ```
    pub fn push(&mut self, frame: &[u8], deadline_ns: u64, ack_owed: bool) -> bool {
        self.push_with(frame.len(), deadline_ns, ack_owed, |out| {
            out.copy_from_slice(frame)
        })
    }

    /// Queues a frame of `frame_bytes` written by `fill`; false when it does not fit.
    ///
    /// ```
    /// let mut d = agentwire_router::deferral::Deferral::new(4096).unwrap();
    /// assert!(d.push_with(3, 0, false, |out| out.copy_from_slice(b"abc")));
    /// ```
    pub fn push_with(
        &mut self,
        frame_bytes: usize,
        deadline_ns: u64,
        ack_owed: bool,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let Ok(mut claim) = self.tx.claim(DEFERRAL_PREFIX_BYTES + frame_bytes) else {
            return false;
        };
        let out = claim.bytes_mut();
        out[..8].copy_from_slice(&deadline_ns.to_le_bytes());
        let flags = if ack_owed { FLAG_ACK_OWED } else { 0 };
        out[8..12].copy_from_slice(&flags.to_le_bytes());
        out[12..16].fill(0);
        fill(&mut out[DEFERRAL_PREFIX_BYTES..]);
        claim.commit();
        self.frames += 1;
        self.frames_pushed = self.frames_pushed.wrapping_add(1);
        true
    }

    /// Hands up to `frames_max` waiting frames to `f` in order; `Break` keeps that frame and
    /// stops. Returns the frames taken.
    ///
    /// ```
    /// use std::ops::ControlFlow;
    /// let mut d = agentwire_router::deferral::Deferral::new(4096).unwrap();
    /// d.push(b"a", 0, false);
    /// d.push(b"b", 0, false);
    /// assert_eq!(d.service(8, |f| if f.frame == b"a" { ControlFlow::Continue(()) } else { ControlFlow::Break(()) }), 1);
    /// assert_eq!(d.frames(), 1);
    /// ```
    pub fn service(
        &mut self,
        frames_max: usize,
        mut f: impl FnMut(DeferredFrame<'_>) -> ControlFlow<()>,
    ) -> usize {
        // The ring is ours alone (in-process, written only by `push`): a read error would be
        // a bug in this module, not hostile input.
        let taken = self
            .rx
            .read(frames_max, |record| {
                let deadline_ns = u64::from_le_bytes(record[..8].try_into().expect("8 bytes"));
                let flags = u32::from_le_bytes(record[8..12].try_into().expect("4 bytes"));
                f(DeferredFrame {
                    deadline_ns,
                    ack_owed: flags & FLAG_ACK_OWED != 0,
                    frame: &record[DEFERRAL_PREFIX_BYTES..],
                })
            })
            .expect("a deferral ring is written only by this process");
        self.frames -= taken;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_bounds_memory() {
        let mut d = Deferral::new(1024).unwrap();
        let mut pushed = 0u64;
        while d.push(&pushed.to_le_bytes(), pushed, false) {
            pushed += 1;
        }
        assert!(
            pushed > 10,
            "a 1 KiB deferral holds more than 10 small frames"
        );
        let mut next = 0u64;
        while !d.is_empty() {
            d.service(3, |f| {
                assert_eq!(f.frame, next.to_le_bytes());
                assert_eq!(f.deadline_ns, next);
                next += 1;
                ControlFlow::Continue(())
            });
        }
        assert_eq!(next, pushed);
        // Room again after draining, across the wrap.
        for i in 0..1000u64 {
            assert!(d.push(&i.to_le_bytes(), i, i % 2 == 0));
            d.service(1, |f| {
                assert_eq!(f.ack_owed, i % 2 == 0);
                ControlFlow::Continue(())
            });
        }
        assert!(d.is_empty());
    }
}
