//! agentwire-accel: compute back ends — CPU, NVIDIA GPU (cudarc, loaded at run time), NPU/CPU through OpenVINO (loaded at run time).
//!
//! This crate is part of the workspace layout laid down with the shm data plane (issue 2).
//! It holds no code yet: the back ends arrive with the accelerator issue.
#![forbid(unsafe_code)]
