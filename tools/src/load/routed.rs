//! The routed flow of `agentwire load`: consumer and producer agents against the daemon.
//! Every agent registers before any thread starts, so a run the daemon refuses sends
//! nothing; each agent runs on a thread of its own, and the first one that fails (the
//! daemon went away, a panic) stops every loop of the run, which ends with that agent's
//! error instead of waiting for it.

use super::stamp::{now_ns, Seen, SeqTracker, Stamp, FLAG_WARMUP, STAMP_BYTES};
use super::{
    dropped_by_hook, histogram, pin, progress_until_sent, stall_hook, BoxError, Counts,
    LoadOptions, LoadReport, Mode, Pacer, Pattern, Schedule, Shared, SpawnedDaemon, Stamper,
    BATCH_FRAMES, DRAIN_SILENCE, FAILED_THREADS_WAIT, LOAD_CAPABILITY, LOAD_TOPIC,
};
use agentwire_shm::client::{Agent, ClientError, SendOptions};
use agentwire_shm::idle::IdleStrategy;
use agentwire_shm::wire::FrameKind;
use hdrhistogram::Histogram;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The agents' idle strategy for this run.
fn agent_idle(options: &LoadOptions) -> IdleStrategy {
    // Closed loop: spin for the lowest overhead per message. Open loop: spin, then park, so
    // idle agents leave the cores to the router (a 2-core machine has none to spare).
    // Request/response waits on every hop: when the agents and a router core outnumber the
    // cores, agents that only spin wait out each other's time slices (ms per round trip on
    // 2 cores), so there they spin briefly, then park until woken.
    let threads = options.producers + options.consumers + 1;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match (options.mode, options.pattern) {
        (Mode::Closed, Pattern::Reqresp) if threads > cores => IdleStrategy::SpinThenPark {
            spins_max: 2_000,
            park_timeout_ns: 1_000_000,
        },
        (Mode::Closed, _) => IdleStrategy::Spin,
        (Mode::Open, _) => IdleStrategy::default(),
    }
}

/// Connects one agent; `registers` decides what it offers (a topic for fan-out, the
/// capability for anycast).
fn connect(
    name: &str,
    socket: &Path,
    registers: Pattern,
    idle: IdleStrategy,
) -> Result<Agent, BoxError> {
    let mut builder = Agent::builder(name)
        .socket(socket)
        .idle(idle)
        .send_timeout(Duration::from_secs(30));
    builder = match registers {
        Pattern::Fanout => builder.topic(LOAD_TOPIC),
        Pattern::Anycast => builder.capability(LOAD_CAPABILITY, "1.0.0"),
        _ => builder,
    };
    Ok(builder.connect()?)
}

/// What one consumer counted.
struct ConsumerResult {
    tracker: SeqTracker,
    latency: Histogram<u64>,
}

fn consume(
    mut agent: Agent,
    pattern: Pattern,
    shared: &Shared,
) -> Result<ConsumerResult, BoxError> {
    let mut result = ConsumerResult {
        tracker: SeqTracker::default(),
        latency: histogram(),
    };
    let mut interval = histogram();
    let mut interval_start = Instant::now();
    while !shared.stop_consumers.load(Ordering::Acquire) {
        let Some(msg) = agent.recv(Some(Duration::from_millis(50)))? else {
            continue;
        };
        if pattern == Pattern::Reqresp {
            if msg.header().kind() == FrameKind::Request {
                let req = msg.to_owned();
                drop(msg);
                agent.respond(req.header(), req.payload())?;
            }
            continue;
        }
        let Some(stamp) = Stamp::read(msg.payload()) else {
            result.tracker.malformed += 1;
            continue;
        };
        drop(msg);
        let seen = result.tracker.record(&stamp);
        if seen.is_first() {
            shared.unique_total.fetch_add(1, Ordering::Relaxed);
            if stamp.flags & FLAG_WARMUP == 0 {
                let latency = now_ns().saturating_sub(stamp.sent_ns).max(1);
                let _ = result.latency.record(latency);
                let _ = interval.record(latency);
                shared.delivered_measured.fetch_add(1, Ordering::Relaxed);
            }
        }
        // An anycast flow is split between consumers: one consumer's skipped sequence
        // numbers went to another, so only the totals tell losses there.
        if pattern != Pattern::Anycast {
            match seen {
                Seen::New { skipped } if skipped > 0 => {
                    shared.gaps.fetch_add(skipped, Ordering::Relaxed);
                }
                // A gap this consumer counted is filled.
                Seen::Late => {
                    shared.gaps.fetch_sub(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        if interval.len() >= 1024 && interval_start.elapsed() >= Duration::from_secs(1) {
            shared
                .p99_last_ns
                .fetch_max(interval.value_at_quantile(0.99), Ordering::Relaxed);
            interval.reset();
            interval_start = Instant::now();
        }
    }
    agent.close();
    Ok(result)
}

/// What one producer did.
struct ProducerResult {
    /// Round trips (reqresp only).
    latency: Histogram<u64>,
    /// Requests that got no reply in time (reqresp only).
    timeouts: u64,
    finished_ns: u64,
}

/// Where the producers send: (frame kind, destination).
#[derive(Clone, Copy)]
enum Target {
    Frame(FrameKind, u32),
    Anycast,
}

fn produce(
    mut agent: Agent,
    index: u32,
    target: Target,
    options: &LoadOptions,
    schedule: &Schedule,
    shared: &Shared,
) -> Result<ProducerResult, BoxError> {
    let mut payload = vec![0u8; options.msg_size];
    for (i, b) in payload.iter_mut().enumerate().skip(STAMP_BYTES) {
        *b = i as u8;
    }
    let mut result = ProducerResult {
        latency: histogram(),
        timeouts: 0,
        finished_ns: 0,
    };
    let batch_max = if schedule.interval_ns.is_some()
        || matches!(target, Target::Anycast)
        || options.pattern == Pattern::Reqresp
    {
        1
    } else {
        BATCH_FRAMES
    };
    let stall = if index == 0 {
        stall_hook(options)
    } else {
        None
    };
    let mut pacer = Pacer::new(*schedule, batch_max, stall);
    let classed = matches!(
        target,
        Target::Frame(FrameKind::Send | FrameKind::Publish, _)
    );
    let mut stamper = Stamper::new(index, options, classed);
    while let Some(step) = pacer.next_step() {
        if shared.has_failed() {
            // Another agent failed: the run is over, its counts no longer matter.
            agent.close();
            return Ok(result);
        }
        let (warm, intended, batch) = (step.warm, step.intended_ns, step.frames);
        for _ in 0..batch {
            let seq = pacer.seq();
            let (stamp, class) = stamper.next(seq, warm, intended);
            stamp.write(&mut payload);
            if !dropped_by_hook(options, seq) {
                match target {
                    Target::Frame(FrameKind::Request, dest) => {
                        match agent.request(dest, &payload, Duration::from_secs(5)) {
                            Ok(_) => {
                                if !warm {
                                    let rtt = now_ns().saturating_sub(stamp.sent_ns).max(1);
                                    let _ = result.latency.record(rtt);
                                    shared.delivered_measured.fetch_add(1, Ordering::Relaxed);
                                }
                                shared.unique_total.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(ClientError::Timeout { .. }) => result.timeouts += 1,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Target::Frame(kind, dest) => {
                        let options = SendOptions {
                            priority: class,
                            ..Default::default()
                        };
                        let mut claim = agent.claim(kind, dest, payload.len(), options)?;
                        claim.payload_mut().copy_from_slice(&payload);
                        claim.commit_deferred();
                    }
                    Target::Anycast => agent.anycast(LOAD_CAPABILITY, "^1", &payload)?,
                }
            }
            pacer.sent(&step);
        }
        agent.flush();
        shared.sent_total.fetch_add(batch, Ordering::Relaxed);
        if !warm {
            shared.sent_measured.fetch_add(batch, Ordering::Relaxed);
        }
    }
    agent.flush();
    result.finished_ns = now_ns();
    shared.producers_done.fetch_add(1, Ordering::Release);
    // Stay connected until the consumers have drained what this agent sent.
    while !shared.stop_consumers.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(10));
    }
    agent.close();
    Ok(result)
}

/// Runs the load against the daemon (or the one it spawns) and returns the report.
pub(crate) fn run_routed(options: &LoadOptions) -> Result<LoadReport, BoxError> {
    let (_daemon, socket) = if options.spawn_daemon {
        let (d, s) = SpawnedDaemon::start(None)?;
        (Some(d), s)
    } else {
        let socket = options
            .socket
            .clone()
            .unwrap_or_else(agentwire_shm::client::default_socket_path);
        (None, socket)
    };
    let status = agentwire_shm::client::query_status(&socket).map_err(|e| {
        format!(
            "no daemon answering at {}: {e} (start one with `agentwire serve`, or pass --spawn-daemon)",
            socket.display()
        )
    })?;
    let (agent_cpus, placement) = pin::agent_cpus(
        &options.pin,
        &agentwire_runtime::planning::allowed_cpus(),
        &pin::router_cpus(&status),
    )?;
    if !options.json {
        eprintln!("agentwire load: {placement}");
    }
    let pattern = options.pattern;
    // Every agent registers before any thread starts: a run the daemon refuses (agents_max,
    // the allow-list) sends nothing, where producers already sending would leave frames for
    // consumers that leave with the failed run (routed, nacked or dead-lettered).
    let agents = connect_all(options, &socket)?;
    let shared = Arc::new(Shared::default());
    let Threads {
        consumers,
        producers,
        warm_end_ns,
    } = start_agents(options, agents, &shared, &agent_cpus, &socket)?;
    let multiplicity = if pattern == Pattern::Fanout {
        options.consumers as u64
    } else {
        1
    };
    progress_until_sent(options, &shared);
    drain(options, multiplicity, &shared);
    let drained_ns = now_ns();
    shared.stop_consumers.store(true, Ordering::Release);
    if shared.has_failed() {
        return Err(failed_run(&shared, &producers, &consumers));
    }
    let mut latency = histogram();
    let (mut timeouts, mut finished_ns) = (0u64, 0u64);
    for p in producers {
        let r = p.join().map_err(|_| "a producer thread panicked")??;
        latency.add(&r.latency)?;
        timeouts += r.timeouts;
        finished_ns = finished_ns.max(r.finished_ns);
    }
    let (mut unique, mut duplicated, mut late) = (0u64, 0u64, 0u64);
    for c in consumers {
        let r = c.join().map_err(|_| "a consumer thread panicked")??;
        unique += r.tracker.unique;
        duplicated += r.tracker.duplicated;
        late += r.tracker.late;
        if pattern != Pattern::Reqresp {
            latency.add(&r.latency)?;
        }
    }
    let sent_total = shared.sent_total.load(Ordering::Relaxed);
    if pattern == Pattern::Anycast {
        // A message delivered to two consumers is new to each of them: only the total
        // shows it.
        duplicated += unique.saturating_sub(sent_total);
        unique = unique.min(sent_total);
    }
    let lost = if pattern == Pattern::Reqresp {
        // Every request sent (the drop hook's included) owes one reply.
        debug_assert!(timeouts <= sent_total);
        sent_total.saturating_sub(shared.unique_total.load(Ordering::Relaxed))
    } else {
        (sent_total * multiplicity).saturating_sub(unique)
    };
    let delivered = shared.delivered_measured.load(Ordering::Relaxed);
    let end_ns = if pattern == Pattern::Reqresp {
        finished_ns
    } else {
        drained_ns
    };
    Ok(LoadReport {
        agent_cpus,
        ..LoadReport::new(
            options,
            "daemon",
            Counts {
                sent: shared.sent_measured.load(Ordering::Relaxed),
                delivered,
                lost,
                duplicated,
                late,
            },
            &latency,
            end_ns.saturating_sub(warm_end_ns),
        )
    })
}

/// The agent threads of a run.
struct Threads {
    consumers: Vec<JoinHandle<Result<ConsumerResult, BoxError>>>,
    producers: Vec<JoinHandle<Result<ProducerResult, BoxError>>>,
    /// When the warm-up ends: the producers' schedules start together.
    warm_end_ns: u64,
}

/// Starts a thread per agent, consumers first; each records its error (or panic) in
/// `shared`, which stops the run.
fn start_agents(
    options: &LoadOptions,
    agents: Agents,
    shared: &Arc<Shared>,
    agent_cpus: &Option<Vec<usize>>,
    socket: &Path,
) -> Result<Threads, BoxError> {
    let pattern = options.pattern;
    let mut consumers = Vec::with_capacity(options.consumers);
    for (i, agent) in agents.consumers.into_iter().enumerate() {
        let (shared, cpus, socket) = (shared.clone(), agent_cpus.clone(), socket.to_path_buf());
        consumers.push(spawn_agent(
            "consumer",
            i,
            shared,
            cpus,
            socket,
            move |shared| consume(agent, pattern, shared),
        )?);
    }
    let warm_end_ns = now_ns() + options.warmup.as_nanos() as u64;
    let mut producers = Vec::with_capacity(options.producers);
    for (i, (agent, target)) in agents.producers.into_iter().enumerate() {
        let (shared, options, schedule, cpus, socket) = (
            shared.clone(),
            options.clone(),
            options.schedule(warm_end_ns),
            agent_cpus.clone(),
            socket.to_path_buf(),
        );
        producers.push(spawn_agent(
            "producer",
            i,
            shared,
            cpus,
            socket,
            move |shared| produce(agent, i as u32, target, &options, &schedule, shared),
        )?);
    }
    Ok(Threads {
        consumers,
        producers,
        warm_end_ns,
    })
}

/// Starts load agent `role` `index` on a thread of its own, placed on `cpus`: a failure or a
/// panic ends the whole run with a message naming the agent.
fn spawn_agent<T: Send + 'static>(
    role: &'static str,
    index: usize,
    shared: Arc<Shared>,
    cpus: Option<Vec<usize>>,
    socket: std::path::PathBuf,
    work: impl FnOnce(&Shared) -> Result<T, BoxError> + Send + 'static,
) -> std::io::Result<JoinHandle<Result<T, BoxError>>> {
    let short = if role == "consumer" { 'c' } else { 'p' };
    std::thread::Builder::new()
        .name(format!("aw-load-{short}{index}"))
        .spawn(move || {
            let _guard = FailOnPanic(&shared, role, index);
            place(&cpus);
            let result = work(&shared);
            if let Err(e) = &result {
                shared.fail(agent_failure(role, index, &socket, e.as_ref()));
            }
            result
        })
}

/// Restricts the calling agent thread to `cpus` (the thread that starts the run keeps its
/// mask: a daemon that `agentwire tune` spawns next must not inherit the agents' placement).
fn place(cpus: &Option<Vec<usize>>) {
    if let Some(cpus) = cpus {
        if !agentwire_runtime::planning::set_affinity(cpus) {
            tracing::warn!(?cpus, "could not pin a load agent thread; it runs unpinned");
        }
    }
}

/// Waits until every expected delivery is in (`multiplicity` per message sent), or nothing
/// arrived for [`DRAIN_SILENCE`], or an agent failed.
fn drain(options: &LoadOptions, multiplicity: u64, shared: &Shared) {
    let mut last = (shared.unique_total.load(Ordering::Relaxed), Instant::now());
    while !shared.has_failed() {
        let expected = shared.sent_total.load(Ordering::Relaxed) * multiplicity;
        let unique = shared.unique_total.load(Ordering::Relaxed);
        if (options.pattern == Pattern::Reqresp
            || unique + shared.gaps.load(Ordering::Relaxed) >= expected)
            && shared.producers_done.load(Ordering::Acquire) == options.producers as u64
        {
            return;
        }
        if unique != last.0 {
            last = (unique, Instant::now());
        } else if last.1.elapsed() > DRAIN_SILENCE {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The run's agents, each registered with the daemon; no thread started yet.
struct Agents {
    consumers: Vec<Agent>,
    producers: Vec<(Agent, Target)>,
}

/// Connects every consumer, then every producer (resolving its target), before anything is
/// sent. An agent the daemon refuses fails the run; the ones already connected are dropped,
/// which closes their connections.
fn connect_all(options: &LoadOptions, socket: &Path) -> Result<Agents, BoxError> {
    let pattern = options.pattern;
    let refused = |name: &str, e: BoxError| -> BoxError {
        format!(
            "{name} could not register: {e}; this run needs {} agents ({} consumers, {} \
             producers) and nothing was sent",
            options.consumers + options.producers,
            options.consumers,
            options.producers
        )
        .into()
    };
    let mut consumers = Vec::with_capacity(options.consumers);
    for i in 0..options.consumers {
        let name = format!("load-consumer-{i}");
        let agent = connect(&name, socket, pattern, agent_idle(options));
        consumers.push(agent.map_err(|e| refused(&name, e))?);
    }
    let consumer_ids: Vec<u32> = consumers.iter().map(Agent::id).collect();
    let mut producers = Vec::with_capacity(options.producers);
    for i in 0..options.producers {
        let name = format!("load-producer-{i}");
        let mut agent = connect(&name, socket, Pattern::Unicast, agent_idle(options))
            .map_err(|e| refused(&name, e))?;
        let consumer = consumer_ids[i % consumer_ids.len()];
        let target = match pattern {
            Pattern::Unicast => Target::Frame(FrameKind::Send, consumer),
            Pattern::Reqresp => Target::Frame(FrameKind::Request, consumer),
            Pattern::Fanout => {
                let topic = agent
                    .topic_id(LOAD_TOPIC)
                    .map_err(|e| refused(&name, e.into()))?;
                Target::Frame(FrameKind::Publish, topic)
            }
            Pattern::Anycast => Target::Anycast,
        };
        producers.push((agent, target));
    }
    Ok(Agents {
        consumers,
        producers,
    })
}

/// What an agent's error means to the person running the load.
fn agent_failure(
    role: &str,
    index: usize,
    socket: &Path,
    error: &(dyn std::error::Error + 'static),
) -> String {
    match error.downcast_ref::<ClientError>() {
        Some(ClientError::Disconnected) => format!(
            "{role} {index}: disconnected from the daemon at {} (it stopped, or dropped the \
             agent)",
            socket.display()
        ),
        _ => format!("{role} {index}: {error}"),
    }
}

/// Reports an agent thread that panicked as the run's failure, so the run ends instead of
/// waiting for a producer that will never finish.
struct FailOnPanic<'a>(&'a Shared, &'static str, usize);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail(format!("{} {} panicked", self.1, self.2));
        }
    }
}

/// The error of a run an agent failed: waits up to [`FAILED_THREADS_WAIT`] for the other
/// agent threads to close their agents, then gives up on them (one may be inside a send
/// that waits for its timeout; the process ends with the error).
fn failed_run<P, C>(
    shared: &Shared,
    producers: &[JoinHandle<P>],
    consumers: &[JoinHandle<C>],
) -> BoxError {
    let deadline = Instant::now() + FAILED_THREADS_WAIT;
    while Instant::now() < deadline
        && !(producers.iter().all(|t| t.is_finished()) && consumers.iter().all(|t| t.is_finished()))
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    format!("the run stopped: {}", shared.failure()).into()
}
