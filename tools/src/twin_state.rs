//! `agentwire twin state`: the running daemon's live state, read from its stats segment
//! (`<socket>.stats`, named by `<socket>.stats.names`) without asking the daemon anything
//! (`agentwire_twin::mirror`).
//!
//! Exit codes: 0 shown (also for a stopped daemon's last values, marked as such), 1 no
//! segment to read (no daemon at that socket, or one that serves without the mirror) or a
//! segment that fails its checks.

use std::path::PathBuf;
use std::time::Duration;

use agentwire_twin::mirror::{AgentState, Mirror, MirrorState, SlotState};
use serde_json::{json, Map, Value};

type BoxError = Box<dyn std::error::Error>;

/// What `twin state` was asked.
pub struct StateArgs {
    /// The daemon's control socket (the segment is beside it).
    pub socket: PathBuf,
    /// The segment itself, when given (overrides the socket).
    pub stats: Option<PathBuf>,
    /// Show every counter of every slot, not the summary.
    pub all: bool,
    /// Also read again after this long and show rates per second.
    pub interval: Option<Duration>,
    /// Print one JSON object.
    pub json: bool,
}

/// The router shards' counters the summary shows, with their column titles.
const SHARD_COLUMNS: [(&str, &str); 9] = [
    ("frames_in", "frames_in"),
    ("frames_delivered", "delivered"),
    ("frames_rejected", "rejected"),
    ("deferred_now", "deferred"),
    ("frames_dead_lettered", "dead_lett"),
    ("agents_served", "agents"),
    ("tx_occupancy_max_permille", "tx_occ‰"),
    ("rx_occupancy_max_permille", "rx_occ‰"),
    ("mirror_publishes", "publishes"),
];

/// The agents' counters the summary shows, with their column titles.
const AGENT_COLUMNS: [(&str, &str); 6] = [
    ("frames_in", "frames_in"),
    ("frames_out", "frames_out"),
    ("deferred_now", "deferred"),
    ("frames_deferred", "deferrals"),
    ("tx_occupancy_max_permille", "tx_occ‰"),
    ("rx_occupancy_permille", "rx_occ‰"),
];

/// Shows the mirror.
pub fn state(args: StateArgs) -> Result<(), BoxError> {
    let stats = args
        .stats
        .clone()
        .unwrap_or_else(|| agentwire_runtime::mirror::stats_path(&args.socket));
    let names = agentwire_runtime::mirror::names_path_for(&stats);
    let mut mirror = Mirror::open(&stats, &names).map_err(|e| {
        format!(
            "{e} (is a daemon serving {}? it writes its stats segment beside its socket; \
             `agentwire status` says whether it runs and, under `stats`, where its mirror is)",
            args.socket.display()
        )
    })?;
    let first = mirror.read()?;
    let rates = match args.interval {
        Some(interval) => {
            std::thread::sleep(interval);
            let second = mirror.read()?;
            let r = rates(&first, &second, interval);
            Some((second, r))
        }
        None => None,
    };
    let (state, rates) = match rates {
        Some((second, r)) => (second, Some(r)),
        None => (first, None),
    };
    if args.json {
        outln!("{}", to_json(&stats, &state, rates.as_ref()))?;
        return Ok(());
    }
    print_text(&stats, &state, rates.as_ref(), args.all)
}

/// Per-second rates of the router shards' monotonic counters between two reads.
fn rates(a: &MirrorState, b: &MirrorState, interval: Duration) -> Vec<(String, f64)> {
    let secs = interval.as_secs_f64().max(1e-9);
    [
        "frames_in",
        "bytes_in",
        "frames_delivered",
        "frames_rejected",
        "duty_cycles",
    ]
    .iter()
    .map(|c| {
        let delta = b.total("router.", c).wrapping_sub(a.total("router.", c));
        (format!("{c}_per_s"), delta as f64 / secs)
    })
    .collect()
}

/// Named counters as one JSON object.
fn counters_json(counters: &[(String, u64)]) -> Map<String, Value> {
    counters
        .iter()
        .map(|(n, v)| (n.clone(), json!(v)))
        .collect()
}

fn slot_json(slot: &SlotState) -> Value {
    let counters = counters_json(&slot.counters);
    json!({ "name": slot.name, "sequence": slot.sequence, "counters": counters })
}

fn agent_json(agent: &AgentState) -> Value {
    let counters = counters_json(&agent.counters);
    json!({
        "agent_id": agent.agent_id,
        "name": agent.name,
        "shard": agent.shard,
        "slot": agent.slot,
        "counters": counters,
    })
}

/// Nacks an agent was sent, all reasons together.
fn nacks_total(agent: &AgentState) -> u64 {
    agent
        .counters
        .iter()
        .filter(|(n, _)| n.starts_with("nacks_"))
        .fold(0u64, |sum, (_, v)| sum.wrapping_add(*v))
}

fn to_json(
    path: &std::path::Path,
    state: &MirrorState,
    rates: Option<&Vec<(String, f64)>>,
) -> Value {
    let router_names: Vec<&String> = state
        .router_shards()
        .next()
        .map(|s| s.counters.iter().map(|(n, _)| n).collect())
        .unwrap_or_default();
    let totals: Map<String, Value> = router_names
        .iter()
        .map(|n| ((*n).clone(), json!(state.total("router.", n))))
        .collect();
    let mut out = json!({
        "path": path.display().to_string(),
        "daemon_pid": state.creator_pid,
        "daemon_running": state.creator_running,
        "router_totals": totals,
        "slots": state.slots.iter().map(slot_json).collect::<Vec<_>>(),
        "agents": state.agents().iter().map(agent_json).collect::<Vec<_>>(),
    });
    if let Some(rates) = rates {
        out["rates"] = rates
            .iter()
            .map(|(n, v)| (n.clone(), json!(v)))
            .collect::<Map<_, _>>()
            .into();
    }
    out
}

fn print_text(
    path: &std::path::Path,
    state: &MirrorState,
    rates: Option<&Vec<(String, f64)>>,
    all: bool,
) -> Result<(), BoxError> {
    let running = if state.creator_running {
        "running"
    } else {
        "gone: these are its last values"
    };
    outln!(
        "{} (daemon pid {}, {running})",
        path.display(),
        state.creator_pid
    )?;
    if all {
        for slot in &state.slots {
            let seq = slot
                .sequence
                .map_or("busy".to_string(), |s| format!("seq {s}"));
            outln!("{} ({seq})", slot.name)?;
            for (n, v) in &slot.counters {
                outln!("  {n:<36} {v}")?;
            }
        }
        return Ok(());
    }
    let shards: Vec<&SlotState> = state.router_shards().collect();
    out!("{:<14}", "router shard")?;
    for (_, title) in SHARD_COLUMNS {
        out!(" {title:>10}")?;
    }
    outln!(" {:>6} {:>9}", "idle%", "ns/frame")?;
    for shard in &shards {
        out!("{:<14}", shard.name.trim_start_matches("router."))?;
        for (counter, _) in SHARD_COLUMNS {
            out!(" {:>10}", shard.get(counter).unwrap_or(0))?;
        }
        let (duty, idle) = (
            shard.get("duty_cycles").unwrap_or(0),
            shard.get("duty_cycles_idle").unwrap_or(0),
        );
        let idle_pct = if duty == 0 {
            100.0
        } else {
            idle as f64 * 100.0 / duty as f64
        };
        // The timed busy passes' wall time over their frames (see RouterStats).
        let ns_per_frame = match (
            shard.get("busy_ns_sampled"),
            shard.get("busy_frames_sampled"),
        ) {
            (Some(ns), Some(frames)) if frames > 0 => format!("{:.0}", ns as f64 / frames as f64),
            _ => "-".to_string(),
        };
        outln!(" {idle_pct:>6.1} {ns_per_frame:>9}")?;
    }
    if let Some(daemon) = state.slots.iter().find(|s| s.name == "daemon") {
        outln!(
            "daemon: {} agents, up {:.1} s, dead-letter queue {} bytes",
            daemon.get("agents").unwrap_or(0),
            daemon.get("uptime_ms").unwrap_or(0) as f64 / 1000.0,
            daemon.get("dlq_bytes").unwrap_or(0)
        )?;
        let mut partitions: Vec<&str> = daemon
            .counters
            .iter()
            .filter_map(|(n, _)| n.strip_prefix("partition.")?.strip_suffix(".cpus"))
            .collect();
        partitions.dedup();
        if !partitions.is_empty() {
            outln!(
                "{:<14} {:>5} {:>7} {:>10} {:>12}",
                "partition",
                "cpus",
                "busy‰",
                "queued",
                "completed"
            )?;
        }
        for p in partitions {
            let get = |c: &str| daemon.get(&format!("partition.{p}.{c}")).unwrap_or(0);
            outln!(
                "{:<14} {:>5} {:>7} {:>10} {:>12}",
                p,
                get("cpus"),
                get("busy_permille"),
                get("jobs_queued"),
                get("jobs_completed")
            )?;
        }
    }
    print_agents(state)?;
    if let Some(rates) = rates {
        let line: Vec<String> = rates.iter().map(|(n, v)| format!("{n} {v:.0}")).collect();
        outln!("rates: {}", line.join(", "))?;
    }
    Ok(())
}

/// The agents' table: one row per agent with a mirror slot.
fn print_agents(state: &MirrorState) -> Result<(), BoxError> {
    let agents = state.agents();
    if agents.is_empty() {
        return Ok(());
    }
    out!("{:<8} {:<20} {:>5}", "agent", "name", "shard")?;
    for (_, title) in AGENT_COLUMNS {
        out!(" {title:>10}")?;
    }
    outln!(" {:>8}", "nacks")?;
    for agent in &agents {
        let mut name = agent.name.clone();
        if name.chars().count() > 20 {
            name = name.chars().take(19).chain(['…']).collect();
        }
        out!("{:<8} {name:<20} {:>5}", agent.agent_id, agent.shard)?;
        for (counter, _) in AGENT_COLUMNS {
            out!(" {:>10}", agent.get(counter).unwrap_or(0))?;
        }
        outln!(" {:>8}", nacks_total(agent))?;
    }
    Ok(())
}
