//! `agentwire serve` speaking systemd's notify protocol to a socket the test owns: `READY=1`
//! only once the control socket accepts, every executor is pinned and the streaming engine is
//! discoverable; `STATUS=` lines; `WATCHDOG=1` at half `WATCHDOG_USEC` while every router
//! shard runs, and none once the test hook wedges one; `STOPPING=1` at SIGTERM, after the last
//! ping. No sleeps: every wait is for a datagram or an exit, under a watchdog deadline.

mod common;

use agentwire_shm::client::{query_status_trusting, Agent};
use agentwire_shm::stream_events::STREAM_CAPABILITY;
use common::{scratch, serve_command};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long any one awaited event may take before the test fails (a watchdog, not a timing).
const DEADLINE: Duration = Duration::from_secs(30);

const STREAMING: &str = r#"
[streaming]
enabled = true
detector = "windowed-gaussian"
results_topic = ""
[streaming.window]
kind = "tumbling"
size_ms = 1000
"#;

/// The daemon under test with the notify socket it reports to.
struct Notified {
    child: Child,
    socket: PathBuf,
    stderr: PathBuf,
    notify: UnixDatagram,
}

impl Notified {
    /// Starts `agentwire serve` in `dir` with `NOTIFY_SOCKET=notify_name`, `WATCHDOG_USEC`
    /// and the extra environment; `notify` is bound already, so no datagram is lost.
    fn start(
        dir: &Path,
        notify: UnixDatagram,
        notify_name: &str,
        config: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let socket = dir.join("aw.sock");
        let config_path = dir.join("agentwire.toml");
        std::fs::write(&config_path, config).unwrap();
        let stderr = dir.join("serve.stderr");
        let mut cmd = serve_command(&socket);
        cmd.arg("--config")
            .arg(&config_path)
            .env("NOTIFY_SOCKET", notify_name)
            .env("WATCHDOG_USEC", "200000")
            .env_remove("WATCHDOG_PID")
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()));
        for (k, v) in env {
            cmd.env(k, v);
        }
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Self {
            child: cmd.spawn().unwrap(),
            socket,
            stderr,
            notify,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The next datagram, waiting at most [`DEADLINE`]; a daemon that exits first fails the
    /// test with its stderr.
    fn next(&mut self, waiting_for: &str) -> String {
        self.next_by(Instant::now() + DEADLINE, waiting_for)
    }

    /// The next datagram, before `deadline`.
    fn next_by(&mut self, deadline: Instant, waiting_for: &str) -> String {
        let mut buf = vec![0u8; 4096];
        loop {
            match self.notify.recv(&mut buf) {
                Ok(n) => return String::from_utf8(buf[..n].to_vec()).unwrap(),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("recv: {e}"),
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the daemon exited ({status}) while the test waited for {waiting_for}: {}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "watchdog: no {waiting_for} within {DEADLINE:?}; stderr: {}",
                self.stderr()
            );
        }
    }

    /// Datagrams until those seen satisfy `done`, within one [`DEADLINE`] in all (pings
    /// keep coming, so each datagram's own wait is no bound); returns them all.
    fn until(&mut self, waiting_for: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        while !done(&seen) {
            seen.push(self.next_by(deadline, waiting_for));
        }
        seen
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// SIGTERM: `STOPPING=1` arrives, no ping after it, and the daemon exits 0.
    fn stop(mut self) {
        self.signal(rustix::process::Signal::TERM);
        self.until("STOPPING=1", |seen| last_has(seen, "STOPPING=1"));
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit {status}: {}", self.stderr());
        // The notifier stopped before STOPPING=1 was sent: nothing may follow it but status.
        self.notify.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = self.notify.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]);
            assert!(!m.contains("WATCHDOG=1"), "a ping after STOPPING=1: {m}");
        }
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the last datagram has a line `line`.
fn last_has(seen: &[String], line: &str) -> bool {
    seen.last().is_some_and(|m| m.lines().any(|l| l == line))
}

fn pings(messages: &[String]) -> usize {
    messages
        .iter()
        .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
        .count()
}

#[test]
fn ready_comes_once_the_socket_accepts_and_the_engine_is_discoverable() {
    let dir = scratch("notify-ready");
    let path = dir.join("notify");
    let notify = UnixDatagram::bind(&path).unwrap();
    let mut daemon = Notified::start(&dir, notify, path.to_str().unwrap(), STREAMING, &[]);
    let first = daemon.next("READY=1");
    assert!(
        first.lines().any(|l| l == "READY=1"),
        "the first notification is READY=1: {first:?}"
    );
    // At READY, without waiting or retrying: an agent connects, the engine is discoverable,
    // and every executor reports the affinity of its cpu alone.
    let mut probe = Agent::builder("probe")
        .socket(&daemon.socket)
        .connect()
        .expect("the control socket accepts at READY=1");
    let engines = probe.discover(STREAM_CAPABILITY, "^1").unwrap();
    assert_eq!(engines.len(), 1, "the engine is discoverable at READY=1");
    let uid = rustix::process::getuid().as_raw();
    let status = query_status_trusting(&daemon.socket, &[uid]).unwrap();
    assert!(!status.partitions.is_empty());
    for p in &status.partitions {
        for e in &p.executors {
            assert_eq!(e.affinity, [e.cpu], "{} is pinned at READY=1", e.thread);
        }
    }
    assert!(
        first.contains("STATUS=serving: 1 agent, engines running: streaming"),
        "{first:?}"
    );
    // Pings at half WATCHDOG_USEC while the shards run, and status lines with the rate that
    // count the probe.
    let counted = |m: &String| {
        m.contains("STATUS=serving: 2 agents, ")
            && m.contains(" msgs/s, engines running: streaming")
    };
    daemon.until("three pings and a status line counting the probe", |seen| {
        pings(seen) >= 3 && seen.iter().any(counted)
    });
    drop(probe);
    daemon.stop();
}

#[test]
fn a_wedged_router_shard_gets_no_watchdog_ping() {
    let dir = scratch("notify-wedge");
    // An abstract socket name, as service managers in containers use.
    let name = format!("aw-notify-wedge-{}", std::process::id());
    let notify =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    let mut daemon = Notified::start(
        &dir,
        notify,
        &format!("@{name}"),
        "",
        &[("AGENTWIRE_TEST_WEDGE_ROUTER_SHARD", "0")],
    );
    daemon.until("READY=1", |seen| last_has(seen, "READY=1"));
    daemon.until("three pings", |seen| pings(seen) >= 3);
    daemon.signal(rustix::process::Signal::USR2);
    let hooked = "wedged by the test hook AGENTWIRE_TEST_WEDGE_ROUTER_SHARD";
    let stalled = daemon.until("the wedged shard named", |seen| {
        seen.last().is_some_and(|m| m.contains(hooked))
    });
    let line = stalled.last().unwrap();
    assert!(
        line.contains("STATUS=watchdog withheld: router shard 0 (cpu "),
        "{line:?}"
    );
    // From the look that named the wedged shard on, every look withholds the ping.
    for look in 0..3 {
        let m = daemon.next("the next look");
        assert!(
            !m.contains("WATCHDOG=1") && m.contains(hooked),
            "look {look} after the wedge: {m:?}"
        );
    }
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("test hook: router shard wedged"),
        "{stderr}"
    );
    assert!(stderr.contains("watchdog withheld"), "{stderr}");
    daemon.stop();
}
