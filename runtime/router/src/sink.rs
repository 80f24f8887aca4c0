//! [`DeadLetterSink`]: where the routing core puts the frames it gives up on.

use agentwire_shm::control::NackReason;

/// Where the routing core puts frames it gives up on (the daemon's dead-letter queue file).
/// Called on the routing core's thread, only for frames past their deadline or left over at
/// shutdown, never on the fast path.
///
/// ```
/// use agentwire_router::DeadLetterSink;
/// use agentwire_shm::control::NackReason;
/// struct Keep(Vec<Vec<u8>>);
/// impl DeadLetterSink for Keep {
///     fn accept(&mut self, _reason: NackReason, frame: &[u8]) -> Result<u64, String> {
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
    fn accept(&mut self, reason: NackReason, frame: &[u8]) -> Result<u64, String>;
    /// Makes what was accepted durable. The router calls it at most once per
    /// [`HEARTBEAT_PASSES`] duty cycles after an accept, and at shutdown.
    fn flush(&mut self) {}
}
