//! `agentwire load --baseline raw-ring`: the same flow (unicast, one producer, one consumer,
//! same sizes, schedule, warm-up and stamps) over a bare cross-process ring with no router:
//! this process writes the tx ring of a shared-memory segment, a child process
//! (`agentwire load-ring-peer`) reads it. It prints the same JSON, so a report can give
//! routed/raw as a ratio measured on the same machine in the same session.

use super::stamp::{now_ns, SeqTracker, Stamp, FLAG_WARMUP};
use super::{
    dropped_by_hook, histogram, mode_name, stall_hook, BoxError, Latency, LoadOptions, LoadReport,
    Pacer, Pattern,
};
use agentwire_shm::ring::{ClaimError, Consumer, Producer};
use agentwire_shm::segment::{Segment, SegmentConfig};
use rustix::fd::AsRawFd;
use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Flag on the last frame: the producer is done.
const FLAG_FIN: u32 = 2;
/// Capacity of the baseline ring, as a daemon's default agent ring.
pub const RING_BYTES: usize = 1 << 20;

/// What the peer reports, one JSON line.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct PeerReport {
    /// Messages seen for the first time.
    pub unique: u64,
    /// Sequence numbers skipped.
    pub gaps: u64,
    /// Seen twice or out of order.
    pub duplicated: u64,
    /// Measured (non-warm-up) deliveries.
    pub delivered: u64,
    /// When the last measured message arrived, ns (monotonic).
    pub last_ns: u64,
    /// Latency percentiles, ns.
    pub latency_ns: (u64, u64, u64, u64, u64),
}

/// Runs the baseline.
pub fn run(options: &LoadOptions) -> Result<LoadReport, BoxError> {
    if options.pattern != Pattern::Unicast || options.producers != 1 || options.consumers != 1 {
        return Err(
            "--baseline raw-ring runs unicast with one producer and one consumer \
                    (--pattern unicast --producers 1 --consumers 1); the other patterns' \
                    baselines are not built yet"
                .into(),
        );
    }
    let segment = Segment::create(&SegmentConfig::new(0).with_capacity(RING_BYTES, 4096))?;
    let fd = segment.try_clone_fd()?;
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::empty())?;
    let mut peer = Command::new(std::env::current_exe()?)
        .args(["load-ring-peer", "--fd", &fd.as_raw_fd().to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    drop(fd);
    let mut out = BufReader::new(peer.stdout.take().ok_or("peer stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if line.trim() != "ready" {
        return Err(format!("the ring peer did not start: {line:?}").into());
    }
    let mut tx = Producer::new(segment.tx_memory(), None);
    let mut frame = vec![0u8; options.msg_size];
    for (i, b) in frame.iter_mut().enumerate().skip(super::STAMP_BYTES) {
        *b = i as u8;
    }
    let warm_end_ns = now_ns() + options.warmup.as_nanos() as u64;
    let mut pacer = Pacer::new(
        options.schedule(warm_end_ns),
        super::BATCH_FRAMES,
        stall_hook(options),
    );
    while let Some(step) = pacer.next_step() {
        for _ in 0..step.frames {
            let seq = pacer.seq();
            let stamp = Stamp {
                producer: 0,
                flags: (if step.warm { FLAG_WARMUP } else { 0 }) | 2 << super::stamp::CLASS_SHIFT,
                seq,
                sent_ns: step.intended_ns.unwrap_or_else(now_ns),
            };
            stamp.write(&mut frame);
            if !dropped_by_hook(options, seq) {
                push(&mut tx, &frame, true)?;
            }
            pacer.sent(&step);
        }
        tx.publish();
    }
    let (sent_total, measured, seq) = (pacer.sent_total(), pacer.measured(), pacer.seq());
    let fin = Stamp {
        producer: 0,
        flags: FLAG_FIN,
        seq,
        sent_ns: now_ns(),
    };
    fin.write(&mut frame);
    push(&mut tx, &frame, false)?;
    line.clear();
    out.read_line(&mut line)?;
    let status = peer.wait()?;
    if !status.success() {
        return Err(format!("the ring peer exited with {status}").into());
    }
    let r: PeerReport = serde_json::from_str(line.trim())
        .map_err(|e| format!("the ring peer's report {line:?}: {e}"))?;
    let elapsed_s = r.last_ns.saturating_sub(warm_end_ns) as f64 / 1e9;
    let msgs_per_s = if elapsed_s > 0.0 {
        r.delivered as f64 / elapsed_s
    } else {
        0.0
    };
    let (p50, p90, p99, p999, max) = r.latency_ns;
    Ok(LoadReport {
        mode: mode_name(options.mode).into(),
        pattern: "unicast".into(),
        msg_size: options.msg_size,
        sent: measured,
        delivered: r.delivered,
        lost: sent_total.saturating_sub(r.unique),
        duplicated: r.duplicated,
        msgs_per_s,
        bytes_per_s: msgs_per_s * options.msg_size as f64,
        latency_ns: Latency {
            p50,
            p90,
            p99,
            p999,
            max,
        },
        target: "raw-ring".into(),
        producers: 1,
        consumers: 1,
        elapsed_s,
    })
}

/// Writes one frame, waiting (bounded: 30 s) while the ring is full.
fn push(tx: &mut Producer, frame: &[u8], deferred: bool) -> Result<(), BoxError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tx.claim(frame.len()) {
            Ok(mut claim) => {
                claim.bytes_mut().copy_from_slice(frame);
                if deferred {
                    claim.commit_deferred();
                } else {
                    claim.commit();
                }
                return Ok(());
            }
            Err(ClaimError::Full { .. }) => {
                tx.publish();
                if std::time::Instant::now() > deadline {
                    return Err("the ring peer stopped reading (ring full for 30 s)".into());
                }
                std::hint::spin_loop();
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The peer process: reads the segment's tx ring until the FIN frame, prints its report.
pub fn peer(fd: i32) -> Result<(), Box<dyn std::error::Error>> {
    // The parent left this descriptor open across exec; reopening it through /proc gives
    // this process its own descriptor for the same shared memory, with no unsafe code.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{fd}"))?;
    let segment = Segment::open(file.into())?;
    let mut rx = Consumer::new(segment.tx_memory(), None);
    let mut tracker = SeqTracker::default();
    let mut latency = histogram();
    let (mut delivered, mut last_ns, mut done) = (0u64, 0u64, false);
    println!("ready");
    let mut idle_since = std::time::Instant::now();
    while !done {
        let n = rx.read(64, |frame| {
            let Some(stamp) = Stamp::read(frame) else {
                tracker.malformed += 1;
                return ControlFlow::Continue(());
            };
            if stamp.flags & FLAG_FIN != 0 {
                done = true;
                return ControlFlow::Break(());
            }
            if tracker.record(&stamp) && stamp.flags & FLAG_WARMUP == 0 {
                let now = now_ns();
                let _ = latency.record(now.saturating_sub(stamp.sent_ns).max(1));
                delivered += 1;
                last_ns = now;
            }
            ControlFlow::Continue(())
        })?;
        if n > 0 {
            idle_since = std::time::Instant::now();
        } else if idle_since.elapsed() > Duration::from_secs(60) {
            return Err("ring peer: nothing for 60 s".into());
        }
    }
    let l = Latency::of(&latency);
    let report = PeerReport {
        unique: tracker.unique,
        gaps: tracker.gaps,
        duplicated: tracker.duplicated,
        delivered,
        last_ns,
        latency_ns: (l.p50, l.p90, l.p99, l.p999, l.max),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
