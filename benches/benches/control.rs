//! The control plane at scale: how fast agents connect (handshake, registration, segment,
//! doorbells, the answer with its descriptors) and what each costs the router in memory.
//!
//! The router runs in a child process of its own (this binary re-executed), so its
//! resident memory (VmRSS) is the router's alone; agents connect from this process, on 4
//! threads, with 1 KiB rings (`Agent::ring_capacity`). For each count of agents it prints
//! connects per second, the router's RSS per agent ((RSS with N agents - RSS with none) /
//! N), and, as the baseline measured in the same run, bare round trips per second on a
//! plain SEQPACKET socket (connect, one 64-byte message each way, close) against a server
//! thread in this process: the floor any control handshake stands on.
//!
//! Counts: 100, 1,000 and 10,000, each capped by what this process's descriptor limit
//! holds (the router keeps about 4 descriptors per agent, and so does the agent side);
//! a capped count is printed with its reason.
//!
//! Run: `cargo bench -p agentwire-benches --bench control` (`cargo test --benches` runs a
//! smoke version with 20 agents).

use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::client::{query_status, Agent};
use agentwire_shm::idle::IdleStrategy;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const THREADS: usize = 4;
/// Descriptors per agent on each side (socket, memfd, two doorbells), plus headroom.
const FDS_PER_AGENT: u64 = 4;

/// The child: a router on `socket`, until stdin closes.
fn router_child(socket: PathBuf, agents_max: usize) {
    raise_fd_limit();
    let router = TestRouter::start(TestRouterConfig {
        agents_max,
        ring_capacity_min_bytes: 1024,
        defer_capacity_bytes: 0,
        idle: IdleStrategy::Park {
            park_timeout_ns: 1_000_000,
        },
        ..TestRouterConfig::new(socket)
    })
    .expect("router");
    println!("ready");
    std::io::stdout().flush().expect("stdout");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    drop(router);
}

/// Raises the soft descriptor limit to the hard one; returns it.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct they are given.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// Connects `count` agents over [`THREADS`] threads; returns them and the seconds taken.
fn connect(socket: &Path, count: usize) -> (Vec<Vec<Agent>>, f64) {
    let start = Instant::now();
    let groups = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let share = count / THREADS + usize::from(t < count % THREADS);
                s.spawn(move || {
                    (0..share)
                        .map(|i| {
                            Agent::builder(&format!("bench-{t}-{i}"))
                                .socket(socket)
                                .ring_capacity(1024)
                                .connect()
                                .expect("connect")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("connector"))
            .collect()
    });
    (groups, start.elapsed().as_secs_f64())
}

/// Bare SEQPACKET round trips per second: connect, 64 bytes each way, close.
fn bare_round_trips(dir: &Path, count: usize) -> f64 {
    use rustix::net::{RecvFlags, SendFlags};
    let path = dir.join("bare.sock");
    let _ = std::fs::remove_file(&path);
    let listener = agentwire_shm::control::listen(&path, 1024).expect("listen");
    let server = std::thread::spawn(move || {
        for _ in 0..count {
            let conn = rustix::net::accept(&listener).expect("accept");
            let mut buf = [0u8; 64];
            let (n, _) = rustix::net::recv(&conn, &mut buf, RecvFlags::empty()).expect("recv");
            rustix::net::send(&conn, &buf[..n], SendFlags::empty()).expect("send");
        }
    });
    let start = Instant::now();
    for _ in 0..count {
        let conn = agentwire_shm::control::ControlConn::connect(&path).expect("connect");
        rustix::net::send(&conn, &[7u8; 64], SendFlags::empty()).expect("send");
        let mut buf = [0u8; 64];
        rustix::net::recv(&conn, &mut buf, RecvFlags::empty()).expect("recv");
    }
    let secs = start.elapsed().as_secs_f64();
    server.join().expect("server");
    count as f64 / secs
}

fn main() {
    if let Ok(socket) = std::env::var("AW_BENCH_CONTROL_ROUTER") {
        let agents_max = std::env::var("AW_BENCH_CONTROL_AGENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_001);
        router_child(PathBuf::from(socket), agents_max);
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let wanted: &[usize] = if full { &[100, 1_000, 10_000] } else { &[20] };
    let limit = raise_fd_limit();
    let fits = (limit.saturating_sub(512) / FDS_PER_AGENT) as usize;
    let dir = std::env::temp_dir().join(format!("aw-bench-control-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    println!(
        "control: agents connect from {THREADS} threads with 1 KiB rings to a router in its own process; descriptor limit {limit}"
    );
    println!(
        "{:>8} {:>14} {:>16} {:>18} {:>10}",
        "agents", "connects/s", "router RSS/agent", "bare round trips/s", "ratio"
    );
    for (index, &want) in wanted.iter().enumerate() {
        let agents = want.min(fits);
        let socket = dir.join(format!("r{index}.sock"));
        let me = std::env::current_exe().expect("exe");
        let mut child = Command::new(me)
            .env("AW_BENCH_CONTROL_ROUTER", &socket)
            .env("AW_BENCH_CONTROL_AGENTS", (agents + 1).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("router child");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("ready line");
        assert_eq!(line.trim(), "ready", "router child failed to start");
        let pid = child.id();
        let empty = rss_bytes(pid);
        let (groups, secs) = connect(&socket, agents);
        let report = query_status(&socket).expect("status");
        assert_eq!(report.agents.len(), agents, "every agent registered");
        let per_agent = rss_bytes(pid).saturating_sub(empty) / agents as u64;
        let bare = bare_round_trips(&dir, agents.max(100));
        let rate = agents as f64 / secs;
        println!(
            "{agents:>8} {rate:>14.0} {:>13.1} KiB {bare:>18.0} {:>10.3}",
            per_agent as f64 / 1024.0,
            rate / bare
        );
        if agents < want {
            println!(
                "         ({want} wanted; this limit of {limit} descriptors holds {agents}: raise the hard limit to measure more)"
            );
        }
        drop(groups);
        drop(child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "router child did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
