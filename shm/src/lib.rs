//! agentwire-shm: the data plane every other part of agentwire stands on.
//!
//! - [`wire`]: the 48-byte frame header read in place with zerocopy; rkyv payloads.
//! - [`ring`]: the lock-free SPSC ring of variable-length frames (claim/commit, batched
//!   publish and release, padding at wrap, validation against a hostile producer).
//! - [`doorbell`]: the eventfd doorbell and the asymmetric barrier, below the ring and the
//!   idle strategies.
//! - [`idle`]: spin, spin-then-park and park.
//! - [`segment`]: one agent's sealed memfd with its ring pair and control block.
//! - [`placement`]: huge pages and NUMA binding (hwlocality), with logged fallbacks.
//! - [`control`]: the Unix control socket protocol (messages, framing, SCM_RIGHTS).
//! - [`client`]: the agent library.
//! - [`pattern`]: checked payloads for conservation tests across processes.
//! - [`stream_events`]: the streaming engine's ingest schema (event batches, acks).
//! - [`stream_frames`]: frames and control messages on a byte stream (TCP, TLS).
//! - [`telemetry`]: fire-and-forget frames over UDP with per-source loss accounting.
//!
//! Nothing of the daemon lives here: the router (registry, admission, routing core, the
//! test router) is the `agentwire-router` crate, which builds on this one.
//!
//! ```
//! use agentwire_shm::ring::ring_pair;
//! use std::ops::ControlFlow;
//! let (mut tx, mut rx) = ring_pair(4096, false).unwrap();
//! tx.try_push(b"hello").unwrap();
//! let mut seen = Vec::new();
//! rx.read(8, |frame| { seen.extend_from_slice(frame); ControlFlow::Continue(()) }).unwrap();
//! assert_eq!(seen, b"hello");
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod client;
pub mod control;
pub mod doorbell;
pub mod idle;
pub mod pattern;
pub mod placement;
pub mod ring;
pub mod segment;
pub mod stats_segment;
pub mod stream_events;
pub mod stream_frames;
pub mod telemetry;
pub mod wire;
