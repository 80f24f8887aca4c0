//! agentwire-runtime: the daemon. [`daemon`] (router shards on pinned glommio executors,
//! the applied partition plan, status over the control socket, clean shutdown),
//! [`planning`] (the live machine, the plan and the start-up checks), [`partitions`] (the
//! engine partitions' pinned executors and rebalancing), [`config`] (TOML with an embedded,
//! documented default), the persisted dead-letter queue ([`dlq`]) that the router's deferral
//! deadline feeds through [`dlq_sink`] (its default file: [`dlq_path`]; per-sender quotas:
//! [`dlq_quota`]), the Prometheus endpoint ([`metrics`]), and what a service manager is
//! told ([`service`]: readiness summary, router heartbeats for the watchdog), and the live
//! stats segment the digital twin reads ([`mirror`]), and the twin sampling it into its
//! history on the twin partition ([`twin_engine`]).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod dlq;
pub mod dlq_path;
pub mod dlq_quota;
pub mod dlq_sink;
pub mod metrics;
pub mod mirror;
pub mod node_links;
pub mod partitions;
pub mod planning;
pub mod remote;
pub mod service;
pub mod stream_engine;
pub mod twin_engine;
