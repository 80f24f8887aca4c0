//! `agentwire serve` as a real process: agents exchange a million messages through it,
//! status and agents report them, a second daemon is refused, bad configs fail clearly,
//! SIGTERM exits 0 and clients see the daemon go.

use agentwire_shm::client::{query_status, Agent, ClientError};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{cli_json, scratch, serve_command, Served, AGENTWIRE};

#[test]
fn two_agents_exchange_a_million_messages_through_the_daemon() {
    let dir = scratch("million");
    let served = Served::start(&dir.join("agentwire.sock"), &[]);
    let mut receiver = Agent::builder("receiver")
        .socket(&served.socket)
        .connect()
        .unwrap();
    let receiver_id = receiver.id();
    let socket = served.socket.clone();
    const MESSAGES: u64 = 1_000_000;
    let sender = std::thread::spawn(move || {
        let mut agent = Agent::builder("sender")
            .socket(&socket)
            .capability("emit", "1.0.0")
            .connect()
            .unwrap();
        let mut payload = [0u8; 64];
        let mut seq = 0u64;
        while seq < MESSAGES {
            let end = (seq + 32).min(MESSAGES);
            let frames: Vec<[u8; 64]> = (seq..end)
                .map(|s| {
                    payload[..8].copy_from_slice(&s.to_le_bytes());
                    payload
                })
                .collect();
            agent
                .send_batch(receiver_id, frames.iter().map(|f| &f[..]))
                .unwrap();
            seq = end;
        }
        agent
    });
    let mut expected = 0u64;
    let mut check = |payload: &[u8]| {
        let seq = u64::from_le_bytes(payload[..8].try_into().unwrap());
        assert_eq!(seq, expected, "lost, duplicated or reordered");
        expected += 1;
    };
    let mut received = 0u64;
    while received < MESSAGES {
        let n = receiver
            .recv_batch(256, |_, payload| check(payload))
            .unwrap() as u64;
        received += n;
        if n == 0 {
            // Block (spin then park) for the next frame, and check it too.
            let msg = receiver
                .recv(Some(Duration::from_secs(20)))
                .unwrap()
                .expect("watchdog: stalled");
            assert_ne!(msg.header().source(), receiver_id);
            check(msg.payload());
            received += 1;
        }
    }
    let _sender_agent = sender.join().unwrap();
    let status = cli_json(&["status"], &served.socket);
    assert!(
        status["counters"]["frames_delivered"].as_u64().unwrap() >= MESSAGES,
        "{status}"
    );
    assert_eq!(status["agents"], 2);
    // The applied plan: the router and the four engines, each executor pinned to its cpu
    // (its own sched_getaffinity read back), no core moved.
    let partitions = status["partitions"].as_array().unwrap();
    let names: Vec<&str> = partitions
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["router", "streaming", "nas", "twin", "fusion"]);
    for p in partitions {
        for e in p["executors"].as_array().unwrap() {
            assert_eq!(e["affinity"], serde_json::json!([e["cpu"]]), "{e}");
            assert!(e["thread"].as_str().unwrap().starts_with("aw-"), "{e}");
        }
    }
    assert_eq!(status["core_moves"], serde_json::json!([]));
    let text = Command::new(AGENTWIRE)
        .args(["status", "--socket"])
        .arg(&served.socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("partitions (cpus now / planned") && text.contains("core moves: none"),
        "{text}"
    );
    let agents = cli_json(&["agents"], &served.socket);
    let names: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["receiver", "sender"]);
    assert_eq!(agents["agents"][1]["capabilities"][0], "emit@1.0.0");
    let out = served.terminate();
    assert!(
        out.status.success(),
        "SIGTERM exits 0: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_recv_loop_above_does_not_hide_a_stall() {
    // Guard for the test above: recv on an idle daemon returns None in time, not an error.
    let dir = scratch("idle");
    let served = Served::start(&dir.join("agentwire.sock"), &[]);
    let mut a = Agent::builder("a")
        .socket(&served.socket)
        .connect()
        .unwrap();
    assert!(a.recv(Some(Duration::from_millis(50))).unwrap().is_none());
}

#[test]
fn sigterm_stops_cleanly_and_clients_see_the_daemon_go() {
    let dir = scratch("sigterm");
    let served = Served::start(&dir.join("agentwire.sock"), &[]);
    let mut agent = Agent::builder("watcher")
        .socket(&served.socket)
        .connect()
        .unwrap();
    let socket = served.socket.clone();
    let out = served.terminate();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stopped"), "{stderr}");
    assert!(!socket.exists(), "socket removed at exit");
    let err = agent
        .recv(Some(Duration::from_secs(10)))
        .map(|m| m.is_some())
        .unwrap_err();
    assert!(matches!(err, ClientError::Disconnected), "{err}");
}

#[test]
fn agent_ids_never_repeat_across_daemon_restarts() {
    let dir = scratch("ids-restart");
    let socket = dir.join("agentwire.sock");
    let mut seen = Vec::new();
    for _run in 0..3 {
        let served = Served::start(&socket, &[]);
        for name in ["a", "b"] {
            let agent = Agent::builder(name)
                .socket(&served.socket)
                .connect()
                .unwrap();
            assert!(
                seen.iter().all(|&id| id < agent.id()),
                "id {} given again (earlier: {seen:?})",
                agent.id()
            );
            seen.push(agent.id());
        }
        let out = served.terminate();
        assert!(out.status.success());
    }
    // The mark lives beside the dead-letter queue.
    assert!(dir.join("dlq.log.ids").exists());
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused() {
    let dir = scratch("second");
    let served = Served::start(&dir.join("agentwire.sock"), &[]);
    let out = serve_command(&served.socket).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already serving"), "{stderr}");
    assert!(
        query_status(&served.socket).is_ok(),
        "the first daemon is unaffected"
    );
}

#[test]
fn bad_config_fails_with_file_line_and_key() {
    let dir = scratch("badconfig");
    let config = dir.join("agentwire.toml");
    let path = config.display().to_string();
    let refusal = |text: &str| {
        std::fs::write(&config, text).unwrap();
        let out = serve_command(&dir.join("agentwire.sock"))
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text:?} was accepted");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let stderr = refusal("idle = \"spin\"\nrouter_cpus = 3\n");
    assert!(
        stderr.contains(&format!("{path}:2: router_cpus: invalid type")),
        "{stderr}"
    );
    // Every problem of the file at once, each with the file, its line and its key.
    let stderr = refusal("agents_max = 0\nidle = \"spin\"\n\nring_capacity_bytes = 5000\n");
    assert!(
        stderr.contains(&format!("{path}: 2 problems"))
            && stderr.contains(&format!("{path}:1: agents_max = 0: 1 to 1048576"))
            && stderr.contains(&format!(
                "{path}:4: ring_capacity_bytes = 5000: a power of two"
            )),
        "{stderr}"
    );
    // Valid TOML naming a CPU this process may not use (cpu 7 on a 2-CPU machine).
    let allowed = agentwire_runtime::planning::allowed_cpus();
    let cpu = [7, 4095]
        .into_iter()
        .find(|c| !allowed.contains(c))
        .unwrap();
    let stderr = refusal(&format!("idle = \"spin\"\nrouter_cpus = [{cpu}]\n"));
    assert!(
        stderr.contains(&format!(
            "{path}:2: router_cpus = [{cpu}]: cpu {cpu} is not one this process may run on"
        )),
        "{stderr}"
    );
    let stderr = refusal("router_cpu = 4096\n");
    assert!(
        stderr.contains(&format!(
            "{path}:1: router_cpu = 4096: cpu 4096 is not one this process may run on"
        )),
        "{stderr}"
    );
}

#[test]
fn status_without_a_daemon_says_so() {
    let dir = scratch("nodaemon");
    let out = Command::new(AGENTWIRE)
        .args(["status", "--socket"])
        .arg(dir.join("none.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no daemon answering at"));
}

/// The uid of user `nobody`, as which some tests run the daemon.
const NOBODY: u32 = 65534;

/// Runs `agentwire serve` as user `nobody` under a memlock limit (needs root to switch user;
/// CI runs as root), with HOME and XDG_RUNTIME_DIR in a directory nobody owns. Returns the
/// child, or `None` when not root.
fn serve_as_nobody(dir: &Path, memlock_bytes: u64) -> Option<std::process::Child> {
    serve_as_nobody_with_home(dir, memlock_bytes, &dir.join("run"))
}

/// [`serve_as_nobody`] with HOME at `home`.
fn serve_as_nobody_with_home(
    dir: &Path,
    memlock_bytes: u64,
    home: &Path,
) -> Option<std::process::Child> {
    let mut command = as_nobody(dir, memlock_bytes, home, &["serve", "--metrics-port", "0"])?;
    Some(command.stderr(Stdio::piped()).spawn().unwrap())
}

/// `agentwire ARGS` as user `nobody` (a copy of the binary in `dir`, XDG_RUNTIME_DIR at
/// `dir/run`, HOME at `home`) under a memlock limit; `None` when not root.
fn as_nobody(dir: &Path, memlock_bytes: u64, home: &Path, args: &[&str]) -> Option<Command> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: cannot switch to user nobody; skipping");
        return None;
    }
    // A copy of the binary and a runtime dir that nobody can use, wherever the checkout is.
    let binary = dir.join("agentwire");
    if !binary.exists() {
        std::fs::copy(AGENTWIRE, &binary).unwrap();
    }
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    for path in [dir, binary.as_path(), run.as_path()] {
        std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
    }
    let mut command = Command::new("prlimit");
    command
        .arg(format!("--memlock={memlock_bytes}:{memlock_bytes}"))
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "env",
            // Only HOME and XDG_RUNTIME_DIR say where the daemon's files go.
            "-u",
            "XDG_STATE_HOME",
            "-u",
            "AGENTWIRE_DLQ",
            "-u",
            "AGENTWIRE_SOCKET",
        ])
        .arg(format!("XDG_RUNTIME_DIR={}", run.display()))
        .arg(format!("HOME={}", home.display()))
        .arg(&binary)
        .args(args);
    Some(command)
}

#[test]
fn non_root_user_with_8_mib_memlock_runs_the_daemon() {
    let dir = scratch("nobody");
    let Some(child) = serve_as_nobody(&dir, 8 * 1024 * 1024) else {
        return;
    };
    let socket = dir.join("run/agentwire/agentwire.sock");
    let served = Served::adopt_as(child, &socket, NOBODY);
    assert!(served.status().pid > 0);
    // A daemon of another uid is not trusted by default, by the library or the CLI; the CLI
    // names the flag that trusts it.
    assert!(matches!(
        query_status(&socket),
        Err(ClientError::UntrustedDaemon { uid: NOBODY, .. })
    ));
    let refused = Command::new(AGENTWIRE)
        .args(["status", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("runs as uid 65534") && stderr.contains("--daemon-uid"),
        "{stderr}"
    );
    let trusted = Command::new(AGENTWIRE)
        .args(["agents", "--json", "--daemon-uid", "65534", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    let agents: serde_json::Value = serde_json::from_slice(&trusted.stdout).unwrap();
    assert_eq!(agents["agents"], serde_json::json!([]));
    let out = served.terminate();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_home_that_cannot_be_written_puts_the_dead_letter_queue_in_the_runtime_dir() {
    let dir = scratch("nobody-home");
    // HOME under a regular file: nothing can be created there, not even by root, as for
    // `nobody` whose home is /nonexistent.
    let file = dir.join("a-file");
    std::fs::write(&file, b"").unwrap();
    let Some(child) = serve_as_nobody_with_home(&dir, 8 * 1024 * 1024, &file.join("home")) else {
        return;
    };
    let socket = dir.join("run/agentwire/agentwire.sock");
    let served = Served::adopt_as(child, &socket, NOBODY);
    let fallback = dir.join("run/agentwire/dlq.log");
    let report = served.status();
    let dlq = report.info.iter().find(|(k, _)| k == "dlq").map(|(_, v)| v);
    assert_eq!(
        dlq,
        Some(&fallback.display().to_string()),
        "{:?}",
        report.info
    );
    let out = served.terminate();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "dead-letter queue {} (fallback)",
            fallback.display()
        )) && stderr.contains("a-file/home"),
        "the start names the fallback and why: {stderr}"
    );
    // `agentwire dlq list` as the same user, with no --dlq, finds the same queue.
    let list = as_nobody(
        &dir,
        8 << 20,
        &file.join("home"),
        &["dlq", "list", "--json"],
    )
    .unwrap()
    .output()
    .unwrap();
    assert!(list.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed["path"], fallback.display().to_string(), "{listed}");
    assert_eq!(listed["exists"], true, "{listed}");
}

#[test]
fn memlock_too_low_fails_with_the_fix_named() {
    let dir = scratch("memlock");
    let Some(child) = serve_as_nobody(&dir, 256 * 1024) else {
        return;
    };
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("RLIMIT_MEMLOCK is 256 KiB") && stderr.contains("ulimit -l"),
        "{stderr}"
    );
}
