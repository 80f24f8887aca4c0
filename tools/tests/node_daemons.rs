//! Two real `agentwire serve` daemons linked by `[node]` with TLS files made at test time:
//! agents on each find the other's through discovery and exchange unicast and publishes;
//! `agentwire links` (text and `--json`), the `links.*` status counters and the Prometheus
//! endpoint show the link; a `[node]` section without TLS is refused at start.

mod common;

use agentwire_shm::client::Agent;
use agentwire_transport::test_pki::Pki;
use common::{cli_json, http_get, scratch, serve_command, Served};
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

fn config(pki: &Pki, name: &str, peer: &str, peer_addr: &str) -> String {
    let files = pki.node_files(name);
    format!(
        r#"
[node]
name = "{name}"
listen = "127.0.0.1:0"
tls_certificate = "{}"
tls_key = "{}"
tls_ca = "{}"

[[node.peer]]
name = "{peer}"
addr = "{peer_addr}"
"#,
        files.certificate_chain.display(),
        files.private_key.display(),
        files.client_ca.display()
    )
}

fn start(dir: &Path, name: &str, text: &str) -> (Served, std::path::PathBuf) {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    let socket = dir.join(format!("{name}.sock"));
    let served = Served::start(&socket, &["--config", file.to_str().unwrap()]);
    (served, socket)
}

/// Waits (bounded) until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn fact(served: &Served, key: &str) -> Option<String> {
    served
        .status()
        .info
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn discover(agent: &mut Agent, capability: &str) -> u32 {
    let mut id = None;
    eventually(&format!("{capability} offered"), || {
        id = agent
            .discover(capability, "*")
            .unwrap()
            .first()
            .map(|a| a.agent_id);
        id.is_some()
    });
    id.unwrap()
}

#[test]
fn two_daemons_linked_over_tls_exchange_unicast_and_publishes() {
    let dir = scratch("node-daemons");
    let pki = Pki::new();
    // b accepts (its name sorts after a's); a dials b's bound address.
    let (b, b_socket) = start(&dir, "b", &config(&pki, "b", "a", "127.0.0.1:9"));
    let mut b_listen = None;
    eventually("b's link address", || {
        b_listen = fact(&b, "node_listen");
        b_listen.is_some()
    });
    let b_listen = b_listen.unwrap();
    let (a, a_socket) = start(&dir, "a", &config(&pki, "a", "b", &b_listen));
    eventually("the link up", || {
        let json = cli_json(&["links"], &a_socket);
        json["links"][0]["state"] == "up"
    });

    let mut a1 = Agent::builder("a1")
        .socket(&a_socket)
        .capability("a-cap", "1.0.0")
        .connect()
        .unwrap();
    let mut b1 = Agent::builder("b1")
        .socket(&b_socket)
        .capability("b-cap", "1.0.0")
        .topic("news")
        .connect()
        .unwrap();
    let b1_on_a = discover(&mut a1, "b-cap");
    let a1_on_b = discover(&mut b1, "a-cap");
    for i in 0..500u32 {
        a1.send(b1_on_a, &i.to_le_bytes()).unwrap();
    }
    for i in 0..500u32 {
        let m = b1.recv(WAIT).unwrap().expect("a frame from a1");
        assert_eq!(m.header().source(), a1_on_b);
        assert_eq!(m.payload(), i.to_le_bytes());
    }
    b1.send(a1_on_b, b"back").unwrap();
    assert_eq!(a1.recv(WAIT).unwrap().unwrap().payload(), b"back");
    // A publish on a reaches b1 once the link's subscription for b is in place.
    let mut crossed = false;
    for _ in 0..100 {
        a1.publish("news", b"headline").unwrap();
        if b1.recv(Some(Duration::from_millis(100))).unwrap().is_some() {
            crossed = true;
            break;
        }
    }
    assert!(crossed, "no publish crossed the link");

    // `agentwire links`, JSON and text; the proxies in `agentwire agents`.
    let json = cli_json(&["links"], &a_socket);
    assert_eq!(json["node"], "a", "{json}");
    let link = &json["links"][0];
    assert_eq!(link["peer"], "b", "{json}");
    assert!(link["frames_out"].as_u64().unwrap() >= 500, "{json}");
    assert!(link["peer_agents"].as_u64().unwrap() >= 1, "{json}");
    // b1's global id is b's name and its id there; the proxy's id is what a1 addresses.
    let b1_global = link["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "b1")
        .cloned()
        .unwrap_or_else(|| panic!("b1 not among b's agents: {json}"));
    assert_eq!(b1_global["id_there"], u64::from(b1.id()), "{json}");
    assert_eq!(b1_global["id_here"], u64::from(b1_on_a), "{json}");
    assert_eq!(b1_global["global_id"], format!("b:{}", b1.id()), "{json}");
    assert_eq!(b1_global["proxy"], "b/b1", "{json}");
    let listed = std::process::Command::new(common::AGENTWIRE)
        .args(["links", "--agents", "--socket"])
        .arg(&a_socket)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&format!("b:{}", b1.id())) && l.contains("b/b1")),
        "{listed}"
    );
    let text = std::process::Command::new(common::AGENTWIRE)
        .args(["links", "--socket"])
        .arg(&a_socket)
        .output()
        .unwrap();
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("node a"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with('b') && l.contains("up")),
        "{text}"
    );
    let agents = cli_json(&["agents"], &a_socket);
    let proxy = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "b/b1")
        .cloned()
        .unwrap_or_else(|| panic!("no proxy of b1 on a: {agents}"));
    assert_eq!(proxy["remote"], true);
    assert_eq!(proxy["node"], "b", "{agents}");
    assert_eq!(proxy["id_there"], u64::from(b1.id()), "{agents}");
    assert_eq!(proxy["global_id"], format!("b:{}", b1.id()), "{agents}");
    let local = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "a1")
        .cloned()
        .unwrap();
    assert!(local["global_id"].is_null(), "{agents}");

    let status = cli_json(&["status"], &a_socket);
    assert_eq!(status["counters"]["links.links_up"], 1, "{status}");
    let metrics = fact(&a, "metrics").expect("metrics address");
    let (code, body) = http_get(&metrics);
    assert_eq!(code, 200);
    assert!(body.contains("agentwire_links_links_up 1"), "{body}");
    assert!(body.contains("agentwire_links_frames_out_total"), "{body}");

    // b stops: a's link goes down and b's agents leave a's discovery.
    drop(b1);
    b.terminate();
    eventually("b's agents gone from a", || {
        a1.discover("b-cap", "*").unwrap().is_empty()
    });
    eventually("the link down", || {
        cli_json(&["links"], &a_socket)["links"][0]["state"] != "up"
    });
    a.terminate();
}

#[test]
fn a_node_section_without_tls_is_refused_at_start_naming_the_key() {
    let dir = scratch("node-no-tls");
    let file = dir.join("agentwire.toml");
    std::fs::write(&file, "[node]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let out = serve_command(&dir.join("aw.sock"))
        .args(["--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("node.tls_certificate"), "{stderr}");
}
