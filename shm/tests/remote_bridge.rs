//! Remote agents against a small test server on 127.0.0.1: the frames and control messages
//! of docs/wire.md ("On a byte stream"), plaintext and TLS 1.3 with client certificates.
//!
//! The server answers Hello with Welcome, Register with Registered (agent 7, no
//! descriptors), ResolveTopic with topic 99, and echoes every data frame back to agent 7.

use agentwire_shm::client::{Agent, AgentBuilder, ClientError};
use agentwire_shm::control::{ClientMsg, ServerMsg};
use agentwire_shm::stream_frames::{append_control, decode_control, FrameAssembler};
use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const AGENT_ID: u32 = 7;
const TOPIC_ID: u32 = 99;
/// Watchdog: a test that has not finished by then is deadlocked.
const WATCHDOG: Duration = Duration::from_secs(60);

/// What one accepted connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Answers the handshake and echoes data frames until the client leaves.
    Echo,
    /// Answers the handshake, then closes the connection.
    CloseAfterRegistered,
    /// Answers the handshake, then sends bytes that are not a frame.
    GarbageAfterRegistered,
    /// Sends bytes that are not a frame at once.
    GarbageAtStart,
    /// Answers the handshake, then reads nothing until [`STALL_RELEASE`] is set.
    StallAfterRegistered,
}

/// Lets a `StallAfterRegistered` server go on (and close).
static STALL_RELEASE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs a watchdog over `test`: panics if it has not finished in time.
fn with_watchdog<T: Send + 'static>(test: impl FnOnce() -> T + Send + 'static) -> T {
    let (done_tx, done_rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let result = test();
        let _ = done_tx.send(());
        result
    });
    match done_rx.recv_timeout(WATCHDOG) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => worker.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("deadlock: test still running after {WATCHDOG:?}")
        }
    }
}

fn destination_offset() -> usize {
    core::mem::offset_of!(FrameHeader, destination)
}

fn source_offset() -> usize {
    core::mem::offset_of!(FrameHeader, source_agent)
}

/// Serves one connection on `stream` with `behaviour`; returns when the client leaves.
fn serve(mut stream: impl Read + Write, behaviour: Behaviour) {
    if behaviour == Behaviour::GarbageAtStart {
        let _ = stream.write_all(&[0xffu8; 256]);
        let _ = stream.flush();
        // Keep the connection until the client gives up on it.
        let mut sink = [0u8; 64];
        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        return;
    }
    let mut assembler = FrameAssembler::new(1 << 20);
    let mut out = Vec::new();
    loop {
        let n = match stream.read(assembler.spare()) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        assembler.filled(n);
        let mut registered = false;
        while let Some(frame) = assembler.next_frame().expect("the client sends frames") {
            let header = FrameHeader::validate(frame).unwrap();
            if header.kind() != FrameKind::Control {
                // Echo to the agent, stamped as the server would.
                let at = out.len();
                out.extend_from_slice(frame);
                let dst = at + destination_offset();
                out[dst..dst + 4].copy_from_slice(&AGENT_ID.to_le_bytes());
                let src = at + source_offset();
                out[src..src + 4].copy_from_slice(&AGENT_ID.to_le_bytes());
                continue;
            }
            let reply = match decode_control::<ClientMsg>(header, &frame[HEADER_BYTES..]).unwrap() {
                ClientMsg::Hello { version_max, .. } => ServerMsg::Welcome {
                    version: version_max,
                    daemon: "test server".into(),
                },
                ClientMsg::Register(_) => {
                    registered = true;
                    ServerMsg::Registered {
                        agent_id: AGENT_ID,
                        topic_ids: vec![],
                    }
                }
                ClientMsg::ResolveTopic { .. } | ClientMsg::Subscribe { .. } => {
                    ServerMsg::TopicId { topic_id: TOPIC_ID }
                }
                ClientMsg::Goodbye => return,
                _ => ServerMsg::Done,
            };
            append_control(&reply, &mut out).unwrap();
        }
        if stream
            .write_all(&out)
            .and_then(|()| stream.flush())
            .is_err()
        {
            return;
        }
        out.clear();
        if registered {
            match behaviour {
                Behaviour::CloseAfterRegistered => return,
                Behaviour::StallAfterRegistered => {
                    while !STALL_RELEASE.load(std::sync::atomic::Ordering::Acquire) {
                        std::thread::park_timeout(Duration::from_millis(10));
                    }
                    return;
                }
                Behaviour::GarbageAfterRegistered => {
                    let _ = stream.write_all(&[0xffu8; 256]);
                    let _ = stream.flush();
                    let mut sink = [0u8; 64];
                    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                    return;
                }
                _ => {}
            }
        }
    }
}

/// A listener on 127.0.0.1:0 serving one connection per entry of `behaviours`, in turn.
fn start_server(
    behaviours: Vec<Behaviour>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        for behaviour in behaviours {
            let Ok((socket, _)) = listener.accept() else {
                return;
            };
            socket.set_nodelay(true).unwrap();
            match &tls {
                None => serve(socket, behaviour),
                Some(config) => {
                    let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                    serve(rustls::StreamOwned::new(conn, socket), behaviour);
                }
            }
        }
    });
    (addr, handle)
}

fn payload(i: u32) -> Vec<u8> {
    let len = 4 + (i as usize * 37) % 300;
    let mut p = vec![(i % 251) as u8; len];
    p[..4].copy_from_slice(&i.to_le_bytes());
    p
}

/// Sends `count` frames to the server's echo, in windows, and checks each comes back in
/// order and intact.
fn round_trip(agent: &mut Agent, count: u32) {
    const WINDOW: u32 = 64;
    let mut next_expected = 0u32;
    for i in 0..count {
        agent.send(AGENT_ID, &payload(i)).unwrap();
        if (i + 1) % WINDOW == 0 || i + 1 == count {
            while next_expected <= i {
                let msg = agent
                    .recv(Some(Duration::from_secs(10)))
                    .unwrap()
                    .expect("the echo arrives");
                assert_eq!(msg.header().kind(), FrameKind::Send);
                assert_eq!(msg.header().destination(), AGENT_ID);
                assert_eq!(msg.payload(), payload(next_expected).as_slice());
                next_expected += 1;
            }
        }
    }
}

fn plaintext_agent(addr: &str) -> AgentBuilder {
    Agent::builder("remote-test").remote(addr).plaintext()
}

#[test]
fn plaintext_frames_come_back_in_order_and_intact() {
    with_watchdog(|| {
        let (addr, server) = start_server(vec![Behaviour::Echo], None);
        let mut agent = plaintext_agent(&addr).connect().unwrap();
        assert_eq!(agent.id(), AGENT_ID);
        round_trip(&mut agent, 5000);
        agent.close();
        server.join().unwrap();
    });
}

#[test]
fn a_full_rx_ring_holds_the_stream_back_and_loses_nothing() {
    with_watchdog(|| {
        let (addr, server) = start_server(vec![Behaviour::Echo], None);
        // 4 KiB rings: the echoes of 500 frames (about 80 KiB) wait in the bridge and the
        // sockets while the agent does not read.
        let mut agent = plaintext_agent(&addr)
            .ring_capacity(4096)
            .connect()
            .unwrap();
        let count = 500;
        for i in 0..count {
            agent.send(AGENT_ID, &payload(i)).unwrap();
        }
        for i in 0..count {
            let msg = agent.recv(Some(Duration::from_secs(10))).unwrap().unwrap();
            assert_eq!(msg.payload(), payload(i).as_slice(), "frame {i}");
        }
        agent.close();
        server.join().unwrap();
    });
}

#[test]
fn a_control_reply_behind_a_full_rx_ring_still_arrives() {
    with_watchdog(|| {
        let (addr, server) = start_server(vec![Behaviour::Echo], None);
        // 4 KiB rings: the echoes of 500 frames fill the rx ring and wait in the bridge and
        // the sockets; the topic resolve's answer travels behind them on the stream.
        let mut agent = plaintext_agent(&addr)
            .ring_capacity(4096)
            .connect()
            .unwrap();
        let count = 500;
        for i in 0..count {
            agent.send(AGENT_ID, &payload(i)).unwrap();
        }
        // The first publish to a topic resolves it over the control protocol.
        agent.publish("late-topic", b"after").unwrap();
        for i in 0..count {
            let msg = agent.recv(Some(Duration::from_secs(10))).unwrap().unwrap();
            assert_eq!(msg.payload(), payload(i).as_slice(), "frame {i}");
        }
        let msg = agent.recv(Some(Duration::from_secs(10))).unwrap().unwrap();
        assert_eq!(msg.payload(), b"after");
        drop(msg);
        agent.close();
        server.join().unwrap();
    });
}

#[test]
fn a_server_that_stops_reading_makes_sends_see_backpressure() {
    with_watchdog(|| {
        let (addr, server) = start_server(vec![Behaviour::StallAfterRegistered], None);
        let mut agent = plaintext_agent(&addr)
            .ring_capacity(4096)
            .send_timeout(Duration::from_millis(50))
            .connect()
            .unwrap();
        // Bounded: the tx ring, the bridge's 256 KiB and the kernel's socket buffers.
        let frames_max = 1_000_000u32;
        let mut result = Ok(());
        for i in 0..frames_max {
            result = agent.send(AGENT_ID, &payload(i));
            if result.is_err() {
                break;
            }
        }
        assert!(
            matches!(result, Err(ClientError::Backpressure(_))),
            "{result:?}"
        );
        STALL_RELEASE.store(true, std::sync::atomic::Ordering::Release);
        server.thread().unpark();
        drop(agent);
        server.join().unwrap();
    });
}

/// Threads of this process whose name is `name` (as the kernel keeps it: 15 bytes).
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

/// Waits (bounded) until no thread is named `name`; false if one still is.
fn threads_end(name: &str) -> bool {
    for _ in 0..10_000 {
        if threads_named(name) == 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

#[test]
fn the_bridge_thread_ends_with_its_agent_and_with_its_connection() {
    with_watchdog(|| {
        // "aw-remote-" and 5 bytes of the name fill the kernel's 15-byte thread name.
        let (addr, server) =
            start_server(vec![Behaviour::Echo, Behaviour::CloseAfterRegistered], None);
        let mut agent = Agent::builder("gone1")
            .remote(&addr)
            .plaintext()
            .connect()
            .unwrap();
        round_trip(&mut agent, 10);
        assert_eq!(threads_named("aw-remote-gone1"), 1);
        drop(agent); // no Goodbye: the bridge sees its control connection close
        assert!(
            threads_end("aw-remote-gone1"),
            "the bridge outlived its agent"
        );
        let agent = Agent::builder("gone2")
            .remote(&addr)
            .plaintext()
            .connect()
            .unwrap();
        assert!(
            threads_end("aw-remote-gone2"),
            "the bridge outlived its connection"
        );
        drop(agent);
        server.join().unwrap();
    });
}

#[test]
fn a_remote_without_tls_or_plaintext_is_refused_with_a_clear_error() {
    let err = Agent::builder("remote-test")
        .remote("127.0.0.1:9")
        .connect()
        .unwrap_err();
    assert!(matches!(err, ClientError::Remote { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("no TLS configuration"), "{text}");
    assert!(text.contains("plaintext"), "{text}");
}

#[test]
fn a_refused_tcp_connection_names_the_address() {
    // Bind and drop: nothing listens on the port now.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let err = plaintext_agent(&addr).connect().unwrap_err();
    assert!(matches!(err, ClientError::Remote { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr), "{err}");
}

#[test]
fn a_closed_connection_reads_as_disconnected_and_reconnect_makes_a_new_bridge() {
    with_watchdog(|| {
        let (addr, server) =
            start_server(vec![Behaviour::CloseAfterRegistered, Behaviour::Echo], None);
        let mut agent = plaintext_agent(&addr).connect().unwrap();
        let got = agent
            .recv(Some(Duration::from_secs(30)))
            .map(|m| m.is_some());
        assert!(matches!(got, Err(ClientError::Disconnected)), "{got:?}");
        let sent = agent.send(AGENT_ID, b"after the close");
        assert!(matches!(sent, Err(ClientError::Disconnected)), "{sent:?}");
        agent.reconnect().unwrap();
        round_trip(&mut agent, 100);
        agent.close();
        server.join().unwrap();
    });
}

#[test]
fn garbage_from_the_server_reads_as_disconnected() {
    with_watchdog(|| {
        let (addr, server) = start_server(vec![Behaviour::GarbageAfterRegistered], None);
        let mut agent = plaintext_agent(&addr).connect().unwrap();
        let got = agent
            .recv(Some(Duration::from_secs(30)))
            .map(|m| m.is_some());
        assert!(matches!(got, Err(ClientError::Disconnected)), "{got:?}");
        drop(agent);
        server.join().unwrap();
    });
}

#[test]
fn garbage_before_the_handshake_fails_connect_with_the_reason() {
    with_watchdog(|| {
        let (addr, server) = start_server(vec![Behaviour::GarbageAtStart], None);
        let err = plaintext_agent(&addr).connect().unwrap_err();
        assert!(matches!(err, ClientError::Remote { .. }), "{err:?}");
        assert!(err.to_string().contains("not a frame"), "{err}");
        server.join().unwrap();
    });
}

mod tls {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::server::WebPkiClientVerifier;
    use rustls::RootCertStore;

    // The workspace's rustls provider: aws-lc-rs (post-quantum hybrid key exchange).
    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    /// A CA, and leaf certificates it signs.
    struct Ca {
        cert: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    }

    impl Ca {
        /// A CA named `name` (two CAs of one name would read as one issuer whose
        /// signature fails, not as an unknown issuer).
        fn new(name: &str) -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages.push(KeyUsagePurpose::KeyCertSign);
            params.key_usages.push(KeyUsagePurpose::DigitalSignature);
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            Self {
                cert: cert.der().clone(),
                issuer: Issuer::new(params, key),
            }
        }

        fn leaf(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let params = CertificateParams::new(names).unwrap();
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            (vec![cert.der().clone(), self.cert.clone()], key)
        }

        fn roots(&self) -> Arc<RootCertStore> {
            let mut roots = RootCertStore::empty();
            roots.add(self.cert.clone()).unwrap();
            Arc::new(roots)
        }
    }

    /// A server that requires a client certificate signed by `ca`.
    fn server_config(ca: &Ca) -> Arc<rustls::ServerConfig> {
        let verifier = WebPkiClientVerifier::builder_with_provider(ca.roots(), provider())
            .build()
            .unwrap();
        let (chain, key) = ca.leaf(&["localhost", "127.0.0.1"]);
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }

    /// A client trusting `trusted`, presenting a certificate from `client_ca` if any.
    fn client_config(trusted: &Ca, client_ca: Option<&Ca>) -> Arc<rustls::ClientConfig> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(trusted.roots());
        let config = match client_ca {
            Some(ca) => {
                let (chain, key) = ca.leaf(&["remote-test"]);
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }

    #[test]
    fn tls_with_a_client_certificate_round_trips_and_resolves_topics() {
        with_watchdog(|| {
            let ca = Ca::new("agentwire test CA");
            let (addr, server) = start_server(vec![Behaviour::Echo], Some(server_config(&ca)));
            let mut agent = Agent::builder("remote-test")
                .remote(&addr)
                .tls(client_config(&ca, Some(&ca)))
                .connect()
                .unwrap();
            round_trip(&mut agent, 2000);
            agent.publish("t", b"published").unwrap();
            let msg = agent.recv(Some(Duration::from_secs(10))).unwrap().unwrap();
            assert_eq!(msg.header().kind(), FrameKind::Publish);
            assert_eq!(msg.payload(), b"published");
            drop(msg);
            agent.close();
            server.join().unwrap();
        });
    }

    #[test]
    fn the_server_name_defaults_to_the_host_and_can_be_named() {
        with_watchdog(|| {
            let ca = Ca::new("agentwire test CA");
            let (addr, server) = start_server(vec![Behaviour::Echo], Some(server_config(&ca)));
            let port = addr.rsplit_once(':').unwrap().1;
            // "localhost" resolves and is on the certificate; name it explicitly anyway.
            let mut agent = Agent::builder("remote-test")
                .remote(format!("127.0.0.1:{port}"))
                .tls(client_config(&ca, Some(&ca)))
                .tls_server_name("localhost")
                .connect()
                .unwrap();
            round_trip(&mut agent, 10);
            agent.close();
            server.join().unwrap();
        });
    }

    #[test]
    fn a_server_certificate_from_an_unknown_ca_fails_connect() {
        with_watchdog(|| {
            let ca = Ca::new("agentwire test CA");
            let other = Ca::new("another CA");
            let (addr, server) = start_server(vec![Behaviour::Echo], Some(server_config(&ca)));
            let err = Agent::builder("remote-test")
                .remote(&addr)
                .tls(client_config(&other, Some(&ca)))
                .connect()
                .unwrap_err();
            assert!(matches!(err, ClientError::Remote { .. }), "{err:?}");
            let text = err.to_string();
            assert!(text.contains("certificate"), "{text}");
            assert!(text.contains("UnknownIssuer"), "{text}");
            server.join().unwrap();
        });
    }

    #[test]
    fn a_missing_client_certificate_fails_connect_with_the_servers_alert() {
        with_watchdog(|| {
            let ca = Ca::new("agentwire test CA");
            let (addr, server) = start_server(vec![Behaviour::Echo], Some(server_config(&ca)));
            let err = Agent::builder("remote-test")
                .remote(&addr)
                .tls(client_config(&ca, None))
                .connect()
                .unwrap_err();
            assert!(matches!(err, ClientError::Remote { .. }), "{err:?}");
            let text = err.to_string().to_lowercase();
            assert!(text.contains("certificate"), "{text}");
            server.join().unwrap();
        });
    }
}
