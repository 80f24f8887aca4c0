//! `agentwire serve`, `agentwire status`, `agentwire agents`.

use agentwire_runtime::config::Config;
use agentwire_runtime::daemon::Daemon;
use agentwire_shm::client::query_status;
use agentwire_shm::control::StatusReport;
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

type BoxError = Box<dyn std::error::Error>;

/// Socket precedence: `--socket` / AGENTWIRE_SOCKET, then the config's `socket`, then the
/// default for this user.
fn resolve_socket(flag: Option<PathBuf>, config: Option<&Config>) -> PathBuf {
    flag.or_else(|| config.and_then(|c| c.socket.clone()))
        .unwrap_or_else(agentwire_shm::client::default_socket_path)
}

/// Runs the daemon in the foreground until SIGTERM or SIGINT; exits 0 after draining.
pub fn serve(config_path: Option<PathBuf>, socket: Option<PathBuf>) -> Result<(), BoxError> {
    let config = match &config_path {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(),
    };
    let socket = resolve_socket(socket, Some(&config));
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    // SIGHUP reload (allow-list, routing config) is not built yet; until it is, a SIGHUP
    // must not kill the daemon, so it is caught and logged.
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())?;
    let daemon = Daemon::start(&config, socket)?;
    eprintln!(
        "agentwire serve: pid {}, socket {}, router on cpu {} (thread aw-router-{}), config {}",
        std::process::id(),
        daemon.socket_path().display(),
        daemon.router_cpu(),
        daemon.router_cpu(),
        config_path
            .as_ref()
            .map_or("embedded default".to_string(), |p| p.display().to_string())
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if hup.swap(false, Ordering::Relaxed) {
            tracing::warn!("SIGHUP received: configuration reload is not available yet; keeping the running configuration");
        }
    }
    eprintln!("agentwire serve: stopping (draining committed frames)");
    daemon.join();
    eprintln!("agentwire serve: stopped");
    Ok(())
}

/// Resolves the socket and asks the daemon there for its status.
fn fetch_status(socket: Option<PathBuf>) -> Result<(PathBuf, StatusReport), BoxError> {
    let socket = resolve_socket(socket, None);
    let report = query_status(&socket)
        .map_err(|e| format!("no daemon answering at {}: {e}", socket.display()))?;
    Ok((socket, report))
}

/// `agentwire status`: the router's counters (and agent count).
pub fn status(socket: Option<PathBuf>, as_json: bool) -> Result<(), BoxError> {
    let (socket, report) = fetch_status(socket)?;
    if as_json {
        let counters: serde_json::Map<String, serde_json::Value> = report
            .counters
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        println!(
            "{}",
            json!({
                "daemon": report.daemon, "pid": report.pid, "socket": socket, "uptime_s": report.uptime_s,
                "agents": report.agents.len(), "counters": counters,
            })
        );
        return Ok(());
    }
    println!(
        "{} (pid {}) on {}, up {} s, {} agent(s)",
        report.daemon,
        report.pid,
        socket.display(),
        report.uptime_s,
        report.agents.len()
    );
    for (name, value) in &report.counters {
        println!("  {name:<20} {value}");
    }
    Ok(())
}

/// `agentwire agents`: the live agents.
pub fn agents(socket: Option<PathBuf>, as_json: bool) -> Result<(), BoxError> {
    let (_, report) = fetch_status(socket)?;
    if as_json {
        let agents: Vec<_> = report
            .agents
            .iter()
            .map(|a| json!({"agent_id": a.agent_id, "name": a.name, "pid": a.pid, "capabilities": a.capabilities, "topics": a.topics}))
            .collect();
        println!("{}", json!({ "agents": agents }));
        return Ok(());
    }
    println!(
        "{:>6}  {:<24} {:>8}  {:<30} topics",
        "id", "name", "pid", "capabilities"
    );
    for a in &report.agents {
        println!(
            "{:>6}  {:<24} {:>8}  {:<30} {:?}",
            a.agent_id,
            a.name,
            a.pid,
            a.capabilities.join(","),
            a.topics
        );
    }
    Ok(())
}
