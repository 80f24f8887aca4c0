//! Two nodes (two routers, two sockets, two link ports) linked over TLS with certificates
//! made at test time: registries exchanged, unicast, publish, anycast and feature routes
//! forwarded both ways with nothing lost, duplicated or reordered, and a link that drops
//! takes the peer's agents out of discovery until it comes back.

mod common;

use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::client::Agent;
use agentwire_shm::wire::FrameKind;
use agentwire_transport::node::config::{NodeConfig, PeerConfig};
use agentwire_transport::node::status::LinkState;
use agentwire_transport::node::NodeLinks;
use common::*;
use std::time::Duration;

const FRAMES: u32 = 2_000;
const WAIT: Option<Duration> = Some(Duration::from_secs(10));

struct Node {
    router: TestRouter,
    links: NodeLinks,
}

fn node(test: &str, name: &str, config: NodeConfig) -> Node {
    let router = TestRouter::start(TestRouterConfig::new(socket_path(&format!(
        "{test}-{name}"
    ))))
    .unwrap();
    let links = NodeLinks::start(config, router.control().endpoint_registrar()).unwrap();
    Node { router, links }
}

/// Nodes `a` (dials) and `b` (accepts), TLS both ways.
fn pair(test: &str, pki: &Pki) -> (Node, Node) {
    pair_with(test, pki, |_| {})
}

/// [`pair`] with both nodes' configurations changed by `tweak`.
fn pair_with(test: &str, pki: &Pki, tweak: impl Fn(&mut NodeConfig)) -> (Node, Node) {
    let mut b_config = NodeConfig::tls("b", loopback(), pki.node_files("b"));
    tweak(&mut b_config);
    // `a` dials `b`, so this address is never used.
    b_config
        .peers
        .push(PeerConfig::new("a", "127.0.0.1:9".parse().unwrap()));
    let b = node(test, "b", b_config);
    let mut a_config = NodeConfig::tls("a", loopback(), pki.node_files("a"));
    a_config
        .peers
        .push(PeerConfig::new("b", b.links.local_addr().unwrap()));
    // Redial soon after a drop (the default backs off to 5 s).
    a_config.retry_max = Duration::from_millis(400);
    tweak(&mut a_config);
    let a = node(test, "a", a_config);
    eventually("both ends of the link up", || {
        [&a, &b]
            .iter()
            .all(|n| n.links.links()[0].state == LinkState::Up)
    });
    (a, b)
}

fn agent(
    node: &Node,
    name: &str,
    configure: impl FnOnce(agentwire_shm::client::AgentBuilder) -> agentwire_shm::client::AgentBuilder,
) -> Agent {
    configure(Agent::builder(name).socket(node.router.socket_path()))
        .connect()
        .unwrap()
}

/// The id on `asker`'s node of the agent offering `capability` (a proxy when it is on the
/// other node), once discovery offers it.
fn discover_one(asker: &mut Agent, capability: &str) -> u32 {
    let mut found = None;
    eventually(&format!("{capability} discovered"), || {
        found = asker
            .discover(capability, "*")
            .unwrap()
            .first()
            .map(|a| a.agent_id);
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn two_nodes_forward_unicast_publish_anycast_and_features_both_ways() {
    let pki = Pki::new();
    let (a, b) = pair("both-ways", &pki);
    let mut a1 = agent(&a, "a1", |b| {
        b.capability("a1-cap", "1.0.0").topic("alerts")
    });
    let mut a2 = agent(&a, "a2", |b| b.topic("news").capability("sum", "1.0.0"));
    let mut b1 = agent(&b, "b1", |b| b.capability("b1-cap", "1.0.0").topic("news"));
    let mut b2 = agent(&b, "b2", |b| {
        b.capability("ocr", "2.1.0")
            .capability("sum", "1.0.0")
            .feature(77)
    });

    // Registries: each side discovers the other's agents (proxies named `node/agent`).
    let b1_on_a = discover_one(&mut a1, "b1-cap");
    let a1_on_b = discover_one(&mut b1, "a1-cap");
    let named = a1.discover("b1-cap", "*").unwrap();
    assert_eq!(named[0].name, "b/b1");

    // Unicast A to B, in order, payloads intact; the source is a1's proxy on B.
    for i in 0..FRAMES {
        a1.send(b1_on_a, &i.to_le_bytes()).unwrap();
    }
    for i in 0..FRAMES {
        let m = b1.recv(WAIT).unwrap().expect("unicast from a1");
        let h = m.header();
        assert_eq!(
            (h.kind(), h.source()),
            (FrameKind::Send, a1_on_b),
            "frame {i}: {h:?}"
        );
        assert_eq!(
            m.payload(),
            i.to_le_bytes(),
            "frame {i}: a {:?} b {:?}",
            a.links.links(),
            b.links.links()
        );
    }
    // And back, B to A.
    for i in 0..FRAMES {
        b1.send(a1_on_b, &i.to_le_bytes()).unwrap();
    }
    for i in 0..FRAMES {
        let m = a1.recv(WAIT).unwrap().expect("unicast from b1");
        assert_eq!(m.header().source(), b1_on_a);
        assert_eq!(m.payload(), i.to_le_bytes(), "frame {i}");
    }

    // Publish on A: a2 (local) and b1 (remote) get every frame once, in order. The link
    // carries one copy; nothing comes back.
    eventually("b's subscription to news known on a", || {
        a.links
            .handle()
            .counters()
            .iter()
            .any(|(n, v)| *n == "registry_updates_in" && *v > 0)
            && a1.topic_id("news").is_ok()
    });
    // The node proxy subscribes once the announcement arrived: wait for it to be in place
    // by publishing probes until b1 sees one.
    let mut probes = 0u32;
    loop {
        a1.publish("news", b"probe").unwrap();
        probes += 1;
        if let Some(m) = b1.recv(Some(Duration::from_millis(100))).unwrap() {
            assert_eq!(m.payload(), b"probe");
            break;
        }
        assert!(probes < 100, "the publish never crossed the link");
    }
    // Drain the rest of the probes from both subscribers.
    while b1.recv(Some(Duration::from_millis(200))).unwrap().is_some() {}
    while a2.recv(Some(Duration::from_millis(200))).unwrap().is_some() {}
    let out_before = a.links.links()[0].frames_out;
    for i in 0..FRAMES {
        a1.publish("news", &i.to_le_bytes()).unwrap();
    }
    a1.publish("news", b"end").unwrap();
    for sub in [&mut b1, &mut a2] {
        for i in 0..FRAMES {
            let m = sub.recv(WAIT).unwrap().expect("publish");
            assert_eq!(m.header().kind(), FrameKind::Publish);
            assert_eq!(m.payload(), i.to_le_bytes(), "publish {i}");
        }
        assert_eq!(sub.recv(WAIT).unwrap().unwrap().payload(), b"end");
    }
    // One copy per node: FRAMES + 1 publishes crossed, whatever the subscriber count.
    assert_eq!(
        a.links.links()[0].frames_out - out_before,
        u64::from(FRAMES) + 1
    );

    // Publish on B to a topic an agent of A subscribes to.
    let mut crossed = false;
    for _ in 0..100 {
        b2.publish("alerts", b"fire").unwrap();
        if let Some(m) = a1.recv(Some(Duration::from_millis(100))).unwrap() {
            assert_eq!(m.payload(), b"fire");
            crossed = true;
            break;
        }
    }
    assert!(crossed, "a publish on b never reached a1");
    while a1.recv(Some(Duration::from_millis(200))).unwrap().is_some() {}

    // Anycast: `ocr` exists on B only, so A's request crosses; `sum` exists on both, so
    // A's stays local.
    discover_one(&mut a1, "ocr");
    a1.anycast("ocr", "^2", b"scan").unwrap();
    {
        let m = b2.recv(WAIT).unwrap().expect("anycast crossed");
        assert_eq!(m.payload(), b"scan");
        assert_eq!(m.header().source(), a1_on_b);
    }
    for _ in 0..20 {
        a1.anycast("sum", "*", b"add").unwrap();
    }
    for _ in 0..20 {
        assert_eq!(a2.recv(WAIT).unwrap().expect("local sum").payload(), b"add");
    }
    assert!(b2.recv(Some(Duration::from_millis(200))).unwrap().is_none());
    // Unless the request says any node will do: then b2 competes on equal terms.
    for _ in 0..20 {
        a1.anycast_any_node("sum", "*", b"anywhere").unwrap();
    }
    let (mut on_a, mut on_b) = (0, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while on_a + on_b < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "{on_a} + {on_b} of 20 arrived"
        );
        if a2.recv(Some(Duration::from_millis(50))).unwrap().is_some() {
            on_a += 1;
        }
        if b2.recv(Some(Duration::from_millis(50))).unwrap().is_some() {
            on_b += 1;
        }
    }
    assert!(on_b > 0, "no any-node anycast went to b ({on_a} on a)");

    // A feature served on B only.
    a1.send_feature(77, b"feature").unwrap();
    assert_eq!(b2.recv(WAIT).unwrap().unwrap().payload(), b"feature");

    let counters = a.links.handle().counters();
    let get = |name: &str| counters.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(get("links_up"), 1);
    assert_eq!(get("frames_unknown_source"), 0);
    assert_eq!(get("frames_unknown_destination"), 0);
    let report = &a.links.links()[0];
    assert!(report.rtt_us.is_some(), "{report:?}");
    assert!(report.peer_agents >= 2, "{report:?}");
}

#[test]
fn a_link_that_drops_takes_the_peers_agents_out_of_discovery_until_it_is_back() {
    let pki = Pki::new();
    let (a, b) = pair("drop", &pki);
    let mut a1 = agent(&a, "a1", |b| b);
    let _b1 = agent(&b, "b1", |b| b.capability("b1-cap", "1.0.0"));
    discover_one(&mut a1, "b1-cap");
    let b_addr = b.links.local_addr().unwrap();
    // B's links stop: A sees the link drop and forgets B's agents.
    let Node {
        router: b_router,
        links: b_links,
    } = b;
    drop(b_links);
    eventually("b's agents gone from a's discovery", || {
        a1.discover("b1-cap", "*").unwrap().is_empty()
    });
    eventually("a retrying", || a.links.links()[0].state != LinkState::Up);
    assert!(a.links.links()[0].last_error.is_some());
    // B's links start again on the same port: A redials and B's agents are back.
    let mut b_config = NodeConfig::tls("b", b_addr, pki.node_files("b"));
    b_config
        .peers
        .push(PeerConfig::new("a", "127.0.0.1:9".parse().unwrap()));
    let b_links = NodeLinks::start(b_config, b_router.control().endpoint_registrar()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while a1.discover("b1-cap", "*").unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "b1 not back: a {:?} b {:?}",
            a.links.links(),
            b_links.links()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(a.links.links()[0].retries >= 1);
}

/// A router's counters that are not zero, for failure messages.
fn counters(router: &TestRouter) -> String {
    router
        .control()
        .stats()
        .snapshot()
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_receiver_that_stops_draining_backpressures_the_link_without_dropping_it() {
    // Pings every 100 ms, a link silent for 1 s is dead: b1 stands still three times that.
    let (a, b) = pair_with("backpressure", &Pki::new(), |c| {
        c.ping_interval = Duration::from_millis(100);
        c.dead_after = Duration::from_secs(1);
    });
    let mut a1 = agent(&a, "a1", |b| b.capability("a1-cap", "1.0.0"));
    let mut b1 = agent(&b, "b1", |b| {
        b.capability("b1-cap", "1.0.0").ring_capacity(4096)
    });
    let b1_on_a = discover_one(&mut a1, "b1-cap");
    discover_one(&mut b1, "a1-cap");
    // More than b1's ring, b's deferral and b's gateway ring hold: b's link stops reading
    // and the rest waits in TCP and on a.
    const BACKLOG: u32 = 40_000;
    let sender = std::thread::spawn(move || {
        for i in 0..BACKLOG {
            a1.send(b1_on_a, &i.to_le_bytes()).unwrap();
        }
        a1
    });
    eventually("b's link reader held by the router", || {
        b.router
            .control()
            .stats()
            .snapshot()
            .iter()
            .any(|(n, v)| *n == "frames_deferred" && *v > 0)
    });
    // The scenario, not a timing assertion: the receiver stands still past `dead_after`.
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..BACKLOG {
        let m = b1.recv(WAIT).unwrap().expect("every frame, in order");
        if m.payload() != i.to_le_bytes() {
            let got = m.payload().to_vec();
            drop(m);
            // What became of the missing frames: both routers' counters, and the nacks a1
            // was sent.
            let mut a1 = sender.join().unwrap();
            let mut nacks = Vec::new();
            while let Some(n) = a1.recv(Some(Duration::from_millis(200))).unwrap() {
                if nacks.len() < 3 {
                    nacks.push(format!("{:?}", n.to_owned().nack_body()));
                }
            }
            panic!(
                "frame {i}: got {got:?}; router a: {}; router b: {}; nacks to a1: {nacks:?}; \
                 links a {:?} b {:?}",
                counters(&a.router),
                counters(&b.router),
                a.links.links(),
                b.links.links()
            );
        }
    }
    drop(sender.join().unwrap());
    for (node, report) in [("a", a.links.links()), ("b", b.links.links())] {
        assert_eq!(report[0].state, LinkState::Up, "{node}: {report:?}");
        assert_eq!(report[0].retries, 0, "{node}: {report:?}");
        assert!(report[0].last_error.is_none(), "{node}: {report:?}");
    }
}

#[test]
fn a_node_not_in_the_peer_list_or_with_the_wrong_certificate_is_refused() {
    let pki = Pki::new();
    let b = node(
        "refused",
        "b",
        NodeConfig::tls("b", loopback(), pki.node_files("b")),
    );
    // `a` is not in b's peer list.
    let mut a_config = NodeConfig::tls("a", loopback(), pki.node_files("a"));
    a_config
        .peers
        .push(PeerConfig::new("b", b.links.local_addr().unwrap()));
    let a = node("refused", "a", a_config);
    eventually("a's dial refused", || {
        a.links.links()[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("not in this node's peer list"))
    });
    // `c` is listed on d, but presents a certificate made for another node.
    let mut d_config = NodeConfig::tls("d", loopback(), pki.node_files("d"));
    d_config
        .peers
        .push(PeerConfig::new("c", "127.0.0.1:9".parse().unwrap()));
    let d = node("refused", "d", d_config);
    let mut c_config = NodeConfig::tls("c", loopback(), pki.node_files("mallory"));
    c_config
        .peers
        .push(PeerConfig::new("d", d.links.local_addr().unwrap()));
    let c = node("refused", "c", c_config);
    eventually("c's dial refused", || {
        c.links.links()[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("cn:mallory"))
    });
    eventually("d counted the refusal", || {
        d.links
            .handle()
            .counters()
            .iter()
            .any(|(n, v)| *n == "links_refused" && *v > 0)
    });
    // A plaintext node against TLS ones is refused too.
    let mut p_config = NodeConfig::plaintext("c", loopback());
    p_config
        .peers
        .push(PeerConfig::new("d", d.links.local_addr().unwrap()));
    let p = node("refused-plain", "c", p_config);
    eventually("the plaintext dial refused", || {
        p.links.links()[0].retries >= 1
    });
    assert_ne!(p.links.links()[0].state, LinkState::Up);
}

#[test]
fn a_link_killed_mid_stream_leaves_every_frame_delivered_or_nacked() {
    use agentwire_shm::client::SendOptions;
    const TOTAL: u64 = 20_000;
    const CHUNK: u64 = 100;
    let pki = Pki::new();
    let (a, b) = pair("kill", &pki);
    // Room in a1's ring for a nack per frame in flight when the link drops (a nack to a
    // full ring is dropped and counted by the router, as `replies_dropped`).
    let mut a1 = agent(&a, "a1", |b| b.ring_capacity(1 << 22));
    let mut b1 = agent(&b, "b1", |b| b.capability("b1-cap", "1.0.0"));
    let b1_on_a = discover_one(&mut a1, "b1-cap");
    let Node {
        router: _b_router,
        links: b_links,
    } = b;
    let mut b_links = Some(b_links);
    let mut delivered: Vec<u64> = Vec::new();
    let mut nacked = std::collections::BTreeSet::new();
    let drain = |a1: &mut Agent,
                 b1: &mut Agent,
                 delivered: &mut Vec<u64>,
                 nacked: &mut std::collections::BTreeSet<u64>| {
        while let Some(m) = b1.try_recv().unwrap() {
            let i = u64::from_le_bytes(m.payload().try_into().unwrap());
            delivered.push(i);
        }
        while let Some(m) = a1.try_recv().unwrap() {
            assert_eq!(m.header().kind(), FrameKind::Nack);
            nacked.insert(m.header().correlation() - 1);
        }
    };
    let mut sent = 0u64;
    let send_chunk = |a1: &mut Agent, sent: &mut u64| {
        for _ in 0..CHUNK {
            let options = SendOptions {
                correlation_id: *sent + 1,
                ..SendOptions::default()
            };
            a1.send_with(FrameKind::Send, b1_on_a, &sent.to_le_bytes(), options)
                .unwrap();
            *sent += 1;
        }
    };
    // Streaming until b1 has 2,000 frames (at most half the frames sent by then).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while delivered.len() < 2_000 {
        if sent < TOTAL / 2 {
            send_chunk(&mut a1, &mut sent);
        }
        drain(&mut a1, &mut b1, &mut delivered, &mut nacked);
        assert!(
            std::time::Instant::now() < deadline,
            "{} delivered",
            delivered.len()
        );
    }
    // B's side of the link dies mid-stream (its executor stops; the socket closes) while
    // a1 goes on sending.
    send_chunk(&mut a1, &mut sent);
    drop(b_links.take());
    while sent < TOTAL {
        send_chunk(&mut a1, &mut sent);
        drain(&mut a1, &mut b1, &mut delivered, &mut nacked);
    }
    // Every frame is accounted for: delivered to b1 or nacked to a1 (a frame sent but not
    // confirmed when the link dropped may be both: it is nacked as "may have been
    // delivered").
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        drain(&mut a1, &mut b1, &mut delivered, &mut nacked);
        let accounted = (0..TOTAL)
            .filter(|i| nacked.contains(i) || delivered.binary_search(i).is_ok())
            .count() as u64;
        if accounted == TOTAL {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {TOTAL} frames accounted for ({} delivered, {} nacked); a: {:?} {:?}",
            accounted,
            delivered.len(),
            nacked.len(),
            a.links.handle().counters(),
            a.router.control().stats().snapshot()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Delivered in order, none twice.
    assert!(
        delivered.windows(2).all(|w| w[0] < w[1]),
        "reordered or duplicated"
    );
    assert!(delivered.len() >= 2_000 && !nacked.is_empty());
    let counters = a.links.handle().counters();
    let get = |name: &str| counters.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(get("frames_lost_link_down"), 0);
    assert!(get("frames_nacked_link_down") > 0);
}
