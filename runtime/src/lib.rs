//! agentwire-runtime: the daemon. Built so far: the persisted dead-letter queue ([`dlq`]).
//! The glommio router shards, registry, control socket and metrics arrive with the rest of
//! issue 3; until then `agentwire_shm::testing::TestRouter` is the router used in tests.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![forbid(unsafe_code)]

pub mod dlq;
