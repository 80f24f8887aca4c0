//! Shared helpers for agentwire's benches: core pinning, a bare fixed-slot ring used as the
//! physical-limit baseline, and percentile reporting.
