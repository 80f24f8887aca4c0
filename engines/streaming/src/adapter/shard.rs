//! One processing shard of the engine: the windows and detectors of the keys
//! [`shard_of`](crate::pipeline::sharded::shard_of) gives it, fed by the engine's ingest
//! through a bounded queue and publishing through another. Shards share nothing; the host
//! drives each [`ShardRunner`] on its own executor (the daemon: one job per shard on the
//! streaming partition's cores), so the processing spreads over the partition's cores.
//!
//! Each event reaches its shard with the largest event time the engine had taken before
//! it; the shard moves its watermark there first, then takes the event. So every key's
//! windows fire, drop and take late events exactly as in one operator over the whole input,
//! and a shard's outputs do not depend on how many shards there are. Ticks carry the
//! input's progress to shards that get no events, so their windows still fire.
//!
//! ```
//! use agentwire_streaming::adapter::{shard::SHARD_QUEUE_MAX, EVENTS_PER_PASS_MAX};
//! assert!(SHARD_QUEUE_MAX >= EVENTS_PER_PASS_MAX); // a pass's events fit one shard's queue
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use agentwire_shm::wire::{FrameHeader, FrameKind};
use crossbeam_queue::ArrayQueue;

use super::durable::ShardSnapshot;
use super::Detectors;
use crate::detect::by_name;
use crate::event::Event;
use crate::output_json::output_json;
use crate::window::{Output, WindowOperator};

/// Messages queued towards one shard.
pub const SHARD_QUEUE_MAX: usize = 16_384;
/// Output frames queued from one shard towards the router.
pub const SHARD_OUTBOX_MAX: usize = 4_096;
/// Messages one [`ShardRunner::do_work`] takes at most.
pub const SHARD_MSGS_PER_PASS: usize = 4_096;

/// An outgoing frame.
pub(super) type Frame = (FrameHeader, Vec<u8>);

/// What the ingest sends a shard.
pub(super) enum ShardMsg {
    /// An event, with the largest event time taken before it (`None`: none yet).
    Event {
        event: Event,
        max_before_ns: Option<i64>,
    },
    /// The input's progress: the largest event time taken so far.
    Tick(i64),
    /// Checkpoint `epoch`: snapshot the state after everything before this message.
    Barrier(u64),
    /// Stop taking messages (the shard's state was checkpointed, or the engine stops).
    Stop,
}

/// Settings every shard reads.
pub(super) struct ShardSettings {
    pub detector: String,
    pub alert_threshold: f64,
    pub detector_keys_max: usize,
    pub quantiles: Vec<f64>,
    pub alerts_topic_id: u32,
    pub results_topic_id: Option<u32>,
}

/// A parking spot: the ingest rings it after queueing messages.
#[derive(Default)]
pub(super) struct Bell {
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Bell {
    pub fn ring(&self) {
        if let Ok(mut rung) = self.rung.lock() {
            *rung = true;
            self.cv.notify_one();
        }
    }

    fn wait(&self, timeout: Duration) {
        let Ok(mut rung) = self.rung.lock() else {
            return;
        };
        if !*rung {
            rung = match self.cv.wait_timeout(rung, timeout) {
                Ok((guard, _)) => guard,
                Err(_) => return,
            };
        }
        *rung = false;
    }
}

/// What the ingest and one shard share.
pub(super) struct ShardLink {
    pub index: usize,
    pub inbox: ArrayQueue<ShardMsg>,
    pub outbox: ArrayQueue<Frame>,
    /// The snapshot taken at the last barrier: (epoch, state).
    pub snapshot: Mutex<Option<(u64, ShardSnapshot)>>,
    pub bell: Bell,
    /// Set by the shard when it took [`ShardMsg::Stop`] (or panicked).
    pub stopped: AtomicBool,
    pub panicked: AtomicBool,
    pub alerts: AtomicU64,
    pub results: AtomicU64,
    pub events_unscored: AtomicU64,
}

impl ShardLink {
    pub fn new(index: usize) -> Self {
        Self {
            index,
            inbox: ArrayQueue::new(SHARD_QUEUE_MAX),
            outbox: ArrayQueue::new(SHARD_OUTBOX_MAX),
            snapshot: Mutex::new(None),
            bell: Bell::default(),
            stopped: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            alerts: AtomicU64::new(0),
            results: AtomicU64::new(0),
            events_unscored: AtomicU64::new(0),
        }
    }
}

/// One shard's processing, driven by its host: [`ShardRunner::do_work`] in a loop, parking
/// when it returns 0, until [`ShardRunner::is_stopped`].
///
/// ```no_run
/// # fn f(mut runner: agentwire_streaming::adapter::shard::ShardRunner) {
/// while !runner.is_stopped() {
///     if runner.do_work() == 0 {
///         runner.park(std::time::Duration::from_millis(1));
///     }
/// }
/// # }
/// ```
pub struct ShardRunner {
    link: Arc<ShardLink>,
    settings: Arc<ShardSettings>,
    op: WindowOperator,
    detectors: Detectors,
    /// The epoch outputs belong to now, and the next output's place in it.
    epoch: u64,
    seq: u64,
    /// Outputs that found the outbox full, sent before anything else is taken.
    held: VecDeque<Frame>,
}

impl ShardRunner {
    pub(super) fn new(
        link: Arc<ShardLink>,
        settings: Arc<ShardSettings>,
        op: WindowOperator,
        detectors: Detectors,
        epoch: u64,
    ) -> Self {
        Self {
            link,
            settings,
            op,
            detectors,
            epoch,
            seq: 0,
            held: VecDeque::new(),
        }
    }

    /// The shard's index (its keys are those `shard_of(key, shards) == index`).
    ///
    /// ```no_run
    /// # fn f(r: &agentwire_streaming::adapter::shard::ShardRunner) {
    /// println!("shard {}", r.index());
    /// # }
    /// ```
    pub fn index(&self) -> usize {
        self.link.index
    }

    /// Whether the shard took its stop message (its host drops it then).
    ///
    /// ```no_run
    /// # fn f(r: &agentwire_streaming::adapter::shard::ShardRunner) {
    /// if r.is_stopped() { /* drop it */ }
    /// # }
    /// ```
    pub fn is_stopped(&self) -> bool {
        self.link.stopped.load(Ordering::Acquire)
    }

    /// Parks until the ingest queues messages or `timeout` passes.
    ///
    /// ```no_run
    /// # fn f(r: &agentwire_streaming::adapter::shard::ShardRunner) {
    /// r.park(std::time::Duration::from_micros(500));
    /// # }
    /// ```
    pub fn park(&self, timeout: Duration) {
        if self.link.inbox.is_empty() {
            self.link.bell.wait(timeout);
        }
    }

    /// One pass: sends held outputs, then takes up to [`SHARD_MSGS_PER_PASS`] messages
    /// while the outbox has room. Returns the messages taken plus the outputs sent (0:
    /// idle). A panic in a detector or the windows marks the shard stopped and panicked
    /// (the engine reports it) before it goes on unwinding.
    ///
    /// ```no_run
    /// # fn f(r: &mut agentwire_streaming::adapter::shard::ShardRunner) {
    /// let work = r.do_work();
    /// # }
    /// ```
    pub fn do_work(&mut self) -> usize {
        struct PanicGuard<'a>(&'a ShardLink);
        impl Drop for PanicGuard<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.panicked.store(true, Ordering::Release);
                    self.0.stopped.store(true, Ordering::Release);
                }
            }
        }
        let link = self.link.clone();
        let _guard = PanicGuard(&link);
        let mut work = self.flush();
        for _ in 0..SHARD_MSGS_PER_PASS {
            if !self.held.is_empty() || self.is_stopped() {
                break;
            }
            let Some(msg) = self.link.inbox.pop() else {
                break;
            };
            work += 1;
            self.take(msg);
            work += self.flush();
        }
        work
    }

    fn flush(&mut self) -> usize {
        let mut sent = 0;
        while let Some(frame) = self.held.pop_front() {
            if let Err(frame) = self.link.outbox.push(frame) {
                self.held.push_front(frame);
                break;
            }
            sent += 1;
        }
        sent
    }

    fn take(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Event {
                event,
                max_before_ns,
            } => {
                if let Some(max) = max_before_ns {
                    self.observe(max);
                }
                self.event(&event);
            }
            ShardMsg::Tick(max) => self.observe(max),
            ShardMsg::Barrier(epoch) => {
                let snapshot = ShardSnapshot {
                    window: self.op.snapshot(),
                    detectors: self.detectors.iter().map(|(k, d)| (*k, d.save())).collect(),
                };
                if let Ok(mut slot) = self.link.snapshot.lock() {
                    *slot = Some((epoch, snapshot));
                }
                self.epoch = epoch + 1;
                self.seq = 0;
            }
            ShardMsg::Stop => self.link.stopped.store(true, Ordering::Release),
        }
    }

    fn output_id(&mut self) -> (usize, u64, u64) {
        let id = (self.link.index, self.epoch, self.seq);
        self.seq += 1;
        id
    }

    /// Runs `step` on the window operator, publishing each result it emits.
    fn windows(&mut self, step: impl FnOnce(&mut WindowOperator, &mut dyn FnMut(Output))) {
        let Self {
            op,
            held,
            settings,
            link,
            epoch,
            seq,
            ..
        } = self;
        step(op, &mut |o: Output| {
            publish_result(settings, link, held, (link.index, *epoch, seq), &o)
        });
    }

    fn observe(&mut self, max_ns: i64) {
        self.windows(|op, mut out| op.observe_time(max_ns, &mut out));
    }

    fn event(&mut self, event: &Event) {
        self.windows(|op, mut out| op.push(event, &mut out));
        let settings = self.settings.clone();
        let full = self.detectors.len() >= settings.detector_keys_max;
        let detector = match self.detectors.get_mut(&event.key) {
            Some(d) => d,
            None if full => {
                self.link.events_unscored.fetch_add(1, Ordering::Relaxed);
                return;
            }
            None => {
                let d = by_name(&settings.detector).expect("checked at registration");
                self.detectors.entry(event.key).or_insert(d)
            }
        };
        let score = detector.score(event.event_time_ns, event.value);
        if score >= settings.alert_threshold {
            self.link.alerts.fetch_add(1, Ordering::Relaxed);
            let (shard, epoch, seq) = self.output_id();
            let alert = serde_json::json!({
                "key": event.key, "event_time_ns": event.event_time_ns, "value": event.value,
                "score": score, "detector": settings.detector,
                "shard": shard, "epoch": epoch, "seq": seq,
            });
            self.held.push_back(publish(
                settings.alerts_topic_id,
                alert.to_string().into_bytes(),
            ));
        }
    }
}

/// A window result (or late event) as JSON with its output id, queued to the results topic.
fn publish_result(
    settings: &ShardSettings,
    link: &ShardLink,
    held: &mut VecDeque<Frame>,
    (shard, epoch, seq): (usize, u64, &mut u64),
    output: &Output,
) {
    let Some(topic) = settings.results_topic_id else {
        return;
    };
    link.results.fetch_add(1, Ordering::Relaxed);
    let mut json = output_json(output, &settings.quantiles);
    json["shard"] = shard.into();
    json["epoch"] = epoch.into();
    json["seq"] = (*seq).into();
    *seq += 1;
    held.push_back(publish(topic, json.to_string().into_bytes()));
}

pub(super) fn publish(topic_id: u32, payload: Vec<u8>) -> Frame {
    let header = FrameHeader::new(FrameKind::Publish, 0, topic_id, payload.len() as u32);
    (header, payload)
}
