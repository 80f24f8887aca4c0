//! agentwire-transport: io_uring TCP/UDP links, the DPDK poll-mode transport (feature `dpdk`) and node-to-node links.
//!
//! This crate is part of the workspace layout laid down with the shm data plane (issue 2).
//! It holds no code yet: the network transports arrive with their own issue, after the daemon.
#![forbid(unsafe_code)]
