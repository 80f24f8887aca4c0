//! A router with two shards: agents spread over them at registration, and every kind of
//! route works between agents of different shards through the links between shard cores
//! (unicast with per-flow order, acks and nacks, fan-out, anycast, feature routes), a slow
//! destination on one shard stalls only the flows to it, and nothing accepted is lost.

use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::client::{query_status, Agent, ClientError, SendOptions};
use agentwire_shm::control::NackReason;
use agentwire_shm::idle::IdleStrategy;
use agentwire_shm::wire::FrameKind;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

/// A fresh socket path for the test `name`.
fn socket(name: &str) -> std::path::PathBuf {
    std::env::temp_dir()
        .join(format!("aw-shards-{}-{name}", std::process::id()))
        .join("agentwire.sock")
}

/// A router of `shards` shards that park for up to 3 s at a time (longer than any watchdog
/// here, so a missed wakeup fails the test).
fn parked(name: &str, shards: usize) -> TestRouter {
    TestRouter::start(TestRouterConfig {
        shards,
        idle: IdleStrategy::Park {
            park_timeout_ns: 3_000_000_000,
        },
        ..TestRouterConfig::new(socket(name))
    })
    .unwrap()
}

fn sharded(name: &str) -> TestRouter {
    TestRouter::start(TestRouterConfig {
        shards: 2,
        idle: IdleStrategy::Spin,
        ..TestRouterConfig::new(socket(name))
    })
    .unwrap()
}

fn connect(r: &TestRouter, name: &str) -> Agent {
    Agent::builder(name)
        .socket(r.socket_path())
        .idle(IdleStrategy::Spin)
        .connect()
        .unwrap()
}

/// The shard serving each agent id, from the status report.
fn shard_of(r: &TestRouter, id: u32) -> u32 {
    let report = query_status(r.socket_path()).unwrap();
    report
        .agents
        .iter()
        .find(|a| a.agent_id == id)
        .expect("agent listed")
        .shard
}

#[test]
fn agents_spread_over_shards_and_unicast_crosses_in_order_with_acks_and_nacks() {
    let r = sharded("unicast");
    let mut a = connect(&r, "a");
    let mut b = connect(&r, "b");
    assert_ne!(
        shard_of(&r, a.id()),
        shard_of(&r, b.id()),
        "least loaded: the second agent goes to the other shard"
    );
    let report = query_status(r.socket_path()).unwrap();
    assert_eq!(report.shards.len(), 2);
    assert!(report.shards.iter().all(|s| s.agents == 1));
    // 200k frames across shards, checked in order.
    let n = 200_000u64;
    let b_id = b.id();
    let receiver = std::thread::spawn(move || {
        for expected in 0..n {
            let m = b.recv(WAIT).unwrap().expect("frame");
            assert_eq!(m.payload(), expected.to_le_bytes(), "lost or reordered");
        }
        b
    });
    for seq in 0..n {
        a.send(b_id, &seq.to_le_bytes()).unwrap();
    }
    let mut b = receiver.join().unwrap();
    let forwarded: u64 = (0..2)
        .map(|s| {
            r.shard_stats(s)
                .unwrap()
                .frames_forwarded
                .load(Ordering::Relaxed)
        })
        .sum();
    assert!(forwarded >= n, "went over a link: {forwarded}");
    // An ack owed across shards comes back from the destination's shard.
    a.send_with(
        FrameKind::Send,
        b_id,
        b"ack me",
        SendOptions {
            ack: true,
            correlation_id: 9,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(b.recv(WAIT).unwrap().unwrap().payload(), b"ack me");
    let ack = a.recv(WAIT).unwrap().unwrap().to_owned();
    assert_eq!(
        (ack.header().kind(), ack.header().correlation()),
        (FrameKind::Ack, 9)
    );
    // A nack for a frame to nobody, and a reply from b back to a across shards.
    b.send(999, b"x").unwrap();
    let nack = b.recv(WAIT).unwrap().unwrap().to_owned();
    assert_eq!(
        nack.nack_body().unwrap().reason,
        NackReason::NoSuchAgent as u32
    );
    b.send(a.id(), b"back").unwrap();
    assert_eq!(a.recv(WAIT).unwrap().unwrap().payload(), b"back");
}

#[test]
fn fan_out_anycast_and_feature_routes_reach_agents_of_both_shards() {
    let r = sharded("fanout");
    let mut subs: Vec<Agent> = (0..3)
        .map(|i| {
            Agent::builder(&format!("s{i}"))
                .socket(r.socket_path())
                .topic("news")
                .capability("ocr", "2.0.0")
                .feature(5)
                .idle(IdleStrategy::Spin)
                .connect()
                .unwrap()
        })
        .collect();
    let mut p = connect(&r, "pub");
    let shards: std::collections::BTreeSet<u32> =
        subs.iter().map(|s| shard_of(&r, s.id())).collect();
    assert_eq!(shards.len(), 2, "subscribers on both shards");
    for i in 0u8..50 {
        p.publish("news", &[i]).unwrap();
    }
    for s in subs.iter_mut() {
        for i in 0u8..50 {
            assert_eq!(s.recv(WAIT).unwrap().unwrap().payload(), [i]);
        }
    }
    for i in 0u8..30 {
        p.anycast("ocr", "^2", &[i]).unwrap();
        p.send_feature(5, &[100 + i]).unwrap();
    }
    let mut per_agent = [0usize; 3];
    let deadline = Instant::now() + Duration::from_secs(10);
    while per_agent.iter().sum::<usize>() < 60 {
        assert!(Instant::now() < deadline, "watchdog: {per_agent:?} of 60");
        for (k, s) in subs.iter_mut().enumerate() {
            per_agent[k] += usize::from(s.try_recv().unwrap().is_some());
        }
    }
    assert!(
        per_agent.iter().all(|&n| n > 0),
        "load spread over all three: {per_agent:?}"
    );
}

#[test]
fn a_slow_destination_on_another_shard_stalls_only_its_flows_and_loses_nothing() {
    let r = TestRouter::start(TestRouterConfig {
        shards: 2,
        idle: IdleStrategy::Spin,
        ring_capacity_bytes: 4096,
        defer_capacity_bytes: 16 * 1024,
        ..TestRouterConfig::new(socket("slow"))
    })
    .unwrap();
    let mut sender = Agent::builder("sender")
        .socket(r.socket_path())
        .idle(IdleStrategy::Spin)
        .send_timeout(Duration::from_millis(100))
        .connect()
        .unwrap();
    let mut slow = connect(&r, "slow");
    let _filler = connect(&r, "filler"); // shard 0 again
    let mut other = connect(&r, "other"); // shard 1, like `slow`
    assert_eq!(shard_of(&r, slow.id()), shard_of(&r, other.id()));
    assert_ne!(shard_of(&r, sender.id()), shard_of(&r, slow.id()));
    let mut sent = 0u64;
    let err = loop {
        match sender.send(slow.id(), &sent.to_le_bytes()) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(
            sent < 1_000_000,
            "bounded rings and deferrals cannot absorb this"
        );
    };
    assert!(matches!(err, ClientError::Backpressure(_)), "{err}");
    let deferred: u64 = (0..2)
        .map(|s| {
            r.shard_stats(s)
                .unwrap()
                .frames_deferred
                .load(Ordering::Relaxed)
        })
        .sum();
    assert!(
        deferred > 0,
        "frames waited in deferrals before backpressure"
    );
    // Everything accepted arrives, in order, once the slow agent reads; a frame sent to
    // another agent of the same shard meanwhile gets through first.
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        for expected in 0..sent {
            let m = slow.recv(WAIT).unwrap().expect("accepted frame");
            assert_eq!(m.payload(), expected.to_le_bytes(), "lost or reordered");
        }
        assert!(slow
            .recv(Some(Duration::from_millis(100)))
            .unwrap()
            .is_none());
    });
    // The sender's lane is blocked behind the frame that met backpressure; a higher class
    // lane to `other` still flows across the same link.
    sender
        .send_with(
            FrameKind::Send,
            other.id(),
            b"not stuck",
            SendOptions {
                priority: 0,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(other.recv(WAIT).unwrap().unwrap().payload(), b"not stuck");
    reader.join().unwrap();
}

/// Parked shards wake for what crosses a link: with a 3 s park timeout on both shards, a
/// frame from an agent of one shard to an agent of the other, and the ack that comes back
/// over the other link, each arrive within the 2 s watchdog. The receiving shard sleeps on
/// its own doorbell, which the sending shard rings when it publishes the link. Before that
/// doorbell a parked shard noticed link records only when its park timed out.
#[test]
fn a_parked_shard_wakes_for_frames_and_acks_from_another_shard() {
    let r = parked("park", 2);
    let watchdog = Some(Duration::from_secs(2));
    let parker = |name: &str| {
        Agent::builder(name)
            .socket(r.socket_path())
            .idle(IdleStrategy::default())
            .connect()
            .unwrap()
    };
    let mut a = parker("parked-a");
    let mut b = parker("parked-b");
    assert_ne!(shard_of(&r, a.id()), shard_of(&r, b.id()));
    for round in 0..6u64 {
        let (from, to) = if round % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        // Let both shards run out of work and park.
        std::thread::sleep(Duration::from_millis(20));
        let started = Instant::now();
        from.send_with(
            FrameKind::Send,
            to.id(),
            &round.to_le_bytes(),
            SendOptions {
                ack: true,
                correlation_id: round + 1,
                ..Default::default()
            },
        )
        .unwrap();
        let got = to.recv(watchdog).unwrap().map(|m| m.payload().to_vec());
        assert_eq!(
            got,
            Some(round.to_le_bytes().to_vec()),
            "round {round}: the receiving shard slept through the link ({:?})",
            started.elapsed()
        );
        let ack = from
            .recv(watchdog)
            .unwrap()
            .map(|m| (m.header().kind(), m.header().correlation()));
        assert_eq!(
            ack,
            Some((FrameKind::Ack, round + 1)),
            "round {round}: the sending shard slept through the ack on the link back"
        );
    }
}

/// A router whose shard parks for 3 s with no agent still takes a new agent at once: the
/// registration command rings the shard's doorbell (it used to nap 1 ms at a time; it now
/// parks until rung, so without that ring it would sleep the whole 3 s).
#[test]
fn a_parked_shard_with_no_agent_takes_a_new_one_at_once() {
    let r = parked("park-empty", 1);
    // The shard has parked with nothing to serve.
    std::thread::sleep(Duration::from_millis(50));
    let mut a = Agent::builder("late-a")
        .socket(r.socket_path())
        .connect()
        .unwrap();
    let a_id = a.id();
    a.send(a_id, b"to myself").unwrap();
    let got = a
        .recv(Some(Duration::from_secs(2)))
        .unwrap()
        .map(|m| m.payload().to_vec());
    assert_eq!(
        got,
        Some(b"to myself".to_vec()),
        "the new agent waited out a park"
    );
}
