//! `aw_options`: the builder an agent connects with (name, socket, capabilities, topics,
//! features, idle strategy, reconnect, send timeout, ring size, trusted daemon uids).
//!
//! Thread safety: an options handle may move between threads but is used by one thread at
//! a time.

use crate::args;
use crate::consts::{AW_IDLE_PARK, AW_IDLE_SPIN, AW_IDLE_SPIN_THEN_PARK};
use crate::status::{aw_status, guard, Failure};
use agentwire_shm::client::{Agent, AgentBuilder};
use agentwire_shm::idle::IdleStrategy;
use std::ffi::c_char;
use std::time::Duration;

/// Connection options (opaque). Create with `aw_options_new`, free with `aw_options_free`;
/// one options handle may connect any number of agents.
///
/// Thread safety: usable from any thread, by one thread at a time.
///
/// ```c
/// aw_options *options;
/// aw_options_new("planner", &options);
/// aw_options_add_topic(options, "plans");
/// ```
#[allow(non_camel_case_types)]
pub struct aw_options {
    /// Always `Some` between calls; taken while a builder method consumes it.
    builder: Option<AgentBuilder>,
}

impl aw_options {
    pub(crate) fn builder(&self) -> &AgentBuilder {
        self.builder
            .as_ref()
            .expect("the builder is put back after every update")
    }

    fn update(&mut self, change: impl FnOnce(AgentBuilder) -> AgentBuilder) {
        let builder = self
            .builder
            .take()
            .expect("the builder is put back after every update");
        self.builder = Some(change(builder));
    }
}

/// Applies `change` to the options behind `options`.
fn with_options(
    options: *mut aw_options,
    change: impl FnOnce(&mut aw_options) -> Result<(), Failure>,
) -> aw_status {
    guard(|| {
        // SAFETY: the caller passes a live options handle used by this thread only (header).
        let options = unsafe { args::handle(options, "options") }?;
        change(options)
    })
}

/// Creates options for an agent named `name` (UTF-8), with the defaults: the default
/// socket (`$AGENTWIRE_SOCKET`, else `/run/agentwire/agentwire.sock` for root, else
/// `$XDG_RUNTIME_DIR/agentwire/agentwire.sock`), spin-then-park idling, 10 reconnect
/// attempts from 10 ms, a 1 s send timeout. Writes the handle to `*options_out`.
///
/// ```c
/// aw_options *options;
/// if (aw_options_new("summarizer", &options) != AW_OK) return 1;
/// ```
///
/// # Safety
/// `name` is NULL or a NUL-terminated string; `options_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aw_options_new(
    name: *const c_char,
    options_out: *mut *mut aw_options,
) -> aw_status {
    guard(|| {
        let out = args::out(options_out, "options_out")?;
        // SAFETY: the caller passes NULL or a NUL-terminated string.
        let name = unsafe { args::text(name, "name") }?;
        let options = Box::new(aw_options {
            builder: Some(Agent::builder(name)),
        });
        // SAFETY: `out` was checked not NULL and the caller guarantees it writable.
        unsafe { out.write(Box::into_raw(options)) };
        Ok(())
    })
}

/// Frees options made by `aw_options_new`. NULL is accepted (nothing happens). Agents
/// connected with them are not affected.
///
/// ```c
/// aw_options_free(options);
/// ```
///
/// # Safety
/// `options` is NULL or a handle from `aw_options_new` not freed yet; it is invalid after.
#[no_mangle]
pub unsafe extern "C" fn aw_options_free(options: *mut aw_options) {
    let _ = guard(|| {
        if !options.is_null() {
            // SAFETY: a handle from aw_options_new (Box::into_raw), freed once (caller).
            drop(unsafe { Box::from_raw(options) });
        }
        Ok(())
    });
}

/// Sets the daemon's socket path (UTF-8).
///
/// ```c
/// aw_options_set_socket(options, "/run/agentwire/agentwire.sock");
/// ```
///
/// # Safety
/// `options` is NULL or a live options handle; `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn aw_options_set_socket(
    options: *mut aw_options,
    path: *const c_char,
) -> aw_status {
    with_options(options, |o| {
        // SAFETY: the caller passes NULL or a NUL-terminated string.
        let path = unsafe { args::text(path, "path") }?;
        o.update(|b| b.socket(path));
        Ok(())
    })
}

/// Offers a capability `name` at a semver `version` (for anycast and discovery); call once
/// per capability.
///
/// ```c
/// aw_options_add_capability(options, "ocr", "2.1.0");
/// ```
///
/// # Safety
/// `options` is NULL or a live options handle; `name` and `version` are NULL or
/// NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn aw_options_add_capability(
    options: *mut aw_options,
    name: *const c_char,
    version: *const c_char,
) -> aw_status {
    with_options(options, |o| {
        // SAFETY: the caller passes NULL or NUL-terminated strings.
        let (name, version) =
            unsafe { (args::text(name, "name")?, args::text(version, "version")?) };
        o.update(|b| b.capability(name, version));
        Ok(())
    })
}

/// Subscribes to `topic` at registration (kept across reconnects); call once per topic.
///
/// ```c
/// aw_options_add_topic(options, "alerts");
/// ```
///
/// # Safety
/// `options` is NULL or a live options handle; `topic` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn aw_options_add_topic(
    options: *mut aw_options,
    topic: *const c_char,
) -> aw_status {
    with_options(options, |o| {
        // SAFETY: the caller passes NULL or a NUL-terminated string.
        let topic = unsafe { args::text(topic, "topic") }?;
        o.update(|b| b.topic(topic));
        Ok(())
    })
}

/// Serves feature id `feature_id` (frames sent with `aw_send_feature` to it may come here).
///
/// ```c
/// aw_options_add_feature(options, 12);
/// ```
///
/// # Safety
/// `options` is NULL or a live options handle.
#[no_mangle]
pub unsafe extern "C" fn aw_options_add_feature(
    options: *mut aw_options,
    feature_id: u32,
) -> aw_status {
    with_options(options, |o| {
        o.update(|b| b.feature(feature_id));
        Ok(())
    })
}

/// How blocking receives wait: `AW_IDLE_SPIN` (busy-poll; the other two arguments are
/// ignored), `AW_IDLE_SPIN_THEN_PARK` (`spins_max` empty polls, then park on the doorbell
/// for at most `park_timeout_us` at a time) or `AW_IDLE_PARK` (park at once, at most
/// `park_timeout_us`; `spins_max` ignored). A park timeout must be at least 1 µs.
///
/// ```c
/// aw_options_set_idle(options, AW_IDLE_SPIN_THEN_PARK, 10000, 1000);
/// ```
///
/// # Safety
/// `options` is NULL or a live options handle.
#[no_mangle]
pub unsafe extern "C" fn aw_options_set_idle(
    options: *mut aw_options,
    strategy: u32,
    spins_max: u32,
    park_timeout_us: u64,
) -> aw_status {
    with_options(options, |o| {
        let park_timeout_ns = || {
            if park_timeout_us == 0 {
                return Err(Failure::argument("park_timeout_us", "must be at least 1"));
            }
            park_timeout_us
                .checked_mul(1_000)
                .ok_or_else(|| Failure::argument("park_timeout_us", "overflows in nanoseconds"))
        };
        let idle = match strategy {
            AW_IDLE_SPIN => IdleStrategy::Spin,
            AW_IDLE_SPIN_THEN_PARK => IdleStrategy::SpinThenPark {
                spins_max,
                park_timeout_ns: park_timeout_ns()?,
            },
            AW_IDLE_PARK => IdleStrategy::Park {
                park_timeout_ns: park_timeout_ns()?,
            },
            _ => {
                return Err(Failure::argument(
                    "strategy",
                    "is not AW_IDLE_SPIN, AW_IDLE_SPIN_THEN_PARK or AW_IDLE_PARK",
                ))
            }
        };
        o.update(|b| b.idle(idle));
        Ok(())
    })
}

/// Reconnect attempts before `aw_reconnect` gives up (at least 1; default 10), with a
/// backoff doubling from `initial_backoff_ms` up to 1 s.
///
/// ```c
/// aw_options_set_reconnect(options, 5, 20);
/// ```
///
/// # Safety
/// `options` is NULL or a live options handle.
#[no_mangle]
pub unsafe extern "C" fn aw_options_set_reconnect(
    options: *mut aw_options,
    attempts_max: u32,
    initial_backoff_ms: u32,
) -> aw_status {
    with_options(options, |o| {
        let initial = Duration::from_millis(u64::from(initial_backoff_ms));
        o.update(|b| b.reconnect(attempts_max, initial));
        Ok(())
    })
}

/// How long a send waits for room in a full tx ring before `AW_ERR_BACKPRESSURE`
/// (default 1000 ms).
///
/// ```c
/// aw_options_set_send_timeout_ms(options, 50);
/// ```
///
/// # Safety
/// `options` is NULL or a live options handle.
#[no_mangle]
pub unsafe extern "C" fn aw_options_set_send_timeout_ms(
    options: *mut aw_options,
    timeout_ms: u32,
) -> aw_status {
    with_options(options, |o| {
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        o.update(|b| b.send_timeout(timeout));
        Ok(())
    })
}

/// Asks for rings of `capacity_bytes` each way: a power of two within the daemon's limits
/// (default: the daemon's `ring_capacity_bytes`); the daemon refuses others at connect.
///
/// ```c
/// aw_options_set_ring_capacity(options, 65536);
/// ```
///
/// # Safety
/// `options` is NULL or a live options handle.
#[no_mangle]
pub unsafe extern "C" fn aw_options_set_ring_capacity(
    options: *mut aw_options,
    capacity_bytes: u32,
) -> aw_status {
    with_options(options, |o| {
        o.update(|b| b.ring_capacity(capacity_bytes));
        Ok(())
    })
}

/// Trusts a daemon running as `uid`; call once per uid. Default: root and this process's
/// own uid; naming any uid replaces that default (name 0 too if the daemon may run as root).
/// A daemon of another uid is refused at connect with `AW_ERR_UNTRUSTED_DAEMON`.
///
/// ```c
/// aw_options_add_daemon_uid(options, 998);
/// ```
///
/// # Safety
/// `options` is NULL or a live options handle.
#[no_mangle]
pub unsafe extern "C" fn aw_options_add_daemon_uid(
    options: *mut aw_options,
    uid: u32,
) -> aw_status {
    with_options(options, |o| {
        o.update(|b| b.daemon_uid(uid));
        Ok(())
    })
}
