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
    /// Keeps `frame` (durably, eventually); returns its sequence number. `Err` when it cannot
    /// take it now (full, locked by `dlq replay`): the router keeps the frame and retries.
    /// The refusal is a plain value (no text is built per refused frame); a sink logs the
    /// details of a failure itself.
    fn accept(&mut self, reason: NackReason, frame: &[u8]) -> Result<u64, SinkRefusal>;
    /// Makes what was accepted durable. The router calls it at most once per
    /// [`crate::HEARTBEAT_PASSES`] duty cycles after an accept, and at shutdown.
    fn flush(&mut self) {}
}

/// Why a [`DeadLetterSink`] could not take a frame now.
///
/// ```
/// use agentwire_router::sink::SinkRefusal;
/// assert_eq!(SinkRefusal::Busy.to_string(), "locked by a replay or purge");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SinkRefusal {
    /// Another process (a replay or purge) holds it; retry later.
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
}
