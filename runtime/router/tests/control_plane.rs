//! The control plane against slow, silent, hostile and numerous clients: one event-driven
//! loop serves every connection, so none of them delays another; a peer whose process is
//! gone before it registers is refused (its exit could never be seen); the socket path is
//! never taken from a file that is not a stale socket; agents choose their ring size within
//! limits; and ten thousand agents register, each receives a unicast, and all are removed
//! when they leave.

mod common;

use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_router::{RouterConfig, RouterControl};
use agentwire_shm::client::{query_status, Agent, ClientError};
use agentwire_shm::control::{
    ClientMsg, ControlConn, RefuseReason, Registration, ServerMsg, PROTOCOL_VERSION_MAX,
    PROTOCOL_VERSION_MIN,
};
use agentwire_shm::idle::IdleStrategy;
use common::{raise_fd_limit, within};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn socket(name: &str) -> PathBuf {
    std::env::temp_dir()
        .join(format!("aw-ctl-{}-{name}", std::process::id()))
        .join("agentwire.sock")
}

fn counter(socket: &std::path::Path, name: &str) -> u64 {
    let report = query_status(socket).unwrap();
    report
        .counters
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0, |c| c.1)
}

#[test]
fn silent_and_garbage_connections_delay_nobody_and_lose_nothing() {
    const FRAMES: u64 = 20_000;
    let r = TestRouter::start(TestRouterConfig::new(socket("hostile"))).unwrap();
    let path = r.socket_path().to_path_buf();
    let mut tx = Agent::builder("tx").socket(&path).connect().unwrap();
    let mut rx = Agent::builder("rx").socket(&path).connect().unwrap();
    let rx_id = rx.id();
    // A flow that runs through the whole attack.
    let receiver = std::thread::spawn(move || {
        let mut next = 0u64;
        while next < FRAMES {
            let msg = rx
                .recv(Some(Duration::from_secs(30)))
                .unwrap()
                .expect("flow stalled");
            let seq = u64::from_le_bytes(msg.payload()[..8].try_into().unwrap());
            assert_eq!(seq, next, "lost, duplicated or reordered");
            next += 1;
        }
        next
    });
    let sender = std::thread::spawn(move || {
        for seq in 0..FRAMES {
            tx.send(rx_id, &seq.to_le_bytes()).unwrap();
            if seq == FRAMES / 4 {
                // Let the attack begin while frames still flow.
                std::thread::yield_now();
            }
        }
    });
    let silent: Vec<ControlConn> = (0..16)
        .map(|_| ControlConn::connect(&path).unwrap())
        .collect();
    let garbage: Vec<ControlConn> = (0..16)
        .map(|i| {
            let c = ControlConn::connect(&path).unwrap();
            let bytes: Vec<u8> = (0..64u8)
                .map(|b| b.wrapping_mul(31).wrapping_add(i))
                .collect();
            rustix::net::send(&c, &bytes, rustix::net::SendFlags::empty()).unwrap();
            c
        })
        .collect();
    let p = path.clone();
    let report = within(Duration::from_secs(4), "status", move || {
        query_status(&p).unwrap()
    });
    assert!(report.agents.len() >= 2);
    let p = path.clone();
    let newcomer = within(
        Duration::from_secs(4),
        "a new agent's registration",
        move || Agent::builder("newcomer").socket(&p).connect().unwrap(),
    );
    assert!(newcomer.id() > 0);
    sender.join().unwrap();
    assert_eq!(receiver.join().unwrap(), FRAMES);
    // Every garbage connection was counted and refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(&path, "control_messages_malformed") < 16 {
        assert!(Instant::now() < deadline, "garbage was not counted");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(counter(&path, "handshakes_refused") >= 16);
    drop((silent, garbage));
}

/// Connects to `path` from a child process that exits at once; returns the connected
/// socket, whose SO_PEERCRED names the (now reaped) child.
fn connect_from_a_dead_process(path: &std::path::Path) -> ControlConn {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let addr = rustix::net::SocketAddrUnix::new(path).unwrap();
    // SAFETY: the child only calls connect(2) and _exit(2), both async-signal-safe, on a
    // descriptor and an address prepared before the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = rustix::net::connect(&fd, &addr).is_ok();
        // SAFETY: _exit ends the child without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed to connect"
    );
    ControlConn::from_fd(fd)
}

#[test]
fn a_peer_whose_process_is_gone_before_it_registers_is_refused() {
    let r = TestRouter::start(TestRouterConfig::new(socket("gone"))).unwrap();
    let conn = connect_from_a_dead_process(r.socket_path());
    let hello = ClientMsg::Hello {
        version_min: PROTOCOL_VERSION_MIN,
        version_max: PROTOCOL_VERSION_MAX,
        client: "orphaned socket".into(),
    };
    conn.send(&hello, &[]).unwrap();
    let (welcome, _) = conn
        .recv::<ServerMsg>(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(matches!(welcome, ServerMsg::Welcome { .. }), "{welcome:?}");
    let register = ClientMsg::Register(Registration {
        name: "orphan".into(),
        ..Default::default()
    });
    conn.send(&register, &[]).unwrap();
    let (answer, _) = conn
        .recv::<ServerMsg>(Some(Duration::from_secs(10)))
        .unwrap();
    match answer {
        ServerMsg::Refused { reason, detail } => {
            assert_eq!(reason, RefuseReason::BadRequest);
            assert!(detail.contains("cannot watch process"), "{detail}");
        }
        other => panic!("a peer whose process is gone was admitted: {other:?}"),
    }
    assert_eq!(r.agent_count(), 0);
}

#[test]
fn the_socket_path_is_never_taken_from_a_file_that_is_not_a_stale_socket() {
    let path = socket("not-a-socket");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"precious").unwrap();
    let err = RouterControl::start(RouterConfig::new(path.clone())).unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    // A stale socket (nobody listening) is replaced.
    std::fs::remove_file(&path).unwrap();
    let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(stale);
    let (control, _core) = RouterControl::start(RouterConfig::new(path.clone())).unwrap();
    drop(control);
}

#[test]
fn agents_choose_their_ring_size_within_the_routers_limits() {
    let r = TestRouter::start(TestRouterConfig::new(socket("ring-size"))).unwrap();
    let small = Agent::builder("small")
        .socket(r.socket_path())
        .ring_capacity(4096)
        .connect()
        .unwrap();
    assert_eq!(small.segment().rx_memory().capacity_bytes(), 4096);
    let default = Agent::builder("default")
        .socket(r.socket_path())
        .connect()
        .unwrap();
    assert_eq!(default.segment().rx_memory().capacity_bytes(), 256 * 1024);
    for bad in [3000, 1024, 1 << 30] {
        let err = Agent::builder("odd")
            .socket(r.socket_path())
            .ring_capacity(bad)
            .connect()
            .unwrap_err();
        match err {
            ClientError::Refused {
                reason: RefuseReason::BadRequest,
                detail,
            } => assert!(detail.contains("power of two"), "{detail}"),
            other => panic!("ring of {bad} bytes: expected a refusal, got {other}"),
        }
    }
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

/// Connects `count` agents named `prefix-N` with 1 KiB rings, over `threads` threads.
fn connect_many(
    path: &std::path::Path,
    prefix: &str,
    count: usize,
    threads: usize,
) -> Vec<Vec<Agent>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let share = count / threads + usize::from(t < count % threads);
                s.spawn(move || {
                    (0..share)
                        .map(|i| {
                            Agent::builder(&format!("{prefix}-{t}-{i}"))
                                .socket(path)
                                .ring_capacity(1024)
                                .idle(IdleStrategy::Spin)
                                .connect()
                                .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn ten_thousand_agents_register_each_receive_a_unicast_and_all_leave() {
    const AGENTS_WANTED: usize = 10_000;
    const THREADS: usize = 8;
    const PROBE: usize = 100;
    let (limit, hard) = raise_fd_limit();
    let r = TestRouter::start(TestRouterConfig {
        agents_max: AGENTS_WANTED + 1,
        ring_capacity_min_bytes: 1024,
        defer_capacity_bytes: 0,
        ..TestRouterConfig::new(socket("ten-thousand"))
    })
    .unwrap();
    let path = r.socket_path().to_path_buf();
    let mut sender = Agent::builder("sender").socket(&path).connect().unwrap();
    // Both ends live in this process: measure what one agent costs in descriptors (the
    // router's and the agent's), then connect as many as the limit allows, up to 10,000.
    let before = open_fds();
    let mut groups = connect_many(&path, "probe", PROBE, 1);
    let per_agent = (open_fds() - before).div_ceil(PROBE as u64);
    let room = limit.saturating_sub(open_fds() + 256) / per_agent;
    let agents = AGENTS_WANTED.min(PROBE + room as usize);
    if agents < AGENTS_WANTED {
        eprintln!(
            "descriptor limit {limit} (hard {hard}) holds {agents} agents here at {per_agent} \
             descriptors each (router and agent in one process); {AGENTS_WANTED} need a limit of \
             {}: raise the hard limit (CAP_SYS_RESOURCE, or LimitNOFILE=) to run them all",
            AGENTS_WANTED as u64 * per_agent + open_fds() + 256
        );
    }
    assert!(
        agents >= 1_000,
        "too few descriptors to test many agents: {limit}"
    );
    groups.extend(connect_many(&path, "agent", agents - PROBE, THREADS));
    assert_eq!(r.agent_count(), agents + 1);
    // The status report lists every one of them (it comes in pages).
    let report = query_status(&path).unwrap();
    assert_eq!(report.agents.len(), agents + 1);
    assert_eq!(report.agents_total as usize, agents + 1);
    assert!(report
        .agents
        .windows(2)
        .all(|w| w[0].agent_id < w[1].agent_id));
    for agent in groups.iter().flatten() {
        sender.send(agent.id(), &agent.id().to_le_bytes()).unwrap();
    }
    let groups: Vec<Vec<Agent>> = std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|mut group| {
                s.spawn(move || {
                    receive_one_each(&mut group);
                    group
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let stats = r.stats();
    assert!(stats.frames_delivered.load(Ordering::Relaxed) >= agents as u64);
    drop(groups);
    drop(sender);
    let deadline = Instant::now() + Duration::from_secs(60);
    while r.agent_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} agents never left",
            r.agent_count()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Each agent of `group` receives the unicast naming it.
fn receive_one_each(group: &mut [Agent]) {
    for agent in group {
        let id = agent.id();
        let msg = agent
            .recv(Some(Duration::from_secs(60)))
            .unwrap()
            .unwrap_or_else(|| panic!("agent {id} got nothing"));
        assert_eq!(msg.payload(), id.to_le_bytes());
    }
}
