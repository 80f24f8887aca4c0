//! `agentwire serve` under systemd: the notify protocol ([`protocol`]: one datagram to
//! `$NOTIFY_SOCKET`, a path or an abstract name) and the notifier ([`notifier`]) that sends
//! `READY=1` once the daemon is ready, `STATUS=` lines, `WATCHDOG=1` while every router shard
//! makes progress, `RELOADING=1` around a SIGHUP reload and `STOPPING=1` at shutdown.
//!
//! Without `$NOTIFY_SOCKET` (a terminal, `Type=simple`) nothing is sent and no thread runs.
//! The crates that speak the protocol (sd-notify 0.5 among them) connect to the variable's
//! value as a path, so an abstract name (`@...`, as service managers inside containers
//! use) would fail; the protocol is small enough to speak here.

pub mod notifier;
pub mod protocol;
