//! Remote agents of a real `agentwire serve`: `[remote]` with TLS files made at test time, a
//! remote agent built with `Agent::builder(..).remote(..).tls(..)` exchanging frames with a
//! local one, the counters in `agentwire status --json` and in Prometheus, and a `[remote]`
//! section without TLS refused at start with the key named.

mod common;

use agentwire_shm::client::{Agent, ClientError};
use agentwire_shm::control::RefuseReason;
use agentwire_transport::test_pki::Pki;
use common::{cli_json, http_get, scratch, serve_command, Served};
use std::time::Duration;

fn config(pki: &Pki) -> String {
    format!(
        r#"
[remote]
listen = "127.0.0.1:0"
tls_certificate = "{}"
tls_key = "{}"
tls_client_ca = "{}"

[[remote.identity]]
identities = ["cn:sensor-*"]
names = ["sensor-*"]
publish = ["readings"]
send = ["near"]
"#,
        pki.files.certificate_chain.display(),
        pki.files.private_key.display(),
        pki.files.client_ca.display()
    )
}

/// A status fact, once the daemon has set it (the control socket answers while the daemon
/// is still starting its listener).
fn info(served: &Served, key: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = served.status();
        if let Some((_, v)) = status.info.iter().find(|(k, _)| k == key) {
            return v.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {key} in {:?}",
            status.info
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_remote_agent_over_tls_talks_with_a_local_one_through_the_daemon() {
    let dir = scratch("remote-daemon");
    let pki = Pki::new();
    let file = dir.join("agentwire.toml");
    std::fs::write(&file, config(&pki)).unwrap();
    let socket = dir.join("aw.sock");
    let served = Served::start(&socket, &["--config", file.to_str().unwrap()]);
    let addr = info(&served, "remote_listen");

    let mut near = Agent::builder("near")
        .socket(&socket)
        .topic("readings")
        .connect()
        .unwrap();
    let cert = pki.ca.client("sensor-1");
    let mut far = Agent::builder("sensor-1")
        .remote(&addr)
        .tls(pki.client_config(Some(&cert)))
        .connect()
        .unwrap();
    for i in 0..500u32 {
        far.publish("readings", &i.to_le_bytes()).unwrap();
    }
    for i in 0..500u32 {
        let m = near
            .recv(Some(Duration::from_secs(10)))
            .unwrap()
            .expect("a reading");
        assert_eq!(m.header().source(), far.id());
        assert_eq!(m.payload(), i.to_le_bytes());
    }
    near.send(far.id(), b"thanks").unwrap();
    let m = far
        .recv(Some(Duration::from_secs(10)))
        .unwrap()
        .expect("the answer");
    assert_eq!(m.payload(), b"thanks");
    drop(m);

    // The rule's `send` patterns hold on the data path: near, yes; anyone else is nacked.
    let stranger = Agent::builder("stranger")
        .socket(&socket)
        .connect()
        .unwrap();
    far.send(stranger.id(), b"psst").unwrap();
    let m = far
        .recv(Some(Duration::from_secs(10)))
        .unwrap()
        .expect("the nack");
    let body = m.to_owned().nack_body().expect("a nack");
    assert_eq!(
        body.reason,
        agentwire_shm::control::NackReason::NotPermitted as u32,
        "{body:?}"
    );
    drop(m);
    far.send(near.id(), b"hello").unwrap();
    let m = near
        .recv(Some(Duration::from_secs(10)))
        .unwrap()
        .expect("the allowed send");
    assert_eq!(m.payload(), b"hello");
    drop(m);

    // A certificate whose rule does not allow the name is refused, with the reason.
    let other = pki.ca.client("sensor-2");
    let refused = Agent::builder("billing")
        .remote(&addr)
        .tls(pki.client_config(Some(&other)))
        .connect();
    match refused {
        Err(ClientError::Refused {
            reason: RefuseReason::NotPermitted,
            detail,
        }) => assert!(detail.contains("billing"), "{detail}"),
        other => panic!("expected NotPermitted, got {other:?}"),
    }

    // `agentwire agents` marks the remote agent.
    let agents = cli_json(&["agents"], &socket);
    let remote_of = |name: &str| {
        agents["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .map(|a| a["remote"].as_bool().unwrap())
    };
    assert_eq!(remote_of("sensor-1"), Some(true), "{agents}");
    assert_eq!(remote_of("near"), Some(false), "{agents}");
    let text = std::process::Command::new(common::AGENTWIRE)
        .args(["agents", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("sensor-1"))
        .expect("listed");
    assert!(line.contains("remote"), "{text}");

    let json = cli_json(&["status"], &socket);
    let counters = &json["counters"];
    assert!(
        counters["remote.frames_in"].as_u64().unwrap() >= 500,
        "{counters}"
    );
    assert_eq!(
        counters["remote.handshakes_refused"].as_u64(),
        Some(1),
        "{counters}"
    );
    let metrics = info(&served, "metrics");
    let (code, body) = http_get(&metrics);
    assert_eq!(code, 200);
    assert!(body.contains("agentwire_remote_frames_in_total"), "{body}");
    assert!(
        body.contains("agentwire_remote_connections_active 1"),
        "{body}"
    );
    drop(far);
    served.terminate();
}

#[test]
fn a_remote_section_without_tls_is_refused_at_start_naming_the_key() {
    let dir = scratch("remote-no-tls");
    let file = dir.join("agentwire.toml");
    std::fs::write(&file, "[remote]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let out = serve_command(&dir.join("aw.sock"))
        .args(["--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("remote.tls_certificate"), "{stderr}");
    assert!(stderr.contains("allow_plaintext"), "{stderr}");
}
