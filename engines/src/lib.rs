//! agentwire-engines: the streaming, nas, twin and fusion engines as libraries, plus their in-daemon agent adapters.
//!
//! This crate is part of the workspace layout laid down with the shm data plane (issue 2).
//! It holds no code yet: each engine arrives with its own issue.
#![forbid(unsafe_code)]
