//! Three real `agentwire serve` daemons (built with the cargo feature `nats`) through a
//! nats-server started on loopback: each sees the others' agents in discovery, a publish
//! on one reaches subscribers on the others, and a daemon killed with SIGKILL disappears
//! from the others' discovery once its registry entry expires.
#![cfg(feature = "nats")]

mod common;

use agentwire_shm::client::Agent;
use agentwire_transport::nats_server::NatsServer;
use common::{cli_json, scratch, Served};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn start(dir: &Path, name: &str, url: &str) -> (Served, PathBuf) {
    let file = dir.join(format!("{name}.toml"));
    let text = format!("[node]\nname = \"{name}\"\nnats_url = \"{url}\"\nnats_ttl_ms = 1500\n");
    std::fs::write(&file, text).unwrap();
    let socket = dir.join(format!("{name}.sock"));
    let served = Served::start(&socket, &["--config", file.to_str().unwrap()]);
    (served, socket)
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn three_daemons_through_nats_share_agents_and_publishes_and_forget_a_killed_one() {
    let server = NatsServer::start().expect("a nats-server");
    let dir = scratch("nats-daemons");
    let (_a, a_socket) = start(&dir, "a", server.url());
    let (_b, b_socket) = start(&dir, "b", server.url());
    let (c, c_socket) = start(&dir, "c", server.url());
    let mut a1 = Agent::builder("a1")
        .socket(&a_socket)
        .topic("news")
        .connect()
        .unwrap();
    let _b1 = Agent::builder("b1")
        .socket(&b_socket)
        .capability("b-cap", "1.0.0")
        .connect()
        .unwrap();
    let mut c1 = Agent::builder("c1")
        .socket(&c_socket)
        .capability("c-cap", "1.0.0")
        .connect()
        .unwrap();
    eventually("b1 and c1 offered on a", || {
        let b = a1.discover("b-cap", "*").unwrap();
        let c = a1.discover("c-cap", "*").unwrap();
        b.first().is_some_and(|x| x.name == "b/b1") && c.first().is_some_and(|x| x.name == "c/c1")
    });
    // A publish on c reaches a1 once the subscription crossed.
    let mut crossed = false;
    for _ in 0..200 {
        c1.publish("news", b"headline").unwrap();
        if let Some(m) = a1.recv(Some(Duration::from_millis(50))).unwrap() {
            assert_eq!(m.payload(), b"headline");
            crossed = true;
            break;
        }
    }
    assert!(crossed, "no publish crossed NATS");
    let links = cli_json(&["links"], &a_socket);
    assert_eq!(links["node"], "a", "{links}");
    assert_eq!(links["nats"]["url"], server.url(), "{links}");
    let status = cli_json(&["status"], &a_socket);
    assert_eq!(status["counters"]["nats.connected"], 1, "{status}");

    // c is killed (no goodbye): its entry expires and a forgets its agents.
    drop(c1);
    let mut c = c;
    c.kill();
    eventually("c's agents gone from a", || {
        a1.discover("c-cap", "*").unwrap().is_empty()
    });
    assert!(!a1.discover("b-cap", "*").unwrap().is_empty());
}
