//! One remote agent's connection: TLS (or, when allowed, plaintext), the handshake under a
//! deadline, then two loops on the executor: the reader cuts frames out of the stream and
//! sends them into the router through the connection's gateway endpoint (waiting, and so
//! stopping the socket, while the ring is full: TCP backpressure), and the writer gathers
//! what the router delivered to the gateway into one socket write per batch. A slow remote
//! reader stops the writer; the gateway's rx ring then fills and the router defers and
//! dead-letters as it does for a slow local agent.

use crate::config::ListenerConfig;
use crate::identity::{certificate_identities, IdentityRules};
use crate::stats::{add, TransportStats};
use agentwire_router::endpoint::{Endpoint, EndpointKind, EndpointRegistrar, GatewayControl};
use agentwire_router::policy::{Action, Rule};
use agentwire_shm::control::{
    negotiate, ClientMsg, RefuseReason, Registration, ServerMsg, AGENT_NAME_BYTES_MAX,
    PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
};
use agentwire_shm::ring::ClaimError;
use agentwire_shm::stream_frames::{append_control, decode_control, FrameAssembler};
use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::{TcpStream, UnixStream};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// The first byte of every TLS record a client opens with (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Frames taken from the gateway's ring per read call.
const FRAMES_PER_READ: usize = 64;
/// Empty polls of the writer that only yield (letting the reader run) before it waits on
/// the gateway's doorbell.
const IDLE_YIELDS: u32 = 4;
/// The reader's first and longest sleep while the router's ring is full.
const FULL_SLEEP_MIN: Duration = Duration::from_micros(20);
const FULL_SLEEP_MAX: Duration = Duration::from_millis(1);
/// The longest an idle writer waits before it looks at the stop flag again.
const STOP_POLL: Duration = Duration::from_millis(50);
/// How often a refusal is logged at most (the rest are counted).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// What every connection task of a listener shares (one executor: no locks).
pub(crate) struct Context {
    pub(crate) config: ListenerConfig,
    registrar: EndpointRegistrar,
    pub(crate) stats: Arc<TransportStats>,
    stop: Arc<AtomicBool>,
    tls: Option<futures_rustls::TlsAcceptor>,
    refusal_logged_at: Cell<Option<Instant>>,
    refusals_unlogged: Cell<u64>,
}

impl Context {
    pub(crate) fn new(
        config: ListenerConfig,
        registrar: EndpointRegistrar,
        stats: Arc<TransportStats>,
        stop: Arc<AtomicBool>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        Self {
            config,
            registrar,
            stats,
            stop,
            tls: tls.map(futures_rustls::TlsAcceptor::from),
            refusal_logged_at: Cell::new(None),
            refusals_unlogged: Cell::new(0),
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Logs a refusal at most once per [`REFUSAL_LOG_INTERVAL`] (a hostile client cannot
    /// flood the log); the ones not logged are counted in the next line.
    pub(crate) fn note_refusal(&self, what: &str) {
        let now = Instant::now();
        let due = self
            .refusal_logged_at
            .get()
            .is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_INTERVAL);
        if due {
            let unlogged = self.refusals_unlogged.replace(0);
            self.refusal_logged_at.set(Some(now));
            tracing::warn!(
                unlogged_since_last = unlogged,
                "remote agents listener: {what} (logged at most once every \
                 {REFUSAL_LOG_INTERVAL:?})"
            );
        } else {
            self.refusals_unlogged.set(self.refusals_unlogged.get() + 1);
        }
    }
}

/// `fut`, or `None` when it takes longer than `limit`.
pub(crate) async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    glommio::timer::timeout(limit, async { Ok(fut.await) })
        .await
        .ok()
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    Closed,
    Goodbye,
    Idle,
    Stopped,
    Malformed(String),
    Io(std::io::Error),
    /// Refused during the handshake (already answered and counted).
    Refused,
    HandshakeTimeout,
}

/// Serves one accepted connection to its end.
pub(crate) async fn serve(stream: TcpStream, ctx: &Context) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "an unknown peer".into());
    let _ = stream.set_nodelay(true);
    let end = match &ctx.tls {
        None => {
            let ip = peer.rsplit_once(':').map_or(peer.as_str(), |(ip, _)| ip);
            let identities = vec![format!("ip:{}", ip.trim_matches(['[', ']']))];
            serve_stream(stream, &peer, identities, ctx).await
        }
        Some(acceptor) => {
            let limit = ctx.config.handshake_timeout;
            let mut first = [0u8; 1];
            match within(limit, stream.peek(&mut first)).await {
                None => End::HandshakeTimeout,
                Some(Err(e)) => End::Io(std::io::Error::from(e)),
                Some(Ok(0)) => End::Closed,
                Some(Ok(_)) if first[0] != TLS_HANDSHAKE_RECORD => {
                    refuse_plaintext(stream, &peer, ctx).await;
                    End::Refused
                }
                Some(Ok(_)) => match within(limit, acceptor.accept(stream)).await {
                    None => End::HandshakeTimeout,
                    Some(Err(e)) => {
                        add(&ctx.stats.tls_handshakes_failed, 1);
                        ctx.note_refusal(&format!("TLS handshake with {peer} failed: {e}"));
                        End::Refused
                    }
                    Some(Ok(tls)) => {
                        let certificate =
                            tls.get_ref().1.peer_certificates().and_then(|c| c.first());
                        match certificate.map(|c| certificate_identities(c)) {
                            Some(Ok(identities)) => serve_stream(tls, &peer, identities, ctx).await,
                            Some(Err(e)) => End::Malformed(e),
                            None => End::Malformed("no client certificate".into()),
                        }
                    }
                },
            }
        }
    };
    match &end {
        End::HandshakeTimeout => {
            add(&ctx.stats.handshake_timeouts, 1);
            ctx.note_refusal(&format!(
                "{peer} did not finish its handshake within {:?}",
                ctx.config.handshake_timeout
            ));
        }
        End::Idle => add(&ctx.stats.idle_closed, 1),
        End::Io(e) => tracing::debug!(peer, "remote connection error: {e}"),
        End::Malformed(why) => {
            add(&ctx.stats.malformed_closed, 1);
            ctx.note_refusal(&format!("{peer} closed: {why}"));
        }
        _ => {}
    }
    tracing::debug!(peer, ?end, "remote connection ended");
}

/// A plaintext client on a TLS listener: told so in the protocol it speaks, then closed.
async fn refuse_plaintext(mut stream: TcpStream, peer: &str, ctx: &Context) {
    add(&ctx.stats.plaintext_refused, 1);
    ctx.note_refusal(&format!(
        "plaintext client {peer} refused: this listener requires TLS"
    ));
    let refusal = ServerMsg::Refused {
        reason: RefuseReason::NotPermitted,
        detail: "this listener requires TLS 1.3 with a client certificate; the client \
                 connected without TLS"
            .into(),
    };
    let mut out = Vec::new();
    if append_control(&refusal, &mut out).is_ok() {
        let limit = ctx.config.handshake_timeout;
        let _ = within(limit, async {
            stream.write_all(&out).await?;
            stream.flush().await
        })
        .await;
    }
}

/// Reads the next control message (the handshake's).
async fn read_control<R: AsyncRead + Unpin>(
    reader: &mut R,
    assembler: &mut FrameAssembler,
) -> Result<ClientMsg, End> {
    loop {
        match assembler.next_frame() {
            Err(e) => return Err(End::Malformed(e.to_string())),
            Ok(Some(frame)) => {
                let Ok(header) = FrameHeader::validate(frame) else {
                    return Err(End::Malformed("invalid frame header".into()));
                };
                return decode_control::<ClientMsg>(header, &frame[HEADER_BYTES..])
                    .map_err(|e| End::Malformed(format!("during the handshake: {e}")));
            }
            Ok(None) => {}
        }
        match reader.read(assembler.spare()).await {
            Ok(0) => return Err(End::Closed),
            Ok(n) => assembler.filled(n),
            Err(e) => return Err(End::Io(e)),
        }
    }
}

async fn write_control<W: AsyncWrite + Unpin>(writer: &mut W, msg: &ServerMsg) -> Result<(), End> {
    let mut out = Vec::new();
    append_control(msg, &mut out).map_err(|e| End::Malformed(e.to_string()))?;
    writer.write_all(&out).await.map_err(End::Io)?;
    writer.flush().await.map_err(End::Io)
}

/// Answers a refusal, counts it and ends the handshake.
async fn refuse<W: AsyncWrite + Unpin>(
    writer: &mut W,
    ctx: &Context,
    peer: &str,
    reason: RefuseReason,
    detail: String,
) -> End {
    add(&ctx.stats.handshakes_refused, 1);
    ctx.note_refusal(&format!("{peer} refused: {detail}"));
    let _ = write_control(writer, &ServerMsg::Refused { reason, detail }).await;
    End::Refused
}

/// What a registered connection holds.
struct Admitted {
    gateway: Endpoint,
    remote: u32,
}

/// `Hello` then `Register`, as on the control socket.
async fn handshake<R, W>(
    reader: &mut R,
    writer: &mut W,
    assembler: &mut FrameAssembler,
    identities: &[String],
    peer: &str,
    ctx: &Context,
) -> Result<Admitted, End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (version_min, version_max) = match read_control(reader, assembler).await? {
        ClientMsg::Hello {
            version_min,
            version_max,
            ..
        } => (version_min, version_max),
        other => {
            let detail = format!("expected Hello first, got {}", message_name(&other));
            return Err(refuse(writer, ctx, peer, RefuseReason::BadRequest, detail).await);
        }
    };
    let daemon = (PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX);
    let Some(version) = negotiate((version_min, version_max), daemon) else {
        let detail = format!(
            "the client speaks protocol versions {version_min}..={version_max}, this daemon \
             {PROTOCOL_VERSION_MIN}..={PROTOCOL_VERSION_MAX}"
        );
        return Err(refuse(writer, ctx, peer, RefuseReason::VersionUnsupported, detail).await);
    };
    let welcome = ServerMsg::Welcome {
        version,
        daemon: format!("agentwire {} (remote listener)", env!("CARGO_PKG_VERSION")),
    };
    write_control(writer, &welcome).await?;
    let registration = match read_control(reader, assembler).await? {
        ClientMsg::Register(registration) => registration,
        other => {
            let detail = format!(
                "expected Register after Welcome, got {} (status and admin commands are \
                 served on the daemon's local control socket only)",
                message_name(&other)
            );
            return Err(refuse(writer, ctx, peer, RefuseReason::BadRequest, detail).await);
        }
    };
    if let Err(detail) = ctx
        .config
        .identities
        .permits_registration(identities, &registration)
    {
        return Err(refuse(writer, ctx, peer, RefuseReason::NotPermitted, detail).await);
    }
    let registrar = ctx.registrar.clone();
    let gateway_name = gateway_name(peer);
    let ring_capacity_bytes = ctx.config.ring_capacity_bytes;
    let send_rule = ctx.config.identities.send_rule(identities);
    let joined = glommio::executor()
        .spawn_blocking(move || {
            join_router(
                &registrar,
                gateway_name,
                ring_capacity_bytes,
                registration,
                send_rule,
            )
        })
        .await;
    match joined {
        Ok((gateway, remote, topic_ids)) => {
            add(&ctx.stats.agents_registered, 1);
            let registered = ServerMsg::Registered {
                agent_id: remote,
                topic_ids,
            };
            write_control(writer, &registered).await?;
            Ok(Admitted { gateway, remote })
        }
        Err(detail) => Err(refuse(writer, ctx, peer, RefuseReason::BadRequest, detail).await),
    }
}

/// The gateway's name in the registry: `tcp:ADDR`, cut to the name limit.
fn gateway_name(peer: &str) -> String {
    let mut name = format!("tcp:{peer}");
    name.truncate(AGENT_NAME_BYTES_MAX);
    name
}

/// Registers the connection's gateway and its remote agent (blocking: runs on the
/// executor's blocking pool), restricted on the data path by `send_rule` (its identity's
/// rule; `None`: no rules), with the ids of the topics it subscribed.
fn join_router(
    registrar: &EndpointRegistrar,
    gateway_name: String,
    ring_capacity_bytes: u32,
    registration: Registration,
    send_rule: Option<Arc<Rule>>,
) -> Result<(Endpoint, u32, Vec<u32>), String> {
    let identity = Registration {
        name: gateway_name,
        ring_capacity_bytes,
        ..Registration::default()
    };
    let mut gateway = registrar
        .register(identity, EndpointKind::Gateway)
        .map_err(|e| e.to_string())?;
    let topics = registration.topics.clone();
    let remote = gateway
        .add_remote_restricted(registration, send_rule)
        .map_err(|e| e.to_string())?;
    let control = gateway.gateway_control();
    // The shards take the new agent in before its first frame can arrive (a shard in the
    // middle of a cycle would credit it to the gateway).
    control.await_routing(Duration::from_secs(1));
    let mut topic_ids = Vec::with_capacity(topics.len());
    for topic in topics {
        match control.request(remote, ClientMsg::ResolveTopic { topic }) {
            Ok(ServerMsg::TopicId { topic_id }) => topic_ids.push(topic_id),
            Ok(other) => return Err(format!("resolving a topic: {other:?}")),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok((gateway, remote, topic_ids))
}

fn message_name(msg: &ClientMsg) -> &'static str {
    match msg {
        ClientMsg::Hello { .. } => "Hello",
        ClientMsg::Register(_) => "Register",
        ClientMsg::Subscribe { .. } => "Subscribe",
        ClientMsg::Unsubscribe { .. } => "Unsubscribe",
        ClientMsg::ResolveTopic { .. } => "ResolveTopic",
        ClientMsg::ResolveCapability { .. } => "ResolveCapability",
        ClientMsg::Discover { .. } => "Discover",
        ClientMsg::Goodbye => "Goodbye",
        ClientMsg::Status => "Status",
        ClientMsg::StatusAgents { .. } => "StatusAgents",
        ClientMsg::StatusRoutes { .. } => "StatusRoutes",
    }
}

/// The handshake under its deadline, then the two loops until either ends.
async fn serve_stream<S>(stream: S, peer: &str, identities: Vec<String>, ctx: &Context) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let mut assembler = FrameAssembler::new(ctx.config.frame_bytes_max);
    let admitted = within(
        ctx.config.handshake_timeout,
        handshake(
            &mut reader,
            &mut writer,
            &mut assembler,
            &identities,
            peer,
            ctx,
        ),
    )
    .await;
    let Admitted { gateway, remote } = match admitted {
        None => return End::HandshakeTimeout,
        Some(Err(end)) => return end,
        Some(Ok(admitted)) => admitted,
    };
    let mut bell = match bell_stream(&gateway) {
        Ok(bell) => bell,
        Err(e) => return End::Io(e),
    };
    let link = Link {
        answered: Wakeup::default(),
        control: gateway.gateway_control(),
        gateway: RefCell::new(gateway),
        pending: RefCell::new(Vec::new()),
        last_write: Cell::new(Instant::now()),
        remote,
        identities,
    };
    futures_lite::future::or(
        link.read_loop(&mut reader, &mut assembler, ctx),
        link.write_loop(&mut writer, &mut bell, ctx),
    )
    .await
    // Dropping `link` drops the gateway: the router forgets it and its remote agent.
}

/// A registered connection's state, shared by its two loops (one executor: `RefCell`s,
/// never borrowed across an await).
struct Link {
    gateway: RefCell<Endpoint>,
    /// Rung by the reader when it queued a control answer for the writer.
    answered: Wakeup,
    control: GatewayControl,
    /// Control answers waiting for the writer (encoded frames).
    pending: RefCell<Vec<u8>>,
    last_write: Cell<Instant>,
    remote: u32,
    identities: Vec<String>,
}

impl Link {
    /// Frames from the remote agent into the router; control requests answered.
    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        assembler: &mut FrameAssembler,
        ctx: &Context,
    ) -> End {
        loop {
            loop {
                let frame = match assembler.next_frame() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => return End::Malformed(e.to_string()),
                };
                let Ok(header) = FrameHeader::validate(frame) else {
                    return End::Malformed("invalid frame header".into());
                };
                let mut header = *header;
                let payload = &frame[HEADER_BYTES..];
                if header.kind() == FrameKind::Control {
                    let msg = match decode_control::<ClientMsg>(&header, payload) {
                        Ok(msg) => msg,
                        Err(e) => return End::Malformed(e.to_string()),
                    };
                    if msg == ClientMsg::Goodbye {
                        return End::Goodbye;
                    }
                    let answer = self.answer(msg, ctx).await;
                    if let Err(e) = append_control(&answer, &mut self.pending.borrow_mut()) {
                        return End::Malformed(e.to_string());
                    }
                    self.answered.notify();
                    continue;
                }
                // The connection speaks for its remote agent only, whatever the frame says.
                header.set_source(self.remote);
                if let Err(end) = self.send(header, payload, ctx).await {
                    return end;
                }
                add(&ctx.stats.frames_in, 1);
                add(&ctx.stats.bytes_in, frame.len() as u64);
            }
            match within(ctx.config.idle_timeout, reader.read(assembler.spare())).await {
                None => {
                    if self.last_write.get().elapsed() >= ctx.config.idle_timeout {
                        return End::Idle;
                    }
                }
                Some(Ok(0)) => return End::Closed,
                Some(Ok(n)) => {
                    assembler.filled(n);
                }
                Some(Err(e)) => return End::Io(e),
            }
        }
    }

    /// Sends one frame into the router, waiting while its lane is full (the socket is not
    /// read meanwhile: backpressure reaches the remote sender through TCP).
    async fn send(&self, header: FrameHeader, payload: &[u8], ctx: &Context) -> Result<(), End> {
        let mut wait = FULL_SLEEP_MIN;
        loop {
            let sent = self.gateway.borrow_mut().try_send(header, payload);
            match sent {
                Ok(()) => return Ok(()),
                Err(ClaimError::Full { .. }) => {
                    if ctx.stopping() {
                        return Err(End::Stopped);
                    }
                    glommio::timer::sleep(wait).await;
                    wait = (wait * 2).min(FULL_SLEEP_MAX);
                }
                Err(e) => {
                    // Larger than the ring can ever carry: dropped, counted, logged.
                    add(&ctx.stats.frames_too_large_for_ring, 1);
                    ctx.note_refusal(&format!("frame from agent {} dropped: {e}", self.remote));
                    return Ok(());
                }
            }
        }
    }

    /// A control request after registration, checked against the identity rules and
    /// answered by the router's control loop (on the blocking pool: it waits).
    async fn answer(&self, msg: ClientMsg, ctx: &Context) -> ServerMsg {
        add(&ctx.stats.control_requests, 1);
        let refused = |detail: String| {
            add(&ctx.stats.control_refused, 1);
            ServerMsg::Error { detail }
        };
        let rules: &IdentityRules = &ctx.config.identities;
        let checked = match &msg {
            ClientMsg::Subscribe { topic } => {
                rules.permits(&self.identities, Action::Subscribe(topic))
            }
            ClientMsg::ResolveTopic { topic } => {
                rules.permits(&self.identities, Action::Publish(topic))
            }
            ClientMsg::Hello { .. }
            | ClientMsg::Register(_)
            | ClientMsg::Status
            | ClientMsg::StatusAgents { .. }
            | ClientMsg::StatusRoutes { .. } => Err(format!(
                "{} is not a request of a registered remote agent",
                message_name(&msg)
            )),
            _ => Ok(()),
        };
        if let Err(detail) = checked {
            return refused(detail);
        }
        let control = self.control.clone();
        let remote = self.remote;
        let answer = glommio::executor()
            .spawn_blocking(move || control.request(remote, msg))
            .await;
        match answer {
            Ok(ServerMsg::Error { detail }) => refused(detail),
            Ok(answer) => answer,
            Err(e) => refused(e.to_string()),
        }
    }

    /// Waits, without polling, until the router delivers to the gateway (its doorbell, armed
    /// first), the reader queues a control answer, or the stop poll interval passes.
    async fn wait_for_work(&self, bell: &mut UnixStream) -> Result<(), End> {
        let pending = !self.pending.borrow().is_empty();
        match wait_for_gateway(&self.gateway, pending, &self.answered, bell).await {
            Woken::Work => Ok(()),
            Woken::RouterGone => Err(End::Stopped),
            Woken::Io(e) => Err(End::Io(e)),
        }
    }

    /// What the router delivered to the gateway (and control answers) out to the socket,
    /// one write per batch.
    /// `bell` is the gateway's rx doorbell as a stream the executor awaits (rung by the
    /// router when it delivers while the writer waits).
    async fn write_loop<W: AsyncWrite + Unpin>(
        &self,
        writer: &mut W,
        bell: &mut UnixStream,
        ctx: &Context,
    ) -> End {
        let batch_max = ctx.config.write_batch_bytes_max;
        let mut batch: Vec<u8> = Vec::with_capacity(batch_max * 2);
        let mut idle_polls = 0u32;
        loop {
            if ctx.stopping() {
                return End::Stopped;
            }
            let mut frames = 0u64;
            {
                let mut pending = self.pending.borrow_mut();
                if !pending.is_empty() {
                    batch.extend_from_slice(&pending);
                    pending.clear();
                    frames += 1;
                }
            }
            while batch.len() < batch_max {
                let read = self
                    .gateway
                    .borrow_mut()
                    .read(FRAMES_PER_READ, |header, payload| {
                        let at = batch.len();
                        batch.resize(at + HEADER_BYTES, 0);
                        header.write_to(&mut batch[at..]);
                        batch.extend_from_slice(payload);
                    });
                match read {
                    Ok(0) => break,
                    Ok(n) => frames += n as u64,
                    Err(e) => return End::Malformed(format!("the gateway's ring: {e}")),
                }
            }
            if batch.is_empty() {
                idle_polls = idle_polls.saturating_add(1);
                if idle_polls <= IDLE_YIELDS {
                    futures_lite::future::yield_now().await;
                    continue;
                }
                idle_polls = 0;
                if let Err(end) = self.wait_for_work(bell).await {
                    return end;
                }
                continue;
            }
            idle_polls = 0;
            if let Err(e) = writer.write_all(&batch).await {
                return End::Io(e);
            }
            if let Err(e) = writer.flush().await {
                return End::Io(e);
            }
            add(&ctx.stats.frames_out, frames);
            add(&ctx.stats.bytes_out, batch.len() as u64);
            add(&ctx.stats.socket_writes, 1);
            batch.clear();
            // The reader closes a connection silent both ways (it times out its reads).
            self.last_write.set(Instant::now());
        }
    }
}

/// How waiting for a gateway's work ended.
pub(crate) enum Woken {
    /// Frames, a queued control frame, or the stop poll interval passed: look again.
    Work,
    /// The router closed its end of the doorbell: it is stopping.
    RouterGone,
    Io(std::io::Error),
}

/// Waits, without polling, until the router delivers to `gateway` (its doorbell, armed
/// first), `answered` is notified, or the stop poll interval passes; at once when frames
/// wait already or `pending` (a control frame queued).
pub(crate) async fn wait_for_gateway(
    gateway: &RefCell<Endpoint>,
    pending: bool,
    answered: &Wakeup,
    bell: &mut UnixStream,
) -> Woken {
    if gateway.borrow_mut().prepare_to_wait() || pending {
        return Woken::Work;
    }
    let mut drained = [0u8; 64];
    let rung = async {
        match bell.read(&mut drained).await {
            Ok(0) => Woken::RouterGone,
            Ok(_) => Woken::Work,
            Err(e) => Woken::Io(e),
        }
    };
    let answered = async {
        answered.wait().await;
        Woken::Work
    };
    let stop_poll = async {
        glommio::timer::sleep(STOP_POLL).await;
        Woken::Work
    };
    futures_lite::future::or(rung, futures_lite::future::or(answered, stop_poll)).await
}

/// The gateway's rx doorbell as a glommio stream: a duplicate of its waiting end (a Unix
/// stream socket for endpoints), so that the executor wakes when the router rings it.
#[allow(unsafe_code)]
pub(crate) fn bell_stream(gateway: &Endpoint) -> std::io::Result<UnixStream> {
    use std::os::fd::{AsFd, IntoRawFd};
    let owned = gateway.doorbell().as_fd().try_clone_to_owned()?;
    let raw = owned.into_raw_fd();
    // SAFETY: `raw` is a descriptor this function just duplicated and owns alone; the
    // stream takes it over and closes it when dropped. The router's endpoints' rx bells are
    // Unix stream sockets (`Doorbell::socket_pair`), the kind `UnixStream` reads.
    Ok(unsafe { <UnixStream as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

/// A one-task wakeup on one executor: `notify` sets it and wakes the waiter, `wait`
/// completes once it is set (and clears it).
#[derive(Default)]
pub(crate) struct Wakeup {
    set: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Wakeup {
    pub(crate) fn notify(&self) {
        self.set.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    pub(crate) async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.set.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}
