//! The client library against the in-process test router: handshake, refusals, unicast,
//! publish, request/response, anycast, discovery, acks and nacks, malformed frames,
//! reconnect, and agents in separate processes.

use agentwire_router::server::AllowList;
use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::client::{decode_nack, Agent, ClientError, SendOptions};
use agentwire_shm::control::{NackReason, RefuseReason};
use agentwire_shm::idle::IdleStrategy;
use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

fn socket(name: &str) -> PathBuf {
    std::env::temp_dir()
        .join(format!("aw-test-{}-{name}", std::process::id()))
        .join("agentwire.sock")
}

fn router(name: &str) -> TestRouter {
    TestRouter::start(TestRouterConfig::new(socket(name))).unwrap()
}

fn agent(r: &TestRouter, name: &str) -> Agent {
    Agent::builder(name)
        .socket(r.socket_path())
        .idle(IdleStrategy::Spin)
        .connect()
        .unwrap()
}

/// Asserts nothing arrives for 100 ms (a quiet check, not a timing assertion).
fn assert_quiet(agent: &mut Agent, why: &str) {
    let got = agent
        .recv(Some(Duration::from_millis(100)))
        .unwrap()
        .map(|m| m.to_owned());
    assert!(got.is_none(), "{why}: got {got:?}");
}

/// Waits until a router counter reaches `at_least`; a 10 s watchdog, not a timing assertion.
fn wait_for(counter: &std::sync::atomic::AtomicU64, at_least: u64, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while counter.load(Ordering::Relaxed) < at_least {
        assert!(std::time::Instant::now() < deadline, "watchdog: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Polls `agents` until `total` frames arrived among them (10 s watchdog, no quiet-window
/// timing); returns how many each received.
fn receive_spread(agents: &mut [&mut Agent], total: usize, what: &str) -> Vec<usize> {
    let mut got = vec![0; agents.len()];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.iter().sum::<usize>() < total {
        assert!(
            std::time::Instant::now() < deadline,
            "watchdog: {got:?} of {total} {what}"
        );
        for (n, agent) in got.iter_mut().zip(agents.iter_mut()) {
            *n += usize::from(agent.try_recv().unwrap().is_some());
        }
    }
    got
}

/// A test peer process (`agentwire-router-peer`) and its stdout, read a line at a time.
struct Peer {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Peer {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentwire-router-peer"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Self { child, out }
    }

    /// The next stdout line with `prefix` stripped.
    fn line(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim()
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
            .to_string()
    }

    fn kill(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
        self.child.wait().unwrap();
    }

    fn succeeded(mut self) -> bool {
        self.child.wait().unwrap().success()
    }
}

#[test]
fn unicast_delivers_in_order_with_source_rewritten() {
    let r = router("unicast");
    let mut a = agent(&r, "a");
    let mut b = agent(&r, "b");
    for i in 0u32..1000 {
        a.send(b.id(), &i.to_le_bytes()).unwrap();
    }
    for i in 0u32..1000 {
        let m = b.recv(WAIT).unwrap().expect("frame");
        assert_eq!(m.payload(), i.to_le_bytes());
        assert_eq!(m.header().source(), a.id());
        assert_eq!(m.header().kind(), FrameKind::Send);
    }
}

#[test]
fn rkyv_payload_is_read_zero_copy_with_validation() {
    let r = router("rkyv");
    let mut a = agent(&r, "a");
    let mut b = agent(&r, "b");
    let value = vec!["alpha".to_string(), "beta".to_string()];
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&value).unwrap();
    a.send(b.id(), &bytes).unwrap();
    let m = b.recv(WAIT).unwrap().unwrap();
    let archived = m.access::<Vec<String>>().unwrap();
    assert_eq!(archived.len(), 2);
    assert_eq!(archived[1].as_str(), "beta");
    drop(m);
    a.send(b.id(), &[0xff; 13]).unwrap();
    let m = b.recv(WAIT).unwrap().unwrap();
    assert!(
        m.access::<Vec<String>>().is_err(),
        "garbage must fail bytecheck"
    );
}

#[test]
fn publish_fans_out_to_every_subscriber() {
    let r = router("fanout");
    let mut subs: Vec<Agent> = (0..3)
        .map(|i| {
            Agent::builder(&format!("s{i}"))
                .socket(r.socket_path())
                .topic("news")
                .connect()
                .unwrap()
        })
        .collect();
    let mut late = agent(&r, "late");
    late.subscribe("news").unwrap();
    let mut p = agent(&r, "pub");
    for i in 0u8..50 {
        p.publish("news", &[i]).unwrap();
    }
    for s in subs.iter_mut().chain(std::iter::once(&mut late)) {
        for i in 0u8..50 {
            assert_eq!(s.recv(WAIT).unwrap().unwrap().payload(), [i]);
        }
    }
    late.unsubscribe("news").unwrap();
    p.publish("news", b"x").unwrap();
    assert_eq!(subs[0].recv(WAIT).unwrap().unwrap().payload(), b"x");
    assert_quiet(&mut late, "unsubscribed");
}

#[test]
fn request_response_pairs_by_correlation_id() {
    let r = router("reqresp");
    let mut client = agent(&r, "client");
    let mut server = agent(&r, "server");
    let server_id = server.id();
    let handle = std::thread::spawn(move || {
        for _ in 0..100 {
            let req = server.recv(WAIT).unwrap().unwrap().to_owned();
            assert_eq!(req.header().kind(), FrameKind::Request);
            let mut answer = req.payload().to_vec();
            answer.reverse();
            server.respond(req.header(), &answer).unwrap();
        }
    });
    for i in 0u32..100 {
        let reply = client
            .request(server_id, &[i as u8, 1, 2], Duration::from_secs(10))
            .unwrap();
        assert_eq!(reply.header().kind(), FrameKind::Response);
        assert_eq!(reply.payload(), [2, 1, i as u8]);
    }
    handle.join().unwrap();
    let err = client
        .request(server_id + 100, b"?", Duration::from_secs(5))
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Nacked(ref n) if n.reason == NackReason::NoSuchAgent as u32),
        "{err}"
    );
}

#[test]
fn request_times_out_without_losing_other_frames() {
    let r = router("timeout");
    let mut client = agent(&r, "client");
    let mut silent = agent(&r, "silent");
    let mut other = agent(&r, "other");
    other.send(client.id(), b"meanwhile").unwrap();
    let err = client
        .request(silent.id(), b"hello?", Duration::from_millis(200))
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    assert_eq!(client.recv(WAIT).unwrap().unwrap().payload(), b"meanwhile");
    assert_eq!(silent.recv(WAIT).unwrap().unwrap().payload(), b"hello?");
}

#[test]
fn anycast_respects_semver_and_spreads_load() {
    let r = router("anycast");
    let mut old = Agent::builder("old")
        .socket(r.socket_path())
        .capability("ocr", "1.9.0")
        .connect()
        .unwrap();
    let mut new1 = Agent::builder("new1")
        .socket(r.socket_path())
        .capability("ocr", "2.1.0")
        .connect()
        .unwrap();
    let mut new2 = Agent::builder("new2")
        .socket(r.socket_path())
        .capability("ocr", "2.3.1")
        .connect()
        .unwrap();
    let mut c = agent(&r, "caller");
    let found = c.discover("ocr", "^2").unwrap();
    assert_eq!(
        found.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        ["new1", "new2"]
    );
    assert_eq!(c.discover("ocr", "<2").unwrap().len(), 1);
    for i in 0u8..10 {
        c.anycast("ocr", "^2", &[i]).unwrap();
    }
    // Count deliveries until all 10 arrived (watchdog, no quiet-window timing).
    let got = receive_spread(&mut [&mut new1, &mut new2], 10, "anycasts");
    assert_eq!(got, [5, 5], "round robin over the two matching agents");
    assert_quiet(&mut old, "1.9 does not satisfy ^2");
    // No provider: nacked.
    c.anycast("ocr", "^3", b"x").unwrap();
    let nack = c.recv(WAIT).unwrap().unwrap().to_owned();
    assert_eq!(
        nack.nack_body().unwrap().reason,
        NackReason::NoSuchAgent as u32
    );
}

#[test]
fn acks_and_nacks_answer_the_sender() {
    let r = router("acks");
    let mut a = agent(&r, "a");
    let b = agent(&r, "b");
    a.send_with(
        FrameKind::Send,
        b.id(),
        b"x",
        SendOptions {
            ack: true,
            correlation_id: 77,
            ..Default::default()
        },
    )
    .unwrap();
    let ack = a.recv(WAIT).unwrap().unwrap().to_owned();
    assert_eq!(
        (ack.header().kind(), ack.header().correlation()),
        (FrameKind::Ack, 77)
    );
    a.publish("nobody-listens", b"x").unwrap();
    let nack = a.recv(WAIT).unwrap().unwrap().to_owned();
    assert_eq!(
        nack.nack_body().unwrap().reason,
        NackReason::NoSubscriber as u32
    );
}

#[test]
fn malformed_frames_are_nacked_counted_and_do_not_stall_others() {
    let r = router("malformed");
    let mut bad = agent(&r, "bad");
    let mut good = agent(&r, "good");
    let mut sink = agent(&r, "sink");
    let sink_id = sink.id();
    // A header whose kind byte is unknown, one with a wrong payload length, one of a future
    // major version: written raw through the zero-copy claim.
    let corruptions: [(usize, u8); 3] = [(6, 99), (32, 200), (4, 9)];
    for (i, (offset, value)) in corruptions.iter().enumerate() {
        let mut frame = vec![0u8; HEADER_BYTES + 8];
        FrameHeader::new(FrameKind::Send, 0, sink_id, 8)
            .with_correlation(i as u64 + 1)
            .write_to(&mut frame);
        frame[*offset] = *value;
        bad.send_raw(&frame).unwrap();
        good.send(sink_id, &[i as u8]).unwrap();
    }
    for i in 0..3u8 {
        assert_eq!(
            sink.recv(WAIT).unwrap().unwrap().payload(),
            [i],
            "good traffic flows"
        );
    }
    for i in 0..3u64 {
        let nack = bad.recv(WAIT).unwrap().unwrap().to_owned();
        assert_eq!(nack.header().kind(), FrameKind::Nack);
        assert_eq!(nack.header().correlation(), i + 1);
        let body = decode_nack(nack.payload()).unwrap();
        assert_eq!(body.reason, NackReason::Malformed as u32, "{}", body.detail);
    }
    assert_eq!(r.stats().frames_malformed.load(Ordering::Relaxed), 3);
    assert_eq!(
        bad.segment()
            .control()
            .frames_rejected
            .load(Ordering::Relaxed),
        3
    );
    assert_quiet(&mut sink, "no malformed frame delivered");
}

#[test]
fn version_negotiation_refuses_with_both_ranges_named() {
    let r = router("version");
    let err = Agent::builder("future")
        .socket(r.socket_path())
        .protocol_versions(5, 7)
        .connect()
        .unwrap_err();
    match err {
        ClientError::Refused {
            reason: RefuseReason::VersionUnsupported,
            detail,
        } => {
            assert!(
                detail.contains("5..=7") && detail.contains("3..=3"),
                "{detail}"
            );
        }
        other => panic!("expected version refusal, got {other}"),
    }
    // An overlapping range picks the highest common version.
    let a = Agent::builder("compatible")
        .socket(r.socket_path())
        .protocol_versions(0, 9)
        .connect()
        .unwrap();
    assert_eq!(
        a.protocol_version(),
        agentwire_shm::control::PROTOCOL_VERSION_MAX
    );
}

#[test]
fn peer_credentials_not_on_allow_list_are_refused() {
    let mut config = TestRouterConfig::new(socket("peercred"));
    config.allow = AllowList::nobody();
    let r = TestRouter::start(config).unwrap();
    let err = Agent::builder("intruder")
        .socket(r.socket_path())
        .connect()
        .unwrap_err();
    match err {
        ClientError::Refused {
            reason: RefuseReason::NotPermitted,
            detail,
        } => {
            let uid = rustix::process::getuid().as_raw();
            assert!(detail.contains(&format!("uid {uid}")), "{detail}");
        }
        other => panic!("expected NotPermitted, got {other}"),
    }
    // The router counts the refusal just after sending it.
    wait_for(&r.stats().handshakes_refused, 1, "refusal never counted");
    assert_eq!(r.agent_count(), 0);
    // Allowed by group instead of user.
    let mut config = TestRouterConfig::new(socket("peercred-gid"));
    config.allow = AllowList {
        uids: vec![],
        gids: vec![rustix::process::getgid().as_raw()],
    };
    let r = TestRouter::start(config).unwrap();
    assert!(Agent::builder("member")
        .socket(r.socket_path())
        .connect()
        .is_ok());
}

#[test]
fn second_router_on_same_socket_is_refused() {
    let r = router("twice");
    let err = TestRouter::start(TestRouterConfig::new(r.socket_path().to_path_buf())).unwrap_err();
    assert!(err.to_string().contains("already serving"), "{err}");
}

#[test]
fn agent_reconnects_after_router_restart() {
    let path = socket("restart");
    let r = TestRouter::start(TestRouterConfig::new(path.clone())).unwrap();
    let mut a = Agent::builder("a")
        .socket(&path)
        .topic("t")
        .reconnect(50, Duration::from_millis(10))
        .connect()
        .unwrap();
    r.stop();
    let err = a
        .recv(Some(Duration::from_secs(10)))
        .map(|m| m.is_some())
        .unwrap_err();
    assert!(matches!(err, ClientError::Disconnected), "{err}");
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        TestRouter::start(TestRouterConfig::new(path)).unwrap()
    });
    a.reconnect().unwrap();
    let r = restarter.join().unwrap();
    let mut p = agent(&r, "p");
    p.publish("t", b"after restart").unwrap();
    assert_eq!(
        a.recv(WAIT).unwrap().unwrap().payload(),
        b"after restart",
        "topics restored on reconnect"
    );
}

#[test]
fn reconnect_gives_up_after_bounded_attempts() {
    let path = socket("gone");
    let r = TestRouter::start(TestRouterConfig::new(path.clone())).unwrap();
    let mut a = Agent::builder("a")
        .socket(&path)
        .reconnect(3, Duration::from_millis(1))
        .connect()
        .unwrap();
    r.stop();
    let err = a.reconnect().unwrap_err();
    assert!(
        matches!(err, ClientError::ReconnectFailed { attempts: 3, .. }),
        "{err}"
    );
}

#[test]
fn dead_agent_segment_is_reclaimed_and_others_continue() {
    let r = router("dead");
    let mut a = agent(&r, "a");
    let b = agent(&r, "b");
    let b_id = b.id();
    drop(b); // closes its control socket, like a killed process
    wait_for(&r.stats().agents_removed, 1, "segment not reclaimed");
    assert_eq!(r.agent_count(), 1);
    a.send(b_id, b"to the dead").unwrap();
    let nack = a.recv(WAIT).unwrap().unwrap().to_owned();
    assert_eq!(
        nack.nack_body().unwrap().reason,
        NackReason::NoSuchAgent as u32
    );
}

#[test]
fn agents_in_separate_processes_exchange_checked_frames() {
    let r = router("procs");
    let sock = r.socket_path().to_str().unwrap();
    let count = "100000";
    let mut receiver = Peer::spawn(&["agent-recv", sock, "receiver", count]);
    let receiver_id = receiver.line("id ");
    let mut sender = Peer::spawn(&["agent-send", sock, "sender", &receiver_id, count]);
    sender.line("id ");
    assert_eq!(sender.line("sent "), count);
    assert!(sender.succeeded());
    assert_eq!(
        receiver.line("ok "),
        count,
        "every frame arrived intact and in order"
    );
    assert!(receiver.succeeded());
}

#[test]
fn slow_destination_backpressures_its_sender_without_loss() {
    let mut config = TestRouterConfig::new(socket("backpressure"));
    config.ring_capacity_bytes = 4096;
    let r = TestRouter::start(config).unwrap();
    let mut fast = Agent::builder("fast")
        .socket(r.socket_path())
        .send_timeout(Duration::from_millis(50))
        .connect()
        .unwrap();
    let mut slow = agent(&r, "slow");
    let mut sent = 0u64;
    let err = loop {
        match fast.send(slow.id(), &sent.to_le_bytes()) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(
            sent < 1_000_000,
            "a 4 KiB ring pair cannot absorb this much"
        );
    };
    assert!(matches!(err, ClientError::Backpressure(_)), "{err}");
    // Everything accepted arrives, in order, once the destination reads.
    for expected in 0..sent {
        let m = slow.recv(WAIT).unwrap().expect("accepted frame");
        assert_eq!(m.payload(), expected.to_le_bytes());
    }
    assert_quiet(&mut slow, "nothing beyond what was accepted");
}

#[test]
fn a_batch_larger_than_the_ring_is_published_as_it_goes() {
    // 4 KiB rings hold ~34 of these frames; a batch of 500 must not wait for room that only
    // its own unpublished frames take.
    let mut config = TestRouterConfig::new(socket("big-batch"));
    config.ring_capacity_bytes = 4096;
    let r = TestRouter::start(config).unwrap();
    let mut sender = agent(&r, "sender");
    let mut receiver = agent(&r, "receiver");
    let to = receiver.id();
    let payloads: Vec<[u8; 64]> = (0..500u64)
        .map(|i| {
            let mut p = [0u8; 64];
            p[..8].copy_from_slice(&i.to_le_bytes());
            p
        })
        .collect();
    let reader = std::thread::spawn(move || {
        for expected in 0..500u64 {
            let m = receiver.recv(WAIT).unwrap().expect("batched frame");
            assert_eq!(m.payload()[..8], expected.to_le_bytes());
        }
    });
    let sent = sender
        .send_batch(to, payloads.iter().map(|p| &p[..]))
        .expect("a batch larger than the ring");
    assert_eq!(sent, 500);
    reader.join().unwrap();
}

#[test]
fn sigkill_of_agent_process_mid_stream_delivers_an_intact_prefix() {
    let r = router("sigkill");
    let sock = r.socket_path().to_str().unwrap();
    let mut receiver = Peer::spawn(&["agent-recv-prefix", sock, "receiver"]);
    let receiver_id = receiver.line("id ");
    let mut sender = Peer::spawn(&["agent-send", sock, "sender", &receiver_id, "0"]);
    sender.line("id ");
    // Kill it mid-stream, once frames are flowing.
    wait_for(&r.stats().frames_delivered, 1000, "sender never streamed");
    sender.kill();
    let received: u64 = receiver.line("ok ").parse().unwrap();
    assert!(received > 0, "some frames flowed before the kill");
    assert!(
        receiver.succeeded(),
        "the receiver checked every frame of its prefix"
    );
    // The dead sender's segment is reclaimed; the router still serves others.
    wait_for(&r.stats().agents_removed, 2, "segments not reclaimed");
    let mut a = agent(&r, "after-a");
    let mut b = agent(&r, "after-b");
    a.send(b.id(), b"still routing").unwrap();
    assert_eq!(b.recv(WAIT).unwrap().unwrap().payload(), b"still routing");
}

#[test]
fn feature_routes_reach_a_registered_agent_least_loaded_first() {
    let r = router("feature");
    let serve = |name: &str, feature: u32| {
        Agent::builder(name)
            .socket(r.socket_path())
            .feature(feature)
            .connect()
            .unwrap()
    };
    let (mut f1, mut f2, mut other) = (serve("f1", 12), serve("f2", 12), serve("o", 13));
    let mut c = agent(&r, "caller");
    for i in 0u8..10 {
        c.send_feature(12, &[i]).unwrap();
    }
    let got = receive_spread(&mut [&mut f1, &mut f2], 10, "feature sends");
    assert_eq!(got, [5, 5], "ties spread over both agents serving 12");
    assert_quiet(&mut other, "feature 13 serves nothing for 12");
    // Acked, and the frame says which feature it is for.
    c.send_feature_with(
        13,
        b"x",
        SendOptions {
            ack: true,
            correlation_id: 77,
            ..Default::default()
        },
    )
    .unwrap();
    let got = other.recv(WAIT).unwrap().unwrap().to_owned();
    assert_eq!(got.header().feature_id.get(), 13);
    let ack = c.recv(WAIT).unwrap().unwrap().to_owned();
    assert_eq!(
        (ack.header().kind(), ack.header().correlation()),
        (FrameKind::Ack, 77)
    );
    // Nobody serves 99: nacked.
    c.send_feature(99, b"x").unwrap();
    let nack = c.recv(WAIT).unwrap().unwrap().to_owned();
    let body = nack.nack_body().unwrap();
    assert_eq!(body.reason, NackReason::NoSuchAgent as u32);
    assert!(body.detail.contains("feature 99"), "{}", body.detail);
    // The routes report lists feature routes with the agents behind them.
    let report = agentwire_shm::client::query_status(r.socket_path()).unwrap();
    let route = report
        .routes
        .iter()
        .find(|r| r.kind == "feature" && r.route_id == 12)
        .expect("feature 12 listed");
    assert_eq!(route.agents, vec![f1.id(), f2.id()]);
}

#[test]
fn discovery_is_cached_and_invalidated_by_registrations() {
    let r = router("discovery-cache");
    let _v1 = Agent::builder("v1")
        .socket(r.socket_path())
        .capability("asr", "1.2.0")
        .connect()
        .unwrap();
    let mut c = agent(&r, "caller");
    assert_eq!(c.discover("asr", "^1").unwrap().len(), 1);
    assert_eq!(c.discover("asr", "^1").unwrap().len(), 1);
    let hits = r.stats().discovery_cache_hits.load(Ordering::Relaxed);
    let misses = r.stats().discovery_cache_misses.load(Ordering::Relaxed);
    assert_eq!(
        (hits, misses),
        (1, 1),
        "second identical question from the cache"
    );
    // A new provider invalidates the cached answer.
    let v2 = Agent::builder("v2")
        .socket(r.socket_path())
        .capability("asr", "1.4.0")
        .connect()
        .unwrap();
    assert_eq!(c.discover("asr", "^1").unwrap().len(), 2);
    // And so does a departure.
    drop(v2);
    wait_for(&r.stats().agents_removed, 1, "v2 not reclaimed");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.discover("asr", "^1").unwrap().len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "watchdog: v2 still discovered"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(c.discover("asr", "not a requirement").is_err());
}

/// Reads `got <byte>` lines from a serving peer until `n` arrived; returns the bytes.
fn served(peer: &mut Peer, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| peer.line("got ").parse::<u8>().unwrap())
        .collect()
}

#[test]
fn a_stopped_agent_goes_stale_and_routes_skip_it_until_it_moves() {
    let mut config = TestRouterConfig::new(socket("stale"));
    config.liveness_timeout = Some(Duration::from_millis(300));
    let r = TestRouter::start(config).unwrap();
    let sock = r.socket_path().to_str().unwrap();
    let mut a = Peer::spawn(&["agent-serve", sock, "a", "ocr", "2.0.0", "12"]);
    let mut b = Peer::spawn(&["agent-serve", sock, "b", "ocr", "2.1.0", "12"]);
    let (a_id, b_id): (u32, u32) = (
        a.line("id ").parse().unwrap(),
        b.line("id ").parse().unwrap(),
    );
    let mut c = Agent::builder("caller")
        .socket(r.socket_path())
        .idle(IdleStrategy::Spin)
        .connect()
        .unwrap();
    let a_pid = rustix::process::Pid::from_child(&a.child);
    rustix::process::kill_process(a_pid, rustix::process::Signal::STOP).unwrap();
    // (The idle caller may go stale too; it offers nothing, so only `a` matters.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while agentwire_shm::client::query_status(r.socket_path())
        .unwrap()
        .agents
        .iter()
        .any(|s| s.agent_id == a_id && s.live)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "watchdog: stopped agent never stale"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(r.stats().agents_stale.load(Ordering::Relaxed) >= 1);
    let found = c.discover("ocr", "^2").unwrap();
    assert_eq!(found.iter().map(|i| i.agent_id).collect::<Vec<_>>(), [b_id]);
    for i in 0u8..6 {
        c.anycast("ocr", "^2", &[i]).unwrap();
        c.send_feature(12, &[100 + i]).unwrap();
    }
    let got = served(&mut b, 12);
    assert_eq!(
        got.len(),
        12,
        "every anycast and feature send reached the live agent"
    );
    let report = agentwire_shm::client::query_status(r.socket_path()).unwrap();
    let live: Vec<(u32, bool)> = report.agents.iter().map(|s| (s.agent_id, s.live)).collect();
    assert!(
        live.contains(&(a_id, false)) && live.contains(&(b_id, true)),
        "{live:?}"
    );
    // Unicast to the stale agent still waits for it, and arrives once it runs again.
    c.send(a_id, &[42]).unwrap();
    rustix::process::kill_process(a_pid, rustix::process::Signal::CONT).unwrap();
    assert_eq!(served(&mut a, 1), [42]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.discover("ocr", "^2").unwrap().len() != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "watchdog: never live again"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    a.kill();
    b.kill();
}

#[test]
fn an_agent_whose_process_exits_is_removed_even_if_its_socket_lives_on() {
    let r = router("orphan");
    let sock = r.socket_path().to_str().unwrap();
    let mut orphan = Peer::spawn(&["agent-orphan", sock, "orphan"]);
    let _id = orphan.line("id ");
    let sleeper: i32 = orphan.line("child ").parse().unwrap();
    assert!(orphan.succeeded());
    // The control socket is still open in `sleep`; only the pidfd tells the agent is gone.
    wait_for(&r.stats().agents_exited, 1, "exited agent not noticed");
    wait_for(
        &r.stats().agents_removed,
        1,
        "exited agent's segment not reclaimed",
    );
    assert_eq!(r.agent_count(), 0);
    let pid = rustix::process::Pid::from_raw(sleeper).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
}

/// A parked router wakes for a send from any of its agents, not only the one whose doorbell
/// it happens to sleep on: with a 3 s park, every frame still arrives within the 2 s
/// watchdog. Frames come from every agent, and several times in a row from the same one, so
/// no rotation of a single park target could line up with them.
#[test]
fn a_parked_router_wakes_for_any_agent() {
    let mut config = TestRouterConfig::new(socket("park-any"));
    config.idle = IdleStrategy::Park {
        park_timeout_ns: 3_000_000_000,
    };
    let r = TestRouter::start(config).unwrap();
    let mut agents: Vec<Agent> = (0..3)
        .map(|i| {
            Agent::builder(&format!("parker-{i}"))
                .socket(r.socket_path())
                .idle(IdleStrategy::default())
                .connect()
                .unwrap()
        })
        .collect();
    let ids: Vec<u32> = agents.iter().map(|a| a.id()).collect();
    let senders = [0usize, 0, 0, 1, 1, 2, 2, 2, 0];
    for (round, &from) in senders.iter().enumerate() {
        let to = (from + 1 + round % 2) % 3;
        // Let the router run out of work and park.
        std::thread::sleep(Duration::from_millis(20));
        agents[from]
            .send(ids[to], &[round as u8, from as u8])
            .unwrap();
        let got = agents[to]
            .recv(Some(Duration::from_secs(2)))
            .unwrap()
            .map(|m| m.payload().to_vec());
        assert_eq!(
            got,
            Some(vec![round as u8, from as u8]),
            "round {round}: the router slept through agent {from}'s send"
        );
    }
}

#[test]
fn an_agent_refuses_a_daemon_running_as_a_uid_it_does_not_trust() {
    let r = router("daemon-uid");
    let uid = rustix::process::getuid().as_raw();
    let stranger = if uid == 4242 { 4243 } else { 4242 };
    let err = Agent::builder("careful")
        .socket(r.socket_path())
        .daemon_uid(stranger)
        .connect()
        .unwrap_err();
    match &err {
        ClientError::UntrustedDaemon {
            uid: daemon,
            trusted,
            ..
        } => {
            assert_eq!((*daemon, trusted.as_slice()), (uid, &[stranger][..]));
            let text = err.to_string();
            assert!(
                text.contains(&format!("runs as uid {uid}"))
                    && text.contains("AgentBuilder::daemon_uid"),
                "{text}"
            );
        }
        other => panic!("expected UntrustedDaemon, got {other}"),
    }
    // Nothing reached the daemon: no agent, no refusal.
    assert_eq!(r.agent_count(), 0);
    assert_eq!(r.stats().handshakes_refused.load(Ordering::Relaxed), 0);
    // By default the daemon's uid is trusted when it is root or our own; naming it works too.
    assert!(Agent::builder("default")
        .socket(r.socket_path())
        .connect()
        .is_ok());
    assert!(Agent::builder("named")
        .socket(r.socket_path())
        .daemon_uid(uid)
        .connect()
        .is_ok());
}

#[test]
fn a_status_query_refuses_a_daemon_running_as_a_uid_it_does_not_trust() {
    let r = router("status-uid");
    let uid = rustix::process::getuid().as_raw();
    let stranger = if uid == 4242 { 4243 } else { 4242 };
    let err =
        agentwire_shm::client::query_status_trusting(r.socket_path(), &[stranger]).unwrap_err();
    assert!(
        matches!(err, ClientError::UntrustedDaemon { uid: daemon, .. } if daemon == uid),
        "{err}"
    );
    // Nothing was sent: the daemon saw no handshake.
    let handshakes = r.stats().handshakes_refused.load(Ordering::Relaxed);
    assert_eq!(handshakes, 0);
    let report = agentwire_shm::client::query_status(r.socket_path()).unwrap();
    assert_eq!(report.pid, std::process::id());
}

/// Connects to `socket` from a new thread that has first become uid/gid 5000 with the
/// supplementary `groups` (raw syscalls: only that thread changes identity), and returns
/// what the connect returned. Root only (the test suite runs as root).
fn connect_as_member(socket: PathBuf, groups: Vec<libc::gid_t>) -> Result<(), ClientError> {
    std::thread::spawn(move || {
        // SAFETY: raw setgroups/setresgid/setresuid act on this thread's credentials only
        // (glibc's wrappers would change every thread); `groups` outlives the call.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()),
                0,
                "setgroups (the test needs root)"
            );
            assert_eq!(libc::syscall(libc::SYS_setresgid, 5000, 5000, 5000), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, 5000, 5000, 5000), 0);
        }
        Agent::builder("member").socket(&socket).connect().map(drop)
    })
    .join()
    .unwrap()
}

#[test]
fn members_of_an_allowed_group_are_admitted_by_their_supplementary_groups() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: changing a thread's identity needs root");
        return;
    }
    // Group 0 lets the member reach the root-owned socket (mode 0660); the allow-list names
    // group 4242, which the member has only as a supplementary group.
    let mut config = TestRouterConfig::new(socket("peergroups"));
    config.allow = AllowList {
        uids: vec![],
        gids: vec![4242],
    };
    let r = TestRouter::start(config).unwrap();
    let path = r.socket_path().to_path_buf();
    match connect_as_member(path.clone(), vec![0]) {
        Err(ClientError::Refused {
            reason: RefuseReason::NotPermitted,
            ..
        }) => {}
        other => panic!("a non-member was not refused: {other:?}"),
    }
    connect_as_member(path, vec![0, 4242]).expect("a member of group 4242 was refused");
}
