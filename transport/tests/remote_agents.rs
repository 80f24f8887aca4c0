//! Remote agents over TCP (TLS 1.3 with client certificates, or plaintext when allowed)
//! against a real router: frames both ways with local shared-memory agents, the refusals
//! (no certificate, a wrong CA, an expired certificate, plaintext on a TLS listener, an
//! identity not allowed), deadlines, limits and hostile bytes.

mod common;

use agentwire_router::policy::{Pattern, Rule};
use agentwire_shm::control::{CapabilitySpec, ClientMsg, RefuseReason, Registration, ServerMsg};
use agentwire_shm::wire::{Destination, FrameHeader, FrameKind};
use agentwire_transport::config::ListenerConfig;
use agentwire_transport::identity::{IdentityRule, IdentityRules};
use common::*;
use std::io::{Read, Write};
use std::time::Duration;

const FRAMES: u32 = 2_000;

#[test]
fn frames_flow_both_ways_between_a_tls_remote_agent_and_a_local_agent() {
    let pki = Pki::new();
    let (router, listener) = start(
        "tls-both-ways",
        ListenerConfig::tls(loopback(), pki.files.clone()),
    );
    let far_cert = pki.ca.client("far");
    let mut far =
        RawClient::tls(listener.local_addr(), pki.client_config(Some(&far_cert))).unwrap();
    let mut registration = named("far");
    registration.topics.push("news".into());
    let far_id = far.register(registration).unwrap();
    let mut near = local_agent(&router, "near");
    let near_id = near.id();

    // Local to remote: unicast, in order, payloads intact.
    for i in 0..FRAMES {
        near.send(far_id, &i.to_le_bytes()).unwrap();
    }
    for i in 0..FRAMES {
        let (header, payload) = far.recv_frame().unwrap();
        assert_eq!(header.kind(), FrameKind::Send);
        assert_eq!(header.source(), near_id);
        assert_eq!(header.destination(), far_id);
        assert_eq!(payload, i.to_le_bytes());
    }
    // A publish reaches the remote subscriber.
    near.publish("news", b"extra").unwrap();
    let (header, payload) = far.recv_frame().unwrap();
    assert_eq!(
        (header.kind(), payload.as_slice()),
        (FrameKind::Publish, &b"extra"[..])
    );
    // The copy keeps its topic (a gateway knows its subscriber by the topic).
    let news = near.topic_id("news").unwrap();
    assert_eq!(header.destination_kind(), Destination::Topic(news));

    // Remote to local: the source is stamped by the daemon (a forged one is overwritten).
    for i in 0..FRAMES {
        let header = FrameHeader::new(FrameKind::Send, 4242, near_id, 4);
        far.send_frame(header, &i.to_le_bytes()).unwrap();
    }
    for i in 0..FRAMES {
        let m = near
            .recv(Some(Duration::from_secs(10)))
            .unwrap()
            .expect("a frame");
        assert_eq!(
            m.header().source(),
            far_id,
            "the source is the remote agent's id"
        );
        assert_eq!(m.payload(), i.to_le_bytes());
    }
    let stats = listener.stats();
    assert_eq!(stats.agents_registered, 1);
    assert_eq!(stats.frames_in, u64::from(FRAMES));
    assert!(stats.frames_out > u64::from(FRAMES));
    assert!(
        stats.socket_writes < stats.frames_out,
        "frames are batched on the wire: {stats:?}"
    );
}

#[test]
fn a_remote_agent_requests_and_discovers_like_a_local_one() {
    let pki = Pki::new();
    let (router, listener) = start(
        "tls-requests",
        ListenerConfig::tls(loopback(), pki.files.clone()),
    );
    let mut service = agentwire_shm::client::Agent::builder("ocr-service")
        .socket(router.socket_path())
        .capability("ocr", "1.2.0")
        .connect()
        .unwrap();
    let cert = pki.ca.client("asker");
    let mut far = RawClient::tls(listener.local_addr(), pki.client_config(Some(&cert))).unwrap();
    let far_id = far.register(named("asker")).unwrap();
    far.send_control(&ClientMsg::Discover {
        capability: "ocr".into(),
        requirement: "^1".into(),
    })
    .unwrap();
    let ServerMsg::Agents { agents } = far.recv_control().unwrap() else {
        panic!("expected Agents")
    };
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].name, "ocr-service");
    // A request to it, answered by the local service.
    let request =
        FrameHeader::new(FrameKind::Request, 0, agents[0].agent_id, 5).with_correlation(77);
    far.send_frame(request, b"scan?").unwrap();
    let m = service
        .recv(Some(Duration::from_secs(10)))
        .unwrap()
        .expect("the request");
    assert_eq!(m.header().source(), far_id);
    let request = *m.header();
    drop(m);
    service.respond(&request, b"text!").unwrap();
    let (header, payload) = far.recv_frame().unwrap();
    assert_eq!(header.kind(), FrameKind::Response);
    assert_eq!(header.correlation(), 77);
    assert_eq!(payload, b"text!");
    // And the router lists it as an agent behind a gateway.
    assert!(router.control().agent_count() >= 3);
}

/// The client's side of a refused TLS connection: the handshake, Hello, or the first read
/// fails; the error text is what a user would see.
fn refused_tls(
    listener: &agentwire_transport::server::RemoteListener,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> String {
    match RawClient::tls(listener.local_addr(), config) {
        Err(e) => e.to_string(),
        Ok(mut client) => match client.register(named("intruder")) {
            Ok(id) => panic!("registered as {id}: should have been refused"),
            Err(Refusal::Io(e)) => e.to_string(),
            Err(Refusal::Refused(reason, detail)) => format!("{reason:?}: {detail}"),
        },
    }
}

#[test]
fn clients_without_a_valid_certificate_are_refused_with_a_clear_error() {
    let pki = Pki::new();
    let (_router, listener) = start(
        "tls-refusals",
        ListenerConfig::tls(loopback(), pki.files.clone()),
    );

    let no_certificate = refused_tls(&listener, pki.client_config(None));
    assert!(
        no_certificate.contains("CertificateRequired"),
        "{no_certificate}"
    );

    let rogue = Ca::new("rogue CA");
    let rogue_cert = rogue.client("rogue");
    let wrong_ca = refused_tls(&listener, pki.client_config(Some(&rogue_cert)));
    assert!(wrong_ca.contains("UnknownCA"), "{wrong_ca}");

    let expired = pki.ca.expired_client("old");
    let expired = refused_tls(&listener, pki.client_config(Some(&expired)));
    assert!(expired.contains("CertificateExpired"), "{expired}");

    // A client that trusts another CA refuses the daemon (its own check, for completeness).
    let good = pki.ca.client("good");
    let distrusting = client_config(&rogue, Some(&good));
    let e = RawClient::tls(listener.local_addr(), distrusting)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");

    // Plaintext on a TLS listener: told so, in the protocol it speaks.
    let mut plain = RawClient::plain(listener.local_addr());
    match plain.register(named("plain")) {
        Err(Refusal::Refused(RefuseReason::NotPermitted, detail)) => {
            assert!(detail.contains("requires TLS"), "{detail}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    eventually("the refusals to be counted", || {
        let s = listener.stats();
        s.tls_handshakes_failed == 4 && s.plaintext_refused == 1
    });
    assert_eq!(listener.stats().agents_registered, 0);
    // A valid client is still served.
    let mut ok = RawClient::tls(listener.local_addr(), pki.client_config(Some(&good))).unwrap();
    ok.register(named("good")).unwrap();
}

#[test]
fn an_identity_may_register_only_what_its_rule_allows() {
    let pki = Pki::new();
    let mut config = ListenerConfig::tls(loopback(), pki.files.clone());
    config.identities = IdentityRules::new(vec![IdentityRule {
        identities: vec![Pattern::new("cn:ocr-*").unwrap()],
        allow: Rule {
            names: vec![Pattern::new("ocr-*").unwrap()],
            capabilities: vec![Pattern::new("ocr").unwrap()],
            subscribe: vec![Pattern::new("scans.*").unwrap()],
            publish: vec![Pattern::new("results").unwrap()],
            ..Rule::default()
        },
    }]);
    let (_router, listener) = start("identity-rules", config);
    let addr = listener.local_addr();
    let ocr = pki.ca.client("ocr-7");

    let mut billing = Registration {
        name: "ocr-7".into(),
        capabilities: vec![CapabilitySpec {
            name: "billing".into(),
            version: "1.0.0".into(),
        }],
        ..Registration::default()
    };
    let mut c = RawClient::tls(addr, pki.client_config(Some(&ocr))).unwrap();
    match c.register(billing.clone()) {
        Err(Refusal::Refused(RefuseReason::NotPermitted, detail)) => {
            assert!(detail.contains("capability \"billing\""), "{detail}")
        }
        other => panic!("expected NotPermitted, got {other:?}"),
    }

    let stranger = pki.ca.client("billing-1");
    let mut c = RawClient::tls(addr, pki.client_config(Some(&stranger))).unwrap();
    match c.register(named("ocr-8")) {
        Err(Refusal::Refused(RefuseReason::NotPermitted, detail)) => {
            assert!(detail.contains("match no"), "{detail}")
        }
        other => panic!("expected NotPermitted, got {other:?}"),
    }

    billing.capabilities[0].name = "ocr".into();
    billing.topics.push("scans.new".into());
    let mut c = RawClient::tls(addr, pki.client_config(Some(&ocr))).unwrap();
    c.register(billing).unwrap();
    c.send_control(&ClientMsg::Subscribe {
        topic: "payroll".into(),
    })
    .unwrap();
    let ServerMsg::Error { detail } = c.recv_control().unwrap() else {
        panic!("a subscription outside the rule is refused")
    };
    assert!(detail.contains("payroll"), "{detail}");
    c.send_control(&ClientMsg::ResolveTopic {
        topic: "results".into(),
    })
    .unwrap();
    assert!(matches!(
        c.recv_control().unwrap(),
        ServerMsg::TopicId { .. }
    ));
    let s = listener.stats();
    assert_eq!((s.handshakes_refused, s.control_refused), (2, 1), "{s:?}");
}

#[test]
fn an_identity_may_send_and_publish_only_where_its_rule_allows() {
    use agentwire_shm::client::decode_nack;
    use agentwire_shm::control::NackReason;
    let pki = Pki::new();
    let mut config = ListenerConfig::tls(loopback(), pki.files.clone());
    config.identities = IdentityRules::new(vec![IdentityRule {
        identities: vec![Pattern::new("cn:ocr-*").unwrap()],
        allow: Rule {
            names: vec![Pattern::new("ocr-*").unwrap()],
            publish: vec![Pattern::new("results").unwrap()],
            send: vec![Pattern::new("store").unwrap()],
            ..Rule::default()
        },
    }]);
    let (router, listener) = start("identity-data-path", config);
    let mut store = local_agent(&router, "store");
    let mut billing = agentwire_shm::client::Agent::builder("billing")
        .socket(router.socket_path())
        .topic("payroll")
        .topic("results")
        .connect()
        .unwrap();
    let cert = pki.ca.client("ocr-7");
    let mut far = RawClient::tls(listener.local_addr(), pki.client_config(Some(&cert))).unwrap();
    let far_id = far.register(named("ocr-7")).unwrap();
    // A guessed topic id: the daemon's id for "payroll", which the rule does not allow.
    let payroll = billing.topic_id("payroll").unwrap();
    let results = billing.topic_id("results").unwrap();

    let not_permitted = |far: &mut RawClient, what: &str| {
        let (header, payload) = far.recv_frame().unwrap();
        assert_eq!(header.kind(), FrameKind::Nack, "{what}: {header:?}");
        let body = decode_nack(&payload).expect("a nack body");
        assert_eq!(
            body.reason,
            NackReason::NotPermitted as u32,
            "{what}: {body:?}"
        );
    };
    far.send_frame(
        FrameHeader::new(FrameKind::Send, far_id, billing.id(), 4),
        b"bill",
    )
    .unwrap();
    not_permitted(&mut far, "a send to billing");
    far.send_frame(
        FrameHeader::new(FrameKind::Publish, far_id, payroll, 3),
        b"pay",
    )
    .unwrap();
    not_permitted(&mut far, "a publish on payroll");
    // What the rule allows still flows, and nothing refused arrived first.
    far.send_frame(
        FrameHeader::new(FrameKind::Send, far_id, store.id(), 2),
        b"ok",
    )
    .unwrap();
    let m = store
        .recv(Some(Duration::from_secs(10)))
        .unwrap()
        .expect("the send to store");
    assert_eq!((m.header().source(), m.payload()), (far_id, &b"ok"[..]));
    far.send_frame(
        FrameHeader::new(FrameKind::Publish, far_id, results, 3),
        b"res",
    )
    .unwrap();
    let m = billing
        .recv(Some(Duration::from_secs(10)))
        .unwrap()
        .expect("the publish");
    assert_eq!(
        m.payload(),
        b"res",
        "only the allowed publish reaches billing"
    );
}

#[test]
fn a_silent_connection_is_closed_at_its_handshake_deadline_without_stalling_others() {
    let mut config = ListenerConfig::plaintext(loopback());
    config.handshake_timeout = Duration::from_millis(300);
    let (_router, listener) = start("handshake-deadline", config);
    let mut silent = std::net::TcpStream::connect(listener.local_addr()).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Another client is served while the silent one waits.
    let mut other = RawClient::plain(listener.local_addr());
    other.register(named("other")).unwrap();
    let mut byte = [0u8; 1];
    let read = silent.read(&mut byte);
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "closed by the daemon: {read:?}"
    );
    eventually("the timeout to be counted", || {
        listener.stats().handshake_timeouts == 1
    });
}

#[test]
fn malformed_bytes_close_only_their_connection() {
    let (router, listener) = start("malformed", ListenerConfig::plaintext(loopback()));
    let mut good = RawClient::plain(listener.local_addr());
    let good_id = good.register(named("good")).unwrap();
    // Garbage before and after registration.
    let mut garbage = std::net::TcpStream::connect(listener.local_addr()).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    garbage.write_all(&[0xffu8; 256]).unwrap();
    let mut byte = [0u8; 1];
    assert!(matches!(garbage.read(&mut byte), Ok(0) | Err(_)));
    let mut registered = RawClient::plain(listener.local_addr());
    registered.register(named("soon-bad")).unwrap();
    registered.wire.write_all(&[0xee; 64]).unwrap();
    registered.wire.flush().unwrap();
    assert!(registered.recv_frame().is_err(), "closed after garbage");
    eventually("both to be counted", || {
        listener.stats().malformed_closed == 2
    });
    // The registered one left the router; the good one still works.
    let mut near = local_agent(&router, "near");
    near.send(good_id, b"still here").unwrap();
    let (_, payload) = good.recv_frame().unwrap();
    assert_eq!(payload, b"still here");
}

#[test]
fn connections_over_the_limit_are_closed_and_counted() {
    let mut config = ListenerConfig::plaintext(loopback());
    config.connections_max = 2;
    let (_router, listener) = start("limit", config);
    let mut a = RawClient::plain(listener.local_addr());
    a.register(named("a")).unwrap();
    let mut b = RawClient::plain(listener.local_addr());
    b.register(named("b")).unwrap();
    let mut c = RawClient::plain(listener.local_addr());
    assert!(c.register(named("c")).is_err());
    assert_eq!(listener.stats().connections_over_limit, 1);
    drop(a);
    eventually("a's connection to close", || {
        listener.stats().connections_active == 1
    });
    let mut d = RawClient::plain(listener.local_addr());
    d.register(named("d")).unwrap();
}

#[test]
fn a_remote_agent_that_leaves_is_forgotten_by_the_router() {
    let (router, listener) = start("leave", ListenerConfig::plaintext(loopback()));
    let before = router.control().agent_count();
    let mut far = RawClient::plain(listener.local_addr());
    far.register(named("far")).unwrap();
    eventually("the remote agent and its gateway", || {
        router.control().agent_count() == before + 2
    });
    far.send_control(&ClientMsg::Goodbye).unwrap();
    eventually("both to leave", || router.control().agent_count() == before);
    let mut again = RawClient::plain(listener.local_addr());
    again.register(named("far")).unwrap();
    drop(again);
    eventually("a dropped connection to leave too", || {
        router.control().agent_count() == before
    });
}

#[test]
fn the_client_library_names_the_certificate_problem() {
    use agentwire_shm::client::{Agent, ClientError};
    let pki = Pki::new();
    let (_router, listener) = start(
        "client-errors",
        ListenerConfig::tls(loopback(), pki.files.clone()),
    );
    let addr = listener.local_addr().to_string();
    let connect = |cert: Option<&Issued>| {
        Agent::builder("far")
            .remote(&addr)
            .tls_server_name("localhost")
            .tls(pki.client_config(cert))
            .connect()
    };
    let expired = pki.ca.expired_client("old");
    for (cert, cause) in [
        (Some(&expired), "CertificateExpired"),
        (None, "CertificateRequired"),
    ] {
        match connect(cert) {
            Err(e @ ClientError::Remote { .. }) => {
                let text = e.to_string();
                assert!(text.contains(cause) && text.contains(&addr), "{text}");
            }
            other => panic!("expected a Remote error naming {cause}, got {other:?}"),
        }
    }
    let good = pki.ca.client("far");
    let agent = connect(Some(&good)).unwrap();
    assert!(agent.id() > 0);
}

#[test]
fn a_connection_silent_both_ways_is_closed_at_its_idle_deadline() {
    let mut config = ListenerConfig::plaintext(loopback());
    config.idle_timeout = Duration::from_millis(300);
    let (router, listener) = start("idle-deadline", config);
    let mut quiet = RawClient::plain(listener.local_addr());
    let quiet_id = quiet.register(named("quiet")).unwrap();
    // A connection that only receives is not idle: frames keep going out to it.
    let mut listening = RawClient::plain(listener.local_addr());
    let listening_id = listening.register(named("listening")).unwrap();
    let mut near = local_agent(&router, "near");
    for i in 0..8u32 {
        near.send(listening_id, &i.to_le_bytes()).unwrap();
        let (_, payload) = listening.recv_frame().unwrap();
        assert_eq!(payload, i.to_le_bytes());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The silent one was closed meanwhile, counted, and its agent left the router.
    assert!(quiet.recv_frame().is_err(), "closed by the daemon");
    eventually("the idle close to be counted", || {
        listener.stats().idle_closed == 1
    });
    assert!(
        near.send(quiet_id, b"gone").is_ok(),
        "a send is accepted, then nacked"
    );
    let (_, payload) = {
        near.send(listening_id, b"still").unwrap();
        listening.recv_frame().unwrap()
    };
    assert_eq!(payload, b"still");
}
