//! Endpoints: what plugs into the router. An endpoint is a ring pair plus an identity (name,
//! capabilities, topics, features); the router serves every endpoint's rings with the same
//! duty cycle, whatever stands behind them:
//!
//! - a **shared-memory agent** in another process, admitted over the control socket;
//! - an **in-process endpoint** ([`EndpointKind::InProcess`]): rings in the daemon's own
//!   memory, registered through [`RouterControl::register_endpoint`] without a socket, for
//!   an engine running on its partition's executor;
//! - a **gateway endpoint** ([`EndpointKind::Gateway`]): one ring pair standing for many
//!   remote agents (a network connection, a link to another node). Each remote agent gets
//!   an id and an identity of its own ([`Endpoint::add_remote`]); frames for it arrive in
//!   the gateway's rx ring (its id in the header's destination), and the gateway sends on
//!   its behalf by naming it as the frame's source.
//!
//! In-process endpoints never block the router: they poll ([`Endpoint::read`]) and may
//! park on [`Endpoint::doorbell`]. Dropping an endpoint removes it (and its remote agents).
//!
//! An in-process echo endpoint registered for a feature id, reached by a shared-memory
//! agent with `send_feature`:
//!
//! ```
//! use agentwire_router::endpoint::EndpointKind;
//! use agentwire_router::testing::{TestRouter, TestRouterConfig};
//! use agentwire_shm::control::Registration;
//! use agentwire_shm::wire::{FrameHeader, FrameKind};
//! use std::time::Duration;
//!
//! let sock = std::env::temp_dir().join(format!("aw-doc-endpoint-{}.sock", std::process::id()));
//! let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
//! let identity = Registration { name: "echo".into(), features: vec![42], ..Default::default() };
//! let mut echo = router.control().register_endpoint(identity, EndpointKind::InProcess).unwrap();
//! let server = std::thread::spawn(move || {
//!     // An engine would run this on its executor; here a thread echoes one request.
//!     let mut served = 0;
//!     while served == 0 {
//!         served = echo.read(16, |header, payload| {
//!             let reply = FrameHeader::new(FrameKind::Response, 0, header.source(), payload.len() as u32)
//!                 .with_correlation(header.correlation());
//!             (reply, payload.to_vec())
//!         }).unwrap();
//!         echo.doorbell().wait(Duration::from_millis(10));
//!     }
//! });
//! let mut agent = agentwire_shm::client::Agent::builder("asker").socket(router.socket_path()).connect().unwrap();
//! agent.send_feature(42, b"ping").unwrap();
//! let answer = agent.recv(Some(Duration::from_secs(5))).unwrap().unwrap();
//! assert_eq!(answer.payload(), b"ping");
//! server.join().unwrap();
//! ```

use crate::policy::Rule;
use crate::shared::Shared;
use agentwire_shm::control::{ClientMsg, Registration, ServerMsg};
use agentwire_shm::doorbell::Doorbell;
use agentwire_shm::ring::{ClaimError, Consumer, Producer, RingError};
use agentwire_shm::segment::{Segment, TX_LANES};
use agentwire_shm::wire::{FrameHeader, HEADER_BYTES};
use std::ops::ControlFlow;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::Duration;

/// How long a registration waits for the control loop's answer.
pub const ENDPOINT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Endpoint requests queued for the control loop at most.
pub const ENDPOINT_REQUESTS_MAX: usize = 1024;

/// What an endpoint stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    /// One party in the daemon itself (an engine).
    InProcess,
    /// Many remote agents behind one ring pair (a network connection).
    Gateway,
    /// A gateway for another node's agents (a node link): routed like [`Self::Gateway`],
    /// except that anycast and feature routes pick an agent of this node first and one
    /// behind a link only when no local one can take the frame.
    Link,
}

impl EndpointKind {
    /// Whether remote agents may stand behind it ([`Self::Gateway`] or [`Self::Link`]).
    ///
    /// ```
    /// use agentwire_router::endpoint::EndpointKind;
    /// assert!(EndpointKind::Link.is_gateway() && !EndpointKind::InProcess.is_gateway());
    /// ```
    pub fn is_gateway(self) -> bool {
        matches!(self, Self::Gateway | Self::Link)
    }
}

/// Why an endpoint request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The router refused it (full, a bad identity, an unknown remote agent).
    #[error("endpoint refused: {0}")]
    Refused(String),
    /// The router is stopping, or its control loop did not answer in time.
    #[error("the router's control loop is not answering ({0})")]
    Unavailable(&'static str),
    /// Only a gateway endpoint has remote agents.
    #[error("only a gateway endpoint has remote agents")]
    NotAGateway,
}

/// A request to the control loop (which owns ids, shards and the registry's writers).
pub(crate) enum EndpointRequest {
    Register {
        registration: Registration,
        kind: EndpointKind,
        reply: SyncSender<Result<EndpointRings, String>>,
    },
    AddRemote {
        gateway: u32,
        registration: Registration,
        send_rule: Option<Arc<Rule>>,
        reply: SyncSender<Result<u32, String>>,
    },
    Remove {
        agent_id: u32,
    },
    /// Every remote agent of `gateway` leaves; answered with how many.
    RemoveRemotes {
        gateway: u32,
        reply: SyncSender<Result<u32, String>>,
    },
    /// One remote agent of `gateway` leaves (refused quietly if it is not the gateway's).
    RemoveRemote {
        gateway: u32,
        agent_id: u32,
    },
    /// A control request (subscribe, resolve, discover, ...) on behalf of a remote agent of
    /// `gateway`; authorization is the gateway's job (it knows the network identity).
    Session {
        gateway: u32,
        agent_id: u32,
        msg: ClientMsg,
        reply: SyncSender<Result<ServerMsg, String>>,
    },
    ResolveTopic {
        agent_id: u32,
        topic: String,
        reply: SyncSender<Result<u32, String>>,
    },
}

/// What the control loop hands a new in-process endpoint.
pub(crate) struct EndpointRings {
    pub(crate) agent_id: u32,
    pub(crate) segment: Segment,
    pub(crate) tx_bell: Doorbell,
    pub(crate) rx_bell: Doorbell,
}

/// Queues `request` for the control loop and wakes it.
pub(crate) fn post(shared: &Shared, request: EndpointRequest) -> Result<(), EndpointError> {
    {
        let mut queue = shared
            .endpoint_requests
            .lock()
            .expect("endpoint requests lock");
        if queue.len() >= ENDPOINT_REQUESTS_MAX {
            return Err(EndpointError::Unavailable("request queue full"));
        }
        queue.push(request);
    }
    shared.control_wake.ring();
    Ok(())
}

/// Posts the request `make` builds around a reply channel and waits for the answer.
fn ask<T>(
    shared: &Shared,
    make: impl FnOnce(SyncSender<Result<T, String>>) -> EndpointRequest,
) -> Result<T, EndpointError> {
    let (reply, answer) = sync_channel(1);
    post(shared, make(reply))?;
    answer
        .recv_timeout(ENDPOINT_REQUEST_TIMEOUT)
        .map_err(|_| EndpointError::Unavailable("no answer"))?
        .map_err(EndpointError::Refused)
}

/// Registers an endpoint through the control loop and waits for its rings.
pub(crate) fn register(
    shared: &Arc<Shared>,
    registration: Registration,
    kind: EndpointKind,
) -> Result<Endpoint, EndpointError> {
    let rings = ask(shared, |reply| EndpointRequest::Register {
        registration,
        kind,
        reply,
    })?;
    let tx = (0..TX_LANES)
        .map(|lane| {
            let bell = rings.tx_bell.try_clone().expect("a shared doorbell handle");
            Producer::new(rings.segment.tx_lane_memory(lane), Some(bell))
        })
        .collect();
    let rx = Consumer::new(rings.segment.rx_memory(), Some(rings.rx_bell));
    Ok(Endpoint {
        id: rings.agent_id,
        kind,
        tx,
        rx,
        _segment: rings.segment,
        shared: shared.clone(),
        remotes: Vec::new(),
        topics: Vec::new(),
    })
}

/// An endpoint registered in-process: its ends of the rings the router serves.
pub struct Endpoint {
    id: u32,
    kind: EndpointKind,
    /// One producer per priority lane.
    tx: Vec<Producer>,
    rx: Consumer,
    /// Keeps the rings mapped.
    _segment: Segment,
    shared: Arc<Shared>,
    remotes: Vec<u32>,
    /// Topics resolved so far, by name (a handful per endpoint: a list is enough).
    topics: Vec<(String, u32)>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("remotes", &self.remotes.len())
            .finish()
    }
}

impl Endpoint {
    /// The endpoint's agent id (what others address it by).
    ///
    /// ```
    /// # use agentwire_router::{endpoint::EndpointKind, testing::{TestRouter, TestRouterConfig}};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-ep-id-{}.sock", std::process::id()));
    /// # let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// let e = r.control().register_endpoint(
    ///     agentwire_shm::control::Registration { name: "e".into(), ..Default::default() },
    ///     EndpointKind::InProcess,
    /// ).unwrap();
    /// assert!(e.id() > 0);
    /// ```
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Sends one frame: `header` (its priority picks the lane; the router stamps the source
    /// with this endpoint's id, or keeps it when it names one of a gateway's remote agents)
    /// and `payload`, whose length must match the header's. Never waits: `Full` when the
    /// lane has no room now.
    ///
    /// ```
    /// # use agentwire_router::{endpoint::EndpointKind, testing::{TestRouter, TestRouterConfig}};
    /// # use agentwire_shm::wire::{FrameHeader, FrameKind};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-ep-send-{}.sock", std::process::id()));
    /// # let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// # let mut e = r.control().register_endpoint(
    /// #     agentwire_shm::control::Registration { name: "e".into(), ..Default::default() },
    /// #     EndpointKind::InProcess).unwrap();
    /// e.try_send(FrameHeader::new(FrameKind::Send, 0, 9999, 2), b"hi").unwrap(); // nacked: no agent 9999
    /// ```
    pub fn try_send(&mut self, header: FrameHeader, payload: &[u8]) -> Result<(), ClaimError> {
        let lane = usize::from(header.priority()).min(TX_LANES - 1);
        let mut claim = self.tx[lane].claim(HEADER_BYTES + payload.len())?;
        let bytes = claim.bytes_mut();
        header.write_to(bytes);
        bytes[HEADER_BYTES..].copy_from_slice(payload);
        claim.commit();
        Ok(())
    }

    /// Bytes this endpoint sent that the router has not taken yet (every lane).
    ///
    /// ```
    /// # use agentwire_router::{endpoint::EndpointKind, testing::{TestRouter, TestRouterConfig}};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-ep-txocc-{}.sock", std::process::id()));
    /// # let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// # let mut e = r.control().register_endpoint(
    /// #     agentwire_shm::control::Registration { name: "e".into(), ..Default::default() },
    /// #     EndpointKind::InProcess).unwrap();
    /// let waiting = e.tx_occupied_bytes(); // 0 once the router took everything
    /// # let _ = waiting;
    /// ```
    pub fn tx_occupied_bytes(&mut self) -> usize {
        self.tx.iter_mut().map(Producer::occupied_bytes).sum()
    }

    /// Reads up to `frames_max` frames from the rx ring, calling `on_frame` with each one's
    /// header (validated) and payload; a frame whose header fails validation is skipped.
    /// Returns the frames read (0 when none waits). `on_frame` returns a reply to send
    /// (header and payload) or `None`.
    ///
    /// ```
    /// # use agentwire_router::{endpoint::EndpointKind, testing::{TestRouter, TestRouterConfig}};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-ep-read-{}.sock", std::process::id()));
    /// # let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// # let mut e = r.control().register_endpoint(
    /// #     agentwire_shm::control::Registration { name: "e".into(), ..Default::default() },
    /// #     EndpointKind::InProcess).unwrap();
    /// let read = e.read(16, |_header, _payload| None::<(agentwire_shm::wire::FrameHeader, Vec<u8>)>).unwrap();
    /// assert_eq!(read, 0);
    /// ```
    pub fn read<R: Reply>(
        &mut self,
        frames_max: usize,
        mut on_frame: impl FnMut(&FrameHeader, &[u8]) -> R,
    ) -> Result<usize, RingError> {
        let Self { rx, tx, .. } = self;
        rx.read(frames_max, |frame| {
            if let Ok(header) = FrameHeader::validate(frame) {
                let header = *header;
                if let Some((reply, payload)) = on_frame(&header, &frame[HEADER_BYTES..]).reply() {
                    let lane = usize::from(reply.priority()).min(TX_LANES - 1);
                    if let Ok(mut claim) = tx[lane].claim(HEADER_BYTES + payload.as_ref().len()) {
                        let bytes = claim.bytes_mut();
                        reply.write_to(bytes);
                        bytes[HEADER_BYTES..].copy_from_slice(payload.as_ref());
                        claim.commit();
                    } else {
                        // No room for the reply: stop here, the frame is read again next time.
                        return ControlFlow::Break(());
                    }
                }
            }
            ControlFlow::Continue(())
        })
    }

    /// The rx ring's doorbell: the router rings it when it delivers to a parked endpoint
    /// (park with [`Consumer`]'s protocol, or simply wait on it with a timeout).
    ///
    /// ```
    /// # use agentwire_router::{endpoint::EndpointKind, testing::{TestRouter, TestRouterConfig}};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-ep-bell-{}.sock", std::process::id()));
    /// # let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// # let e = r.control().register_endpoint(
    /// #     agentwire_shm::control::Registration { name: "e".into(), ..Default::default() },
    /// #     EndpointKind::InProcess).unwrap();
    /// e.doorbell().wait(std::time::Duration::from_millis(1));
    /// ```
    pub fn doorbell(&self) -> &Doorbell {
        self.rx.doorbell().expect("endpoints have an rx doorbell")
    }

    /// Tells the router that this endpoint is about to wait on its [`Endpoint::doorbell`]
    /// (the ring's parking protocol: from now on a delivery rings the bell) and returns
    /// whether frames are already waiting, in which case it should read instead of waiting.
    /// The flag stays set until frames are read. An async runtime awaits the bell's
    /// descriptor (a Unix stream socket for endpoints) after this returns false.
    ///
    /// ```
    /// # use agentwire_router::{endpoint::EndpointKind, testing::{TestRouter, TestRouterConfig}};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-ep-arm-{}.sock", std::process::id()));
    /// # let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// # let mut e = r.control().register_endpoint(
    /// #     agentwire_shm::control::Registration { name: "e".into(), ..Default::default() },
    /// #     EndpointKind::InProcess).unwrap();
    /// if !e.prepare_to_wait() {
    ///     e.doorbell().wait(std::time::Duration::from_millis(1));
    /// }
    /// ```
    pub fn prepare_to_wait(&mut self) -> bool {
        let rx = std::slice::from_mut(&mut self.rx);
        if Consumer::arm_park(rx) {
            agentwire_shm::doorbell::asymmetric_barrier();
        }
        Consumer::any_pending(std::slice::from_ref(&self.rx))
    }

    /// A gateway's new remote agent with `identity` (its name, capabilities, topics and
    /// features are routed like any agent's); returns its id. Frames for it arrive in this
    /// gateway's rx ring with that id as destination.
    ///
    /// ```
    /// # use agentwire_router::{endpoint::EndpointKind, testing::{TestRouter, TestRouterConfig}};
    /// # use agentwire_shm::control::Registration;
    /// # let p = std::env::temp_dir().join(format!("aw-doc-ep-remote-{}.sock", std::process::id()));
    /// # let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// let mut gw = r.control().register_endpoint(
    ///     Registration { name: "node-b".into(), ..Default::default() }, EndpointKind::Gateway).unwrap();
    /// let remote = gw.add_remote(Registration { name: "b/ocr".into(), ..Default::default() }).unwrap();
    /// assert_ne!(remote, gw.id());
    /// ```
    pub fn add_remote(&mut self, identity: Registration) -> Result<u32, EndpointError> {
        self.add_remote_restricted(identity, None)
    }

    /// [`Self::add_remote`], with what the agent may reach on the data path: the `send`
    /// patterns of `send_rule` name the agents it may send to (and that routes may pick for
    /// it), its `publish` patterns the topics it may publish on; any other frame is nacked
    /// `NotPermitted` and counted. `None`: not restricted. A network listener passes the
    /// rule the client's certificate matched.
    ///
    /// ```
    /// # use agentwire_router::{endpoint::EndpointKind, testing::{TestRouter, TestRouterConfig}};
    /// # use agentwire_router::policy::{Pattern, Rule};
    /// # use agentwire_shm::control::Registration;
    /// # let p = std::env::temp_dir().join(format!("aw-doc-ep-limited-{}.sock", std::process::id()));
    /// # let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// let mut gw = r.control().register_endpoint(
    ///     Registration { name: "tcp:x".into(), ..Default::default() }, EndpointKind::Gateway).unwrap();
    /// let rule = Rule { send: vec![Pattern::new("ocr-*").unwrap()], ..Rule::default() };
    /// let remote = gw.add_remote_restricted(
    ///     Registration { name: "client".into(), ..Default::default() }, Some(rule.into())).unwrap();
    /// assert_ne!(remote, gw.id());
    /// ```
    pub fn add_remote_restricted(
        &mut self,
        identity: Registration,
        send_rule: Option<Arc<Rule>>,
    ) -> Result<u32, EndpointError> {
        if !self.kind.is_gateway() {
            return Err(EndpointError::NotAGateway);
        }
        let gateway = self.id;
        let id = ask(&self.shared, |reply| EndpointRequest::AddRemote {
            gateway,
            registration: identity,
            send_rule,
            reply,
        })?;
        self.remotes.push(id);
        Ok(id)
    }

    /// The id of `topic`, to publish to it (`FrameKind::Publish` with the id as destination):
    /// resolved through the control loop once, then cached. Endpoints are the daemon's own
    /// parties, so no `[[authorize]]` rule applies.
    ///
    /// ```
    /// # use agentwire_router::{endpoint::EndpointKind, testing::{TestRouter, TestRouterConfig}};
    /// # use agentwire_shm::control::Registration;
    /// # let p = std::env::temp_dir().join(format!("aw-doc-ep-topic-{}.sock", std::process::id()));
    /// # let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// let mut e = r.control().register_endpoint(
    ///     Registration { name: "engine".into(), ..Default::default() }, EndpointKind::InProcess).unwrap();
    /// let alerts = e.topic_id("alerts").unwrap();
    /// assert_eq!(e.topic_id("alerts").unwrap(), alerts);
    /// ```
    pub fn topic_id(&mut self, topic: &str) -> Result<u32, EndpointError> {
        if let Some((_, id)) = self.topics.iter().find(|(name, _)| name == topic) {
            return Ok(*id);
        }
        let agent_id = self.id;
        let id = ask(&self.shared, |reply| EndpointRequest::ResolveTopic {
            agent_id,
            topic: topic.to_string(),
            reply,
        })?;
        self.topics.push((topic.to_string(), id));
        Ok(id)
    }

    /// A handle for this gateway's control requests that can move to another thread (a
    /// blocking pool: each request waits for the control loop).
    ///
    /// ```
    /// # use agentwire_router::{endpoint::EndpointKind, testing::{TestRouter, TestRouterConfig}};
    /// # use agentwire_shm::control::{ClientMsg, Registration, ServerMsg};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-ep-ctl-{}.sock", std::process::id()));
    /// # let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// let mut gw = r.control().register_endpoint(
    ///     Registration { name: "gw".into(), ..Default::default() }, EndpointKind::Gateway).unwrap();
    /// let remote = gw.add_remote(Registration { name: "far".into(), ..Default::default() }).unwrap();
    /// let control = gw.gateway_control();
    /// let answer = std::thread::spawn(move || {
    ///     control.request(remote, ClientMsg::Subscribe { topic: "news".into() })
    /// }).join().unwrap().unwrap();
    /// assert!(matches!(answer, ServerMsg::TopicId { .. }));
    /// ```
    pub fn gateway_control(&self) -> GatewayControl {
        GatewayControl {
            gateway: self.id,
            shared: self.shared.clone(),
        }
    }

    /// Removes one of this gateway's remote agents.
    ///
    /// ```
    /// # use agentwire_router::{endpoint::EndpointKind, testing::{TestRouter, TestRouterConfig}};
    /// # use agentwire_shm::control::Registration;
    /// # let p = std::env::temp_dir().join(format!("aw-doc-ep-rm-{}.sock", std::process::id()));
    /// # let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// # let mut gw = r.control().register_endpoint(
    /// #     Registration { name: "gw".into(), ..Default::default() }, EndpointKind::Gateway).unwrap();
    /// let remote = gw.add_remote(Registration { name: "far".into(), ..Default::default() }).unwrap();
    /// gw.remove_remote(remote).unwrap();
    /// ```
    pub fn remove_remote(&mut self, id: u32) -> Result<(), EndpointError> {
        let Some(index) = self.remotes.iter().position(|&r| r == id) else {
            return Err(EndpointError::Refused(format!(
                "{id} is not a remote agent of this gateway"
            )));
        };
        post(&self.shared, EndpointRequest::Remove { agent_id: id })?;
        self.remotes.swap_remove(index);
        Ok(())
    }
}

/// Registers endpoints from any thread (see `RouterControl::endpoint_registrar`).
#[derive(Clone)]
pub struct EndpointRegistrar {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for EndpointRegistrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EndpointRegistrar")
    }
}

impl EndpointRegistrar {
    /// Registers an endpoint with `identity` as `RouterControl::register_endpoint` does
    /// (waits for the router's control loop).
    ///
    /// ```
    /// # use agentwire_router::{endpoint::EndpointKind, testing::{TestRouter, TestRouterConfig}};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-registrar-{}.sock", std::process::id()));
    /// # let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// let registrar = r.control().endpoint_registrar();
    /// let e = registrar.register(
    ///     agentwire_shm::control::Registration { name: "e".into(), ..Default::default() },
    ///     EndpointKind::InProcess,
    /// ).unwrap();
    /// assert!(e.id() > 0);
    /// ```
    pub fn register(
        &self,
        identity: Registration,
        kind: EndpointKind,
    ) -> Result<Endpoint, EndpointError> {
        register(&self.shared, identity, kind)
    }

    /// The registry's agents as their registrations (topics subscribed now, capabilities,
    /// features), or `None` when its generation is still `seen` (nothing changed since that
    /// snapshot). Gateway endpoints themselves are left out; agents behind them are in,
    /// with the gateway named. Takes the registry's lock briefly (a control-path call, never
    /// per frame): what a node link sends to its peer.
    ///
    /// ```
    /// # use agentwire_router::{endpoint::EndpointKind, testing::{TestRouter, TestRouterConfig}};
    /// # use agentwire_shm::control::Registration;
    /// # let p = std::env::temp_dir().join(format!("aw-doc-snapshot-{}.sock", std::process::id()));
    /// # let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// let registrar = r.control().endpoint_registrar();
    /// let e = registrar.register(Registration { name: "engine".into(), topics: vec!["t".into()],
    ///     ..Default::default() }, EndpointKind::InProcess).unwrap();
    /// let snapshot = registrar.registry_snapshot(0).unwrap();
    /// let engine = snapshot.agents.iter().find(|a| a.agent_id == e.id()).unwrap();
    /// assert_eq!(engine.registration.topics, vec!["t".to_string()]);
    /// assert!(registrar.registry_snapshot(snapshot.generation).is_none());
    /// ```
    pub fn registry_snapshot(&self, seen: u64) -> Option<RegistrySnapshot> {
        let reg = self.shared.registry.lock().expect("registry lock");
        if reg.generation == seen {
            return None;
        }
        let topic_name = |id: &u32| reg.topic_entries.get(id).map(|t| t.name.clone());
        let agents = reg
            .agents
            .iter()
            .filter(|(_, rec)| rec.gateway.is_none())
            .map(|(&agent_id, rec)| RegisteredAgent {
                agent_id,
                registration: Registration {
                    name: rec.name.clone(),
                    capabilities: rec
                        .capabilities
                        .iter()
                        .map(|(name, version)| agentwire_shm::control::CapabilitySpec {
                            name: name.clone(),
                            version: version.to_string(),
                        })
                        .collect(),
                    topics: rec.topics.iter().filter_map(topic_name).collect(),
                    features: rec.features.clone(),
                    ring_capacity_bytes: 0,
                },
                via: rec.via,
                behind_link: rec
                    .via
                    .and_then(|g| reg.agents.get(&g))
                    .and_then(|g| g.gateway)
                    == Some(true),
                live: !rec.stale,
            })
            .collect();
        Some(RegistrySnapshot {
            generation: reg.generation,
            agents,
        })
    }
}

/// The registry at one generation (see [`EndpointRegistrar::registry_snapshot`]).
///
/// ```
/// let s = agentwire_router::endpoint::RegistrySnapshot { generation: 1, agents: Vec::new() };
/// assert!(s.agents.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySnapshot {
    /// The registry's generation (it changes with every registration, departure and
    /// subscription).
    pub generation: u64,
    /// Every agent but the gateway endpoints, in no particular order.
    pub agents: Vec<RegisteredAgent>,
}

/// One agent of a [`RegistrySnapshot`].
///
/// ```
/// let a = agentwire_router::endpoint::RegisteredAgent {
///     agent_id: 7, registration: Default::default(), via: None, behind_link: false, live: true };
/// assert!(a.via.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredAgent {
    /// Its id on this router.
    pub agent_id: u32,
    /// Its name, capabilities (with versions), topics subscribed now and features.
    pub registration: Registration,
    /// The gateway endpoint it stands behind (a remote agent), if any.
    pub via: Option<u32>,
    /// It stands behind a node link's gateway ([`EndpointKind::Link`]): another node's
    /// agent, never announced to other nodes.
    pub behind_link: bool,
    /// Not stale (its heartbeat is current).
    pub live: bool,
}

/// A gateway's control requests on behalf of its remote agents, from any thread (see
/// [`Endpoint::gateway_control`]). Each call waits for the router's control loop (at most
/// [`ENDPOINT_REQUEST_TIMEOUT`]).
#[derive(Clone)]
pub struct GatewayControl {
    gateway: u32,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GatewayControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayControl")
            .field("gateway", &self.gateway)
            .finish()
    }
}

impl GatewayControl {
    /// Answers a control request of remote agent `remote` as the control socket would
    /// answer a local agent's (`Subscribe`, `Unsubscribe`, `ResolveTopic`,
    /// `ResolveCapability`, `Discover`; `Goodbye` is answered `Done`). Refused for an agent
    /// that is not this gateway's. Authorization is the caller's: it knows the remote's
    /// network identity, the router does not.
    ///
    /// ```
    /// # use agentwire_router::{endpoint::EndpointKind, testing::{TestRouter, TestRouterConfig}};
    /// # use agentwire_shm::control::{ClientMsg, Registration};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-gw-req-{}.sock", std::process::id()));
    /// # let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// let gw = r.control().register_endpoint(
    ///     Registration { name: "gw".into(), ..Default::default() }, EndpointKind::Gateway).unwrap();
    /// // 12345 is nobody behind this gateway.
    /// assert!(gw.gateway_control().request(12345, ClientMsg::Goodbye).is_err());
    /// ```
    pub fn request(&self, remote: u32, msg: ClientMsg) -> Result<ServerMsg, EndpointError> {
        let (gateway, agent_id) = (self.gateway, remote);
        ask(&self.shared, |reply| EndpointRequest::Session {
            gateway,
            agent_id,
            msg,
            reply,
        })
    }

    /// A new remote agent behind this gateway, as [`Endpoint::add_remote`] adds one, from
    /// any thread (it waits for the control loop). The gateway's endpoint still owns it: it
    /// leaves when the endpoint is dropped.
    ///
    /// ```
    /// # use agentwire_router::{endpoint::EndpointKind, testing::{TestRouter, TestRouterConfig}};
    /// # use agentwire_shm::control::Registration;
    /// # let p = std::env::temp_dir().join(format!("aw-doc-gw-add-{}.sock", std::process::id()));
    /// # let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// let gw = r.control().register_endpoint(
    ///     Registration { name: "link:b".into(), ..Default::default() }, EndpointKind::Link).unwrap();
    /// let control = gw.gateway_control();
    /// let far = control.add_remote(Registration { name: "b/ocr".into(), ..Default::default() }).unwrap();
    /// control.remove_remote(far).unwrap();
    /// ```
    pub fn add_remote(&self, identity: Registration) -> Result<u32, EndpointError> {
        let gateway = self.gateway;
        ask(&self.shared, |reply| EndpointRequest::AddRemote {
            gateway,
            registration: identity,
            send_rule: None,
            reply,
        })
    }

    /// Removes every remote agent of this gateway, then waits until every router shard has
    /// re-read its tables (two duty cycles each, woken if parked), so that no frame is
    /// routed to them any more and what reached the gateway before is in its rx ring.
    /// Returns how many left, and whether the shards confirmed within `timeout` (a shard
    /// stuck past it is not waited for).
    ///
    /// ```
    /// # use agentwire_router::{endpoint::EndpointKind, testing::{TestRouter, TestRouterConfig}};
    /// # use agentwire_shm::control::Registration;
    /// # let p = std::env::temp_dir().join(format!("aw-doc-gw-rmall-{}.sock", std::process::id()));
    /// # let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// let gw = r.control().register_endpoint(
    ///     Registration { name: "link:d".into(), ..Default::default() }, EndpointKind::Link).unwrap();
    /// let control = gw.gateway_control();
    /// control.add_remote(Registration { name: "d/x".into(), ..Default::default() }).unwrap();
    /// let (left, settled) = control.remove_all_remotes(std::time::Duration::from_secs(5)).unwrap();
    /// assert_eq!((left, settled), (1, true));
    /// ```
    pub fn remove_all_remotes(&self, timeout: Duration) -> Result<(u32, bool), EndpointError> {
        let gateway = self.gateway;
        let left = ask(&self.shared, |reply| EndpointRequest::RemoveRemotes {
            gateway,
            reply,
        })?;
        let beats = crate::heartbeat::ShardHeartbeats {
            shared: self.shared.clone(),
        };
        Ok((left, beats.await_cycles(2, timeout)))
    }

    /// Waits until every router shard has re-read its tables (two duty cycles each, woken
    /// if parked) or `timeout` passed; returns whether they did. After [`Self::add_remote`],
    /// a frame the gateway sends in the new agent's name is then credited to it, never to
    /// the gateway (a shard in the middle of a cycle still has the older tables).
    ///
    /// ```
    /// # use agentwire_router::{endpoint::EndpointKind, testing::{TestRouter, TestRouterConfig}};
    /// # use agentwire_shm::control::Registration;
    /// # let p = std::env::temp_dir().join(format!("aw-doc-gw-await-{}.sock", std::process::id()));
    /// # let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// let gw = r.control().register_endpoint(
    ///     Registration { name: "link:e".into(), ..Default::default() }, EndpointKind::Link).unwrap();
    /// let control = gw.gateway_control();
    /// control.add_remote(Registration { name: "e/y".into(), ..Default::default() }).unwrap();
    /// assert!(control.await_routing(std::time::Duration::from_secs(5)));
    /// ```
    pub fn await_routing(&self, timeout: Duration) -> bool {
        let beats = crate::heartbeat::ShardHeartbeats {
            shared: self.shared.clone(),
        };
        beats.await_cycles(2, timeout)
    }

    /// Removes remote agent `remote` of this gateway (nothing happens to an agent that is
    /// not the gateway's). Does not wait.
    ///
    /// ```
    /// # use agentwire_router::{endpoint::EndpointKind, testing::{TestRouter, TestRouterConfig}};
    /// # use agentwire_shm::control::Registration;
    /// # let p = std::env::temp_dir().join(format!("aw-doc-gw-rm-{}.sock", std::process::id()));
    /// # let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// let gw = r.control().register_endpoint(
    ///     Registration { name: "link:c".into(), ..Default::default() }, EndpointKind::Link).unwrap();
    /// gw.gateway_control().remove_remote(12345).unwrap(); // not the gateway's: ignored
    /// ```
    pub fn remove_remote(&self, remote: u32) -> Result<(), EndpointError> {
        post(
            &self.shared,
            EndpointRequest::RemoveRemote {
                gateway: self.gateway,
                agent_id: remote,
            },
        )
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // A router that already stopped has nothing left to remove.
        let _ = post(&self.shared, EndpointRequest::Remove { agent_id: self.id });
    }
}

/// What an [`Endpoint::read`] callback returns: a reply to send, or nothing.
pub trait Reply {
    /// The payload type of a reply.
    type Payload: AsRef<[u8]>;
    /// The reply, if any.
    fn reply(self) -> Option<(FrameHeader, Self::Payload)>;
}

impl<P: AsRef<[u8]>> Reply for Option<(FrameHeader, P)> {
    type Payload = P;
    fn reply(self) -> Option<(FrameHeader, P)> {
        self
    }
}

impl<P: AsRef<[u8]>> Reply for (FrameHeader, P) {
    type Payload = P;
    fn reply(self) -> Option<(FrameHeader, P)> {
        Some(self)
    }
}

impl Reply for () {
    type Payload = [u8; 0];
    fn reply(self) -> Option<(FrameHeader, [u8; 0])> {
        None
    }
}
