//! libagentwire: the C ABI of the agentwire agent client (`agentwire.h`).
//!
//! Every function of the Rust [`Agent`](agentwire_shm::client::Agent) behind opaque
//! handles (`aw_options`, `aw_agent`), plain C structs (`aw_message`, `aw_send_options`,
//! `aw_agent_info`) and integer constants; no Rust type crosses the boundary.
//!
//! - [`status`]: the codes every call returns, the thread-local message, and the guard that
//!   turns a panic into `AW_ERR_PANIC` instead of unwinding into C.
//! - [`options`]: the connection builder.
//! - [`agent`]: the agent handle's lifecycle and connection calls.
//! - [`send`]: sending, subscriptions, discovery.
//! - [`batch`]: many frames to one agent with one publish.
//! - [`message`]: receiving in place and request/response.
//! - [`claim`]: the zero-copy claim, write, commit path.
//! - [`stream`]: events for the streaming engine.
//!
//! The rules C code lives by (also at the top of `agentwire.h`): a handle may move between
//! threads but is used by one thread at a time; a received view stays valid until
//! `aw_message_release`, the next receive on its agent, `aw_reconnect` or `aw_close`.
//!
//! ```
//! use agentwire::*;
//! let mut options = std::ptr::null_mut();
//! // SAFETY: a NUL-terminated name and a writable out-pointer.
//! let status = unsafe { aw_options_new(c"planner".as_ptr(), &mut options) };
//! assert_eq!(status, aw_status::AW_OK);
//! // SAFETY: the handle just made, freed once.
//! unsafe { aw_options_free(options) };
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod agent;
mod args;
pub mod batch;
pub mod claim;
pub mod consts;
pub mod message;
pub mod options;
pub mod send;
pub mod status;
pub mod stream;

pub use agent::*;
pub use batch::*;
pub use claim::*;
pub use consts::*;
pub use message::*;
pub use options::*;
pub use send::*;
pub use status::{aw_last_error, aw_last_nack_reason, aw_status, aw_status_name, guard_for_tests};
pub use stream::*;
