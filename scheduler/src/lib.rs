//! agentwire-scheduler: machine topology (hwloc), core kinds, NUMA, accelerators; partition planning, pinning and rebalancing.
//!
//! This crate is part of the workspace layout laid down with the shm data plane (issue 2).
//! It holds no code yet: the topology and partition planner arrive with the scheduler issue (issue 4).
#![forbid(unsafe_code)]
