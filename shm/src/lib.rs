//! agentwire-shm: the data plane every other part of agentwire stands on.
//!
//! - [`wire`]: the 48-byte frame header read in place with zerocopy; rkyv payloads.
//! - [`ring`]: the lock-free SPSC ring of variable-length frames (claim/commit, batched
//!   publish and release, padding at wrap, validation against a hostile producer).
//! - [`idle`]: spin, spin-then-park and park, with an eventfd doorbell.
//! - [`segment`]: one agent's sealed memfd with its ring pair and control block.
//! - [`placement`]: huge pages and NUMA binding (hwlocality), with logged fallbacks.
//! - [`control`] and [`server`]: the Unix control socket protocol and the daemon's side of
//!   the handshake (SO_PEERCRED, version negotiation, SCM_RIGHTS).
//! - [`client`]: the agent library.
//! - [`routing`]: the routing core (admission, registry, duty cycle) shared by the test
//!   router and the daemon.
//! - [`testing`]: a minimal in-process router for tests and demos.
//!
//! ```
//! use agentwire_shm::{client::Agent, testing::{TestRouter, TestRouterConfig}};
//! let sock = std::env::temp_dir().join(format!("aw-lib-doc-{}.sock", std::process::id()));
//! let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
//! let mut tx = Agent::builder("tx").socket(router.socket_path()).connect().unwrap();
//! let mut rx = Agent::builder("rx").socket(router.socket_path()).topic("t").connect().unwrap();
//! tx.publish("t", b"hello").unwrap();
//! assert_eq!(rx.recv(Some(std::time::Duration::from_secs(5))).unwrap().unwrap().payload(), b"hello");
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod client;
pub mod control;
pub mod deferral;
pub mod idle;
pub mod placement;
pub mod ring;
pub mod routing;
pub mod segment;
pub mod server;
pub mod testing;
pub mod wire;
