//! The notifier: what `agentwire serve` tells systemd, from a thread of its own
//! (`aw-notify`).
//!
//! - `READY=1` (with a first `STATUS=`) once [`Daemon::start`] returned: the control socket
//!   accepts, every executor is pinned, the configured engine is registered.
//! - `STATUS=serving: N agents, R msgs/s, engines running: ...` every [`STATUS_INTERVAL`].
//! - `WATCHDOG=1` every half `$WATCHDOG_USEC` (systemd's convention), and only when every
//!   router shard ran a duty cycle since the previous look
//!   ([`agentwire_router::heartbeat::HeartbeatWatch`]); otherwise the ping is withheld, a
//!   `STATUS=watchdog withheld: ...` line names the shard, and systemd restarts the daemon
//!   once `WatchdogSec=` passes without a ping.
//! - `RELOADING=1` and `READY=1` around a SIGHUP reload; `STOPPING=1` at shutdown.
//!
//! ```ignore
//! let notifier = Notifier::ready(daemon.service_view());
//! // ... serve until SIGTERM ...
//! notifier.stopping();
//! daemon.join();
//! ```
//!
//! [`Daemon::start`]: agentwire_runtime::daemon::Daemon::start

use super::protocol::{monotonic_usec, watchdog_timeout, NotifySocket};
use agentwire_router::heartbeat::HeartbeatWatch;
use agentwire_runtime::service::{ServiceSnapshot, ServiceView, WEDGE_ENV};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a `STATUS=` line is sent (and over what the msgs/s figure is measured).
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest time between two watchdog looks, whatever `$WATCHDOG_USEC` says: a nudged
/// shard must have time to be scheduled and run a duty cycle between looks.
pub const WATCHDOG_LOOK_MIN: Duration = Duration::from_millis(10);

/// The notifier. Inert (no socket, no thread) when `$NOTIFY_SOCKET` is unset.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<Arc<NotifySocket>>,
    view: ServiceView,
    thread: Option<JoinHandle<()>>,
    /// Set to stop the thread; the condvar wakes it at once.
    stop: Arc<(Mutex<bool>, Condvar)>,
}

impl Notifier {
    /// Tells the service manager the daemon is ready, then starts the thread that sends
    /// status lines and watchdog pings. Call it once [`Daemon::start`] returned. A
    /// `$NOTIFY_SOCKET` that cannot be used is logged, and the daemon serves on without
    /// notifying (the service manager then reports a start timeout).
    ///
    /// [`Daemon::start`]: agentwire_runtime::daemon::Daemon::start
    pub fn ready(view: ServiceView) -> Self {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let socket = match NotifySocket::from_env() {
            Ok(socket) => socket.map(Arc::new),
            Err(e) => {
                tracing::error!("{e}; not notifying the service manager");
                None
            }
        };
        let mut notifier = Self {
            socket,
            view,
            thread: None,
            stop,
        };
        let Some(socket) = notifier.socket.clone() else {
            return notifier;
        };
        let first = notifier.view.snapshot();
        send(&socket, &format!("READY=1\nSTATUS={}", first.line(None)));
        let watchdog = watchdog_timeout().map(|t| (t / 2).max(WATCHDOG_LOOK_MIN));
        match watchdog {
            Some(every) => tracing::info!(
                ping_every = ?every,
                "systemd notified: ready; watchdog pings while every router shard progresses"
            ),
            None => tracing::info!("systemd notified: ready (no watchdog asked for)"),
        }
        let (view, stop) = (notifier.view.clone(), notifier.stop.clone());
        match std::thread::Builder::new()
            .name("aw-notify".into())
            .spawn(move || run(&socket, &view, watchdog, first, &stop))
        {
            Ok(thread) => notifier.thread = Some(thread),
            // Without the thread no ping is sent: systemd restarts the daemon, as it should
            // for a process that cannot start a thread.
            Err(e) => tracing::error!("starting the notifier thread: {e}"),
        }
        notifier
    }

    /// `RELOADING=1`: a SIGHUP reload begins (systemd waits for [`Notifier::reloaded`]).
    pub fn reloading(&self) {
        if let Some(socket) = &self.socket {
            send(
                socket,
                &format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()),
            );
        }
    }

    /// `READY=1` again after a reload, with what it did in `STATUS=` (on one line: a
    /// newline would end the assignment).
    pub fn reloaded(&self, what: &str) {
        if let Some(socket) = &self.socket {
            let what = what.lines().collect::<Vec<_>>().join("; ");
            send(socket, &format!("READY=1\nSTATUS={what}"));
        }
    }

    /// `STOPPING=1`: stops the thread (no more pings: systemd stops the watchdog when the
    /// service stops) and says the daemon drains.
    pub fn stopping(mut self) {
        self.stop_thread();
        if let Some(socket) = &self.socket {
            send(
                socket,
                "STOPPING=1\nSTATUS=stopping: draining committed frames",
            );
        }
    }

    fn stop_thread(&mut self) {
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Sends one notification; a failure is logged, not fatal (the daemon still routes).
fn send(socket: &NotifySocket, message: &str) {
    if let Err(e) = socket.send(message) {
        tracing::warn!("notifying the service manager: {e}");
    }
}

/// The thread: status lines every [`STATUS_INTERVAL`], and with a watchdog a look at the
/// router shards every `watchdog` period, pinging only when every shard progressed.
fn run(
    socket: &NotifySocket,
    view: &ServiceView,
    watchdog: Option<Duration>,
    first: ServiceSnapshot,
    stop: &(Mutex<bool>, Condvar),
) {
    let mut watch = watchdog.map(|_| HeartbeatWatch::new(view.heartbeats()));
    let now = Instant::now();
    let mut next_look = watchdog.map(|every| now + every);
    let mut next_status = now + STATUS_INTERVAL;
    let mut last = (now, first);
    let mut stalled_since: Option<Instant> = None;
    loop {
        let due = next_look.map_or(next_status, |look| look.min(next_status));
        if wait_until(stop, due) {
            return;
        }
        let now = Instant::now();
        if let (Some(watch), Some(look), Some(every)) = (watch.as_mut(), next_look, watchdog) {
            if now >= look {
                next_look = Some(now + every);
                // Read before the counts: a shard the hook wedged before this load has
                // stored its last count already, so the look below sees it, and every later
                // look sees it unchanged.
                let wedged = view.wedge_hook().filter(|h| h.wedged()).map(|h| h.shard());
                let stalled = watch.look();
                if stalled.is_empty() {
                    send(socket, "WATCHDOG=1");
                    if let Some(since) = stalled_since.take() {
                        tracing::warn!(
                            "every router shard runs again after {:?}: watchdog pings resume",
                            since.elapsed()
                        );
                    }
                } else {
                    let line = withheld_line(view.router_cpus(), &stalled, wedged, every);
                    if stalled_since.is_none() {
                        stalled_since = Some(now);
                        tracing::error!(
                            "{line}; systemd restarts the daemon once WatchdogSec passes \
                             without a ping"
                        );
                    }
                    send(socket, &format!("STATUS={line}"));
                    // The stall line stays the status until the shards run again.
                    next_status = now + STATUS_INTERVAL;
                }
            }
        }
        if now >= next_status {
            next_status = now + STATUS_INTERVAL;
            if stalled_since.is_none() {
                let snap = view.snapshot();
                let rate = snap.rate_since(&last.1, now - last.0);
                send(socket, &format!("STATUS={}", snap.line(Some(rate))));
                last = (now, snap);
            }
        }
    }
}

/// Waits until `due` or a stop; true when stopped.
fn wait_until(stop: &(Mutex<bool>, Condvar), due: Instant) -> bool {
    let (flag, wake) = stop;
    let mut stopped = flag.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if *stopped {
            return true;
        }
        let left = due.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stopped = wake
            .wait_timeout(stopped, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// `watchdog withheld: router shard 0 (cpu 1) ran no duty cycle in the last 100ms`, naming
/// the test hook when it had wedged the shard (`wedged`) before the look.
fn withheld_line(
    router_cpus: &[usize],
    stalled: &[usize],
    wedged: Option<usize>,
    every: Duration,
) -> String {
    let shards: Vec<String> = stalled
        .iter()
        .map(|&shard| {
            let cpu = router_cpus
                .get(shard)
                .map_or(String::new(), |cpu| format!(" (cpu {cpu})"));
            let hook = if wedged == Some(shard) {
                format!(", wedged by the test hook {WEDGE_ENV}")
            } else {
                String::new()
            };
            format!("router shard {shard}{cpu}{hook}")
        })
        .collect();
    format!(
        "watchdog withheld: {} ran no duty cycle in the last {every:?}",
        shards.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_withheld_line_names_each_stalled_shard_and_the_hook() {
        let every = Duration::from_millis(100);
        assert_eq!(
            withheld_line(&[1, 3], &[1], None, every),
            "watchdog withheld: router shard 1 (cpu 3) ran no duty cycle in the last 100ms"
        );
        assert_eq!(
            withheld_line(&[1, 3], &[0, 1], Some(0), every),
            format!(
                "watchdog withheld: router shard 0 (cpu 1), wedged by the test hook \
                 {WEDGE_ENV}, router shard 1 (cpu 3) ran no duty cycle in the last 100ms"
            )
        );
    }

    #[test]
    fn a_stop_ends_the_wait_at_once() {
        let stop = (Mutex::new(false), Condvar::new());
        assert!(!wait_until(&stop, Instant::now()));
        *stop.0.lock().unwrap() = true;
        assert!(wait_until(
            &stop,
            Instant::now() + Duration::from_secs(3600)
        ));
    }
}
