//! Exactly-once processing: aligned checkpoints of every shard's state with the input
//! offset (epochs), outputs numbered (shard, epoch, sequence), and a sink that de-duplicates
//! by those numbers. After a crash (SIGKILL included) and a restart, the sink holds exactly
//! the outputs of a run that never failed.
//!
//! - [`checkpoint`]: the checkpoint files and the manifest that commits an epoch.
//! - [`sink`]: the de-duplicating JSON-lines sink.
//! - [`runner`]: the run itself, over a partition of the durable log.
//!
//! What each piece guarantees, and what it costs, is in its module.

pub mod checkpoint;
pub mod runner;
pub mod sink;
