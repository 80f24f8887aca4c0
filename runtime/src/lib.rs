//! agentwire-runtime: the daemon — glommio executors per partition core, router shards, registry, control socket, metrics.
//!
//! This crate is part of the workspace layout laid down with the shm data plane (issue 2).
//! It holds no code yet: the daemon arrives with issue 3; until then `agentwire_shm::testing::TestRouter` is the minimal router used in tests.
#![forbid(unsafe_code)]
