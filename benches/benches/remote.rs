//! Remote agents over the network against a bare TCP echo, in one run on loopback.
//!
//! Rows (64-byte payloads):
//! - `bare TCP (std)`: a std `TcpStream` echo server thread; the client writes `N` messages
//!   (batched writes, TCP_NODELAY) and reads the echoes: messages per second; then one
//!   message at a time: round trip p50/p99. The floor any TCP transport stands on.
//! - `remote agent, plain TCP` and `remote agent, TLS 1.3`: a remote `Agent`
//!   (`.remote(..)`, with `.plaintext()` or `.tls(..)` and a client certificate) sends to a
//!   local shared-memory agent through the transport's listener and the router, which
//!   echoes each message back to its source: round trips per second with a window of
//!   messages in flight, then one at a time: round trip p50/p99.
//! - `raw stream client, plain`: a blocking std client speaking the stream protocol by hand
//!   (no client bridge), one message at a time: the listener and the router alone.
//! - `local agent (shared memory)`: the same echo from an agent on the daemon's socket, the
//!   router and the echo agent being the same: what the network adds is the difference.
//! - `node link, plain TCP` and `node link, TLS 1.3`: two nodes (two routers) linked; an
//!   agent on node a sends to the echo agent on node b through its proxy on a: two routers
//!   and one link each way per message.
//!
//! Every remote row crosses the loopback twice per message (there and back).
//!
//! Run: `cargo bench -p agentwire-benches --bench remote` (`cargo test --benches` runs a
//! smoke version with few messages).

use agentwire_benches::rows::RateRow;
use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::client::Agent;
use agentwire_transport::config::ListenerConfig;
use agentwire_transport::server::RemoteListener;
use agentwire_transport::test_pki::Pki;
use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAYLOAD_BYTES: usize = 64;
/// Messages in flight in the throughput runs.
const WINDOW: usize = 256;

/// Bare TCP: an echo server thread, the client pipelining `messages` then ping-ponging.
fn bare_tcp(messages: usize, round_trips: usize) -> RateRow {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_nodelay(true).expect("nodelay");
    let msg = [7u8; PAYLOAD_BYTES];
    let mut back = vec![0u8; PAYLOAD_BYTES * WINDOW];
    let start = Instant::now();
    let mut sent = 0;
    while sent < messages {
        let batch = WINDOW.min(messages - sent);
        let mut out = Vec::with_capacity(batch * PAYLOAD_BYTES);
        for _ in 0..batch {
            out.extend_from_slice(&msg);
        }
        c.write_all(&out).expect("write");
        c.read_exact(&mut back[..batch * PAYLOAD_BYTES])
            .expect("read");
        sent += batch;
    }
    let msgs_per_s = messages as f64 / start.elapsed().as_secs_f64();
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..round_trips {
        let t = Instant::now();
        c.write_all(&msg).expect("write");
        c.read_exact(&mut back[..PAYLOAD_BYTES]).expect("read");
        h.record(t.elapsed().as_nanos() as u64).expect("record");
    }
    drop(c);
    server.join().expect("server");
    RateRow {
        name: "bare TCP (std)",
        msgs_per_s,
        p50_us: h.value_at_quantile(0.5) as f64 / 1e3,
        p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
    }
}

/// A local agent that echoes every frame to its source until told to stop.
fn echo(router: &TestRouter, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let mut agent = Agent::builder("echo")
        .socket(router.socket_path())
        .connect()
        .expect("echo agent");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let got = match agent.recv(Some(Duration::from_millis(20))) {
                Ok(Some(m)) => Some((m.header().source(), m.payload().to_vec())),
                _ => None,
            };
            if let Some((source, payload)) = got {
                let _ = agent.send(source, &payload);
            }
        }
    })
}

fn remote_row(
    name: &'static str,
    builder: agentwire_shm::client::AgentBuilder,
    router: &TestRouter,
    messages: usize,
    round_trips: usize,
) -> RateRow {
    let stop = Arc::new(AtomicBool::new(false));
    let echo_thread = echo(router, stop.clone());
    let mut far = builder.connect().expect("remote agent");
    let echo_id = echo_id(router, "echo");
    let row = measure(name, &mut far, echo_id, messages, round_trips);
    drop(far);
    stop.store(true, Ordering::Relaxed);
    echo_thread.join().expect("echo");
    row
}

/// `far` sends to `echo_id` and reads the echoes: with a window in flight, then one at a
/// time.
fn measure(
    name: &'static str,
    far: &mut Agent,
    echo_id: u32,
    messages: usize,
    round_trips: usize,
) -> RateRow {
    let msg = [7u8; PAYLOAD_BYTES];
    let timeout = Some(Duration::from_secs(10));
    let start = Instant::now();
    let (mut sent, mut received) = (0usize, 0usize);
    while received < messages {
        while sent < messages && sent - received < WINDOW {
            far.send(echo_id, &msg).expect("send");
            sent += 1;
        }
        far.recv(timeout).expect("recv").expect("an echo");
        received += 1;
    }
    let msgs_per_s = messages as f64 / start.elapsed().as_secs_f64();
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..round_trips {
        let t = Instant::now();
        far.send(echo_id, &msg).expect("send");
        far.recv(timeout).expect("recv").expect("an echo");
        h.record(t.elapsed().as_nanos() as u64).expect("record");
    }
    RateRow {
        name,
        msgs_per_s,
        p50_us: h.value_at_quantile(0.5) as f64 / 1e3,
        p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
    }
}

/// A blocking std TCP client speaking the stream protocol by hand (no client bridge): the
/// listener and the router alone, one message at a time.
fn raw_stream_row(addr: std::net::SocketAddr, router: &TestRouter, round_trips: usize) -> RateRow {
    use agentwire_shm::control::{ClientMsg, Registration, ServerMsg};
    use agentwire_shm::stream_frames::{append_control, decode_control, FrameAssembler};
    use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
    let stop = Arc::new(AtomicBool::new(false));
    let echo_thread = echo(router, stop.clone());
    let echo_id = echo_id(router, "echo");
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_nodelay(true).expect("nodelay");
    let mut assembler = FrameAssembler::new(1 << 16);
    let next = |c: &mut TcpStream, assembler: &mut FrameAssembler| -> Vec<u8> {
        loop {
            if let Some(f) = assembler.next_frame().expect("frame") {
                return f.to_vec();
            }
            let n = c.read(assembler.spare()).expect("read");
            assert!(n > 0, "closed");
            assembler.filled(n);
        }
    };
    let mut out = Vec::new();
    let hello = ClientMsg::Hello {
        version_min: agentwire_shm::control::PROTOCOL_VERSION_MIN,
        version_max: agentwire_shm::control::PROTOCOL_VERSION_MAX,
        client: "bench".into(),
    };
    append_control(&hello, &mut out).expect("hello");
    let register = ClientMsg::Register(Registration {
        name: "raw".into(),
        ..Default::default()
    });
    append_control(&register, &mut out).expect("register");
    c.write_all(&out).expect("write");
    for _ in 0..2 {
        let f = next(&mut c, &mut assembler);
        let header = FrameHeader::validate(&f).expect("header");
        let msg: ServerMsg = decode_control(header, &f[HEADER_BYTES..]).expect("control");
        assert!(
            matches!(
                msg,
                ServerMsg::Welcome { .. } | ServerMsg::Registered { .. }
            ),
            "{msg:?}"
        );
    }
    let mut frame = vec![0u8; HEADER_BYTES + PAYLOAD_BYTES];
    FrameHeader::new(FrameKind::Send, 0, echo_id, PAYLOAD_BYTES as u32).write_to(&mut frame);
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..round_trips {
        let t = Instant::now();
        c.write_all(&frame).expect("write");
        next(&mut c, &mut assembler);
        h.record(t.elapsed().as_nanos() as u64).expect("record");
    }
    drop(c);
    stop.store(true, Ordering::Relaxed);
    echo_thread.join().expect("echo");
    RateRow {
        name: "raw stream client, plain",
        msgs_per_s: 0.0,
        p50_us: h.value_at_quantile(0.5) as f64 / 1e3,
        p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
    }
}

fn echo_id(router: &TestRouter, name: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = agentwire_shm::client::query_status(router.socket_path()).expect("status");
        if let Some(a) = status.agents.iter().find(|a| a.name == name) {
            return a.agent_id;
        }
        assert!(Instant::now() < deadline, "no echo agent");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Two nodes linked (plaintext or TLS): a local agent on node `a` sends to the echo agent
/// on node `b` through its proxy on `a`, the link, and `b`'s router; the echo comes back
/// the same way.
fn node_row(
    name: &'static str,
    pki: Option<&Pki>,
    idle: agentwire_shm::idle::IdleStrategy,
    messages: usize,
    round_trips: usize,
) -> RateRow {
    use agentwire_transport::node::{config::NodeConfig, config::PeerConfig, NodeLinks};
    let any = "127.0.0.1:0".parse().expect("addr");
    let router = |node: &str| {
        let socket = std::env::temp_dir().join(format!(
            "aw-bench-node-{node}-{}-{}.sock",
            pki.is_some(),
            std::process::id()
        ));
        TestRouter::start(TestRouterConfig {
            idle,
            ..TestRouterConfig::new(socket)
        })
        .expect("router")
    };
    let config = |node: &str| match pki {
        Some(pki) => NodeConfig::tls(node, any, pki.node_files(node)),
        None => NodeConfig::plaintext(node, any),
    };
    let (router_a, router_b) = (router("a"), router("b"));
    let mut b_config = config("b");
    b_config
        .peers
        .push(PeerConfig::new("a", "127.0.0.1:9".parse().expect("addr")));
    let links_b =
        NodeLinks::start(b_config, router_b.control().endpoint_registrar()).expect("node b");
    let mut a_config = config("a");
    a_config.peers.push(PeerConfig::new(
        "b",
        links_b.local_addr().expect("b listens"),
    ));
    let links_a =
        NodeLinks::start(a_config, router_a.control().endpoint_registrar()).expect("node a");
    let stop = Arc::new(AtomicBool::new(false));
    let echo_thread = echo(&router_b, stop.clone());
    let mut near = Agent::builder("near")
        .socket(router_a.socket_path())
        .connect()
        .expect("agent on a");
    let echo_id = echo_id(&router_a, "b/echo");
    let row = measure(name, &mut near, echo_id, messages, round_trips);
    drop(near);
    stop.store(true, Ordering::Relaxed);
    echo_thread.join().expect("echo");
    drop((links_a, links_b));
    row
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (messages, round_trips) = if full {
        (200_000, 20_000)
    } else {
        (2_000, 200)
    };
    let socket = std::env::temp_dir().join(format!("aw-bench-remote-{}.sock", std::process::id()));
    let idle = match std::env::var("AW_BENCH_ROUTER_SPIN") {
        Ok(_) => agentwire_shm::idle::IdleStrategy::Spin,
        Err(_) => TestRouterConfig::new(socket.clone()).idle,
    };
    let router = TestRouter::start(TestRouterConfig {
        idle,
        ..TestRouterConfig::new(socket)
    })
    .expect("router");
    let pki = Pki::new();
    let plain = RemoteListener::start(
        ListenerConfig::plaintext("127.0.0.1:0".parse().expect("addr")),
        router.control().endpoint_registrar(),
    )
    .expect("plaintext listener");
    let tls = RemoteListener::start(
        ListenerConfig::tls("127.0.0.1:0".parse().expect("addr"), pki.files.clone()),
        router.control().endpoint_registrar(),
    )
    .expect("TLS listener");
    println!(
        "remote agents on loopback, {PAYLOAD_BYTES}-byte payloads, {messages} messages \
         (window {WINDOW}) then {round_trips} round trips one at a time"
    );
    let bare = bare_tcp(messages, round_trips);
    println!("{}", bare.line(bare.msgs_per_s, "bare TCP"));
    let local_row = remote_row(
        "local agent (shared memory)",
        Agent::builder("near").socket(router.socket_path()),
        &router,
        messages,
        round_trips,
    );
    println!("{}", local_row.line(bare.msgs_per_s, "bare TCP"));
    let raw = raw_stream_row(plain.local_addr(), &router, round_trips);
    println!("{}", raw.line(bare.msgs_per_s, "bare TCP"));
    let plain_row = remote_row(
        "remote agent, plain TCP",
        Agent::builder("far-plain")
            .remote(plain.local_addr().to_string())
            .plaintext(),
        &router,
        messages,
        round_trips,
    );
    println!("{}", plain_row.line(bare.msgs_per_s, "bare TCP"));
    let cert = pki.ca.client("far-tls");
    let tls_row = remote_row(
        "remote agent, TLS 1.3",
        Agent::builder("far-tls")
            .remote(tls.local_addr().to_string())
            .tls_server_name("localhost")
            .tls(pki.client_config(Some(&cert))),
        &router,
        messages,
        round_trips,
    );
    println!("{}", tls_row.line(bare.msgs_per_s, "bare TCP"));
    let node_plain = node_row("node link, plain TCP", None, idle, messages, round_trips);
    println!("{}", node_plain.line(bare.msgs_per_s, "bare TCP"));
    let node_tls = node_row(
        "node link, TLS 1.3",
        Some(&pki),
        idle,
        messages,
        round_trips,
    );
    println!("{}", node_tls.line(bare.msgs_per_s, "bare TCP"));
    let s = tls.stats();
    println!(
        "TLS listener: {} frames out in {} socket writes ({:.1} frames per write)",
        s.frames_out,
        s.socket_writes,
        s.frames_out as f64 / s.socket_writes.max(1) as f64
    );
}
