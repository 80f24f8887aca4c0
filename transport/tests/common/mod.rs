//! Test helpers: certificates made at test time (rcgen), a router, a listener, and a raw
//! stream client that speaks the wire protocol by hand (so hostile clients can be played).
#![allow(dead_code)]

use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::control::{ClientMsg, RefuseReason, Registration, ServerMsg};
use agentwire_shm::stream_frames::{append_control, decode_control, FrameAssembler};
use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
use agentwire_transport::config::ListenerConfig;
use agentwire_transport::server::RemoteListener;
use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[allow(unused_imports)] // each test binary uses its own subset
pub use agentwire_transport::test_pki::*;

pub fn socket_path(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("aw-transport-{test}-{}.sock", std::process::id()))
}

/// A router and a listener on a loopback port of its own.
pub fn start(test: &str, config: ListenerConfig) -> (TestRouter, RemoteListener) {
    let router = TestRouter::start(TestRouterConfig::new(socket_path(test))).unwrap();
    let listener = RemoteListener::start(config, router.control().endpoint_registrar()).unwrap();
    (router, listener)
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A blocking stream (plain or TLS) with read timeouts.
pub enum Wire {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Wire::Plain(s) => s.read(buf),
            Wire::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Wire::Plain(s) => s.write(buf),
            Wire::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Wire::Plain(s) => s.flush(),
            Wire::Tls(s) => s.flush(),
        }
    }
}

/// A remote agent played by hand.
pub struct RawClient {
    pub wire: Wire,
    assembler: FrameAssembler,
}

const READ_TIMEOUT: Duration = Duration::from_secs(10);

impl RawClient {
    pub fn plain(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            wire: Wire::Plain(stream),
            assembler: FrameAssembler::new(1 << 20),
        }
    }

    /// Connects with TLS and completes the handshake; the error is rustls's (or the
    /// socket's) as the client sees it.
    pub fn tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, stream);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        // TLS 1.3: the server checks the client's certificate after the client's side of
        // the handshake is done; a refusal arrives as an alert on the first read.
        Ok(Self {
            wire: Wire::Tls(Box::new(tls)),
            assembler: FrameAssembler::new(1 << 20),
        })
    }

    pub fn send_control(&mut self, msg: &ClientMsg) -> std::io::Result<()> {
        let mut out = Vec::new();
        append_control(msg, &mut out).unwrap();
        self.wire.write_all(&out)?;
        self.wire.flush()
    }

    pub fn send_frame(&mut self, header: FrameHeader, payload: &[u8]) -> std::io::Result<()> {
        let mut out = vec![0u8; HEADER_BYTES + payload.len()];
        header.write_to(&mut out);
        out[HEADER_BYTES..].copy_from_slice(payload);
        self.wire.write_all(&out)?;
        self.wire.flush()
    }

    /// The next frame: header and payload.
    pub fn recv_frame(&mut self) -> std::io::Result<(FrameHeader, Vec<u8>)> {
        loop {
            if let Some(frame) = self
                .assembler
                .next_frame()
                .map_err(|e| std::io::Error::other(e.to_string()))?
            {
                let header = *FrameHeader::validate(frame).unwrap();
                return Ok((header, frame[HEADER_BYTES..].to_vec()));
            }
            let n = self.wire.read(self.assembler.spare())?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.assembler.filled(n);
        }
    }

    pub fn recv_control(&mut self) -> std::io::Result<ServerMsg> {
        let (header, payload) = self.recv_frame()?;
        assert_eq!(
            header.kind(),
            FrameKind::Control,
            "expected a control frame"
        );
        decode_control::<ServerMsg>(&header, &payload)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// Hello and Register: the agent id, or the refusal.
    pub fn register(&mut self, registration: Registration) -> Result<u32, Refusal> {
        let hello = ClientMsg::Hello {
            version_min: agentwire_shm::control::PROTOCOL_VERSION_MIN,
            version_max: agentwire_shm::control::PROTOCOL_VERSION_MAX,
            client: "raw test client".into(),
        };
        self.send_control(&hello).map_err(Refusal::Io)?;
        match self.recv_control().map_err(Refusal::Io)? {
            ServerMsg::Welcome { .. } => {}
            ServerMsg::Refused { reason, detail } => return Err(Refusal::Refused(reason, detail)),
            other => panic!("expected Welcome, got {other:?}"),
        }
        self.send_control(&ClientMsg::Register(registration))
            .map_err(Refusal::Io)?;
        match self.recv_control().map_err(Refusal::Io)? {
            ServerMsg::Registered { agent_id, .. } => Ok(agent_id),
            ServerMsg::Refused { reason, detail } => Err(Refusal::Refused(reason, detail)),
            other => panic!("expected Registered, got {other:?}"),
        }
    }
}

#[derive(Debug)]
pub enum Refusal {
    Refused(RefuseReason, String),
    Io(std::io::Error),
}

pub fn named(name: &str) -> Registration {
    Registration {
        name: name.into(),
        ..Registration::default()
    }
}

/// Waits (bounded) until `check` holds.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn local_agent(router: &TestRouter, name: &str) -> agentwire_shm::client::Agent {
    agentwire_shm::client::Agent::builder(name)
        .socket(router.socket_path())
        .connect()
        .unwrap()
}
