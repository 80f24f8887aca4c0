//! Router shard heartbeats, for a service watchdog (systemd's `WATCHDOG=1`): each routing
//! core stores its duty-cycle count at the top of every duty cycle, busy or idle, and another
//! thread looks at the counts ([`HeartbeatWatch`]) to tell whether every shard made progress
//! since its last look. A shard stuck inside a duty cycle, or in code its executor runs
//! between duty cycles, stops counting, so the watch names it.
//!
//! An idle shard parks (up to its park timeout, or [`crate::IDLE_SHARD_PARK_MIN`] and longer
//! with no agent), so a look alone cannot tell a parked shard from a stuck one. Each look
//! therefore also *nudges* every shard: it sets the shard's nudge flag and rings its doorbell
//! if it is parked, so a healthy shard runs a duty cycle within microseconds and has counted
//! by the next look, whatever its park timeout. The nudge follows the shard-park protocol of
//! [`crate::wake`] (the flag store, a full fence, the park-flag load; against the shard's
//! park-flag store, a full fence, the nudge-flag load), so a nudge is never slept through.
//!
//! Cost on the shard: one Relaxed store per duty cycle to a cache line only it writes (the
//! count sits on two cache lines of its own, [`CachePadded`]), and one load of the nudge
//! flag, on other lines, before each park. The watch writes the nudge flag once per look.
//!
//! ```
//! use agentwire_router::{RouterConfig, RouterControl, heartbeat::HeartbeatWatch};
//! let sock = std::env::temp_dir().join(format!("aw-doc-hb-{}.sock", std::process::id()));
//! let (control, mut core) = RouterControl::start(RouterConfig::new(sock)).unwrap();
//! let mut watch = HeartbeatWatch::new(control.heartbeats());
//! assert_eq!(watch.look(), vec![0]); // shard 0 ran no duty cycle since the watch began
//! core.do_work();
//! assert!(watch.look().is_empty()); // it did now
//! ```

use crate::shared::Shared;
use agentwire_shm::ring::CachePadded;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// One shard's heartbeat: its duty-cycle count and the watch's nudge flag, each alone on
/// its cache lines (the count is written every duty cycle by the shard, the flag once per
/// look by the watch).
#[derive(Debug, Default)]
pub(crate) struct ShardBeat {
    /// Duty cycles the shard ran; stored by the shard only (sole writer).
    count: CachePadded<AtomicU64>,
    /// Set by a look, cleared by the shard when it declines to park because of it.
    nudged: CachePadded<AtomicBool>,
}

impl ShardBeat {
    /// The shard's side, once per duty cycle: publishes its pass count. Relaxed is enough:
    /// nothing is published through the count, a reader only needs to see it move, and
    /// stores to one location become visible in order.
    #[inline]
    pub(crate) fn beat(&self, passes: u64) {
        self.count.0.store(passes, Ordering::Relaxed);
    }

    /// The shard's side, about to park (after arming its park flag and the fence): whether a
    /// look asked for a duty cycle, clearing the request. A look that lands between the load
    /// and the store is answered by the duty cycle this one causes.
    pub(crate) fn take_nudge(&self) -> bool {
        // SYNC POINT: shard park (the fence in `ShardWake::arm` orders the park-flag store
        // before this load; pairs with the fence in `ShardWake::notify`).
        let nudged = self.nudged.0.load(Ordering::Relaxed);
        if nudged {
            self.nudged.0.store(false, Ordering::Relaxed);
        }
        nudged
    }
}

/// A read-only handle on every shard's heartbeat, for a thread other than the shards'
/// ([`crate::RouterControl::heartbeats`]).
///
/// ```
/// # use agentwire_router::{RouterConfig, RouterControl};
/// # let p = std::env::temp_dir().join(format!("aw-doc-hbs-{}.sock", std::process::id()));
/// let (control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
/// let beats = control.heartbeats();
/// core.do_work();
/// assert_eq!(beats.counts(), vec![1]);
/// ```
#[derive(Clone)]
pub struct ShardHeartbeats {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for ShardHeartbeats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardHeartbeats")
            .field("counts", &self.counts())
            .finish()
    }
}

impl ShardHeartbeats {
    /// Every shard's duty-cycle count, shard 0 first.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-hbc-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(control.heartbeats().counts(), vec![0]);
    /// ```
    pub fn counts(&self) -> Vec<u64> {
        self.shared
            .beats
            .iter()
            .map(|b| b.count.0.load(Ordering::Relaxed))
            .collect()
    }

    /// Asks every shard for one duty cycle: a parked shard is woken, a running one declines
    /// its next park.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-hbn-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// control.heartbeats().nudge(); // nobody parked: no syscall
    /// ```
    pub fn nudge(&self) {
        self.nudge_all();
    }

    /// Waits until every shard has finished `cycles` more duty cycles (each woken by a
    /// nudge), or `timeout` passed; returns whether they all did. A shard re-reads its
    /// tables at the start of a cycle when the registry changed, so after two cycles no
    /// shard routes with tables older than the call.
    ///
    /// ```
    /// # use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-hbaw-{}.sock", std::process::id()));
    /// let router = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// assert!(router.control().heartbeats().await_cycles(2, std::time::Duration::from_secs(5)));
    /// ```
    pub fn await_cycles(&self, cycles: u32, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        for _ in 0..cycles {
            let before = self.counts();
            self.nudge_all();
            while self
                .counts()
                .iter()
                .zip(&before)
                .any(|(now, was)| now == was)
            {
                if std::time::Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        }
        true
    }

    fn nudge_all(&self) {
        for (beat, wake) in self.shared.beats.iter().zip(self.shared.wakes.iter()) {
            beat.nudged.0.store(true, Ordering::Relaxed);
            // SYNC POINT: shard park (the fence in `notify` orders the store above before
            // its park-flag load; pairs with the fence in `ShardWake::arm`).
            wake.notify();
        }
    }
}

/// Tells, look after look, which shards made no progress since the previous look.
///
/// ```
/// # use agentwire_router::{RouterConfig, RouterControl, heartbeat::HeartbeatWatch};
/// # let p = std::env::temp_dir().join(format!("aw-doc-hbw-{}.sock", std::process::id()));
/// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
/// let mut watch = HeartbeatWatch::new(control.heartbeats());
/// assert_eq!(watch.shards(), 1);
/// ```
#[derive(Debug)]
pub struct HeartbeatWatch {
    beats: ShardHeartbeats,
    last: Vec<u64>,
}

impl HeartbeatWatch {
    /// Starts watching: takes the first counts and nudges every shard.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl, heartbeat::HeartbeatWatch};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-hbw2-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// let _watch = HeartbeatWatch::new(control.heartbeats());
    /// ```
    pub fn new(beats: ShardHeartbeats) -> Self {
        let last = beats.counts();
        beats.nudge();
        Self { beats, last }
    }

    /// Shards watched.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl, heartbeat::HeartbeatWatch};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-hbw3-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(HeartbeatWatch::new(control.heartbeats()).shards(), 1);
    /// ```
    pub fn shards(&self) -> usize {
        self.last.len()
    }

    /// The shards whose count did not move since the previous look (empty: every shard made
    /// progress), then a nudge to every shard, so a healthy parked shard has counted by the
    /// next look. Call it no more often than a shard can be woken and scheduled.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl, heartbeat::HeartbeatWatch};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-hbw4-{}.sock", std::process::id()));
    /// let (control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// let mut watch = HeartbeatWatch::new(control.heartbeats());
    /// core.do_work();
    /// assert!(watch.look().is_empty());
    /// assert_eq!(watch.look(), vec![0]);
    /// ```
    pub fn look(&mut self) -> Vec<usize> {
        let now = self.beats.counts();
        let stalled = now
            .iter()
            .zip(&self.last)
            .enumerate()
            .filter_map(|(shard, (now, last))| (now == last).then_some(shard))
            .collect();
        self.last = now;
        self.beats.nudge();
        stalled
    }
}

/// One [`ShardBeat`] per shard, for [`Shared`].
pub(crate) fn beats(shards: usize) -> Box<[ShardBeat]> {
    (0..shards).map(|_| ShardBeat::default()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RouterConfig, RouterControl};
    use agentwire_shm::idle::{IdleStrategy, Idler};
    use std::time::{Duration, Instant};

    fn socket(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("aw-hb-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("s.sock")
    }

    /// A shard parked for a minute (no agent, park timeout 60 s) answers a nudge at once:
    /// the watch never mistakes an idle shard for a stuck one, whatever its park timeout.
    #[test]
    fn a_nudge_wakes_a_shard_parked_for_a_minute() {
        let config = RouterConfig {
            shards: 2,
            ..RouterConfig::new(socket("nudge"))
        };
        let (control, cores) = RouterControl::start_sharded(config).unwrap();
        let threads: Vec<_> = cores
            .into_iter()
            .map(|mut core| {
                std::thread::spawn(move || {
                    let mut idler = Idler::new(IdleStrategy::Park {
                        park_timeout_ns: 60_000_000_000,
                    });
                    while !core.should_stop() {
                        core.step(&mut idler);
                    }
                    core.finish();
                })
            })
            .collect();
        let beats = control.heartbeats();
        // Both shards ran their first duty cycle and parked (or are about to).
        let deadline = Instant::now() + Duration::from_secs(20);
        while beats.counts().contains(&0) {
            assert!(Instant::now() < deadline, "watchdog: shards never started");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut watch = HeartbeatWatch::new(beats.clone());
        for round in 0..5 {
            let before = beats.counts();
            let deadline = Instant::now() + Duration::from_secs(20);
            // Each look nudges; a nudged shard counts long before its 60 s park ends.
            let _ = watch.look();
            while beats
                .counts()
                .iter()
                .zip(&before)
                .any(|(now, was)| now == was)
            {
                assert!(
                    Instant::now() < deadline,
                    "watchdog: round {round}: a nudged shard slept on ({:?} -> {:?})",
                    before,
                    beats.counts()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert!(watch.look().is_empty());
        control.shutdown();
        for t in threads {
            t.join().unwrap();
        }
    }

    /// A shard that stops running duty cycles is named at every look until it runs again.
    #[test]
    fn a_shard_without_duty_cycles_is_named_until_it_runs() {
        let config = RouterConfig {
            shards: 2,
            ..RouterConfig::new(socket("stall"))
        };
        let (control, mut cores) = RouterControl::start_sharded(config).unwrap();
        let mut watch = HeartbeatWatch::new(control.heartbeats());
        cores[0].do_work();
        cores[1].do_work();
        assert!(watch.look().is_empty());
        cores[0].do_work();
        assert_eq!(watch.look(), vec![1]);
        assert_eq!(watch.look(), vec![0, 1]);
        cores[1].do_work();
        assert_eq!(watch.look(), vec![0]);
        // Started cores finish (together: their shutdown waits for each other), or the
        // control loop waits for them at shutdown.
        control.shutdown();
        let finishing: Vec<_> = cores
            .into_iter()
            .map(|mut core| std::thread::spawn(move || core.finish()))
            .collect();
        for f in finishing {
            f.join().unwrap();
        }
    }
}
