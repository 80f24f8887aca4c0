//! `agentwire load`: producer and consumer agents against a running daemon (or one it
//! starts; the agents are in [`routed`]), closed loop or open loop, with losses, late
//! arrivals and duplicates counted by sequence numbers and latencies in HDR histograms;
//! `--baseline raw-ring` runs the same flow over a bare cross-process ring with no router
//! ([`raw_ring`]). This module holds what both share: options, schedule and pacing, the
//! report and its verdict.
//!
//! Every agent registers before any producer sends, so a run the daemon refuses sends
//! nothing; an agent that fails mid-run (the daemon went away) ends the run at once with the
//! agent's error. A run that lost or duplicated messages exits
//! [`EXIT_DELIVERY_FAILED`] unless `--allow-loss`.
//!
//! Latency is measured from the time stamped in the message: in closed loop the actual send
//! time; in open loop the *intended* send time of a fixed schedule, so a stall in the sender
//! or the router shows up in the latencies of every message it delayed (no coordinated
//! omission). Request/response measures the round trip at the producer.

pub mod pin;
pub mod raw_ring;
mod routed;
pub mod stamp;

pub(crate) use routed::run_routed;

use agentwire_shm::client::SendOptions;
use hdrhistogram::Histogram;
use stamp::{now_ns, Stamp, CLASS_SHIFT, FLAG_WARMUP, STAMP_BYTES};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Topic the fan-out pattern publishes to.
pub const LOAD_TOPIC: &str = "aw-load";
/// Capability the anycast pattern's consumers offer.
pub const LOAD_CAPABILITY: &str = "aw-load-sink";
/// Frames per batch in closed loop (claims committed together, one publish).
pub const BATCH_FRAMES: u64 = 32;
/// How long the run waits for the last deliveries after the producers stop.
pub const DRAIN_SILENCE: Duration = Duration::from_secs(2);
/// How long a failed run waits for its agent threads to stop before it reports the failure
/// anyway (a producer can be inside a send that waits up to its send timeout).
pub const FAILED_THREADS_WAIT: Duration = Duration::from_secs(1);
/// Exit status of a run that lost or duplicated messages (without `--allow-loss`); 1 is a
/// run that could not complete, 2 a command line clap refused.
pub const EXIT_DELIVERY_FAILED: u8 = 3;

/// A run that completed but lost or duplicated messages: exit [`EXIT_DELIVERY_FAILED`].
#[derive(Debug)]
pub struct DeliveryFailed {
    /// Messages never delivered.
    pub lost: u64,
    /// Messages delivered more than once.
    pub duplicated: u64,
}

impl std::fmt::Display for DeliveryFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} lost and {} duplicated (by sequence numbers); --allow-loss accepts that and exits 0",
            self.lost, self.duplicated
        )
    }
}

impl std::error::Error for DeliveryFailed {}

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// As fast as the system takes them.
    Closed,
    /// A fixed rate (`--rate`), latency from the intended send time.
    Open,
}

/// What the producers send to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pattern {
    /// Producer i sends to consumer i mod C.
    Unicast,
    /// Producers publish to a topic every consumer subscribes to (fan-out to K = consumers).
    Fanout,
    /// Producers anycast to a capability every consumer offers (the least loaded gets it).
    Anycast,
    /// Producers send requests; consumers echo them; the round trip is timed.
    Reqresp,
}

/// The physical-limit proxy to run instead of the routed flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Baseline {
    /// A bare cross-process ring, no router.
    RawRing,
}

/// Everything `agentwire load` takes.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The daemon's socket (None: the default, or the spawned daemon's).
    pub socket: Option<PathBuf>,
    /// Start a daemon for the run and stop it after.
    pub spawn_daemon: bool,
    /// Closed or open loop.
    pub mode: Mode,
    /// Open loop: messages per second over all producers.
    pub rate_per_s: u64,
    /// The pattern.
    pub pattern: Pattern,
    /// Payload bytes per message (at least the 24-byte stamp).
    pub msg_size: usize,
    /// Producer agents.
    pub producers: usize,
    /// Consumer agents.
    pub consumers: usize,
    /// Measured messages over all producers (None: run for `duration`).
    pub count: Option<u64>,
    /// Measured time when no count is given.
    pub duration: Duration,
    /// Warm-up before measuring.
    pub warmup: Duration,
    /// Priority classes and weights, e.g. [(0, 1), (2, 9)].
    pub priority_mix: Vec<(u8, u32)>,
    /// Print one JSON object.
    pub json: bool,
    /// Run the baseline instead.
    pub baseline: Option<Baseline>,
    /// Test hook: skip every Nth message while counting it as sent (0: off).
    pub drop_every: u64,
    /// Test hook: producer 0 stalls this long once, halfway through the measured run.
    pub stall_ms: u64,
    /// Where the agent threads run (routed runs).
    pub pin: pin::Pin,
    /// Report losses and duplicates but exit 0 (`--allow-loss`).
    pub allow_loss: bool,
}

impl LoadOptions {
    fn validate(&self) -> Result<(), String> {
        if self.msg_size < STAMP_BYTES {
            return Err(format!(
                "--msg-size {} is too small: at least {STAMP_BYTES} bytes (the stamp: producer, flags, sequence number, send time)",
                self.msg_size
            ));
        }
        if self.producers == 0 || self.consumers == 0 {
            return Err("--producers and --consumers must be at least 1".into());
        }
        if self.mode == Mode::Open && self.rate_per_s == 0 {
            return Err("--mode open needs --rate MSGS_PER_S".into());
        }
        if self.count == Some(0) {
            return Err("--count must be at least 1".into());
        }
        if self.priority_mix.iter().any(|&(p, _)| p > 3) {
            return Err("--priority-mix classes are 0 (most urgent) to 3".into());
        }
        if self.baseline.is_some() && matches!(self.pin, pin::Pin::Cpus(_)) {
            return Err(
                "--pin CPUS places agents of a run through the daemon; --baseline has no daemon cores to keep off (use --pin auto or none)"
                    .into(),
            );
        }
        Ok(())
    }

    /// One producer's schedule for a run whose warm-up ends at `warm_end_ns`: its share of
    /// `--count`, the measured deadline, and in open loop its share of `--rate`.
    pub(crate) fn schedule(&self, warm_end_ns: u64) -> Schedule {
        let producers = self.producers as u64;
        Schedule {
            warm_end_ns,
            count: self.count.map(|c| c.div_ceil(producers)),
            end_ns: warm_end_ns + self.duration.as_nanos() as u64,
            interval_ns: (self.mode == Mode::Open)
                .then(|| (1_000_000_000 * producers / self.rate_per_s).max(1)),
        }
    }
}

/// Parses `--priority-mix 0:10,2:90` (class:weight pairs).
pub fn parse_priority_mix(text: &str) -> Result<Vec<(u8, u32)>, String> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|pair| {
            let (class, weight) = pair
                .split_once(':')
                .ok_or_else(|| format!("{pair:?}: expected CLASS:WEIGHT, e.g. 0:10,2:90"))?;
            let class: u8 = class
                .trim()
                .parse()
                .map_err(|_| format!("{pair:?}: class 0-3"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("{pair:?}: weight is a whole number"))?;
            Ok((class, weight))
        })
        .collect()
}

/// The priority class of message `seq` under a weighted mix (deterministic, interleaved).
fn class_of(mix: &[(u8, u32)], seq: u64) -> u8 {
    let total: u64 = mix.iter().map(|&(_, w)| u64::from(w)).sum();
    if total == 0 {
        return SendOptions::default().priority;
    }
    let mut slot = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) % total;
    for &(class, weight) in mix {
        if slot < u64::from(weight) {
            return class;
        }
        slot -= u64::from(weight);
    }
    SendOptions::default().priority
}

/// Stamps one producer's messages: sequence numbers per priority class (order holds within a
/// class only), the class from `--priority-mix` where the pattern carries classes.
pub(crate) struct Stamper {
    index: u32,
    classed: bool,
    mix: Vec<(u8, u32)>,
    class_seq: [u64; 4],
}

impl Stamper {
    /// Producer `index`; `classed`: its messages follow the priority mix (sends and
    /// publishes), otherwise they all go in the default class.
    pub(crate) fn new(index: u32, options: &LoadOptions, classed: bool) -> Self {
        Self {
            index,
            classed,
            mix: options.priority_mix.clone(),
            class_seq: [0; 4],
        }
    }

    /// The stamp of the producer's message number `seq`, and its class.
    pub(crate) fn next(&mut self, seq: u64, warm: bool, intended_ns: Option<u64>) -> (Stamp, u8) {
        let class = if self.classed {
            class_of(&self.mix, seq)
        } else {
            SendOptions::default().priority
        };
        let flags = if warm { FLAG_WARMUP } else { 0 };
        let stamp = Stamp {
            producer: self.index,
            flags: flags | u32::from(class) << CLASS_SHIFT,
            seq: self.class_seq[usize::from(class)],
            sent_ns: intended_ns.unwrap_or_else(now_ns),
        };
        self.class_seq[usize::from(class)] += 1;
        (stamp, class)
    }
}

/// Latency percentiles in nanoseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// One run's result: the JSON object `--json` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// `closed` or `open`.
    pub mode: String,
    /// `unicast`, `fanout`, `anycast` or `reqresp`.
    pub pattern: String,
    /// Payload bytes per message.
    pub msg_size: usize,
    /// Measured messages the producers sent.
    pub sent: u64,
    /// Measured deliveries (fan-out: every subscriber's copy; reqresp: replies).
    pub delivered: u64,
    /// Deliveries that never arrived (by sequence numbers, warm-up included).
    pub lost: u64,
    /// Deliveries that arrived more than once.
    pub duplicated: u64,
    /// Deliveries that arrived after a higher sequence number of their flow (once each;
    /// included in `delivered`, not in `lost`).
    pub late: u64,
    /// Measured deliveries per second.
    pub msgs_per_s: f64,
    /// Payload bytes delivered per second.
    pub bytes_per_s: f64,
    /// Latency (reqresp: round trip) in nanoseconds.
    pub latency_ns: Latency,
    /// `daemon` or `raw-ring`.
    pub target: String,
    /// Producers.
    pub producers: usize,
    /// Consumers.
    pub consumers: usize,
    /// Measured seconds (after warm-up, until the last delivery).
    pub elapsed_s: f64,
    /// CPUs the agent threads were restricted to (`--pin`); null: wherever the kernel put
    /// them.
    pub agent_cpus: Option<Vec<usize>>,
}

/// What a run counted, for [`LoadReport::new`].
pub(crate) struct Counts {
    /// Measured messages sent.
    pub(crate) sent: u64,
    /// Measured deliveries.
    pub(crate) delivered: u64,
    /// Deliveries that never arrived.
    pub(crate) lost: u64,
    /// Deliveries that arrived more than once.
    pub(crate) duplicated: u64,
    /// Deliveries that arrived after a higher sequence number of their flow.
    pub(crate) late: u64,
}

impl LoadReport {
    /// The report of a run through `target` whose measured part lasted `elapsed_ns`.
    pub(crate) fn new(
        options: &LoadOptions,
        target: &str,
        counts: Counts,
        latency: &Histogram<u64>,
        elapsed_ns: u64,
    ) -> Self {
        let elapsed_s = elapsed_ns as f64 / 1e9;
        let msgs_per_s = if elapsed_s > 0.0 {
            counts.delivered as f64 / elapsed_s
        } else {
            0.0
        };
        Self {
            mode: mode_name(options.mode).into(),
            pattern: pattern_name(options.pattern).into(),
            msg_size: options.msg_size,
            sent: counts.sent,
            delivered: counts.delivered,
            lost: counts.lost,
            duplicated: counts.duplicated,
            late: counts.late,
            msgs_per_s,
            bytes_per_s: msgs_per_s * options.msg_size as f64,
            latency_ns: Latency::of(latency),
            target: target.into(),
            producers: options.producers,
            consumers: options.consumers,
            elapsed_s,
            agent_cpus: None,
        }
    }

    fn table(&self) -> String {
        format!(
            "agentwire load: {} loop, {}, {} B, {} producer(s) -> {} consumer(s), through {}\n\
             {:<14} {:>14}\n{:<14} {:>14}\n{:<14} {:>14}\n{:<14} {:>14}\n{:<14} {:>14}\n\
             {:<14} {:>14.0}\n{:<14} {:>14.0}\n{:<14} {:>14.3}\n\
             latency ns     p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n",
            self.mode,
            self.pattern,
            self.msg_size,
            self.producers,
            self.consumers,
            self.target,
            "sent",
            self.sent,
            "delivered",
            self.delivered,
            "lost",
            self.lost,
            "duplicated",
            self.duplicated,
            "late",
            self.late,
            "msgs/s",
            self.msgs_per_s,
            "bytes/s",
            self.bytes_per_s,
            "elapsed s",
            self.elapsed_s,
            self.latency_ns.p50,
            self.latency_ns.p90,
            self.latency_ns.p99,
            self.latency_ns.p999,
            self.latency_ns.max
        )
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid bounds")
}

/// Counters shared between the run's threads (and read by the progress line).
#[derive(Default)]
pub(crate) struct Shared {
    /// Set by the first agent that fails ([`Shared::fail`]): every loop of the run stops.
    pub(crate) failed: AtomicBool,
    /// What failed first.
    failure: Mutex<Option<String>>,
    pub(crate) stop_consumers: AtomicBool,
    pub(crate) sent_total: AtomicU64,
    pub(crate) sent_measured: AtomicU64,
    pub(crate) unique_total: AtomicU64,
    pub(crate) delivered_measured: AtomicU64,
    pub(crate) gaps: AtomicU64,
    /// Largest p99 of the last second over consumers, ns.
    pub(crate) p99_last_ns: AtomicU64,
    pub(crate) producers_done: AtomicU64,
}

impl Shared {
    /// Records an agent's failure (the first one is reported) and stops the run.
    pub(crate) fn fail(&self, what: String) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert(what);
        // SYNC POINT: failed. Release: the failure text is set before any loop sees the flag.
        self.failed.store(true, Ordering::Release);
        self.stop_consumers.store(true, Ordering::Release);
    }

    /// Whether an agent failed.
    pub(crate) fn has_failed(&self) -> bool {
        // SYNC POINT: failed.
        self.failed.load(Ordering::Acquire)
    }

    fn failure(&self) -> String {
        let failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.clone().unwrap_or_else(|| "an agent failed".into())
    }
}

/// Runs `agentwire load` and prints the table or the JSON object. A run that lost or
/// duplicated messages is a [`DeliveryFailed`] error after the report, unless
/// `--allow-loss`.
pub fn run(options: LoadOptions) -> Result<(), Box<dyn std::error::Error>> {
    options.validate()?;
    let report = match options.baseline {
        Some(Baseline::RawRing) => raw_ring::run(&options).map_err(|e| e.to_string())?,
        None => run_routed(&options).map_err(|e| e.to_string())?,
    };
    let printed = if options.json {
        outln!("{}", serde_json::to_string(&report)?)
    } else {
        out!("{}", report.table())
    };
    if report.late > 0 {
        eprintln!(
            "agentwire load: {} arrived late (after a higher sequence number of their flow)",
            report.late
        );
    }
    // The verdict does not depend on anyone reading the report.
    if report.lost > 0 || report.duplicated > 0 {
        if !options.allow_loss {
            return Err(Box::new(DeliveryFailed {
                lost: report.lost,
                duplicated: report.duplicated,
            }));
        }
        eprintln!(
            "agentwire load: {} lost and {} duplicated (by sequence numbers), allowed by --allow-loss",
            report.lost, report.duplicated
        );
    }
    printed?;
    Ok(())
}

/// A daemon started for the run (`--spawn-daemon`, and each `agentwire tune` trial), on a
/// socket of its own, stopped with SIGTERM on drop.
pub(crate) struct SpawnedDaemon {
    child: std::process::Child,
    dir: PathBuf,
}

impl SpawnedDaemon {
    /// Starts `agentwire serve` (on `config`, or the embedded default) and waits until it
    /// answers; returns it and its socket. A daemon that exits or stays silent for 20 s is
    /// an error that quotes the end of its log.
    pub(crate) fn start(config: Option<&std::path::Path>) -> Result<(Self, PathBuf), BoxError> {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "aw-load-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("agentwire.sock");
        let log = dir.join("serve.log");
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command
            .args(["serve", "--no-metrics", "--socket"])
            .arg(&socket)
            .arg("--dlq")
            .arg(dir.join("dlq.log"));
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let mut spawned = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while agentwire_shm::client::query_status(&socket).is_err() {
            let exited = spawned.child.try_wait()?;
            if exited.is_some() || Instant::now() > deadline {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(3).collect();
                let what = match exited {
                    Some(status) => format!("exited ({status})"),
                    None => "did not answer within 20 s".to_string(),
                };
                return Err(format!(
                    "the spawned daemon {what}: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok((spawned, socket))
    }
}

impl Drop for SpawnedDaemon {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until `t_ns` on the [`now_ns`] clock: sleeps while the time is far (so a paced
/// producer leaves the core to the router and consumers), spins the last 100 µs.
pub(crate) fn wait_until(t_ns: u64) {
    const SPIN_NS: u64 = 100_000;
    loop {
        let now = now_ns();
        if now >= t_ns {
            return;
        }
        if t_ns - now > 2 * SPIN_NS {
            std::thread::sleep(Duration::from_nanos(t_ns - now - SPIN_NS));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// A producer's schedule: warm-up, then a count or a deadline; in open loop, one send
/// every `interval_ns`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub(crate) warm_end_ns: u64,
    /// Measured messages for this producer (None: until `end_ns`).
    pub(crate) count: Option<u64>,
    pub(crate) end_ns: u64,
    /// Open loop: ns between sends for this producer.
    pub(crate) interval_ns: Option<u64>,
}

/// One step of a [`Pacer`]: how many frames to send now, and how to stamp them.
pub(crate) struct Step {
    /// Still warming up.
    pub(crate) warm: bool,
    /// Open loop: the intended send time (the stamp's time; latency counts from it).
    pub(crate) intended_ns: Option<u64>,
    /// Frames in this step.
    pub(crate) frames: u64,
}

/// Walks a [`Schedule`] for one producer (routed or raw ring alike): decides when the run
/// ends, paces open loop to the intended send times, sizes batches, counts sequence
/// numbers and measured messages, and applies the one-time stall test hook halfway.
pub(crate) struct Pacer {
    schedule: Schedule,
    start_ns: u64,
    batch_max: u64,
    stall: Option<Duration>,
    seq: u64,
    measured: u64,
}

impl Pacer {
    /// Starts now; closed loop sends up to `batch_max` frames per step; `stall` (the test
    /// hook) sleeps once halfway through the measured part.
    pub(crate) fn new(schedule: Schedule, batch_max: u64, stall: Option<Duration>) -> Self {
        Self {
            schedule,
            start_ns: now_ns(),
            batch_max,
            stall,
            seq: 0,
            measured: 0,
        }
    }

    /// The next step, after waiting for its intended time; `None` once the run is over.
    pub(crate) fn next_step(&mut self) -> Option<Step> {
        let s = self.schedule;
        let now = now_ns();
        let warm = now < s.warm_end_ns;
        if !warm {
            let done = match s.count {
                Some(c) => self.measured >= c,
                None => now >= s.end_ns,
            };
            if done {
                return None;
            }
            let halfway = match s.count {
                Some(c) => self.measured >= c / 2,
                None => now >= s.warm_end_ns + s.end_ns.saturating_sub(s.warm_end_ns) / 2,
            };
            if halfway {
                if let Some(stall) = self.stall.take() {
                    std::thread::sleep(stall);
                }
            }
        }
        // Open loop: the next message's intended time; wait for it unless behind.
        let intended_ns = s.interval_ns.map(|i| self.start_ns + self.seq * i);
        if let Some(t) = intended_ns {
            wait_until(t);
        }
        let frames = if s.interval_ns.is_some() {
            1
        } else {
            self.batch_max
        };
        let frames = match (warm, s.count) {
            (false, Some(c)) => frames.min(c - self.measured),
            _ => frames,
        };
        Some(Step {
            warm,
            intended_ns,
            frames,
        })
    }

    /// The sequence number of the next message.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// Counts one message of `step` as sent (dropped by the test hook or not).
    pub(crate) fn sent(&mut self, step: &Step) {
        self.seq += 1;
        if !step.warm {
            self.measured += 1;
        }
    }

    /// Messages sent in all, warm-up included.
    pub(crate) fn sent_total(&self) -> u64 {
        self.seq
    }

    /// Measured messages sent.
    pub(crate) fn measured(&self) -> u64 {
        self.measured
    }
}

/// The drop test hook: whether message `seq` is skipped (still counted as sent).
pub(crate) fn dropped_by_hook(options: &LoadOptions, seq: u64) -> bool {
    options.drop_every > 0 && (seq + 1) % options.drop_every == 0
}

/// The stall test hook as a duration (None: off).
pub(crate) fn stall_hook(options: &LoadOptions) -> Option<Duration> {
    (options.stall_ms > 0).then(|| Duration::from_millis(options.stall_ms))
}

pub(crate) fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Closed => "closed",
        Mode::Open => "open",
    }
}

pub(crate) fn pattern_name(pattern: Pattern) -> &'static str {
    match pattern {
        Pattern::Unicast => "unicast",
        Pattern::Fanout => "fanout",
        Pattern::Anycast => "anycast",
        Pattern::Reqresp => "reqresp",
    }
}

/// Waits for the producers, printing one progress line per second on a terminal (rate,
/// p99 of the last second, losses so far).
pub(crate) fn progress_until_sent(options: &LoadOptions, shared: &Shared) {
    let tty = !options.json && std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut last = (0u64, Instant::now());
    while shared.producers_done.load(Ordering::Acquire) < options.producers as u64
        && !shared.has_failed()
    {
        std::thread::sleep(Duration::from_millis(20));
        if tty && last.1.elapsed() >= Duration::from_secs(1) {
            let delivered = shared.delivered_measured.load(Ordering::Relaxed);
            let rate = (delivered - last.0) as f64 / last.1.elapsed().as_secs_f64();
            eprintln!(
                "t={:>4.1}s  {:>10.3} M msg/s  p99 {:>9} ns  delivered {:>12}  lost {}",
                start.elapsed().as_secs_f64(),
                rate / 1e6,
                shared.p99_last_ns.swap(0, Ordering::Relaxed),
                delivered,
                shared.gaps.load(Ordering::Relaxed)
            );
            last = (delivered, Instant::now());
        }
    }
}
