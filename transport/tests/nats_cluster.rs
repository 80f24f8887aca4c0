//! Three nodes (three routers) through a real nats-server started on loopback: each sees
//! the others' agents in discovery (proxies `node/agent`), topic publishes reach the other
//! nodes' subscribers once each and in order, a unicast crosses, and a node that leaves
//! disappears from the others' discovery.

mod common;

use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::client::Agent;
use agentwire_transport::nats::{NatsCluster, NatsConfig};
use agentwire_transport::nats_server::NatsServer;
use common::*;
use std::time::Duration;

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

fn node(name: &str, server: &NatsServer) -> (TestRouter, NatsCluster) {
    let router =
        TestRouter::start(TestRouterConfig::new(socket_path(&format!("nats-{name}")))).unwrap();
    let mut config = NatsConfig::new(name, server.url());
    config.ttl = Duration::from_secs(2);
    let cluster = NatsCluster::start(config, router.control().endpoint_registrar(), None)
        .expect("joined NATS");
    (router, cluster)
}

fn agent(router: &TestRouter, name: &str) -> agentwire_shm::client::AgentBuilder {
    Agent::builder(name).socket(router.socket_path())
}

#[test]
fn three_nodes_through_nats_see_each_other_and_exchange_publishes() {
    let server = NatsServer::start().expect("a nats-server");
    let (a, a_nats) = node("a", &server);
    let (b, _b_nats) = node("b", &server);
    let (c, c_nats) = node("c", &server);
    let mut a1 = agent(&a, "a1").topic("news").connect().unwrap();
    let mut b1 = agent(&b, "b1")
        .capability("b-cap", "1.0.0")
        .topic("news")
        .connect()
        .unwrap();
    let mut c1 = agent(&c, "c1")
        .capability("c-cap", "1.0.0")
        .connect()
        .unwrap();

    // Discovery: a sees b's and c's agents.
    let mut b1_on_a = 0;
    eventually("b1 offered on a", || {
        let found = a1.discover("b-cap", "*").unwrap();
        b1_on_a = found.first().map_or(0, |f| f.agent_id);
        found.first().is_some_and(|f| f.name == "b/b1")
    });
    eventually("c1 offered on a", || {
        !a1.discover("c-cap", "*").unwrap().is_empty()
    });
    eventually("a seen by c", || c_nats.nodes().contains(&"a".to_string()));

    // A publish on c reaches a1 and b1 (one NATS message, fanned out on each node), once
    // each, in order; the first waits for the subscriptions to be in place.
    let mut crossed = 0;
    for _ in 0..200 {
        c1.publish("news", b"probe").unwrap();
        if a1.recv(Some(Duration::from_millis(50))).unwrap().is_some() {
            crossed += 1;
        }
        if crossed > 0 && b1.recv(Some(Duration::from_millis(50))).unwrap().is_some() {
            break;
        }
    }
    assert!(crossed > 0, "no publish crossed");
    while a1.recv(Some(Duration::from_millis(200))).unwrap().is_some() {}
    while b1.recv(Some(Duration::from_millis(200))).unwrap().is_some() {}
    for i in 0..500u32 {
        c1.publish("news", &i.to_le_bytes()).unwrap();
    }
    c1.publish("news", b"end").unwrap();
    for sub in [&mut a1, &mut b1] {
        for i in 0..500u32 {
            let m = sub.recv(WAIT).unwrap().expect("a publish from c");
            assert_eq!(m.payload(), i.to_le_bytes(), "publish {i}");
        }
        assert_eq!(sub.recv(WAIT).unwrap().unwrap().payload(), b"end");
    }

    // A unicast from a to b's agent crosses NATS; the reply comes back.
    a1.send(b1_on_a, b"hello b").unwrap();
    let source = {
        let m = b1.recv(WAIT).unwrap().expect("unicast from a1");
        assert_eq!(m.payload(), b"hello b");
        m.header().source()
    };
    b1.send(source, b"hello a").unwrap();
    assert_eq!(a1.recv(WAIT).unwrap().unwrap().payload(), b"hello a");

    // c leaves: its agents leave a's discovery.
    drop(c1);
    drop(c_nats);
    eventually("c's agents gone from a", || {
        a1.discover("c-cap", "*").unwrap().is_empty()
    });
    let stats = a_nats.stats_handle().snapshot();
    let get = |name: &str| stats.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(get("messages_malformed"), 0, "{stats:?}");
    drop(c);
}
