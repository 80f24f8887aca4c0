//! [`RouterStats`]: the counters of one routing core, each written by one thread.

use std::sync::atomic::{AtomicU64, Ordering};

/// Adds to a counter only one thread writes (the routing core, or the accept thread): a
/// load and a store, no locked read-modify-write on the hot path.
#[inline]
pub(crate) fn count(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Upper bounds of the batch-size histogram buckets (frames taken from one tx ring in one
/// pass): 1, 2-3, 4-7, 8-15, 16-31, 32+.
pub const BATCH_BUCKETS: [usize; 6] = [1, 3, 7, 15, 31, usize::MAX];

/// Counters in a [`RouterStats`] (histogram buckets included).
///
/// ```
/// assert_eq!(agentwire_router::stats::ROUTER_COUNTERS, agentwire_router::RouterStats::default().snapshot().len());
/// ```
pub const ROUTER_COUNTERS: usize = 57;
// Every field is a counter (an `AtomicU64`, or six in the histogram) and every one is named in
// `RouterStats::named`: a field added without a name fails to build here.
const _: () = assert!(std::mem::size_of::<RouterStats>() == ROUTER_COUNTERS * 8);

pub(crate) fn batch_bucket(frames: usize) -> usize {
    BATCH_BUCKETS.iter().position(|&b| frames <= b).unwrap_or(5)
}

/// Counters of one routing core, in its own memory, each written by one thread (monotonic
/// unless named a gauge).
#[derive(Debug, Default)]
pub struct RouterStats {
    /// Frames taken from agents' tx rings.
    pub frames_in: AtomicU64,
    /// Bytes taken from agents' tx rings.
    pub bytes_in: AtomicU64,
    /// Frames delivered to a destination ring (a fan-out counts once per subscriber).
    pub frames_delivered: AtomicU64,
    /// Bytes delivered to destination rings.
    pub bytes_delivered: AtomicU64,
    /// Nacks by reason: no such agent.
    pub nacks_no_such_agent: AtomicU64,
    /// Nacks by reason: no subscriber.
    pub nacks_no_subscriber: AtomicU64,
    /// Nacks by reason: destination full past its deadline.
    pub nacks_destination_full: AtomicU64,
    /// Nacks by reason: not permitted.
    pub nacks_not_permitted: AtomicU64,
    /// Nacks by reason: given up on and refused by the dead-letter queue (dropped).
    pub nacks_dead_letter_refused: AtomicU64,
    /// Frames parked in a destination's deferral because its ring was full.
    pub frames_deferred: AtomicU64,
    /// Frames (copies) handed to another shard's link for an agent it serves.
    pub frames_forwarded: AtomicU64,
    /// Frames taken from other shards' links.
    pub frames_from_links: AtomicU64,
    /// Gauge: frames waiting in deferrals now.
    pub deferred_now: AtomicU64,
    /// Frames the dead-letter sink kept (each nacked to its sender with the record number).
    pub frames_dead_lettered: AtomicU64,
    /// Times the dead-letter sink refused a frame (each `Busy` answer, after which the frame
    /// waits and is offered again after a backoff, and each refusal for good).
    pub dead_letter_refusals: AtomicU64,
    /// Frames given up on that were neither delivered nor dead-lettered: refused by the
    /// dead-letter sink for good (the sender's quota, full, too large, a write failure; or
    /// still busy at the end of the shutdown), or no sink at all (shutdown, or a destination
    /// gone). Every one is nacked to its sender (`DeadLetterRefused` when the sink refused
    /// it).
    pub frames_dropped: AtomicU64,
    /// Of `frames_dropped`, frames the dead-letter sink refused because their sender held
    /// its quota of dead letters (`dlq_records_per_sender_max`, `dlq_bytes_per_sender_max`).
    pub dead_letters_over_quota: AtomicU64,
    /// Duty cycles run.
    pub duty_cycles: AtomicU64,
    /// Duty cycles that found no work (idle ratio = this / `duty_cycles`).
    pub duty_cycles_idle: AtomicU64,
    /// Wall-clock nanoseconds of the sampled busy duty cycles: one pass in
    /// [`crate::config::BUSY_SAMPLE_PASSES`] is timed (two clock reads), and its time is
    /// added here when it found work. `busy_ns_sampled / busy_frames_sampled` is the time a
    /// frame cost the core at the load it ran under (the whole pass, polling included);
    /// `busy_ns_sampled / busy_passes_sampled` times the busy duty cycles is the core's busy
    /// time.
    pub busy_ns_sampled: AtomicU64,
    /// Sampled duty cycles that found work (see `busy_ns_sampled`).
    pub busy_passes_sampled: AtomicU64,
    /// Frames handled by the sampled busy duty cycles (see `busy_ns_sampled`).
    pub busy_frames_sampled: AtomicU64,
    /// Of `busy_ns_sampled`, the time of the doorbell rings that woke a parked agent (the
    /// syscall, timed by the ring's producer).
    pub busy_wake_ns_sampled: AtomicU64,
    /// Parked agents woken by the sampled busy duty cycles.
    pub busy_wakes_sampled: AtomicU64,
    /// Wall-clock nanoseconds of the sampled duty cycles that found no work (the cost of
    /// polling every lane once).
    pub idle_ns_sampled: AtomicU64,
    /// Sampled duty cycles that found no work.
    pub idle_passes_sampled: AtomicU64,
    /// Parked agents this shard woke (a doorbell rung after writing to their rx ring). Over
    /// `frames_delivered`, the share of deliveries that paid for a wake.
    pub agents_woken: AtomicU64,
    /// Batch-size histogram, one count per non-empty read of a tx ring, bucketed by
    /// [`BATCH_BUCKETS`].
    pub batch_frames: [AtomicU64; 6],
    /// Frames rejected (nacked) for any reason.
    pub frames_rejected: AtomicU64,
    /// Of those, rejected as malformed.
    pub frames_malformed: AtomicU64,
    /// Acks sent.
    pub acks_sent: AtomicU64,
    /// Acks or nacks dropped because the sender's rx ring was full.
    pub replies_dropped: AtomicU64,
    /// Handshakes refused (not allowed, over a per-uid limit, bad version, bad request,
    /// garbage, full, or more connections in their handshake than the router takes).
    pub handshakes_refused: AtomicU64,
    /// Of those, connections refused as they were accepted because the peer's uid and gid
    /// are not on the allow-list (nothing was read from them).
    pub connections_not_permitted: AtomicU64,
    /// Of those, connections refused because their uid held as many connections in their
    /// handshake (`handshakes_per_uid_max`) or agents (`agents_per_uid_max`) as one uid may.
    pub connections_over_uid_limit: AtomicU64,
    /// Gauge: connections in their handshake now (status queries included).
    pub handshakes_pending: AtomicU64,
    /// Connections closed because a handshake step's deadline passed in silence.
    pub handshakes_timed_out: AtomicU64,
    /// Control messages that failed validation (garbage), before or after registration.
    pub control_messages_malformed: AtomicU64,
    /// Agents admitted.
    pub agents_admitted: AtomicU64,
    /// Agents removed (segment reclaimed).
    pub agents_removed: AtomicU64,
    /// Rings found corrupt (agent disconnected).
    pub rings_corrupt: AtomicU64,
    /// Agents removed because their process exited (pidfd) while the control socket was
    /// still open (a child had inherited it).
    pub agents_exited: AtomicU64,
    /// Gauge: agents stale now (see [`liveness`]).
    pub agents_stale: AtomicU64,
    /// Discovery questions answered from the cache.
    pub discovery_cache_hits: AtomicU64,
    /// Discovery questions computed from the registry.
    pub discovery_cache_misses: AtomicU64,
    /// Control requests refused for a limit (name length, topics or routes per agent or
    /// per router; see [`crate::limits`]).
    pub control_requests_refused: AtomicU64,
    /// Registrations and requests the authorization policy refused (a name, capability or
    /// topic its `[[authorize]]` rule does not allow, a name another uid owns; see
    /// [`crate::policy`]). Refused registrations count in `handshakes_refused` too.
    pub requests_not_permitted: AtomicU64,
    /// Frames nacked `NotPermitted` because the sender's `[[authorize]]` rule does not let it
    /// reach their destination (an agent outside its `send` patterns, a topic outside its
    /// `publish` patterns, a route with no agent it may reach).
    pub frames_not_permitted: AtomicU64,
    /// Agents removed on a reload: their peer left the allow-list, or the new policy
    /// refuses their name, a capability or a subscription.
    pub agents_revoked: AtomicU64,
    /// Copies of publishes dropped for subscribers whose ring and deferral were full.
    pub subscriber_copies_dropped: AtomicU64,
    /// Subscribers removed for missing `slow_subscriber_evict_copies` copies in a row.
    pub subscribers_evicted: AtomicU64,
    /// Routing tables this shard rebuilt (each registry change that affects routing).
    pub table_rebuilds: AtomicU64,
}

impl RouterStats {
    /// Every counter with its name, in a fixed order (histogram buckets last, as
    /// `batch_frames_le_<bound>`): the order of [`RouterStats::snapshot`] and of
    /// [`RouterStats::write_values`].
    fn named(&self) -> [(&'static str, &AtomicU64); ROUTER_COUNTERS] {
        [
            ("frames_in", &self.frames_in),
            ("bytes_in", &self.bytes_in),
            ("frames_delivered", &self.frames_delivered),
            ("bytes_delivered", &self.bytes_delivered),
            ("frames_rejected", &self.frames_rejected),
            ("frames_malformed", &self.frames_malformed),
            ("nacks_no_such_agent", &self.nacks_no_such_agent),
            ("nacks_no_subscriber", &self.nacks_no_subscriber),
            ("nacks_destination_full", &self.nacks_destination_full),
            ("nacks_not_permitted", &self.nacks_not_permitted),
            ("nacks_dead_letter_refused", &self.nacks_dead_letter_refused),
            ("frames_deferred", &self.frames_deferred),
            ("frames_forwarded", &self.frames_forwarded),
            ("frames_from_links", &self.frames_from_links),
            ("deferred_now", &self.deferred_now),
            ("frames_dead_lettered", &self.frames_dead_lettered),
            ("dead_letter_refusals", &self.dead_letter_refusals),
            ("frames_dropped", &self.frames_dropped),
            ("dead_letters_over_quota", &self.dead_letters_over_quota),
            ("acks_sent", &self.acks_sent),
            ("replies_dropped", &self.replies_dropped),
            ("handshakes_refused", &self.handshakes_refused),
            ("connections_not_permitted", &self.connections_not_permitted),
            (
                "connections_over_uid_limit",
                &self.connections_over_uid_limit,
            ),
            ("handshakes_pending", &self.handshakes_pending),
            ("handshakes_timed_out", &self.handshakes_timed_out),
            (
                "control_messages_malformed",
                &self.control_messages_malformed,
            ),
            ("agents_admitted", &self.agents_admitted),
            ("agents_removed", &self.agents_removed),
            ("rings_corrupt", &self.rings_corrupt),
            ("agents_exited", &self.agents_exited),
            ("agents_stale", &self.agents_stale),
            ("discovery_cache_hits", &self.discovery_cache_hits),
            ("discovery_cache_misses", &self.discovery_cache_misses),
            ("control_requests_refused", &self.control_requests_refused),
            ("requests_not_permitted", &self.requests_not_permitted),
            ("frames_not_permitted", &self.frames_not_permitted),
            ("agents_revoked", &self.agents_revoked),
            ("table_rebuilds", &self.table_rebuilds),
            ("subscriber_copies_dropped", &self.subscriber_copies_dropped),
            ("subscribers_evicted", &self.subscribers_evicted),
            ("duty_cycles", &self.duty_cycles),
            ("duty_cycles_idle", &self.duty_cycles_idle),
            ("busy_ns_sampled", &self.busy_ns_sampled),
            ("busy_passes_sampled", &self.busy_passes_sampled),
            ("busy_frames_sampled", &self.busy_frames_sampled),
            ("busy_wake_ns_sampled", &self.busy_wake_ns_sampled),
            ("busy_wakes_sampled", &self.busy_wakes_sampled),
            ("idle_ns_sampled", &self.idle_ns_sampled),
            ("idle_passes_sampled", &self.idle_passes_sampled),
            ("agents_woken", &self.agents_woken),
            ("batch_frames_le_1", &self.batch_frames[0]),
            ("batch_frames_le_3", &self.batch_frames[1]),
            ("batch_frames_le_7", &self.batch_frames[2]),
            ("batch_frames_le_15", &self.batch_frames[3]),
            ("batch_frames_le_31", &self.batch_frames[4]),
            ("batch_frames_le_inf", &self.batch_frames[5]),
        ]
    }

    /// Every counter by name (histogram buckets as `batch_frames_le_<bound>`), for status
    /// reports and the metrics endpoint.
    ///
    /// ```
    /// let s = agentwire_router::RouterStats::default();
    /// assert!(s.snapshot().iter().any(|(name, v)| name == "frames_delivered" && *v == 0));
    /// ```
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.named()
            .iter()
            .map(|(name, c)| (name.to_string(), c.load(Ordering::Relaxed)))
            .collect()
    }

    /// The counters' names in the order [`RouterStats::write_values`] writes them.
    ///
    /// ```
    /// let names = agentwire_router::RouterStats::names();
    /// assert_eq!(names.len(), agentwire_router::stats::ROUTER_COUNTERS);
    /// assert_eq!(names[0], "frames_in");
    /// ```
    pub fn names() -> [&'static str; ROUTER_COUNTERS] {
        RouterStats::default().named().map(|(name, _)| name)
    }

    /// Loads every counter into `out` (at least [`ROUTER_COUNTERS`] long), in the order of
    /// [`RouterStats::names`], without allocating: what a shard publishes to its slot of
    /// the stats segment.
    ///
    /// ```
    /// let s = agentwire_router::RouterStats::default();
    /// let mut out = [9u64; agentwire_router::stats::ROUTER_COUNTERS];
    /// s.write_values(&mut out);
    /// assert!(out.iter().all(|&v| v == 0));
    /// ```
    pub fn write_values(&self, out: &mut [u64]) {
        for (o, (_, c)) in out.iter_mut().zip(self.named()) {
            *o = c.load(Ordering::Relaxed);
        }
    }
}
