//! What `agentwire links` shows: each peer's link state, round trip, traffic each way,
//! retries and last error, and the node's counters. Traffic counters are atomics bumped
//! once per socket read or write (never per frame); state and error strings sit behind a
//! mutex touched only when they change.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

/// A link's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Dialling, or in the TLS handshake and `Hello`.
    Connecting,
    /// Up: registries exchanged, frames flowing.
    Up,
    /// Down; this node redials after its backoff.
    Retrying,
    /// Down; the peer dials this node (its name sorts first).
    Waiting,
}

/// One link as `agentwire links` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LinkReport {
    /// The peer's node name.
    pub peer: String,
    /// Its configured address.
    pub addr: String,
    /// Whether this node dials it.
    pub dials: bool,
    /// The link's state now.
    pub state: LinkState,
    /// Seconds since the link came up (while up).
    pub up_for_s: Option<u64>,
    /// Last measured round trip (µs), while up.
    pub rtt_us: Option<u64>,
    /// The peer's agents this node knows (while up).
    pub peer_agents: u64,
    /// Those agents (while up), by their id on the peer: each one's global id.
    pub agents: Vec<PeerAgent>,
    /// Frames and bytes sent to the peer.
    pub frames_out: u64,
    /// See `frames_out`.
    pub bytes_out: u64,
    /// Frames and bytes received from it.
    pub frames_in: u64,
    /// See `frames_in`.
    pub bytes_in: u64,
    /// Times the link came up.
    pub connects: u64,
    /// Failed dials and lost links.
    pub retries: u64,
    /// Frames not forwarded: their source or destination was unknown on arrival
    /// (an agent that had just left), counted here and in the node's counters.
    pub frames_dropped: u64,
    /// The last error, with its wall-clock time (seconds since the epoch).
    pub last_error: Option<String>,
    /// See `last_error`.
    pub last_error_at_s: Option<u64>,
}

/// One of a peer's agents as this node offers it: a proxy here for an agent there. Its
/// global id is the peer's node name and its id there (`b:7`); the proxy's id is what
/// agents here address.
///
/// ```
/// let a = agentwire_transport::node::status::PeerAgent {
///     name: "ocr".into(), proxy: "b/ocr".into(), id_here: 12, id_there: 7, global_id: "b:7".into() };
/// assert_eq!(a.global_id, "b:7");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerAgent {
    /// Its name on the peer.
    pub name: String,
    /// Its proxy's name here (`peer/name`).
    pub proxy: String,
    /// The proxy's agent id here.
    pub id_here: u32,
    /// Its agent id on the peer.
    pub id_there: u32,
    /// `peer:id_there`, the same on every node.
    pub global_id: String,
}

/// A link's live figures (shared by its tasks and the status reader).
#[derive(Debug)]
pub(crate) struct LinkStatus {
    pub(crate) peer: String,
    pub(crate) addr: String,
    pub(crate) dials: bool,
    pub(crate) frames_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) frames_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) frames_dropped: AtomicU64,
    pub(crate) rtt_us: AtomicU64,
    pub(crate) slow: Mutex<SlowFields>,
}

#[derive(Debug)]
pub(crate) struct SlowFields {
    pub(crate) state: LinkState,
    pub(crate) up_since: Option<Instant>,
    pub(crate) last_error: Option<(String, SystemTime)>,
    /// The peer's agents offered here, by id there: (name there, proxy id here).
    pub(crate) agents: BTreeMap<u32, (String, u32)>,
}

impl LinkStatus {
    pub(crate) fn new(peer: &str, addr: String, dials: bool) -> Self {
        let state = if dials {
            LinkState::Connecting
        } else {
            LinkState::Waiting
        };
        Self {
            peer: peer.to_string(),
            addr,
            dials,
            frames_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            rtt_us: AtomicU64::new(0),
            slow: Mutex::new(SlowFields {
                state,
                up_since: None,
                last_error: None,
                agents: BTreeMap::new(),
            }),
        }
    }

    pub(crate) fn set_state(&self, state: LinkState) {
        let mut slow = self.slow.lock().expect("link status lock");
        slow.state = state;
        slow.up_since = (state == LinkState::Up).then(Instant::now);
    }

    /// The peer's agent `id_there` (named `name` there) is offered here as `id_here`.
    pub(crate) fn agent_up(&self, id_there: u32, name: &str, id_here: u32) {
        let mut slow = self.slow.lock().expect("link status lock");
        slow.agents.insert(id_there, (name.to_string(), id_here));
    }

    /// The peer's agent `id_there` is no longer offered here.
    pub(crate) fn agent_down(&self, id_there: u32) {
        let mut slow = self.slow.lock().expect("link status lock");
        slow.agents.remove(&id_there);
    }

    /// None of the peer's agents is offered here (the link went down).
    pub(crate) fn clear_agents(&self) {
        self.slow.lock().expect("link status lock").agents.clear();
    }

    pub(crate) fn set_error(&self, error: String) {
        let mut slow = self.slow.lock().expect("link status lock");
        slow.last_error = Some((error, SystemTime::now()));
    }

    pub(crate) fn report(&self) -> LinkReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let slow = self.slow.lock().expect("link status lock");
        let up = slow.state == LinkState::Up;
        LinkReport {
            peer: self.peer.clone(),
            addr: self.addr.clone(),
            dials: self.dials,
            state: slow.state,
            up_for_s: slow.up_since.map(|t| t.elapsed().as_secs()),
            rtt_us: up.then(|| get(&self.rtt_us)).filter(|&r| r > 0),
            peer_agents: if up { slow.agents.len() as u64 } else { 0 },
            agents: if up {
                slow.agents
                    .iter()
                    .map(|(&id_there, (name, id_here))| PeerAgent {
                        name: name.clone(),
                        proxy: crate::node::session::proxy_name(&self.peer, name),
                        id_here: *id_here,
                        id_there,
                        global_id: format!("{}:{id_there}", self.peer),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            frames_out: get(&self.frames_out),
            bytes_out: get(&self.bytes_out),
            frames_in: get(&self.frames_in),
            bytes_in: get(&self.bytes_in),
            connects: get(&self.connects),
            retries: get(&self.retries),
            frames_dropped: get(&self.frames_dropped),
            last_error: slow.last_error.as_ref().map(|(e, _)| e.clone()),
            last_error_at_s: slow.last_error.as_ref().and_then(|(_, at)| {
                at.duration_since(SystemTime::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs())
            }),
        }
    }
}

/// A node's link counters (all links together), for `agentwire status` and Prometheus.
///
/// ```
/// let stats = agentwire_transport::node::status::NodeStats::default();
/// assert!(stats.snapshot().iter().all(|(_, v)| *v == 0));
/// ```
#[derive(Debug, Default)]
pub struct NodeStats {
    pub(crate) links_up: AtomicU64,
    pub(crate) link_connects: AtomicU64,
    pub(crate) link_failures: AtomicU64,
    pub(crate) links_refused: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) frames_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) echoes_suppressed: AtomicU64,
    pub(crate) frames_unknown_source: AtomicU64,
    pub(crate) frames_unknown_destination: AtomicU64,
    pub(crate) nacks_not_relayed: AtomicU64,
    pub(crate) nacks_relayed_out: AtomicU64,
    pub(crate) nacks_relayed_in: AtomicU64,
    pub(crate) frames_nacked_link_down: AtomicU64,
    pub(crate) frames_lost_link_down: AtomicU64,
    pub(crate) registry_updates_out: AtomicU64,
    pub(crate) registry_updates_in: AtomicU64,
}

impl NodeStats {
    /// Every counter by name (`links_up` is a gauge).
    ///
    /// ```
    /// let s = agentwire_transport::node::status::NodeStats::default().snapshot();
    /// assert!(s.iter().any(|(name, _)| *name == "links_up"));
    /// ```
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("links_up", get(&self.links_up)),
            ("link_connects", get(&self.link_connects)),
            ("link_failures", get(&self.link_failures)),
            ("links_refused", get(&self.links_refused)),
            ("frames_out", get(&self.frames_out)),
            ("frames_in", get(&self.frames_in)),
            ("bytes_out", get(&self.bytes_out)),
            ("bytes_in", get(&self.bytes_in)),
            ("echoes_suppressed", get(&self.echoes_suppressed)),
            ("frames_unknown_source", get(&self.frames_unknown_source)),
            (
                "frames_unknown_destination",
                get(&self.frames_unknown_destination),
            ),
            ("nacks_not_relayed", get(&self.nacks_not_relayed)),
            ("nacks_relayed_out", get(&self.nacks_relayed_out)),
            ("nacks_relayed_in", get(&self.nacks_relayed_in)),
            (
                "frames_nacked_link_down",
                get(&self.frames_nacked_link_down),
            ),
            ("frames_lost_link_down", get(&self.frames_lost_link_down)),
            ("registry_updates_out", get(&self.registry_updates_out)),
            ("registry_updates_in", get(&self.registry_updates_in)),
        ]
    }
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
