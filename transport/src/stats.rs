//! A listener's counters: relaxed atomics, written by the transport's executor, read by
//! anyone (status, metrics, tests).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one listener.
///
/// ```
/// let s = agentwire_transport::stats::TransportStats::default();
/// assert_eq!(s.snapshot().connections_accepted, 0);
/// ```
#[derive(Debug, Default)]
pub struct TransportStats {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_active: AtomicU64,
    pub(crate) connections_over_limit: AtomicU64,
    pub(crate) tls_handshakes_failed: AtomicU64,
    pub(crate) plaintext_refused: AtomicU64,
    pub(crate) handshakes_refused: AtomicU64,
    pub(crate) handshake_timeouts: AtomicU64,
    pub(crate) idle_closed: AtomicU64,
    pub(crate) agents_registered: AtomicU64,
    pub(crate) frames_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) socket_writes: AtomicU64,
    pub(crate) malformed_closed: AtomicU64,
    pub(crate) frames_too_large_for_ring: AtomicU64,
    pub(crate) control_requests: AtomicU64,
    pub(crate) control_refused: AtomicU64,
}

/// A copy of [`TransportStats`] at one moment.
///
/// ```
/// let s = agentwire_transport::stats::TransportStats::default().snapshot();
/// assert_eq!(s.frames_in, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Connections accepted (TCP), over the listener's life.
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_active: u64,
    /// Connections closed at accept: `connections_max` reached.
    pub connections_over_limit: u64,
    /// TLS handshakes that failed (no client certificate, an unknown CA, expired, ...).
    pub tls_handshakes_failed: u64,
    /// Plaintext clients refused by a TLS listener.
    pub plaintext_refused: u64,
    /// `Hello` or `Register` refused (version, identity rules, router full).
    pub handshakes_refused: u64,
    /// Connections that did not finish their handshake in time.
    pub handshake_timeouts: u64,
    /// Connections closed for silence.
    pub idle_closed: u64,
    /// Remote agents registered, over the listener's life.
    pub agents_registered: u64,
    /// Data frames received from remote agents.
    pub frames_in: u64,
    /// Bytes of those frames.
    pub bytes_in: u64,
    /// Frames sent to remote agents (data and control).
    pub frames_out: u64,
    /// Bytes of those frames.
    pub bytes_out: u64,
    /// Socket writes (batches) that carried them.
    pub socket_writes: u64,
    /// Connections closed for a malformed frame or control message.
    pub malformed_closed: u64,
    /// Frames dropped: larger than the connection's ring can carry.
    pub frames_too_large_for_ring: u64,
    /// Control requests after registration (subscribe, resolve, discover, ...).
    pub control_requests: u64,
    /// Of those, refused by the identity rules or the router.
    pub control_refused: u64,
}

impl TransportStats {
    /// The counters now.
    ///
    /// ```
    /// let s = agentwire_transport::stats::TransportStats::default();
    /// assert_eq!(s.snapshot(), Default::default());
    /// ```
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connections_accepted: get(&self.connections_accepted),
            connections_active: get(&self.connections_active),
            connections_over_limit: get(&self.connections_over_limit),
            tls_handshakes_failed: get(&self.tls_handshakes_failed),
            plaintext_refused: get(&self.plaintext_refused),
            handshakes_refused: get(&self.handshakes_refused),
            handshake_timeouts: get(&self.handshake_timeouts),
            idle_closed: get(&self.idle_closed),
            agents_registered: get(&self.agents_registered),
            frames_in: get(&self.frames_in),
            bytes_in: get(&self.bytes_in),
            frames_out: get(&self.frames_out),
            bytes_out: get(&self.bytes_out),
            socket_writes: get(&self.socket_writes),
            malformed_closed: get(&self.malformed_closed),
            frames_too_large_for_ring: get(&self.frames_too_large_for_ring),
            control_requests: get(&self.control_requests),
            control_refused: get(&self.control_refused),
        }
    }
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
