//! agentwire-runtime: the daemon. Built so far: [`daemon`] (one router shard on a pinned
//! glommio executor, status over the control socket, clean shutdown), [`config`] (TOML with
//! an embedded, documented default), the persisted dead-letter queue ([`dlq`]) that the
//! router's deferral deadline feeds, and the Prometheus endpoint ([`metrics`]).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod dlq;
pub mod metrics;
