//! Endpoints other than shared-memory agents, served by the same duty cycle: an in-process
//! echo endpoint reached by feature id (on one shard and across two), and a gateway
//! endpoint standing for remote agents: unicast to a remote agent, anycast and feature
//! routes that choose one (the copy names it), one copy per publish for all its remote
//! subscribers, frames sent on a remote agent's behalf (the receiver sees the remote
//! agent as source, acks and nacks go back to it), and removal.

use agentwire_router::endpoint::{Endpoint, EndpointError, EndpointKind};
use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::client::{decode_nack, Agent, SendOptions};
use agentwire_shm::control::{NackReason, Registration};
use agentwire_shm::idle::IdleStrategy;
use agentwire_shm::wire::{Destination, FrameHeader, FrameKind};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

fn router(name: &str, shards: usize) -> TestRouter {
    let socket = std::env::temp_dir()
        .join(format!("aw-endpoints-{}-{name}", std::process::id()))
        .join("agentwire.sock");
    TestRouter::start(TestRouterConfig {
        shards,
        idle: IdleStrategy::Spin,
        ..TestRouterConfig::new(socket)
    })
    .unwrap()
}

fn identity(name: &str) -> Registration {
    Registration {
        name: name.into(),
        ..Default::default()
    }
}

/// Reads frames from `endpoint` until `want` arrived (watchdog [`WAIT`]); returns each one's
/// header and payload.
fn take(endpoint: &mut Endpoint, want: usize) -> Vec<(FrameHeader, Vec<u8>)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < want {
        assert!(
            Instant::now() < deadline,
            "{} of {want} frames arrived",
            got.len()
        );
        endpoint
            .read(64, |h, p| {
                got.push((*h, p.to_vec()));
            })
            .unwrap();
    }
    got
}

#[test]
fn an_in_process_echo_endpoint_answers_shm_agents_by_feature_on_one_and_two_shards() {
    for shards in [1, 2] {
        let r = router(&format!("echo-{shards}"), shards);
        let registration = Registration {
            features: vec![42],
            ..identity("echo")
        };
        let mut echo = r
            .control()
            .register_endpoint(registration, EndpointKind::InProcess)
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let server = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut served = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    served += echo
                        .read(32, |h, p| {
                            let reply = FrameHeader::new(
                                FrameKind::Response,
                                0,
                                h.source(),
                                p.len() as u32,
                            )
                            .with_correlation(h.correlation());
                            (reply, p.to_vec())
                        })
                        .unwrap();
                }
                served
            })
        };
        let mut agents: Vec<Agent> = (0..3)
            .map(|i| {
                Agent::builder(&format!("asker-{i}"))
                    .socket(r.socket_path())
                    .connect()
                    .unwrap()
            })
            .collect();
        for round in 0..50u64 {
            for agent in &mut agents {
                let options = SendOptions {
                    correlation_id: round + 1,
                    ..SendOptions::default()
                };
                agent
                    .send_feature_with(42, &round.to_le_bytes(), options)
                    .unwrap();
                let answer = agent.recv(Some(WAIT)).unwrap().expect("an echo");
                assert_eq!(answer.header().kind(), FrameKind::Response);
                assert_eq!(answer.header().correlation(), round + 1);
                assert_eq!(answer.payload(), round.to_le_bytes());
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(server.join().unwrap(), 150);
    }
}

#[test]
fn a_gateway_stands_for_remote_agents_in_every_kind_of_route() {
    let r = router("gateway", 2);
    let mut gw = r
        .control()
        .register_endpoint(identity("node-b"), EndpointKind::Gateway)
        .unwrap();
    let ocr = gw
        .add_remote(Registration {
            capabilities: vec![agentwire_shm::control::CapabilitySpec {
                name: "ocr".into(),
                version: "2.1.0".into(),
            }],
            topics: vec!["news".into()],
            ..identity("b/ocr")
        })
        .unwrap();
    let embed = gw
        .add_remote(Registration {
            features: vec![7],
            topics: vec!["news".into()],
            ..identity("b/embed")
        })
        .unwrap();
    let mut local = Agent::builder("local")
        .socket(r.socket_path())
        .connect()
        .unwrap();

    // Unicast to a remote agent: into the gateway's ring, addressed to it.
    local.send(ocr, b"to ocr").unwrap();
    // Anycast and feature routes choose a remote agent: the copy names it.
    local.anycast("ocr", "^2", b"any ocr").unwrap();
    local.send_feature(7, b"embed this").unwrap();
    // One copy of a publish for both remote subscribers.
    local.publish("news", b"headline").unwrap();
    // Same lane, so it comes after every copy of the publish.
    local.send(ocr, b"marker").unwrap();
    let got = take(&mut gw, 5);
    assert_eq!(got[4].1, b"marker", "a second copy of the publish: {got:?}");
    let find = |payload: &[u8]| {
        got.iter()
            .find(|(_, p)| p == payload)
            .unwrap_or_else(|| panic!("{:?} not delivered", String::from_utf8_lossy(payload)))
            .0
    };
    assert_eq!(find(b"to ocr").destination_kind(), Destination::Agent(ocr));
    assert_eq!(find(b"any ocr").destination_kind(), Destination::Agent(ocr));
    assert_eq!(
        find(b"embed this").destination_kind(),
        Destination::Agent(embed)
    );
    assert!(matches!(
        find(b"headline").destination_kind(),
        Destination::Topic(_)
    ));
    for (header, _) in &got {
        assert_eq!(header.source(), local.id());
    }
    // Sent on a remote agent's behalf: the receiver sees the remote agent as source, and
    // the ack comes back to the gateway addressed to it.
    let reply = FrameHeader::new(FrameKind::Send, embed, local.id(), 5)
        .with_flags(agentwire_shm::wire::FLAG_ACK_REQUESTED);
    gw.try_send(reply, b"hello").unwrap();
    let msg = local.recv(Some(WAIT)).unwrap().unwrap().to_owned();
    assert_eq!(
        (msg.header().source(), msg.payload()),
        (embed, &b"hello"[..])
    );
    let ack = take(&mut gw, 1);
    assert_eq!(ack[0].0.kind(), FrameKind::Ack);
    assert_eq!(ack[0].0.destination(), embed);
    // A source the gateway does not stand for is stamped with the gateway's own id.
    gw.try_send(
        FrameHeader::new(FrameKind::Send, 9_999, local.id(), 1),
        b"x",
    )
    .unwrap();
    let source = local.recv(Some(WAIT)).unwrap().unwrap().header().source();
    assert_eq!(source, gw.id());

    // A removed remote agent is unknown: a unicast to it is nacked.
    gw.remove_remote(ocr).unwrap();
    let deadline = Instant::now() + WAIT;
    while r.agent_count() != 3 {
        assert!(Instant::now() < deadline, "remote agent not removed");
        std::thread::sleep(Duration::from_millis(5));
    }
    local.send(ocr, b"gone").unwrap();
    let nack = local.recv(Some(WAIT)).unwrap().unwrap().to_owned();
    assert_eq!(nack.header().kind(), FrameKind::Nack);
    assert_eq!(
        decode_nack(nack.payload()).map(|b| b.reason),
        Some(NackReason::NoSuchAgent as u32)
    );
    // Dropping the gateway removes it and its remaining remote agent.
    drop(gw);
    let deadline = Instant::now() + WAIT;
    while r.agent_count() != 1 {
        assert!(Instant::now() < deadline, "gateway not removed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn only_a_gateway_has_remote_agents_and_the_agent_limit_counts_endpoints() {
    let socket = std::env::temp_dir()
        .join(format!("aw-endpoints-{}-limit", std::process::id()))
        .join("agentwire.sock");
    let r = TestRouter::start(TestRouterConfig {
        agents_max: 2,
        ..TestRouterConfig::new(socket)
    })
    .unwrap();
    let mut plain = r
        .control()
        .register_endpoint(identity("plain"), EndpointKind::InProcess)
        .unwrap();
    assert_eq!(
        plain.add_remote(identity("x")),
        Err(EndpointError::NotAGateway)
    );
    let mut gw = r
        .control()
        .register_endpoint(identity("gw"), EndpointKind::Gateway)
        .unwrap();
    match gw.add_remote(identity("one too many")) {
        Err(EndpointError::Refused(detail)) => assert!(detail.contains("2 agents max"), "{detail}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    match r
        .control()
        .register_endpoint(Registration::default(), EndpointKind::InProcess)
    {
        Err(EndpointError::Refused(detail)) => assert!(detail.contains("name"), "{detail}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
