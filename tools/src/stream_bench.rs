//! `agentwire stream bench`: events per second and ingest-to-score latency through the whole
//! engine path, against the raw ingest path measured in the same run.
//!
//! - **Engine path.** An ingest thread makes events in batches, encodes them and appends each
//!   batch to a durable log in a fresh directory (group commit, fsync every
//!   [`FSYNC_INTERVAL_MS`]), then hands the batch on through a bounded queue; a processing
//!   thread decodes each record, runs a tumbling one-second window per key and the detector
//!   of the event's key. Latency is from the moment the ingest thread made the batch to the
//!   moment the event's detector score exists, sampled every [`LATENCY_SAMPLE_EVERY`] events.
//! - **Baseline.** The same events, encoded the same way, through a bare shared-memory ring
//!   between the same two threads and out, nothing else.

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use agentwire_shm::ring::ring_pair;
use agentwire_streaming::codec::{decode, encode};
use agentwire_streaming::detect::by_name;
use agentwire_streaming::event::{Event, Key};
use agentwire_streaming::log::{FsyncPolicy, Log, LogConfig};
use agentwire_streaming::window::{WindowKind, WindowOperator, WindowSpec};
use hdrhistogram::Histogram;
use serde_json::json;

type BoxError = Box<dyn std::error::Error>;

/// Events per ingest batch (one log append, one group commit at most).
pub const BATCH_EVENTS: usize = 4_096;
/// Batches queued between the threads.
const QUEUE_BATCHES: usize = 16;
/// The log's fsync interval.
pub const FSYNC_INTERVAL_MS: u64 = 10;
/// One latency sample per this many events.
pub const LATENCY_SAMPLE_EVERY: u64 = 64;
/// Keys of the generated events.
const KEYS: u64 = 1_024;

/// What `stream bench` was asked.
pub struct BenchArgs {
    /// Events per run.
    pub events: u64,
    /// The detector.
    pub detector: String,
    /// Where the log goes (default: a new directory under the temp dir, removed after).
    pub dir: Option<PathBuf>,
    /// One JSON object.
    pub json: bool,
}

/// The i-th generated event: keys round robin, a slow triangle wave with a little noise
/// (cheap to make: the generator is part of both paths' cost).
fn event(i: u64) -> Event {
    let key = Key::Id(i % KEYS);
    let step = i / KEYS;
    let t = step as i64 * 1_000_000; // each key: one event per ms of event time
    let phase = (step % 1_000) as f64;
    let wave = (phase - 500.0).abs() / 50.0;
    let noise = ((i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) % 100) as f64 / 100.0;
    Event::new(key, t, 100.0 + wave + noise)
}

/// A batch of encoded records in one buffer, with the instant it was made.
struct Batch {
    made: Instant,
    bytes: Vec<u8>,
    /// Where each record ends in `bytes`.
    ends: Vec<usize>,
}

impl Batch {
    fn records(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(a, &b)| &self.bytes[a..b])
    }
}

/// Events `from..to`, encoded (one allocation per batch, none per event).
fn make_batch(from: u64, to: u64) -> Batch {
    let made = Instant::now();
    let n = (to - from) as usize;
    let mut batch = Batch {
        made,
        bytes: Vec::with_capacity(n * 32),
        ends: Vec::with_capacity(n),
    };
    for i in from..to {
        encode(&event(i), &mut batch.bytes);
        batch.ends.push(batch.bytes.len());
    }
    batch
}

/// The engine path: events/s and the latency histogram (µs).
fn engine_path(args: &BenchArgs, dir: &std::path::Path) -> Result<(f64, Histogram<u64>), BoxError> {
    by_name(&args.detector)?;
    let config = LogConfig {
        fsync: FsyncPolicy::Interval {
            interval_ms: FSYNC_INTERVAL_MS,
        },
        segment_bytes_max: 256 << 20,
        batch_bytes_max: 64 << 20,
        ..LogConfig::new(dir.join("log"))
    };
    let (mut log, _) = Log::open(config)?;
    let (tx, rx) = mpsc::sync_channel::<Batch>(QUEUE_BATCHES);
    let events = args.events;
    let started = Instant::now();
    let processed = std::thread::scope(|scope| -> Result<Histogram<u64>, BoxError> {
        let ingest = scope.spawn(move || -> Result<(), String> {
            let mut from = 0;
            while from < events {
                let to = (from + BATCH_EVENTS as u64).min(events);
                let batch = make_batch(from, to);
                let refs: Vec<&[u8]> = batch.records().collect();
                log.append_batch(0, &refs).map_err(|e| e.to_string())?;
                if tx.send(batch).is_err() {
                    return Err("the processing thread stopped".into());
                }
                from = to;
            }
            log.sync_now().map_err(|e| e.to_string())
        });
        let mut op = WindowOperator::new(WindowSpec::new(WindowKind::Tumbling {
            size_ns: 1_000_000_000,
        }))?;
        let mut detectors: Vec<Box<dyn agentwire_streaming::detect::Detector>> = (0..KEYS)
            .map(|_| by_name(&args.detector).expect("checked above"))
            .collect();
        let mut latency_us = Histogram::<u64>::new(3)?;
        let mut seen = 0u64;
        let mut windows = 0u64;
        for batch in rx {
            for record in batch.records() {
                let e = decode(record)?;
                op.push(&e, &mut |_| windows += 1);
                let Key::Id(k) = e.key else { continue };
                let _score = detectors[k as usize].score(e.event_time_ns, e.value);
                seen += 1;
                if seen % LATENCY_SAMPLE_EVERY == 0 {
                    let us = batch.made.elapsed().as_micros() as u64;
                    latency_us.record(us.max(1))?;
                }
            }
        }
        ingest
            .join()
            .map_err(|_| "the ingest thread panicked")?
            .map_err(|e| format!("ingest: {e}"))?;
        if seen != events {
            return Err(format!("processed {seen} of {events} events").into());
        }
        Ok(latency_us)
    })?;
    let rate = events as f64 / started.elapsed().as_secs_f64();
    Ok((rate, processed))
}

/// The baseline: the same encoded events through a bare ring between two threads.
fn raw_ring(events: u64) -> Result<f64, BoxError> {
    let (mut producer, mut consumer) = ring_pair(1 << 22, false)?;
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<(), BoxError> {
        let ingest = scope.spawn(move || {
            let mut from = 0;
            while from < events {
                let to = (from + BATCH_EVENTS as u64).min(events);
                let batch = make_batch(from, to);
                for record in batch.records() {
                    while producer.try_push(record).is_err() {
                        std::hint::spin_loop();
                    }
                }
                from = to;
            }
        });
        let mut seen = 0u64;
        while seen < events {
            let read = consumer.read(256, |_| std::ops::ControlFlow::Continue(()))?;
            seen += read as u64;
            if read == 0 {
                std::hint::spin_loop();
            }
        }
        ingest.join().map_err(|_| "the ingest thread panicked")?;
        Ok(())
    })?;
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// `agentwire stream bench`.
pub fn bench(args: BenchArgs) -> Result<(), BoxError> {
    if args.events == 0 {
        return Err("--events must be at least 1".into());
    }
    let (dir, remove_after) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("aw-stream-bench-{}", std::process::id())),
            true,
        ),
    };
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        return Err(format!("{} is not empty; give an empty or new --dir", dir.display()).into());
    }
    std::fs::create_dir_all(&dir)?;
    if !args.json {
        let _ = writeln!(
            std::io::stderr(),
            "agentwire stream bench: {} events through the log at {} and {} ...",
            args.events,
            dir.display(),
            args.detector
        );
    }
    let baseline = raw_ring(args.events);
    let engine = engine_path(&args, &dir);
    if remove_after {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let baseline = baseline?;
    let (rate, latency_us) = engine?;
    let ms = |q: f64| latency_us.value_at_quantile(q) as f64 / 1000.0;
    let summary = json!({
        "events": args.events, "events_per_s": rate,
        "latency_ms": {"p50": ms(0.5), "p99": ms(0.99), "max": latency_us.max() as f64 / 1000.0},
        "baseline_events_per_s": baseline, "ratio_to_baseline": rate / baseline,
        "ns_per_event": 1e9 / rate, "detector": args.detector,
        "fsync": format!("every {FSYNC_INTERVAL_MS} ms"), "batch_events": BATCH_EVENTS,
        "keys": KEYS,
    });
    if args.json {
        outln!("{summary}")?;
    } else {
        outln!(
            "engine path (log, window, {}): {:.2} M events/s, ingest-to-score p50 {:.2} ms, p99 {:.2} ms",
            args.detector,
            rate / 1e6,
            ms(0.5),
            ms(0.99)
        )?;
        outln!(
            "raw ingest path (bare ring, same run): {:.2} M events/s; engine / raw = {:.3}",
            baseline / 1e6,
            rate / baseline
        )?;
    }
    Ok(())
}
