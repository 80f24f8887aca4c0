//! The daemon's side of the control socket: the listening socket (bound only over a stale
//! socket, never over another file), the allow-list checked against SO_PEERCRED, and the
//! registration checks. The handshake itself runs as a state machine in the router's control
//! loop (`handshake`), one step per message, so no connection ever blocks another.
//!
//! ```
//! use agentwire_router::server::{AllowList, ControlListener};
//! let dir = std::env::temp_dir().join(format!("aw-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let listener = ControlListener::bind(&dir.join("s.sock"), AllowList::current_user()).unwrap();
//! assert!(listener.accept_pending().unwrap().is_none()); // nobody connecting: never waits
//! ```

use agentwire_shm::control::{
    self, ControlConn, ControlError, PeerCredentials, Registration, AGENT_NAME_BYTES_MAX,
    PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
};
use rustix::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a connecting client has for each handshake step (its own deadline: a silent
/// client delays nobody else).
pub const HANDSHAKE_STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections the kernel queues before the control loop accepts them.
pub const LISTEN_BACKLOG: i32 = 1024;

/// Who may connect: a peer is admitted when its uid or its gid is listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowList {
    /// Allowed user ids.
    pub uids: Vec<u32>,
    /// Allowed group ids.
    pub gids: Vec<u32>,
}

impl AllowList {
    /// The default: root, the daemon's own user and, for a daemon that does not run as
    /// root, the members of its group (a service user `agentwire` admits the group
    /// `agentwire`, its members found by their supplementary groups too, as the socket's
    /// group mode already lets them reach it).
    ///
    /// ```
    /// let allow = agentwire_router::server::AllowList::current_user();
    /// assert!(allow.uids.contains(&0));
    /// ```
    pub fn current_user() -> Self {
        let uid = rustix::process::getuid().as_raw();
        let mut uids = vec![0];
        let mut gids = Vec::new();
        if uid != 0 {
            uids.push(uid);
            gids.push(rustix::process::getgid().as_raw());
        }
        Self { uids, gids }
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

    /// [`AllowList::permits`], or a member of an allowed group by one of its supplementary
    /// `groups` ([`ControlConn::peer_groups`](agentwire_shm::control::ControlConn::peer_groups)).
    ///
    /// ```
    /// use agentwire_shm::control::PeerCredentials;
    /// use agentwire_router::server::AllowList;
    /// let allow = AllowList { uids: vec![], gids: vec![990] };
    /// let p = PeerCredentials { pid: 1, uid: 1000, gid: 1000 };
    /// assert!(!allow.admits(&p, &[1000, 27]));
    /// assert!(allow.admits(&p, &[1000, 990]));
    /// ```
    pub fn admits(&self, peer: &PeerCredentials, groups: &[u32]) -> bool {
        self.permits(peer) || groups.iter().any(|g| self.gids.contains(g))
    }
}

/// Why a connection was not admitted. The client was told the same in a `Refused`.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer is not on the allow-list.
    #[error("peer pid {} uid {} gid {} is not on the allow-list", .0.pid, .0.uid, .0.gid)]
    NotPermitted(PeerCredentials),
    /// No common protocol version.
    #[error("client offered protocol {client_min}..={client_max}, daemon speaks {daemon_min}..={daemon_max}")]
    VersionUnsupported {
        /// Client's oldest.
        client_min: u16,
        /// Client's newest.
        client_max: u16,
        /// Daemon's oldest.
        daemon_min: u16,
        /// Daemon's newest.
        daemon_max: u16,
    },
    /// The client said nothing for a whole handshake step.
    #[error("said nothing for {0:?} during the handshake")]
    TimedOut(Duration),
    /// The router admits no more agents.
    #[error("{0} agents max")]
    Full(usize),
    /// The peer's uid holds as many connections of one kind as one uid may.
    #[error(
        "uid {uid} already has {held} {what}, the most one uid may have ({key} = {held}); \
         close some or raise {key}"
    )]
    PerUidLimit {
        /// The peer's uid.
        uid: u32,
        /// How many it holds (the limit).
        held: usize,
        /// What it holds: "connections in their handshake" or "agents".
        what: &'static str,
        /// The config key of the limit.
        key: &'static str,
    },
    /// The authorization policy does not allow what the registration asks for (its name, a
    /// capability, a topic), or another uid owns the name ([`crate::policy`]).
    #[error(transparent)]
    NotAuthorized(#[from] crate::policy::NotPermitted),
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
    /// one is an error naming the path, so two daemons never share a socket; any other file
    /// at `path` is refused and left as it is. The socket gets mode 0660 and each directory
    /// created for it 0750 ([`crate::dirs`]); the non-root fallback directory
    /// (`/tmp/agentwire-$UID`) is refused unless this user owns it and only this user may
    /// write to it.
    ///
    /// ```
    /// # use agentwire_router::server::{AllowList, ControlListener};
    /// let p = std::env::temp_dir().join(format!("aw-doc-bind-{}.sock", std::process::id()));
    /// let first = ControlListener::bind(&p, AllowList::current_user()).unwrap();
    /// assert!(ControlListener::bind(&p, AllowList::current_user()).is_err());
    /// ```
    pub fn bind(path: &Path, allow: AllowList) -> Result<Self, ControlError> {
        use std::os::unix::fs::FileTypeExt;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => match ControlConn::connect(path) {
                Ok(_) => {
                    return Err(ControlError::Io(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        format!("another daemon is already serving {}", path.display()),
                    )))
                }
                // Nobody listening: a socket left by a daemon that died.
                Err(_) => std::fs::remove_file(path)?,
            },
            Ok(meta) => {
                let kind = if meta.is_dir() {
                    "a directory"
                } else {
                    "a file"
                };
                return Err(ControlError::Io(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!(
                        "{} is {kind}, not a socket: refusing to replace it (remove it, or \
                         give the daemon another socket path)",
                        path.display()
                    ),
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Created 0750 where missing; the non-root fallback directory is checked.
            crate::dirs::prepare_dir(parent)?;
        }
        // Mode 0660, set before anyone can connect (`control::listen`).
        let fd = control::listen(path, LISTEN_BACKLOG)?;
        // Accepting never waits: the control loop accepts when epoll says a client is there.
        rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::NONBLOCK)?;
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

    /// The protocol versions accepted.
    ///
    /// ```
    /// # use agentwire_router::server::{AllowList, ControlListener};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-vers-{}.sock", std::process::id()));
    /// let l = ControlListener::bind(&p, AllowList::current_user()).unwrap().with_versions(2, 2);
    /// assert_eq!(l.versions(), (2, 2));
    /// ```
    pub fn versions(&self) -> (u16, u16) {
        self.versions
    }

    /// The allow-list in force.
    ///
    /// ```
    /// # use agentwire_router::server::{AllowList, ControlListener};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-al-{}.sock", std::process::id()));
    /// let l = ControlListener::bind(&p, AllowList::current_user()).unwrap();
    /// assert_eq!(l.allow(), &AllowList::current_user());
    /// ```
    pub fn allow(&self) -> &AllowList {
        &self.allow
    }

    /// Takes one waiting connection, non-blocking (so is the connection it returns), with
    /// its peer's credentials; `None` when nobody is waiting. Nothing is read from it yet.
    ///
    /// ```
    /// # use agentwire_router::server::{AllowList, ControlListener};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-acc-{}.sock", std::process::id()));
    /// let l = ControlListener::bind(&p, AllowList::current_user()).unwrap();
    /// let _client = agentwire_shm::control::ControlConn::connect(&p).unwrap();
    /// let (_conn, peer) = l.accept_pending().unwrap().unwrap();
    /// assert_eq!(peer.pid, std::process::id());
    /// ```
    pub fn accept_pending(&self) -> Result<Option<(ControlConn, PeerCredentials)>, ControlError> {
        let flags = rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK;
        let fd = match rustix::net::accept_with(&self.fd, flags) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let conn = ControlConn::from_fd(fd);
        let peer = conn.peer_credentials()?;
        Ok(Some((conn, peer)))
    }
}

impl AsFd for ControlListener {
    fn as_fd(&self) -> rustix::fd::BorrowedFd<'_> {
        self.fd.as_fd()
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
    crate::limits::check_registration(r)?;
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
