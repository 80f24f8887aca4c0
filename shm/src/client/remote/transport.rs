//! The byte stream under a remote agent's bridge: TCP connect with a deadline, the TLS
//! handshake (rustls, synchronous, so certificate errors reach `connect`), non-blocking
//! reads into the frame assembler and writes from one bounded out-buffer.

use super::{remote_error, CONNECT_TIMEOUT, OUT_PENDING_BYTES_MAX};
use crate::client::ClientError;
use crate::stream_frames::FrameAssembler;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;

pub(super) fn connect_tcp(addr: &str) -> Result<TcpStream, ClientError> {
    let candidates = addr
        .to_socket_addrs()
        .map_err(|e| remote_error(addr, format!("cannot resolve the address: {e}")))?;
    let mut last = None;
    for candidate in candidates {
        match TcpStream::connect_timeout(&candidate, CONNECT_TIMEOUT) {
            Ok(socket) => {
                // Frames are batched by the bridge already; Nagle would only add delay.
                socket
                    .set_nodelay(true)
                    .map_err(|e| remote_error(addr, format!("TCP_NODELAY: {e}")))?;
                return Ok(socket);
            }
            Err(e) => last = Some(format!("TCP connect to {candidate} failed: {e}")),
        }
    }
    Err(remote_error(
        addr,
        last.unwrap_or_else(|| "the address resolves to nothing".into()),
    ))
}

/// Runs the TLS handshake to completion on the blocking socket, so a certificate problem
/// is the caller's error, not a later disconnect.
pub(super) fn handshake(
    addr: &str,
    mut socket: TcpStream,
    config: Arc<rustls::ClientConfig>,
    name: String,
) -> Result<Transport, ClientError> {
    let server_name = rustls_pki_types::ServerName::try_from(name.clone())
        .map_err(|e| remote_error(addr, format!("invalid TLS server name {name:?}: {e}")))?;
    let mut tls = rustls::ClientConnection::new(config, server_name)
        .map_err(|e| remote_error(addr, format!("TLS setup failed: {e}")))?;
    tls.set_buffer_limit(Some(OUT_PENDING_BYTES_MAX));
    let timeouts = socket
        .set_read_timeout(Some(CONNECT_TIMEOUT))
        .and_then(|()| socket.set_write_timeout(Some(CONNECT_TIMEOUT)));
    timeouts.map_err(|e| remote_error(addr, format!("socket timeout: {e}")))?;
    while tls.is_handshaking() {
        if let Err(e) = tls.complete_io(&mut socket) {
            let cause = match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    format!("TLS handshake timed out after {CONNECT_TIMEOUT:?}")
                }
                std::io::ErrorKind::UnexpectedEof => {
                    "the server closed the connection during the TLS handshake".into()
                }
                _ => format!("TLS handshake failed: {e}"),
            };
            return Err(remote_error(addr, cause));
        }
    }
    // Anything the handshake left to send (the client's Finished, its certificate).
    while tls.wants_write() {
        tls.write_tls(&mut socket)
            .map_err(|e| remote_error(addr, format!("TLS handshake failed: {e}")))?;
    }
    Ok(Transport::Tls {
        tls: Box::new(tls),
        socket,
    })
}

/// The byte stream under the pump.
pub(super) enum Transport {
    Plain(TcpStream),
    Tls {
        tls: Box<rustls::ClientConnection>,
        socket: TcpStream,
    },
}

/// What one read from the transport found.
pub(super) enum Received {
    /// Bytes went into the assembler.
    Bytes,
    /// Nothing now.
    Nothing,
    /// The server closed the stream.
    Closed,
}

impl Transport {
    pub(super) fn socket(&self) -> &TcpStream {
        match self {
            Self::Plain(socket) | Self::Tls { socket, .. } => socket,
        }
    }

    /// Whether bytes wait to go out (in `out` or inside rustls).
    pub(super) fn wants_write(&self, out: &OutBuf) -> bool {
        match self {
            Self::Plain(_) => out.pending_bytes() > 0,
            Self::Tls { tls, .. } => out.pending_bytes() > 0 || tls.wants_write(),
        }
    }

    /// Writes what it can of `out` without blocking; returns the bytes taken from `out`.
    pub(super) fn flush(&mut self, out: &mut OutBuf) -> std::io::Result<usize> {
        let mut taken = 0;
        match self {
            Self::Plain(socket) => {
                while out.pending_bytes() > 0 {
                    match socket.write(out.pending()) {
                        Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            out.consume(n);
                            taken += n;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Self::Tls { tls, socket } => loop {
                // rustls takes plaintext up to its buffer limit (0 when full).
                if out.pending_bytes() > 0 {
                    let n = tls.writer().write(out.pending())?;
                    out.consume(n);
                    taken += n;
                }
                if !tls.wants_write() {
                    break;
                }
                match tls.write_tls(socket) {
                    Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            },
        }
        out.compact();
        Ok(taken)
    }

    /// Reads what the socket has into `assembler` (at most its spare room).
    pub(super) fn read_into(
        &mut self,
        assembler: &mut FrameAssembler,
    ) -> std::io::Result<Received> {
        let spare = assembler.spare();
        if spare.is_empty() {
            return Ok(Received::Nothing);
        }
        match self {
            Self::Plain(socket) => match socket.read(spare) {
                Ok(0) => Ok(Received::Closed),
                Ok(n) => {
                    assembler.filled(n);
                    Ok(Received::Bytes)
                }
                Err(e) if would_block(&e) => Ok(Received::Nothing),
                Err(e) => Err(e),
            },
            Self::Tls { tls, socket } => {
                // Plaintext rustls already decrypted comes first: read_tls refuses more
                // while its plaintext buffer is full.
                match tls.reader().read(spare) {
                    Ok(0) => return Ok(Received::Closed),
                    Ok(n) => {
                        assembler.filled(n);
                        return Ok(Received::Bytes);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                match tls.read_tls(socket) {
                    Ok(0) => return Ok(Received::Closed),
                    Ok(_) => {}
                    Err(e) if would_block(&e) => return Ok(Received::Nothing),
                    Err(e) => return Err(e),
                }
                if let Err(e) = tls.process_new_packets() {
                    // Best effort: tell the server why (the alert rustls queued).
                    let _ = tls.write_tls(socket);
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                }
                let spare = assembler.spare();
                match tls.reader().read(spare) {
                    Ok(0) => Ok(Received::Closed),
                    Ok(n) => {
                        assembler.filled(n);
                        Ok(Received::Bytes)
                    }
                    // Handshake records or a partial record: nothing for us yet, but the
                    // socket was read, so the caller tries again.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(Received::Bytes),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// A close_notify for the server, best effort (the stream ends right after).
    pub(super) fn close(&mut self) {
        if let Self::Tls { tls, socket } = self {
            tls.send_close_notify();
            let _ = tls.write_tls(socket);
        }
    }
}

fn would_block(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
    )
}

/// Bytes waiting for the socket: one buffer, allocated once, compacted as it drains.
pub(super) struct OutBuf {
    pub(super) buf: Vec<u8>,
    start: usize,
}

impl OutBuf {
    pub(super) fn new() -> Self {
        Self {
            // Room for the bound plus one more frame or control message over it.
            buf: Vec::with_capacity(2 * OUT_PENDING_BYTES_MAX),
            start: 0,
        }
    }

    pub(super) fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub(super) fn pending_bytes(&self) -> usize {
        self.buf.len() - self.start
    }

    pub(super) fn has_room(&self) -> bool {
        self.pending_bytes() < OUT_PENDING_BYTES_MAX
    }

    pub(super) fn consume(&mut self, len_bytes: usize) {
        self.start = (self.start + len_bytes).min(self.buf.len());
    }

    pub(super) fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start >= OUT_PENDING_BYTES_MAX {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}
