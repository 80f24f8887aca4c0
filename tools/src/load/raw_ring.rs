//! `agentwire load --baseline raw-ring`: the same flow (pattern, producers, consumers, sizes,
//! schedule, warm-up, priority mix and stamps) over bare cross-process rings with no router.
//! Producer threads in this process write the tx rings of shared-memory segments; each
//! consumer is a child process (`agentwire load-ring-peer`) that reads the rings linked to
//! it. It prints the same JSON, so a report can give routed/raw as a ratio measured on the
//! same machine in the same session.
//!
//! Links, one segment each: unicast and reqresp, producer i to consumer i mod C; fanout,
//! every producer to every consumer (the producer writes one copy per subscriber, as a
//! broker-less fan-out must); anycast, every producer to every consumer, each message to the
//! next consumer in turn. Reqresp consumers echo each request on the segment's rx ring and
//! the producer times the round trip.

use super::stamp::{now_ns, SeqTracker, Stamp, FLAG_WARMUP};
use super::{
    dropped_by_hook, histogram, stall_hook, BoxError, Counts, LoadOptions, LoadReport, Pacer,
    Pattern, Shared, Stamper,
};
use agentwire_shm::ring::{ClaimError, Consumer, Producer};
use agentwire_shm::segment::{Segment, SegmentConfig};
use hdrhistogram::Histogram;
use rustix::fd::AsRawFd;
use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Flag on the last frame of a link: its producer is done.
const FLAG_FIN: u32 = 2;
/// Capacity of each baseline ring, as a daemon's default agent ring.
pub const RING_BYTES: usize = 1 << 20;
/// Capacity of a reqresp link's reply ring (one request in flight).
const REPLY_RING_BYTES: usize = 64 * 1024;
/// How long a reqresp producer waits for one reply before counting a timeout.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// What a peer reports, one JSON line.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct PeerReport {
    /// Messages seen for the first time.
    pub unique: u64,
    /// Sequence numbers skipped.
    pub gaps: u64,
    /// Seen more than once.
    pub duplicated: u64,
    /// Seen after a higher sequence number of their flow (once each).
    pub late: u64,
    /// Measured (non-warm-up) deliveries.
    pub delivered: u64,
    /// When the last measured message arrived, ns (monotonic).
    pub last_ns: u64,
    /// Latency histogram as (value ns, count) pairs of its recorded buckets.
    pub latency: Vec<(u64, u64)>,
}

/// Consumers each producer writes to.
fn links_of(pattern: Pattern, producer: usize, consumers: usize) -> Vec<usize> {
    match pattern {
        Pattern::Unicast | Pattern::Reqresp => vec![producer % consumers],
        Pattern::Fanout | Pattern::Anycast => (0..consumers).collect(),
    }
}

/// A started consumer process; a reader thread turns its progress lines into the run's
/// shared counters and returns its final report.
struct Peer {
    child: Child,
    out: Option<BufReader<ChildStdout>>,
    reader: Option<std::thread::JoinHandle<Result<PeerReport, String>>>,
}

/// A peer's once-a-second line: `progress DELIVERED P99_NS GAPS` (cumulative counts).
const PROGRESS: &str = "progress ";

impl Peer {
    fn spawn(segments: &[&Segment], echo: bool) -> Result<Self, BoxError> {
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("load-ring-peer");
        if echo {
            command.arg("--echo");
        }
        let mut fds = Vec::with_capacity(segments.len());
        for segment in segments {
            let fd = segment.try_clone_fd()?;
            rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::empty())?;
            command.args(["--fd", &fd.as_raw_fd().to_string()]);
            fds.push(fd);
        }
        let mut child = command.stdout(Stdio::piped()).spawn()?;
        drop(fds);
        let mut out = BufReader::new(child.stdout.take().ok_or("peer stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != "ready" {
            return Err(format!("a ring peer did not start: {line:?}").into());
        }
        Ok(Self {
            child,
            out: Some(out),
            reader: None,
        })
    }

    /// Starts reading the peer's lines: progress into `shared`, then its report.
    /// An anycast flow is split between consumers, so one peer's gaps went to another:
    /// then only the totals tell losses (`count_gaps` false).
    fn watch(&mut self, shared: Arc<Shared>, count_gaps: bool) {
        let mut out = self.out.take().expect("watched once");
        self.reader = Some(std::thread::spawn(move || {
            let (mut delivered, mut gaps) = (0u64, 0u64);
            let mut line = String::new();
            loop {
                line.clear();
                if out.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                    return Err("a ring peer closed its output without a report".into());
                }
                let Some(rest) = line.trim().strip_prefix(PROGRESS) else {
                    return serde_json::from_str(line.trim())
                        .map_err(|e| format!("a ring peer's report {line:?}: {e}"));
                };
                let n: Vec<u64> = rest.split(' ').filter_map(|f| f.parse().ok()).collect();
                if let [d, p99, g] = n[..] {
                    shared
                        .delivered_measured
                        .fetch_add(d.saturating_sub(delivered), Ordering::Relaxed);
                    if count_gaps {
                        shared
                            .gaps
                            .fetch_add(g.saturating_sub(gaps), Ordering::Relaxed);
                    }
                    shared.p99_last_ns.fetch_max(p99, Ordering::Relaxed);
                    (delivered, gaps) = (d, g);
                }
            }
        }));
    }

    fn report(mut self) -> Result<PeerReport, BoxError> {
        let report = self
            .reader
            .take()
            .expect("watched")
            .join()
            .map_err(|_| "a peer reader panicked")??;
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("a ring peer exited with {status}").into());
        }
        Ok(report)
    }
}

/// What one producer thread did.
struct ProducerResult {
    sent_total: u64,
    measured: u64,
    /// Reqresp: replies received, and round trips of measured requests.
    replies: u64,
    replies_measured: u64,
    latency: Histogram<u64>,
    finished_ns: u64,
}

/// Runs the baseline.
pub fn run(options: &LoadOptions) -> Result<LoadReport, BoxError> {
    let (pattern, producers, consumers) = (options.pattern, options.producers, options.consumers);
    let echo = pattern == Pattern::Reqresp;
    let rx_bytes = if echo { REPLY_RING_BYTES } else { 4096 };
    // segments[i][k]: producer i's link to consumer links_of(i)[k].
    let mut segments = Vec::with_capacity(producers);
    for i in 0..producers {
        let mut row = Vec::new();
        for _ in links_of(pattern, i, consumers) {
            row.push(Segment::create(
                &SegmentConfig::new(0).with_capacity(RING_BYTES, rx_bytes),
            )?);
        }
        segments.push(row);
    }
    let mut peers = Vec::with_capacity(consumers);
    for j in 0..consumers {
        let linked: Vec<&Segment> = (0..producers)
            .flat_map(|i| {
                links_of(pattern, i, consumers)
                    .into_iter()
                    .zip(&segments[i])
                    .filter(move |(c, _)| *c == j)
                    .map(|(_, s)| s)
            })
            .collect();
        if !linked.is_empty() {
            peers.push(Peer::spawn(&linked, echo)?);
        }
    }
    let shared = Arc::new(Shared::default());
    for peer in &mut peers {
        peer.watch(shared.clone(), pattern != Pattern::Anycast);
    }
    let warm_end_ns = now_ns() + options.warmup.as_nanos() as u64;
    let results: Vec<ProducerResult> = std::thread::scope(|s| {
        let handles: Vec<_> = segments
            .iter()
            .enumerate()
            .map(|(i, links)| {
                let shared = &shared;
                std::thread::Builder::new()
                    .name(format!("aw-raw-p{i}"))
                    .spawn_scoped(s, move || {
                        let result = produce(options, i, links, warm_end_ns, shared);
                        shared.producers_done.fetch_add(1, Ordering::Release);
                        result
                    })
            })
            .collect();
        super::progress_until_sent(options, &shared);
        handles
            .into_iter()
            .map(|h| {
                h.map_err(|e| -> BoxError { e.into() })?
                    .join()
                    .map_err(|_| -> BoxError { "a producer thread panicked".into() })?
            })
            .collect::<Result<Vec<_>, BoxError>>()
    })?;
    let mut reports = Vec::with_capacity(peers.len());
    for peer in peers {
        reports.push(peer.report()?);
    }
    aggregate(options, warm_end_ns, &results, &reports)
}

/// Totals the producers' and peers' counts the way `run_routed` totals its agents'.
fn aggregate(
    options: &LoadOptions,
    warm_end_ns: u64,
    results: &[ProducerResult],
    reports: &[PeerReport],
) -> Result<LoadReport, BoxError> {
    let pattern = options.pattern;
    let sent_total: u64 = results.iter().map(|r| r.sent_total).sum();
    let measured: u64 = results.iter().map(|r| r.measured).sum();
    let mut latency = histogram();
    let (mut unique, mut duplicated, mut delivered, mut last_ns) = (0u64, 0u64, 0u64, 0u64);
    let late = reports.iter().map(|r| r.late).sum();
    for r in reports {
        unique += r.unique;
        duplicated += r.duplicated;
        delivered += r.delivered;
        last_ns = last_ns.max(r.last_ns);
        for &(value, count) in &r.latency {
            latency.record_n(value, count)?;
        }
    }
    let (lost, end_ns) = match pattern {
        Pattern::Reqresp => {
            delivered = results.iter().map(|r| r.replies_measured).sum();
            for r in results {
                latency.add(&r.latency)?;
            }
            let replies: u64 = results.iter().map(|r| r.replies).sum();
            let finished = results.iter().map(|r| r.finished_ns).max().unwrap_or(0);
            (sent_total.saturating_sub(replies), finished)
        }
        Pattern::Fanout => (
            (sent_total * options.consumers as u64).saturating_sub(unique),
            last_ns,
        ),
        Pattern::Anycast => {
            duplicated += unique.saturating_sub(sent_total);
            (sent_total.saturating_sub(unique.min(sent_total)), last_ns)
        }
        Pattern::Unicast => (sent_total.saturating_sub(unique), last_ns),
    };
    Ok(LoadReport::new(
        options,
        "raw-ring",
        Counts {
            sent: measured,
            delivered,
            lost,
            duplicated,
            late,
        },
        &latency,
        end_ns.saturating_sub(warm_end_ns),
    ))
}

/// One producer thread: its schedule over its links, then a FIN frame on each.
fn produce(
    options: &LoadOptions,
    index: usize,
    links: &[Segment],
    warm_end_ns: u64,
    shared: &Shared,
) -> Result<ProducerResult, BoxError> {
    let pattern = options.pattern;
    let mut txs: Vec<Producer> = links
        .iter()
        .map(|s| Producer::new(s.tx_memory(), None))
        .collect();
    let mut replies_rx: Option<Consumer> =
        (pattern == Pattern::Reqresp).then(|| Consumer::new(links[0].rx_memory(), None));
    let mut frame = vec![0u8; options.msg_size];
    for (i, b) in frame.iter_mut().enumerate().skip(super::STAMP_BYTES) {
        *b = i as u8;
    }
    let batch_max = if options.mode == super::Mode::Open
        || matches!(pattern, Pattern::Anycast | Pattern::Reqresp)
    {
        1
    } else {
        super::BATCH_FRAMES
    };
    let stall = if index == 0 {
        stall_hook(options)
    } else {
        None
    };
    let mut pacer = Pacer::new(options.schedule(warm_end_ns), batch_max, stall);
    let classed = matches!(pattern, Pattern::Unicast | Pattern::Fanout);
    let mut stamper = Stamper::new(index as u32, options, classed);
    let mut result = ProducerResult {
        sent_total: 0,
        measured: 0,
        replies: 0,
        replies_measured: 0,
        latency: histogram(),
        finished_ns: 0,
    };
    let mut next_link = 0usize;
    while let Some(step) = pacer.next_step() {
        for _ in 0..step.frames {
            let seq = pacer.seq();
            let (stamp, _) = stamper.next(seq, step.warm, step.intended_ns);
            stamp.write(&mut frame);
            if !dropped_by_hook(options, seq) {
                match pattern {
                    Pattern::Unicast => push(&mut txs[0], &frame, true)?,
                    Pattern::Fanout => {
                        for tx in &mut txs {
                            push(tx, &frame, true)?;
                        }
                    }
                    Pattern::Anycast => {
                        push(&mut txs[next_link], &frame, false)?;
                        next_link = (next_link + 1) % txs.len();
                    }
                    Pattern::Reqresp => {
                        push(&mut txs[0], &frame, false)?;
                        let rx = replies_rx.as_mut().expect("reqresp has a reply ring");
                        if await_reply(rx, &stamp)? {
                            result.replies += 1;
                            if !step.warm {
                                let rtt = now_ns().saturating_sub(stamp.sent_ns).max(1);
                                let _ = result.latency.record(rtt);
                                result.replies_measured += 1;
                            }
                        }
                    }
                }
            }
            pacer.sent(&step);
        }
        for tx in &mut txs {
            tx.publish();
        }
        shared.sent_total.fetch_add(step.frames, Ordering::Relaxed);
    }
    result.finished_ns = now_ns();
    (result.sent_total, result.measured) = (pacer.sent_total(), pacer.measured());
    let fin = Stamp {
        producer: index as u32,
        flags: FLAG_FIN,
        seq: pacer.seq(),
        sent_ns: now_ns(),
    };
    fin.write(&mut frame);
    for tx in &mut txs {
        push(tx, &frame, false)?;
    }
    Ok(result)
}

/// Waits (spinning, at most [`REPLY_TIMEOUT`]) for the echo of `request`; false on timeout.
/// Echoes of earlier, timed-out requests are skipped.
fn await_reply(rx: &mut Consumer, request: &Stamp) -> Result<bool, BoxError> {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let mut backoff = Backoff::default();
    loop {
        let mut matched = false;
        rx.read(1, |frame| {
            matched = Stamp::read(frame).is_some_and(|s| s == *request);
            ControlFlow::Continue(())
        })?;
        if matched {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        backoff.idle();
    }
}

/// Busy-polls, then yields the CPU between polls: with more spinning threads than cores
/// (several producers and peers on a small machine), a pure spin would hold the core the
/// other side needs for a whole time slice.
#[derive(Default)]
struct Backoff {
    empty_polls: u32,
}

impl Backoff {
    const SPINS: u32 = 1_000;

    fn idle(&mut self) {
        if self.empty_polls < Self::SPINS {
            self.empty_polls += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }

    fn reset(&mut self) {
        self.empty_polls = 0;
    }
}

/// Writes one frame, waiting (bounded: 30 s) while the ring is full.
fn push(tx: &mut Producer, frame: &[u8], deferred: bool) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
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
                if Instant::now() > deadline {
                    return Err("a ring peer stopped reading (ring full for 30 s)".into());
                }
                std::hint::spin_loop();
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The peer process: reads the tx rings of the segments behind `fds` until a FIN frame on
/// each (with `echo`, answering every frame on the same segment's rx ring), then prints its
/// report.
pub fn peer(fds: Vec<i32>, echo: bool) -> Result<(), Box<dyn std::error::Error>> {
    let mut links = Vec::with_capacity(fds.len());
    for fd in fds {
        // The parent left this descriptor open across exec; reopening it through /proc
        // gives this process its own descriptor for the same shared memory, no unsafe code.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{fd}"))?;
        let segment = Segment::open(file.into())?;
        let rx = Consumer::new(segment.tx_memory(), None);
        let tx = echo.then(|| Producer::new(segment.rx_memory(), None));
        links.push((segment, rx, tx, false));
    }
    let mut tracker = SeqTracker::default();
    let mut latency = histogram();
    let (mut delivered, mut last_ns) = (0u64, 0u64);
    let mut echo_frame = Vec::new();
    let mut backoff = Backoff::default();
    let mut interval = histogram();
    let mut interval_start = Instant::now();
    outln!("ready")?;
    let mut idle_since = Instant::now();
    while links.iter().any(|l| !l.3) {
        let mut moved = 0;
        for (_, rx, tx, done) in links.iter_mut().filter(|l| !l.3) {
            if let Some(tx) = tx {
                // Echo: one request at a time, answered on the same segment's rx ring.
                let mut fin = false;
                echo_frame.clear();
                moved += rx.read(1, |frame| {
                    fin = Stamp::read(frame).is_some_and(|s| s.flags & FLAG_FIN != 0);
                    echo_frame.extend_from_slice(frame);
                    ControlFlow::Continue(())
                })?;
                if fin {
                    *done = true;
                } else if !echo_frame.is_empty() {
                    tracker.unique += 1;
                    push(tx, &echo_frame, false).map_err(|e| e.to_string())?;
                }
                continue;
            }
            moved += rx.read(64, |frame| {
                let Some(stamp) = Stamp::read(frame) else {
                    tracker.malformed += 1;
                    return ControlFlow::Continue(());
                };
                if stamp.flags & FLAG_FIN != 0 {
                    *done = true;
                    return ControlFlow::Break(());
                }
                if tracker.record(&stamp).is_first() && stamp.flags & FLAG_WARMUP == 0 {
                    let now = now_ns();
                    let ns = now.saturating_sub(stamp.sent_ns).max(1);
                    let _ = latency.record(ns);
                    let _ = interval.record(ns);
                    delivered += 1;
                    last_ns = now;
                }
                ControlFlow::Continue(())
            })?;
        }
        if interval_start.elapsed() >= Duration::from_secs(1) {
            outln!(
                "{PROGRESS}{delivered} {} {}",
                interval.value_at_quantile(0.99),
                tracker.gaps
            )?;
            interval.reset();
            interval_start = Instant::now();
        }
        if moved > 0 {
            idle_since = Instant::now();
            backoff.reset();
        } else if idle_since.elapsed() > Duration::from_secs(60) {
            return Err("ring peer: nothing for 60 s".into());
        } else {
            backoff.idle();
        }
    }
    let report = PeerReport {
        unique: tracker.unique,
        gaps: tracker.gaps,
        duplicated: tracker.duplicated,
        late: tracker.late,
        delivered,
        last_ns,
        latency: latency
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect(),
    };
    outln!("{}", serde_json::to_string(&report)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_follow_the_pattern() {
        assert_eq!(links_of(Pattern::Unicast, 3, 2), [1]);
        assert_eq!(links_of(Pattern::Reqresp, 0, 2), [0]);
        assert_eq!(links_of(Pattern::Fanout, 1, 3), [0, 1, 2]);
        assert_eq!(links_of(Pattern::Anycast, 0, 2), [0, 1]);
    }
}
