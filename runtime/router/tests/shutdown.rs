//! Shutdown with agents sending: every frame a send accepted (returned `Ok`) is delivered,
//! dead-lettered or nacked, and a send once the router stopped accepting fails with
//! `Disconnected`. Conservation: accepted = received + nacked, exactly.

use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::client::{Agent, ClientError};
use agentwire_shm::idle::IdleStrategy;
use agentwire_shm::wire::FrameKind;
use std::time::{Duration, Instant};

fn router(name: &str, shards: usize) -> TestRouter {
    let socket = std::env::temp_dir()
        .join(format!("aw-shutdown-{}-{name}", std::process::id()))
        .join("agentwire.sock");
    TestRouter::start(TestRouterConfig {
        shards,
        ring_capacity_bytes: 4096,
        defer_capacity_bytes: 4096,
        idle: IdleStrategy::Spin,
        ..TestRouterConfig::new(socket)
    })
    .unwrap()
}

/// Drains `agent`'s rx ring: (frames received, nacks received), until the ring stays empty
/// after the router closed the segment.
fn drain(agent: &mut Agent) -> (u64, u64) {
    let (mut frames, mut nacks) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Closed before the ring is found empty: nothing more can arrive after that read.
        let closed = agent
            .segment()
            .control()
            .state
            .0
            .load(std::sync::atomic::Ordering::Acquire)
            == agentwire_shm::segment::state::CLOSED;
        let kind = match agent.try_recv() {
            Ok(Some(msg)) => Some(msg.header().kind()),
            Ok(None) | Err(ClientError::Disconnected) => None,
            Err(e) => panic!("{e}"),
        };
        match kind {
            Some(FrameKind::Nack) => nacks += 1,
            Some(_) => frames += 1,
            None if closed => return (frames, nacks),
            None => {
                assert!(
                    Instant::now() < deadline,
                    "the router never closed the segment"
                );
                std::thread::yield_now();
            }
        }
    }
}

fn every_accepted_frame_is_accounted_for(shards: usize) {
    let r = router(&format!("conserve-{shards}"), shards);
    let connect = |name: &str| {
        Agent::builder(name)
            .socket(r.socket_path())
            .idle(IdleStrategy::Spin)
            .send_timeout(Duration::from_secs(30))
            .connect()
            .unwrap()
    };
    let mut sender = connect("sender");
    let mut receiver = connect("receiver");
    let to = receiver.id();
    // A slow receiver: frames pile up in its ring, its deferral and the sender's ring.
    let reader = std::thread::spawn(move || {
        let mut got = 0u64;
        for _ in 0..2_000 {
            if let Ok(Some(_)) = receiver.try_recv() {
                got += 1;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        let (rest, _) = drain(&mut receiver);
        got + rest
    });
    let observer = r.control().observer();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        let start = Instant::now();
        r.stop();
        start.elapsed()
    });
    let mut accepted = 0u64;
    let mut nacked = 0u64;
    let mut refused = 0u64;
    let payload = [7u8; 200];
    loop {
        match sender.send(to, &payload) {
            Ok(()) => accepted += 1,
            Err(ClientError::Disconnected | ClientError::Backpressure(_)) => {
                refused += 1;
                break;
            }
            Err(e) => panic!("{e}"),
        }
        while let Ok(Some(msg)) = sender.try_recv() {
            if msg.header().kind() == FrameKind::Nack {
                nacked += 1;
            }
        }
    }
    // Once refused, every send is refused.
    assert!(matches!(
        sender.send(to, &payload),
        Err(ClientError::Disconnected)
    ));
    let (_, late_nacks) = drain(&mut sender);
    nacked += late_nacks;
    let received = reader.join().unwrap();
    let took = stopper.join().unwrap();
    let counters = observer.counters();
    let get = |name: &str| counters.iter().find(|(n, _)| n == name).map_or(0, |c| c.1);
    eprintln!(
        "{shards} shard(s): {accepted} accepted, {received} received, {nacked} nacked, \
         shutdown took {took:?}; router: in {} delivered {} dropped {} nacks {} replies dropped {} rejected {} no-agent {} deferred {}",
        get("frames_in"),
        get("frames_delivered"),
        get("frames_dropped"),
        get("nacks_destination_full"),
        get("replies_dropped"),
        get("frames_rejected"),
        get("nacks_no_such_agent"),
        get("frames_deferred")
    );
    assert_eq!(refused, 1);
    assert!(accepted > 0);
    assert_eq!(
        accepted,
        received + nacked,
        "an accepted frame was neither delivered nor nacked"
    );
}

#[test]
fn every_frame_accepted_before_shutdown_is_delivered_or_nacked() {
    every_accepted_frame_is_accounted_for(1);
}

#[test]
fn every_frame_accepted_before_shutdown_is_delivered_or_nacked_across_shards() {
    every_accepted_frame_is_accounted_for(2);
}
