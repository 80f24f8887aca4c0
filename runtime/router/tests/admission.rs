//! Admission against hostile peers that are still allowed to connect, or not: a peer not on
//! the allow-list is refused as it is accepted, before anything is read, and holds no
//! handshake slot; one uid's silent connections take at most its share of the slots
//! (`handshakes_per_uid_max`) and its agents at most `agents_per_uid_max`. Its own process:
//! the strangers test opens over a thousand connections, which would disturb the descriptor
//! counts other control-plane tests measure.

mod common;

use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::client::{Agent, ClientError};
use agentwire_shm::control::{ControlConn, RefuseReason, ServerMsg};
use common::{raise_fd_limit, within};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn socket(name: &str) -> PathBuf {
    std::env::temp_dir()
        .join(format!("aw-adm-{}-{name}", std::process::id()))
        .join("agentwire.sock")
}

/// Reads what the router answered a connection that never spoke: the refusal's reason and
/// detail, after which the router must have closed it (10 s watchdog: one handshake step a
/// router that waited for `Hello` would sit out is 5 s).
fn refusal_of_a_silent_connection(conn: &ControlConn) -> (RefuseReason, String) {
    let answer = conn.recv::<ServerMsg>(Some(Duration::from_secs(10)));
    let (reason, detail) = match answer {
        Ok((ServerMsg::Refused { reason, detail }, _)) => (reason, detail),
        other => panic!("a silent connection was not refused: {other:?}"),
    };
    let after = conn.recv::<ServerMsg>(Some(Duration::from_secs(10)));
    assert!(
        matches!(after, Err(agentwire_shm::control::ControlError::Closed)),
        "the refused connection was left open: {after:?}"
    );
    (reason, detail)
}

#[test]
fn strangers_are_refused_at_accept_and_hold_no_handshake_slot() {
    // More silent strangers than there are handshake slots: were they admitted to their
    // handshake before the allow-list check, they would hold every slot for a whole step.
    const STRANGERS: usize = agentwire_router::HANDSHAKES_PENDING_MAX + 16;
    raise_fd_limit();
    let config = TestRouterConfig {
        allow: agentwire_router::server::AllowList::nobody(),
        ..TestRouterConfig::new(socket("strangers"))
    };
    let r = TestRouter::start(config).unwrap();
    let path = r.socket_path().to_path_buf();
    let strangers: Vec<ControlConn> = (0..STRANGERS)
        .map(|_| ControlConn::connect(&path).unwrap())
        .collect();
    // Each is told why and closed without having sent a byte.
    let uid = rustix::process::getuid().as_raw();
    for stranger in &strangers {
        let (reason, detail) = refusal_of_a_silent_connection(stranger);
        assert_eq!(reason, RefuseReason::NotPermitted, "{detail}");
        assert!(detail.contains(&format!("uid {uid}")), "{detail}");
    }
    let stats = r.stats();
    assert_eq!(stats.handshakes_timed_out.load(Ordering::Relaxed), 0);
    assert!(stats.handshakes_refused.load(Ordering::Relaxed) >= STRANGERS as u64);
    // Allowed from now on: an agent connects at once, the strangers' sockets still open here.
    let policy = agentwire_router::policy::Policy::open();
    r.control().reload(
        agentwire_router::server::AllowList::current_user(),
        policy,
        None,
    );
    let p = path.clone();
    let agent = within(Duration::from_secs(4), "an allowed agent", move || {
        connect_once_allowed(&p)
    });
    assert!(agent.id() > 0);
    drop(strangers);
}

/// Connects an agent, trying again while the router has not applied a reloaded allow-list
/// yet (refused as `NotPermitted`); any other failure fails the test.
fn connect_once_allowed(path: &std::path::Path) -> Agent {
    loop {
        match Agent::builder("allowed").socket(path).connect() {
            Ok(agent) => return agent,
            Err(ClientError::Refused {
                reason: RefuseReason::NotPermitted,
                ..
            }) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("an allowed agent could not connect: {e}"),
        }
    }
}

/// Waits (10 s watchdog) until the router holds `pending` connections in their handshake.
fn wait_for_pending(r: &TestRouter, pending: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.stats().handshakes_pending.load(Ordering::Relaxed) != pending {
        assert!(
            Instant::now() < deadline,
            "watchdog: {} connections in their handshake, expected {pending}",
            r.stats().handshakes_pending.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn one_uids_silent_connections_take_only_its_share_of_handshakes() {
    // All tests run as one uid: a small limit stands for the default's share of the slots.
    const LIMIT: usize = 4;
    let config = TestRouterConfig {
        handshakes_per_uid_max: LIMIT,
        ..TestRouterConfig::new(socket("per-uid"))
    };
    let r = TestRouter::start(config).unwrap();
    let path = r.socket_path().to_path_buf();
    let silent: Vec<ControlConn> = (0..LIMIT)
        .map(|_| ControlConn::connect(&path).unwrap())
        .collect();
    wait_for_pending(&r, LIMIT as u64);
    // The next connection of that uid, an agent's, is refused at once and says why.
    let err = within(Duration::from_secs(4), "the refusal", {
        let p = path.clone();
        move || {
            Agent::builder("crowded-out")
                .socket(&p)
                .connect()
                .unwrap_err()
        }
    });
    let uid = rustix::process::getuid().as_raw();
    match err {
        ClientError::Refused {
            reason: RefuseReason::PerUidLimit,
            detail,
        } => assert!(
            detail.contains(&format!("uid {uid} already has {LIMIT} connections"))
                && detail.contains("handshakes_per_uid_max"),
            "{detail}"
        ),
        other => panic!("expected a per-uid refusal, got {other}"),
    }
    // Connections beyond are refused and closed too, and take no slot: the router's slots
    // stay free for other users.
    let beyond: Vec<ControlConn> = (0..16)
        .map(|_| ControlConn::connect(&path).unwrap())
        .collect();
    for conn in &beyond {
        let (reason, detail) = refusal_of_a_silent_connection(conn);
        assert_eq!(reason, RefuseReason::PerUidLimit, "{detail}");
    }
    assert_eq!(
        r.stats().handshakes_pending.load(Ordering::Relaxed),
        LIMIT as u64
    );
    assert!(r.stats().connections_over_uid_limit.load(Ordering::Relaxed) >= 17);
    // Once the silent ones close, that uid connects again.
    drop(silent);
    wait_for_pending(&r, 0);
    let agent = Agent::builder("back").socket(&path).connect().unwrap();
    assert!(agent.id() > 0);
    // Registered agents do not count against the handshake limit.
    let more: Vec<Agent> = (0..LIMIT)
        .map(|i| {
            Agent::builder(&format!("more-{i}"))
                .socket(&path)
                .connect()
                .unwrap()
        })
        .collect();
    assert_eq!(r.agent_count(), LIMIT + 1);
    drop((beyond, more, agent));
}

#[test]
fn one_uids_agents_are_bounded_when_agents_per_uid_max_is_set() {
    let config = TestRouterConfig {
        agents_per_uid_max: Some(2),
        ..TestRouterConfig::new(socket("agents-per-uid"))
    };
    let r = TestRouter::start(config).unwrap();
    let path = r.socket_path().to_path_buf();
    let first = Agent::builder("one").socket(&path).connect().unwrap();
    let _second = Agent::builder("two").socket(&path).connect().unwrap();
    let err = Agent::builder("three").socket(&path).connect().unwrap_err();
    match err {
        ClientError::Refused {
            reason: RefuseReason::PerUidLimit,
            detail,
        } => assert!(
            detail.contains("already has 2 agents") && detail.contains("agents_per_uid_max"),
            "{detail}"
        ),
        other => panic!("expected a per-uid refusal, got {other}"),
    }
    // One leaves: another takes its place.
    first.close();
    let deadline = Instant::now() + Duration::from_secs(10);
    let third = loop {
        match Agent::builder("three").socket(&path).connect() {
            Ok(agent) => break agent,
            Err(ClientError::Refused {
                reason: RefuseReason::PerUidLimit,
                ..
            }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("the freed place was not given back: {e}"),
        }
    };
    assert!(third.id() > 0);
}
