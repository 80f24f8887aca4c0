//! Helpers shared by the router's integration tests (each test file includes this module).

use std::sync::mpsc;
use std::time::Duration;

/// Runs `f` on a thread and returns its result, failing the test if it has not finished
/// within `limit` (a watchdog against a stalled control plane, not a timing target: the
/// work takes milliseconds, and one handshake step a stalled loop would wait out is 5 s).
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| {
        panic!("{what} did not finish within {limit:?}: the control plane stalled")
    })
}

/// This process's descriptor limits (soft, hard), after raising the soft one to the hard.
pub fn raise_fd_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let raised = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) }, 0);
    (lim.rlim_max, lim.rlim_max)
}
