//! [`DeadLetterSink`]: where the routing core puts the frames it gives up on.

use agentwire_shm::control::NackReason;

/// Where the routing core puts frames it gives up on (the daemon's dead-letter queue file).
/// Called on the routing core's thread, only for frames past their deadline or left over at
/// shutdown, never on the fast path.
///
/// ```
/// use agentwire_router::sink::{DeadLetterSink, SinkRefusal};
/// use agentwire_shm::control::NackReason;
/// struct Keep(Vec<Vec<u8>>);
/// impl DeadLetterSink for Keep {
///     fn accept(&mut self, _reason: NackReason, frame: &[u8]) -> Result<u64, SinkRefusal> {
///         self.0.push(frame.to_vec());
///         Ok(self.0.len() as u64)
///     }
/// }
/// let mut k = Keep(Vec::new());
/// assert_eq!(k.accept(NackReason::DestinationFull, b"f"), Ok(1));
/// ```
pub trait DeadLetterSink: Send {
    /// Keeps `frame` (durably, eventually); returns its sequence number. `Err` when it does
    /// not take it: on [`SinkRefusal::Busy`] the router keeps the frame and offers it again
    /// after a backoff ([`crate::DEAD_LETTER_RETRY_MIN`] doubling to
    /// [`crate::DEAD_LETTER_RETRY_MAX`], not called meanwhile); on any other refusal it drops
    /// the frame, counts it in `frames_dropped` and nacks its sender with
    /// `NackReason::DeadLetterRefused`. The refusal is a plain value (no text is built per
    /// refused frame); a sink logs the details of a failure itself.
    fn accept(&mut self, reason: NackReason, frame: &[u8]) -> Result<u64, SinkRefusal>;
    /// [`DeadLetterSink::accept`] of a frame whose sender runs as `owner_uid` (known for
    /// agents on the control socket), so that a sink can keep it and bound what one user's
    /// agents hold together. By default the uid is ignored.
    fn accept_from(
        &mut self,
        reason: NackReason,
        frame: &[u8],
        owner_uid: Option<u32>,
    ) -> Result<u64, SinkRefusal> {
        let _ = owner_uid;
        self.accept(reason, frame)
    }
    /// Makes what was accepted durable. The router calls it at most once per
    /// [`crate::HEARTBEAT_PASSES`] duty cycles after an accept, and at shutdown.
    fn flush(&mut self) {}
}

/// Why a [`DeadLetterSink`] did not take a frame. Only `Busy` is worth retrying: the
/// router drops a frame refused for any other reason (and nacks its sender).
///
/// ```
/// use agentwire_router::sink::SinkRefusal;
/// assert_eq!(SinkRefusal::Busy.to_string(), "locked by a replay or purge");
/// assert_eq!(SinkRefusal::OverQuota.to_string(), "its sender holds its quota of dead letters");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SinkRefusal {
    /// Another process (a replay or purge) holds it; retry later (the router keeps the frame).
    #[error("locked by a replay or purge")]
    Busy,
    /// It holds as many records or bytes as it may.
    #[error("full")]
    Full,
    /// The frame is larger than it keeps.
    #[error("frame too large to keep")]
    TooLarge,
    /// Writing failed (the sink logged why).
    #[error("write failed (see the daemon log)")]
    Failed,
    /// The frame's sender already holds as many dead letters (records or bytes) as one
    /// sender may, so one agent cannot fill the queue for everyone.
    #[error("its sender holds its quota of dead letters")]
    OverQuota,
}
