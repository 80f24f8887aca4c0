//! Running a pipeline sharded by key: one thread feeds the stages and splits events by key
//! hash, one thread per shard owns a window operator (no state and no lock shared between
//! shards), and the caller's thread takes the outputs.
//!
//! **Watermark across shards.** The feeder sends in rounds of at most
//! [`ROUND_EVENTS_MAX`] events; with each round every shard gets its part (possibly empty)
//! and the largest event time of the whole input so far, so a shard whose keys fall quiet
//! still fires its windows. A shard's watermark moves only then (events are taken with
//! [`WindowOperator::push_held`]), so every shard judges lateness against the same
//! watermark and the results do not depend on the shard count. Against one operator that
//! moves its watermark with every event, the watermark here lags by at most a round, so
//! no event is late here that one operator would have taken.
//!
//! **Bounds.** Each shard's queue holds at most [`SHARD_QUEUE_ROUNDS_MAX`] rounds, the output
//! queue [`OUTPUT_QUEUE_MAX`] outputs; a slow consumer slows the feeder, never grows memory.

use std::sync::mpsc;

use super::Pipeline;
use crate::event::{time_in_range, Event, Key};
use crate::window::{Output, SpecError, WindowOperator, WindowStats};

/// Events per round of the feeder, all shards together.
pub const ROUND_EVENTS_MAX: usize = 1_024;
/// Rounds queued per shard.
pub const SHARD_QUEUE_ROUNDS_MAX: usize = 8;
/// Outputs queued towards the caller.
pub const OUTPUT_QUEUE_MAX: usize = 4_096;
/// The most shards.
pub const SHARDS_MAX: usize = 256;

/// One shard's part of a round.
struct Round {
    events: Vec<Event>,
    /// The largest event time of the input so far (all shards).
    source_max_ns: Option<i64>,
}

/// What a sharded run counted.
///
/// ```
/// use agentwire_streaming::pipeline::sharded::RunStats;
/// let s = RunStats::default();
/// assert_eq!(s.events_in, 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Events read from the input.
    pub events_in: u64,
    /// Events a filter dropped.
    pub events_filtered: u64,
    /// Outputs handed to the caller.
    pub outputs: u64,
    /// Each shard's window counters, by shard.
    pub shards: Vec<WindowStats>,
}

impl RunStats {
    /// The window counters of all shards added up.
    ///
    /// ```
    /// use agentwire_streaming::pipeline::sharded::RunStats;
    /// assert_eq!(RunStats::default().windows().windows_fired, 0);
    /// ```
    pub fn windows(&self) -> WindowStats {
        self.shards
            .iter()
            .fold(WindowStats::default(), |mut sum, s| {
                sum.add(s);
                sum
            })
    }
}

/// Why a sharded run could not run or finish.
///
/// ```
/// use agentwire_streaming::pipeline::sharded::RunError;
/// assert_eq!(RunError::Shards { shards: 0 }.to_string(), "shards = 0: must be 1 to 256");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The window spec is invalid.
    #[error("window: {0}")]
    Spec(#[from] SpecError),
    /// The shard count is out of range.
    #[error("shards = {shards}: must be 1 to {SHARDS_MAX}")]
    Shards {
        /// The refused count.
        shards: usize,
    },
    /// A stage function or the input panicked on a thread of the run.
    #[error("a pipeline stage or the input panicked on the {thread} thread")]
    Panicked {
        /// Which thread: "feeder" or "shard N".
        thread: String,
    },
}

/// The shard a key belongs to (a fixed hash: the same key goes to the same shard in every
/// run, process, platform and version).
///
/// ```
/// use agentwire_streaming::event::Key;
/// use agentwire_streaming::pipeline::sharded::shard_of;
/// assert_eq!(shard_of(&Key::Id(7), 1), 0);
/// assert_eq!(shard_of(&Key::Id(7), 4), shard_of(&Key::Id(7), 4));
/// ```
pub fn shard_of(key: &Key, shards: usize) -> usize {
    // CRC-32 of the key's canonical bytes: fixed by definition, the same on every
    // platform, toolchain and version (checkpoints restore keys onto shards by it).
    let hash = match key {
        Key::Id(id) => crc32fast::hash(&id.to_le_bytes()),
        Key::Name(name) => {
            let mut h = crc32fast::Hasher::new();
            h.update(&[0xff]);
            h.update(name.as_str().as_bytes());
            h.finalize()
        }
    };
    (hash % shards.max(1) as u32) as usize
}

/// Runs `pipeline` over `input` on `shards` shard threads; `out` gets each output with the
/// shard that made it, on the caller's thread.
///
/// ```
/// use agentwire_streaming::event::{Event, Key};
/// use agentwire_streaming::pipeline::{sharded::run_sharded, Pipeline};
/// use agentwire_streaming::window::{WindowKind, WindowSpec};
/// let pipeline = Pipeline::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 10 }));
/// let input = (0..100).map(|i| Event::new(Key::Id(i % 5), i as i64, 1.0));
/// let mut results = 0;
/// let stats = run_sharded(&pipeline, 2, input, &mut |_, _| results += 1).unwrap();
/// assert_eq!((stats.events_in, results), (100, 50)); // 5 keys x 10 windows
/// ```
pub fn run_sharded<I>(
    pipeline: &Pipeline,
    shards: usize,
    input: I,
    out: &mut impl FnMut(usize, Output),
) -> Result<RunStats, RunError>
where
    I: IntoIterator<Item = Event>,
    I::IntoIter: Send,
{
    if !(1..=SHARDS_MAX).contains(&shards) {
        return Err(RunError::Shards { shards });
    }
    let operators = (0..shards)
        .map(|_| WindowOperator::new(pipeline.window().clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let input = input.into_iter();
    std::thread::scope(|scope| {
        let (out_tx, out_rx) = mpsc::sync_channel::<(usize, Output)>(OUTPUT_QUEUE_MAX);
        let mut round_txs = Vec::with_capacity(shards);
        let mut shard_threads = Vec::with_capacity(shards);
        for (shard, mut op) in operators.into_iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel::<Round>(SHARD_QUEUE_ROUNDS_MAX);
            round_txs.push(tx);
            let out_tx = out_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("aw-stream-{shard}"))
                .spawn_scoped(scope, move || {
                    // A send fails only when the caller stopped taking outputs (it panicked).
                    let mut emit = |o| drop(out_tx.send((shard, o)));
                    for round in rx {
                        for event in &round.events {
                            let _ = op.push_held(event, &mut emit);
                        }
                        if let Some(t) = round.source_max_ns {
                            op.observe_time(t, &mut emit);
                        }
                    }
                    op.finish(&mut emit);
                    op.stats()
                })
                .expect("spawn a shard thread");
            shard_threads.push(thread);
        }
        drop(out_tx);
        let feeder = std::thread::Builder::new()
            .name("aw-stream-feed".into())
            .spawn_scoped(scope, move || feed(pipeline, input, round_txs))
            .expect("spawn the feeder thread");
        let mut outputs = 0u64;
        for (shard, output) in out_rx {
            outputs += 1;
            out(shard, output);
        }
        let (events_in, events_filtered) = feeder.join().map_err(|_| RunError::Panicked {
            thread: "feeder".into(),
        })?;
        let mut stats = RunStats {
            events_in,
            events_filtered,
            outputs,
            shards: Vec::with_capacity(shards),
        };
        for (shard, thread) in shard_threads.into_iter().enumerate() {
            let shard_stats = thread.join().map_err(|_| RunError::Panicked {
                thread: format!("shard {shard}"),
            })?;
            stats.shards.push(shard_stats);
        }
        Ok(stats)
    })
}

/// The feeder: stages, then split by key in rounds; returns (events in, events filtered).
fn feed(
    pipeline: &Pipeline,
    input: impl Iterator<Item = Event>,
    round_txs: Vec<mpsc::SyncSender<Round>>,
) -> (u64, u64) {
    let shards = round_txs.len();
    let mut parts: Vec<Vec<Event>> = (0..shards).map(|_| Vec::new()).collect();
    let (mut events_in, mut filtered, mut in_round) = (0u64, 0u64, 0usize);
    let mut source_max_ns: Option<i64> = None;
    let send_round = |parts: &mut Vec<Vec<Event>>, source_max_ns| {
        for (tx, part) in round_txs.iter().zip(parts.iter_mut()) {
            let events = std::mem::take(part);
            // A shard that is gone has panicked; the join reports it.
            let _ = tx.send(Round {
                events,
                source_max_ns,
            });
        }
    };
    for mut event in input {
        events_in += 1;
        if !pipeline.prepare(&mut event) {
            filtered += 1;
            continue;
        }
        let t = event.event_time_ns;
        // An out-of-range time is refused by its shard; it must not move everyone's watermark.
        if time_in_range(t) {
            source_max_ns = Some(source_max_ns.map_or(t, |m: i64| m.max(t)));
        }
        parts[shard_of(&event.key, shards)].push(event);
        in_round += 1;
        if in_round == ROUND_EVENTS_MAX {
            send_round(&mut parts, source_max_ns);
            in_round = 0;
        }
    }
    if in_round > 0 {
        send_round(&mut parts, source_max_ns);
    }
    (events_in, filtered)
}
