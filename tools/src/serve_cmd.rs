//! `agentwire serve`, `agentwire status`, `agentwire agents`, `agentwire routes`.

use crate::systemd::notifier::Notifier;
use agentwire_runtime::config::Config;
use agentwire_runtime::daemon::{Daemon, DaemonError};
use agentwire_shm::client::{query_status_trusting, ClientError};
use agentwire_shm::control::StatusReport;
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(crate) type BoxError = Box<dyn std::error::Error>;

/// Socket precedence: `--socket` / AGENTWIRE_SOCKET, then the config's `socket`, then the
/// default for this user.
fn resolve_socket(flag: Option<PathBuf>, config: Option<&Config>) -> PathBuf {
    flag.or_else(|| config.and_then(|c| c.socket.clone()))
        .unwrap_or_else(agentwire_shm::client::default_socket_path)
}

/// Command-line settings that override the config file.
#[derive(Debug, Default)]
pub struct Overrides {
    /// `--socket` / AGENTWIRE_SOCKET.
    pub socket: Option<PathBuf>,
    /// `--metrics-port`.
    pub metrics_port: Option<u16>,
    /// `--no-metrics`.
    pub no_metrics: bool,
    /// `--dlq` / AGENTWIRE_DLQ.
    pub dlq: Option<PathBuf>,
}

/// Where the dead-letter queue's path came from, for the start line and for errors.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DlqSource {
    /// `--dlq` or AGENTWIRE_DLQ.
    Flag,
    /// `dlq_path` in the config file.
    ConfigKey,
    /// The default state directory.
    Default,
    /// The runtime directory, because the default directory could not be used (why).
    Fallback(String),
}

impl DlqSource {
    /// How to put the queue elsewhere.
    fn hint(&self) -> &'static str {
        match self {
            DlqSource::Flag => "it comes from --dlq or AGENTWIRE_DLQ: pass a file in a writable directory",
            DlqSource::ConfigKey => "it comes from dlq_path in the config: name a file in a writable directory",
            DlqSource::Default | DlqSource::Fallback(_) => {
                "set dlq_path in the config, or pass --dlq FILE (or AGENTWIRE_DLQ), naming a file in a writable directory"
            }
        }
    }
}

/// The config with the command line applied, and where its dead-letter queue comes from. With
/// no queue named anywhere, the default is checked (its directory created): one that cannot
/// be used is replaced by the runtime directory's ([`agentwire_runtime::dlq_path`]).
fn load_config(
    config_path: Option<&PathBuf>,
    overrides: &Overrides,
) -> Result<(Config, DlqSource), BoxError> {
    let mut config = match config_path {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(),
    };
    if let Some(port) = overrides.metrics_port {
        config.metrics_port = port;
    }
    if overrides.no_metrics {
        config.metrics = false;
    }
    let source = if let Some(dlq) = &overrides.dlq {
        config.dlq.path = dlq.clone();
        DlqSource::Flag
    } else if config.dlq_path_given {
        DlqSource::ConfigKey
    } else {
        let chosen = agentwire_runtime::dlq_path::resolve_default(true);
        config.dlq.path = chosen.path;
        match chosen.fell_back_from {
            None => DlqSource::Default,
            Some((passed_over, why)) => {
                DlqSource::Fallback(format!("{} cannot be used: {why}", passed_over.display()))
            }
        }
    };
    Ok((config, source))
}

/// Runs the daemon until SIGTERM/SIGINT; SIGHUP re-reads the config file. Under systemd
/// (`$NOTIFY_SOCKET`) it speaks the notify protocol ([`crate::systemd::notifier`]).
pub fn serve(config_path: Option<PathBuf>, overrides: Overrides) -> Result<(), BoxError> {
    let (config, dlq_source) = load_config(config_path.as_ref(), &overrides)?;
    let socket = resolve_socket(overrides.socket.clone(), Some(&config));
    // Everything the daemon says goes through the log (text, journal or JSON lines).
    let dlq_line = match &dlq_source {
        DlqSource::Fallback(why) => {
            tracing::warn!(
                "the default dead-letter queue {why}; using the runtime directory, which a \
                 reboot empties ({})",
                dlq_source.hint()
            );
            format!("{} (fallback)", config.dlq.path.display())
        }
        _ => config.dlq.path.display().to_string(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())?;
    let mut daemon = Daemon::start(&config, socket).map_err(|e| -> BoxError {
        match e {
            DaemonError::Dlq(e) => format!("dead-letter queue: {e} ({})", dlq_source.hint()).into(),
            e => e.into(),
        }
    })?;
    tracing::info!(
        pid = std::process::id(),
        "serving: pid {}, socket {}, router on cpu {} (thread aw-router-{}), config {}, \
         dead-letter queue {dlq_line}",
        std::process::id(),
        daemon.socket_path().display(),
        daemon.router_cpu(),
        daemon.router_cpu(),
        config_path
            .as_ref()
            .map_or("embedded default".to_string(), |p| p.display().to_string())
    );
    // Ready: Daemon::start returned, so the socket accepts, every executor is pinned and the
    // configured engine is registered.
    let view = daemon.service_view();
    // The test hook (armed only by its environment variable) fires on SIGUSR2, handled
    // from before READY=1 on; without the hook SIGUSR2 keeps its default action.
    let wedge = Arc::new(AtomicBool::new(false));
    if let Some(hook) = view.wedge_hook() {
        signal_hook::flag::register(signal_hook::consts::SIGUSR2, wedge.clone())?;
        tracing::warn!(
            "test hook {}: SIGUSR2 wedges router shard {}",
            agentwire_runtime::service::WEDGE_ENV,
            hook.shard()
        );
    }
    let notifier = Notifier::ready(view.clone());
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if hup.swap(false, Ordering::Relaxed) {
            reload(&mut daemon, config_path.as_ref(), &overrides, &notifier);
        }
        if wedge.swap(false, Ordering::Relaxed) {
            if let Some(hook) = view.wedge_hook() {
                tracing::warn!("SIGUSR2: test hook wedges router shard {}", hook.shard());
                hook.fire();
            }
        }
    }
    tracing::info!("stopping (draining committed frames)");
    notifier.stopping();
    daemon.join();
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP: re-reads the file and applies what a reload can (the allow-list, the
/// `[[authorize]]` policy, the delivery deadline), naming every changed key that waits for a
/// restart. A bad file keeps the running configuration: a typo must not take routing down.
/// Tells systemd `RELOADING=1`, then `READY=1` with what happened.
fn reload(
    daemon: &mut Daemon,
    config_path: Option<&PathBuf>,
    overrides: &Overrides,
    notifier: &Notifier,
) {
    notifier.reloading();
    let status = match load_config(config_path, overrides) {
        Ok((fresh, _)) => {
            let changes = daemon.reload(&fresh);
            let applied = match changes.applied.as_slice() {
                [] => "none".to_string(),
                keys => keys.join(", "),
            };
            tracing::info!("SIGHUP: configuration re-read; applied: {applied}");
            if changes.needs_restart.is_empty() {
                "reloaded".to_string()
            } else {
                let kept = changes.needs_restart.join(", ");
                tracing::warn!("SIGHUP: changed keys that need a restart were not applied: {kept}");
                format!("reloaded; not applied until a restart: {kept}")
            }
        }
        Err(e) => {
            tracing::error!("SIGHUP: {e}; keeping the running configuration");
            format!("reload refused, running configuration kept: {e}")
        }
    };
    notifier.reloaded(&status);
}

/// What `status`, `routes` and `agents` ask: which daemon, whom to trust, how to print
/// (`agentwire status --daemon-uid 998 --json`).
#[derive(clap::Args, Debug, Clone)]
pub struct QueryArgs {
    /// The daemon's control socket.
    #[arg(long, env = "AGENTWIRE_SOCKET")]
    pub socket: Option<PathBuf>,
    /// The uid the daemon runs as, when it is neither root nor yours (e.g. a dedicated
    /// system user); repeat or separate with commas for several. The daemon's credentials
    /// are checked before anything is sent [default: root and your own uid].
    #[arg(long, env = "AGENTWIRE_DAEMON_UID", value_delimiter = ',')]
    pub daemon_uid: Vec<u32>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn fetch_status(q: &QueryArgs) -> Result<(PathBuf, StatusReport), BoxError> {
    let socket = resolve_socket(q.socket.clone(), None);
    let report = query_status_trusting(&socket, &q.daemon_uid).map_err(|e| match e {
        e @ ClientError::UntrustedDaemon { .. } => {
            format!("{e}; `--daemon-uid UID` trusts it for this command")
        }
        e @ ClientError::Refused { .. } => {
            format!("the daemon at {} refused the query: {e}", socket.display())
        }
        e => format!("no daemon answering at {}: {e}", socket.display()),
    })?;
    Ok((socket, report))
}

/// `agentwire status`: the router's counters (and agent count).
pub fn status(q: &QueryArgs) -> Result<(), BoxError> {
    let (socket, report) = fetch_status(q)?;
    if q.json {
        let counters: serde_json::Map<String, serde_json::Value> = report
            .counters
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let info: serde_json::Map<String, serde_json::Value> = report
            .info
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let shards: Vec<serde_json::Value> = report
            .shards
            .iter()
            .map(|s| {
                let counters: serde_json::Map<String, serde_json::Value> = s
                    .counters
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect();
                json!({"shard": s.shard, "agents": s.agents, "counters": counters})
            })
            .collect();
        let partitions: Vec<serde_json::Value> = report
            .partitions
            .iter()
            .map(|p| {
                let executors: Vec<serde_json::Value> = p
                    .executors
                    .iter()
                    .map(|e| json!({"thread": e.thread, "cpu": e.cpu, "affinity": e.affinity, "active": e.active}))
                    .collect();
                json!({"name": p.name, "priority": p.priority, "home_cpus": p.home_cpus, "cpus": p.cpus,
                    "busy_ratio": f64::from(p.busy_permille) / 1000.0, "jobs_completed": p.jobs_completed,
                    "jobs_queued": p.jobs_queued, "executors": executors})
            })
            .collect();
        let moves: Vec<serde_json::Value> = report
            .core_moves
            .iter()
            .map(|m| json!({"at_ms": m.at_ms, "cpu": m.cpu, "from": m.from, "to": m.to, "kind": m.kind, "reason": m.reason}))
            .collect();
        outln!(
            "{}",
            json!({
                "daemon": report.daemon, "pid": report.pid, "socket": socket, "uptime_s": report.uptime_s,
                "agents": report.agents.len(), "counters": counters, "info": info,
                "idle_ratio": idle_ratio(&report), "shards": shards,
                "partitions": partitions, "core_moves": moves,
            })
        )?;
        return Ok(());
    }
    outln!(
        "{} (pid {}) on {}, up {} s, {} agent(s)",
        report.daemon,
        report.pid,
        socket.display(),
        report.uptime_s,
        report.agents.len()
    )?;
    for (key, value) in &report.info {
        outln!("  {key:<24} {value}")?;
    }
    if let Some(ratio) = idle_ratio(&report) {
        outln!("  {:<24} {ratio:.3}", "idle_ratio")?;
    }
    for (name, value) in &report.counters {
        outln!("  {name:<24} {value}")?;
    }
    print_partitions(&report)?;
    if report.shards.len() > 1 {
        let get = |s: &agentwire_shm::control::ShardStatus, name: &str| {
            s.counters
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, v)| *v)
        };
        outln!("  shards (agents, frames in, delivered, forwarded, from links):")?;
        for s in &report.shards {
            outln!(
                "    shard {:<3} {:>6} {:>14} {:>14} {:>14} {:>14}",
                s.shard,
                s.agents,
                get(s, "frames_in"),
                get(s, "frames_delivered"),
                get(s, "frames_forwarded"),
                get(s, "frames_from_links")
            )?;
        }
    }
    Ok(())
}

/// The applied plan's partitions (CPUs now and planned, busy ratio, executors with their
/// affinity read back) and the last core moves.
fn print_partitions(report: &StatusReport) -> std::io::Result<()> {
    if report.partitions.is_empty() {
        return Ok(());
    }
    let cpus = |list: &[u32]| {
        let list: Vec<usize> = list.iter().map(|&c| c as usize).collect();
        agentwire_scheduler::machine::format_cpus(&list)
    };
    outln!(
        "  partitions (cpus now / planned, busy, jobs done / queued, executors: thread=affinity):"
    )?;
    for p in &report.partitions {
        let executors: Vec<String> = p
            .executors
            .iter()
            .map(|e| {
                format!(
                    "{}={}{}",
                    e.thread,
                    cpus(&e.affinity),
                    if e.active { "" } else { " (dormant)" }
                )
            })
            .collect();
        outln!(
            "    {:<10} {:>7} / {:<7} {:>5.1}% {:>10} / {:<6} {}",
            p.name,
            cpus(&p.cpus),
            cpus(&p.home_cpus),
            f64::from(p.busy_permille) / 10.0,
            p.jobs_completed,
            p.jobs_queued,
            executors.join(" ")
        )?;
    }
    if report.core_moves.is_empty() {
        outln!("  core moves: none")?;
    } else {
        outln!("  core moves (last {}):", report.core_moves.len())?;
        for m in &report.core_moves {
            outln!(
                "    t+{:.3}s cpu {}: {} -> {} ({}: {})",
                m.at_ms as f64 / 1000.0,
                m.cpu,
                m.from,
                m.to,
                m.kind,
                m.reason
            )?;
        }
    }
    Ok(())
}

/// Share of the router's duty cycles that found no work.
fn idle_ratio(report: &StatusReport) -> Option<f64> {
    let get = |name: &str| {
        report
            .counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    };
    let cycles = get("duty_cycles")?;
    (cycles > 0).then(|| get("duty_cycles_idle").unwrap_or(0) as f64 / cycles as f64)
}

/// `agentwire routes`: topics and capability routes with the agents they reach.
pub fn routes(q: &QueryArgs) -> Result<(), BoxError> {
    let (_, report) = fetch_status(q)?;
    if q.json {
        let routes: Vec<_> = report
            .routes
            .iter()
            .map(|r| json!({"kind": r.kind, "route_id": r.route_id, "name": r.name, "requirement": r.requirement, "agents": r.agents, "agents_total": r.agents_total}))
            .collect();
        outln!("{}", json!({ "routes": routes }))?;
        return Ok(());
    }
    outln!(
        "{:<11} {:>6}  {:<28} {:<14} agents",
        "kind",
        "id",
        "name",
        "requirement"
    )?;
    for r in &report.routes {
        // A route lists its first agents; the count says how many it reaches.
        let more = r.agents_total as usize - r.agents.len().min(r.agents_total as usize);
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        outln!(
            "{:<11} {:>6}  {:<28} {:<14} {:?}{tail}",
            r.kind,
            r.route_id,
            r.name,
            r.requirement,
            r.agents
        )?;
    }
    Ok(())
}

/// `agentwire agents`: the live agents.
/// The agents of other nodes offered here through node links, by their proxy's id here:
/// (node, id there, global id), from the daemon's `links` fact (empty without links).
fn linked_agents(report: &StatusReport) -> std::collections::HashMap<u32, (String, u64, String)> {
    let links: Vec<serde_json::Value> = report
        .info
        .iter()
        .find(|(k, _)| k == "links")
        .and_then(|(_, v)| serde_json::from_str(v).ok())
        .unwrap_or_default();
    let mut linked = std::collections::HashMap::new();
    for link in &links {
        let node = link["peer"].as_str().unwrap_or_default();
        for a in link["agents"].as_array().into_iter().flatten() {
            let (Some(here), Some(there), Some(global)) = (
                a["id_here"].as_u64().and_then(|id| u32::try_from(id).ok()),
                a["id_there"].as_u64(),
                a["global_id"].as_str(),
            ) else {
                continue;
            };
            linked.insert(here, (node.to_string(), there, global.to_string()));
        }
    }
    linked
}

pub fn agents(q: &QueryArgs) -> Result<(), BoxError> {
    let (_, report) = fetch_status(q)?;
    let linked = linked_agents(&report);
    if q.json {
        let agents: Vec<_> = report
            .agents
            .iter()
            .map(|a| {
                // Another node's agent, offered here through a node link: where it lives.
                let far = linked.get(&a.agent_id);
                json!({"agent_id": a.agent_id, "name": a.name, "pid": a.pid, "remote": a.pid == 0,
                "node": far.map(|f| &f.0), "id_there": far.map(|f| f.1), "global_id": far.map(|f| &f.2),
                "capabilities": a.capabilities, "topics": a.topics,
                "features": a.features, "live": a.live, "shard": a.shard,
                "tx_occupied_bytes": a.tx_occupied_bytes, "rx_occupied_bytes": a.rx_occupied_bytes, "ring_capacity_bytes": a.ring_capacity_bytes})
            })
            .collect();
        outln!("{}", json!({ "agents": agents }))?;
        return Ok(());
    }
    outln!(
        "{:>6}  {:<24} {:>8}  {:<5} {:>5}  {:<30} {:>9} {:>9}  topics / features",
        "id",
        "name",
        "pid",
        "state",
        "shard",
        "capabilities",
        "tx_bytes",
        "rx_bytes"
    )?;
    for a in &report.agents {
        let name = match linked.get(&a.agent_id) {
            Some((_, _, global_id)) => format!("{} ({global_id})", a.name),
            None => a.name.clone(),
        };
        outln!(
            "{:>6}  {:<24} {:>8}  {:<5} {:>5}  {:<30} {:>9} {:>9}  {:?} / {:?}",
            a.agent_id,
            name,
            // A remote agent (behind a network connection) has no local process.
            if a.pid == 0 {
                "remote".to_string()
            } else {
                a.pid.to_string()
            },
            if a.live { "live" } else { "stale" },
            a.shard,
            a.capabilities.join(","),
            a.tx_occupied_bytes,
            a.rx_occupied_bytes,
            a.topics,
            a.features
        )?;
    }
    Ok(())
}
