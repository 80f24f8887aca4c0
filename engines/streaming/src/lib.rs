//! agentwire-streaming: the streaming engine as a library with a plain Rust API.
//!
//! - [`event`]: the event (key, event time, value, attributes).
//! - [`log`]: the durable, partitioned, append-only log (checksummed records, segments,
//!   retention, recovery that truncates a torn tail).
//! - [`window`]: event-time windows (tumbling, sliding, session) with watermarks and
//!   allowed lateness, and their aggregates.
//! - [`detect`]: streaming anomaly detectors, each point scored in [0, 1] from earlier points.
//! - [`nab`]: the Numenta Anomaly Benchmark's standard-profile scorer.
//!
//! The engine imports `agentwire-shm` and the router's endpoint API only for its in-daemon
//! adapter, never the daemon.
#![forbid(unsafe_code)]

pub mod adapter;
pub mod codec;
pub mod detect;
pub mod event;
pub mod exactly_once;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod log;
pub mod nab;
pub mod output_json;
pub mod pipeline;
pub mod window;
