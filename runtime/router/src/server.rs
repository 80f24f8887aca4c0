//! The daemon's side of the control handshake: listen, check SO_PEERCRED against the
//! allow-list, negotiate the version, take the registration, and admit the agent by sending
//! its segment and doorbells. The daemon (runtime) and the in-process test router both use
//! this code.
//!
//! ```
//! use agentwire_router::server::{AllowList, ControlListener};
//! let dir = std::env::temp_dir().join(format!("aw-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let listener = ControlListener::bind(&dir.join("s.sock"), AllowList::current_user()).unwrap();
//! assert!(listener.accept(Some(std::time::Duration::from_millis(1))).unwrap().is_none());
//! ```

use agentwire_shm::control::{
    self, negotiate, ClientMsg, ControlConn, ControlError, PeerCredentials, RefuseReason,
    Registration, ServerMsg, AGENT_NAME_BYTES_MAX, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
};
use agentwire_shm::doorbell::Doorbell;
use agentwire_shm::segment::Segment;
use rustix::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a connecting client has for each handshake step.
pub const HANDSHAKE_STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Who may connect: a peer is admitted when its uid or its gid is listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowList {
    /// Allowed user ids.
    pub uids: Vec<u32>,
    /// Allowed group ids.
    pub gids: Vec<u32>,
}

impl AllowList {
    /// The daemon's own user and root: the default.
    ///
    /// ```
    /// let allow = agentwire_router::server::AllowList::current_user();
    /// assert!(allow.uids.contains(&0));
    /// ```
    pub fn current_user() -> Self {
        let uid = rustix::process::getuid().as_raw();
        let mut uids = vec![0];
        if uid != 0 {
            uids.push(uid);
        }
        Self {
            uids,
            gids: Vec::new(),
        }
    }

    /// Nobody; used by tests of refusal.
    ///
    /// ```
    /// assert!(agentwire_router::server::AllowList::nobody().uids.is_empty());
    /// ```
    pub fn nobody() -> Self {
        Self::default()
    }

    /// Whether a peer is allowed.
    ///
    /// ```
    /// use agentwire_shm::control::PeerCredentials;
    /// use agentwire_router::server::AllowList;
    /// let p = PeerCredentials { pid: 1, uid: 1000, gid: 1000 };
    /// assert!(!AllowList::nobody().permits(&p));
    /// ```
    pub fn permits(&self, peer: &PeerCredentials) -> bool {
        self.uids.contains(&peer.uid) || self.gids.contains(&peer.gid)
    }
}

/// Why a connection was not admitted. The client was told the same in a `Refused`.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer is not on the allow-list.
    #[error("peer pid {} uid {} gid {} is not on the allow-list", .0.pid, .0.uid, .0.gid)]
    NotPermitted(PeerCredentials),
    /// No common protocol version.
    #[error("client offered protocol {client_min}..={client_max}, daemon speaks {PROTOCOL_VERSION_MIN}..={PROTOCOL_VERSION_MAX}")]
    VersionUnsupported {
        /// Client's oldest.
        client_min: u16,
        /// Client's newest.
        client_max: u16,
    },
    /// The client sent something out of order or invalid.
    #[error("bad handshake: {0}")]
    BadRequest(String),
    /// The control socket failed.
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// The daemon's listening control socket.
#[derive(Debug)]
pub struct ControlListener {
    fd: OwnedFd,
    path: PathBuf,
    allow: AllowList,
    versions: (u16, u16),
}

impl ControlListener {
    /// Binds the socket at `path`. A stale socket file (nobody listening) is replaced; a live
    /// one is an error naming the path, so two daemons never share a socket.
    ///
    /// ```
    /// # use agentwire_router::server::{AllowList, ControlListener};
    /// let p = std::env::temp_dir().join(format!("aw-doc-bind-{}.sock", std::process::id()));
    /// let first = ControlListener::bind(&p, AllowList::current_user()).unwrap();
    /// assert!(ControlListener::bind(&p, AllowList::current_user()).is_err());
    /// ```
    pub fn bind(path: &Path, allow: AllowList) -> Result<Self, ControlError> {
        if path.exists() {
            match ControlConn::connect(path) {
                Ok(_) => {
                    return Err(ControlError::Io(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        format!("another daemon is already serving {}", path.display()),
                    )))
                }
                Err(_) => std::fs::remove_file(path)?,
            }
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let fd = control::listen(path, 128)?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
            allow,
            versions: (PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX),
        })
    }

    /// Narrows the protocol versions this listener accepts (for tests and staged rollouts).
    ///
    /// ```
    /// # use agentwire_router::server::{AllowList, ControlListener};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-ver-{}.sock", std::process::id()));
    /// let l = ControlListener::bind(&p, AllowList::current_user()).unwrap().with_versions(1, 1);
    /// ```
    pub fn with_versions(mut self, min: u16, max: u16) -> Self {
        self.versions = (min, max);
        self
    }

    /// Replaces the allow-list (SIGHUP reload).
    ///
    /// ```
    /// # use agentwire_router::server::{AllowList, ControlListener};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-allow-{}.sock", std::process::id()));
    /// let mut l = ControlListener::bind(&p, AllowList::current_user()).unwrap();
    /// l.set_allow_list(AllowList::nobody());
    /// ```
    pub fn set_allow_list(&mut self, allow: AllowList) {
        self.allow = allow;
    }

    /// The socket path.
    ///
    /// ```
    /// # use agentwire_router::server::{AllowList, ControlListener};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-path-{}.sock", std::process::id()));
    /// let l = ControlListener::bind(&p, AllowList::current_user()).unwrap();
    /// assert_eq!(l.path(), p.as_path());
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts one connection and runs the handshake up to registration. `Ok(None)` when no
    /// client connected within `timeout`. A refused client gets a `Refused` message and the
    /// error is returned for the daemon to count and log.
    ///
    /// ```no_run
    /// # use agentwire_router::server::{AllowList, ControlListener};
    /// # let l = ControlListener::bind("/tmp/x.sock".as_ref(), AllowList::current_user()).unwrap();
    /// if let Some(agentwire_router::server::Accepted::Agent(pending)) = l.accept(None).unwrap() {
    ///     println!("{} wants in", pending.registration().name);
    /// }
    /// ```
    pub fn accept(&self, timeout: Option<Duration>) -> Result<Option<Accepted>, HandshakeError> {
        if !control::wait_readable(self.fd.as_fd(), timeout)? {
            return Ok(None);
        }
        let fd = match rustix::net::accept_with(&self.fd, rustix::net::SocketFlags::CLOEXEC) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return Ok(None),
            Err(e) => return Err(ControlError::from(e).into()),
        };
        let conn = ControlConn::from_fd(fd);
        let peer = conn.peer_credentials()?;
        let refuse = |reason, detail: String| {
            let _ = conn.send(&ServerMsg::Refused { reason, detail }, &[]);
        };
        // Read Hello before any refusal: closing a socket with unread data resets it, and
        // the client would lose the Refused message that explains why.
        let (hello, _) = conn.recv::<ClientMsg>(Some(HANDSHAKE_STEP_TIMEOUT))?;
        if !self.allow.permits(&peer) {
            let error = HandshakeError::NotPermitted(peer);
            refuse(RefuseReason::NotPermitted, error.to_string());
            return Err(error);
        }
        let ClientMsg::Hello {
            version_min,
            version_max,
            ..
        } = hello
        else {
            refuse(RefuseReason::BadRequest, "expected Hello first".into());
            return Err(HandshakeError::BadRequest("expected Hello first".into()));
        };
        let Some(version) = negotiate((version_min, version_max), self.versions) else {
            let detail = format!(
                "client offered protocol {version_min}..={version_max}, daemon speaks {}..={}",
                self.versions.0, self.versions.1
            );
            refuse(RefuseReason::VersionUnsupported, detail);
            return Err(HandshakeError::VersionUnsupported {
                client_min: version_min,
                client_max: version_max,
            });
        };
        conn.send(
            &ServerMsg::Welcome {
                version,
                daemon: format!("agentwire {}", env!("CARGO_PKG_VERSION")),
            },
            &[],
        )?;
        let (register, _) = conn.recv::<ClientMsg>(Some(HANDSHAKE_STEP_TIMEOUT))?;
        let registration = match register {
            ClientMsg::Register(registration) => registration,
            ClientMsg::Status => return Ok(Some(Accepted::Status(StatusRequest { conn, peer }))),
            _ => {
                let detail = "expected Register or Status after Hello";
                refuse(RefuseReason::BadRequest, detail.into());
                return Err(HandshakeError::BadRequest(detail.into()));
            }
        };
        if let Err(detail) = validate_registration(&registration) {
            refuse(RefuseReason::BadRequest, detail.clone());
            return Err(HandshakeError::BadRequest(detail));
        }
        Ok(Some(Accepted::Agent(PendingAgent {
            conn,
            registration,
            peer,
            version,
        })))
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Checks a registration's fields; the error names the bad one.
///
/// ```
/// use agentwire_shm::control::{CapabilitySpec, Registration};
/// use agentwire_router::server::validate_registration;
/// let mut r = Registration { name: "a".into(), ..Default::default() };
/// assert!(validate_registration(&r).is_ok());
/// r.capabilities.push(CapabilitySpec { name: "x".into(), version: "one".into() });
/// assert!(validate_registration(&r).is_err());
/// ```
pub fn validate_registration(r: &Registration) -> Result<(), String> {
    if r.name.is_empty() || r.name.len() > AGENT_NAME_BYTES_MAX {
        return Err(format!(
            "agent name must be 1 to {AGENT_NAME_BYTES_MAX} bytes, got {}",
            r.name.len()
        ));
    }
    for c in &r.capabilities {
        semver::Version::parse(&c.version).map_err(|e| {
            format!(
                "capability {} version {:?} is not semver: {e}",
                c.name, c.version
            )
        })?;
    }
    Ok(())
}

/// What a connection asked for once the handshake passed.
#[derive(Debug)]
pub enum Accepted {
    /// An agent to admit.
    Agent(PendingAgent),
    /// An admin tool asking for the router's status.
    Status(StatusRequest),
}

/// A status query waiting for its answer.
#[derive(Debug)]
pub struct StatusRequest {
    conn: ControlConn,
    peer: PeerCredentials,
}

impl StatusRequest {
    /// Who asked.
    ///
    /// ```no_run
    /// # fn f(r: agentwire_router::server::StatusRequest) { println!("{}", r.peer().uid); }
    /// ```
    pub fn peer(&self) -> PeerCredentials {
        self.peer
    }

    /// Sends the report; the connection closes after it.
    ///
    /// ```no_run
    /// # fn f(r: agentwire_router::server::StatusRequest) {
    /// r.answer(agentwire_shm::control::StatusReport::default());
    /// # }
    /// ```
    pub fn answer(self, report: agentwire_shm::control::StatusReport) {
        let _ = self.conn.send(&ServerMsg::Status(report), &[]);
    }
}

/// A client that passed the handshake and waits to be admitted.
#[derive(Debug)]
pub struct PendingAgent {
    conn: ControlConn,
    registration: Registration,
    peer: PeerCredentials,
    version: u16,
}

impl PendingAgent {
    /// What the agent registered.
    ///
    /// ```no_run
    /// # fn f(p: agentwire_router::server::PendingAgent) { println!("{}", p.registration().name); }
    /// ```
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    /// The peer's credentials.
    ///
    /// ```no_run
    /// # fn f(p: agentwire_router::server::PendingAgent) { println!("{}", p.peer().pid); }
    /// ```
    pub fn peer(&self) -> PeerCredentials {
        self.peer
    }

    /// The negotiated protocol version.
    ///
    /// ```no_run
    /// # fn f(p: agentwire_router::server::PendingAgent) { assert!(p.version() >= 1); }
    /// ```
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Refuses the agent after the handshake (e.g. the daemon is full).
    ///
    /// ```no_run
    /// # fn f(p: agentwire_router::server::PendingAgent) {
    /// p.refuse(agentwire_shm::control::RefuseReason::Full, "100 agents max".into());
    /// # }
    /// ```
    pub fn refuse(self, reason: RefuseReason, detail: String) {
        let _ = self.conn.send(&ServerMsg::Refused { reason, detail }, &[]);
    }

    /// Admits the agent: sends its id, topic ids, segment and doorbells; returns the control
    /// connection for the daemon to serve.
    ///
    /// ```no_run
    /// # fn f(p: agentwire_router::server::PendingAgent, s: &agentwire_shm::segment::Segment,
    /// #      t: &agentwire_shm::doorbell::Doorbell, r: &agentwire_shm::doorbell::Doorbell) {
    /// let conn = p.admit(1, vec![], s, t, r).unwrap();
    /// # }
    /// ```
    pub fn admit(
        self,
        agent_id: u32,
        topic_ids: Vec<u32>,
        segment: &Segment,
        tx_doorbell: &Doorbell,
        rx_doorbell: &Doorbell,
    ) -> Result<ControlConn, ControlError> {
        let segment_fd = segment.try_clone_fd()?;
        self.conn.send(
            &ServerMsg::Registered {
                agent_id,
                topic_ids,
            },
            &[segment_fd.as_fd(), tx_doorbell.as_fd(), rx_doorbell.as_fd()],
        )?;
        Ok(self.conn)
    }
}
