//! agentwire-router: the centre of the daemon. It serves endpoints (today: shared-memory
//! agents) through the same hot path, and is split by job:
//!
//! - control side: [`control`] starts a router and is its handle ([`RouterControl`]);
//!   `control_loop` is the one thread (epoll) that serves every connection, each a small
//!   state machine with its own deadline; [`server`] is the listening socket and the
//!   allow-list; [`dirs`] creates the daemon's directories and private files with explicit
//!   modes; `gate` decides at accept, before reading, who may begin a handshake (the
//!   allow-list, per-uid limits); `handshake` runs a connection's handshake one message at a
//!   time; `admission` admits agents; `session` answers an agent's requests; [`policy`] says
//!   what each peer identity may register, subscribe to and publish to; `registry` holds
//!   who is registered; [`liveness`] tells gone and stale agents; [`status`] answers
//!   `agentwire status`.
//! - data side: [`RoutingCore`] runs one shard's duty cycle (`duty_cycle`): `route` decides
//!   where a frame goes, `outbox` writes it, `deferred` holds frames for full destinations,
//!   `give_up` dead-letters or drops (and nacks) what cannot be delivered, `reply` writes
//!   acks and nacks, `lanes` orders the priority classes, `forwarded` takes frames from
//!   other shards over [`links`], `park` sleeps on every doorbell ([`wake`]), `shutdown`
//!   drains and closes; [`heartbeat`] counts each shard's duty cycles for a service
//!   watchdog; [`mirror`] publishes its counters to its slot of the stats segment.
//! - [`testing`]: a router on plain threads for tests and demos.
//!
//! Semantics (docs/wire.md §6): unicast; publish to every subscriber, a copy for a
//! subscriber that cannot take it (ring and deferral full) dropped and counted (or, with
//! [`config::SlowSubscriber::Backpressure`], every copy placed or none); anycast to a capability route, to the least-loaded live agent whose version
//! satisfies the route's requirement; a full destination's frames wait in its bounded
//! deferral ([`deferral`]) and, past the deadline, go to a [`DeadLetterSink`] with a nack
//! to the sender; when the deferral is full too the frame stays in the sender's lane
//! (backpressure); priority lanes served by a weighted policy ([`LANE_WEIGHTS`]); acks on
//! request; nacks with a reason, counted in the sender's control block too; a departing
//! agent's committed frames are still routed before its segment is reclaimed. The registry
//! sits behind a mutex on the control path only; the duty cycle sees it through a
//! generation counter and rebuilt tables.
//!
//! ```
//! use agentwire_router::{RouterConfig, RouterControl};
//! use agentwire_shm::idle::IdleStrategy;
//! let sock = std::env::temp_dir().join(format!("aw-doc-routing-{}.sock", std::process::id()));
//! let (control, core) = RouterControl::start(RouterConfig::new(sock)).unwrap();
//! let router = std::thread::spawn(move || core.run(IdleStrategy::default()));
//! let mut a = agentwire_shm::client::Agent::builder("a").socket(control.socket_path()).connect().unwrap();
//! a.publish("nobody", b"x").unwrap(); // nacked: no subscriber
//! assert!(a.recv(Some(std::time::Duration::from_secs(5))).unwrap().is_some());
//! control.shutdown();
//! router.join().unwrap();
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod admission;
pub mod agent_ids;
pub mod agent_mirror;
mod commands;
pub mod config;
pub mod control;
mod control_loop;
pub mod deferral;
mod deferred;
pub mod dirs;
mod duty_cycle;
pub mod endpoint;
mod forwarded;
mod gate;
mod give_up;
mod handshake;
pub mod heartbeat;
mod lanes;
pub mod limits;
pub mod links;
pub mod liveness;
pub mod mirror;
mod outbox;
mod park;
pub mod placement;
pub mod policy;
mod registry;
mod reply;
mod route;
mod send_rights;
pub mod server;
mod session;
mod shared;
mod shutdown;
pub mod sink;
pub mod stats;
pub mod status;
mod table;
pub mod testing;
pub mod wake;

pub use config::{
    lane_batch_frames, RouterConfig, AGENTS_MAX_DEFAULT, AGENTS_MAX_LIMIT, DEAD_LETTER_RETRY_MAX,
    DEAD_LETTER_RETRY_MIN, DISCOVERY_CACHE_ENTRIES_MAX, DRAIN_PASSES_MAX,
    HANDSHAKES_PER_UID_MAX_DEFAULT, HEARTBEAT_PASSES, IDLE_SHARD_PARK_MIN, LANE_BATCH_FRAMES,
    LANE_WEIGHTS, LINK_BUDGET_BYTES_MAX, RING_CAPACITY_MAX_BYTES_DEFAULT,
    RING_CAPACITY_MIN_BYTES_DEFAULT, ROUTER_BATCH_FRAMES_DEFAULT, ROUTER_BATCH_FRAMES_LIMIT,
    ROUTER_SHARDS_MAX, SHUTDOWN_WAIT,
};
pub use control::{RouterControl, StatusHook, COMMANDS_QUEUED_MAX};
pub use control_loop::HANDSHAKES_PENDING_MAX;
pub use duty_cycle::RoutingCore;
pub use sink::DeadLetterSink;
pub use stats::{RouterStats, BATCH_BUCKETS};
pub use status::RouterObserver;
