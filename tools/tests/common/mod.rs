//! Helpers shared by the tests that run `agentwire serve` as a real process.
#![allow(dead_code)] // each test binary uses its own subset

use agentwire_shm::client::query_status_trusting;
use agentwire_shm::control::StatusReport;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const AGENTWIRE: &str = env!("CARGO_BIN_EXE_agentwire");

/// A scratch directory for one test of the `serve` family, removed when the test passes.
pub fn scratch(name: &str) -> Scratch {
    scratch_with_prefix("aw-serve", name)
}

/// A scratch directory `PREFIX-PID-NAME` under the temp dir, emptied first.
pub fn scratch_with_prefix(prefix: &str, name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch { dir }
}

/// A test's scratch directory: removed when the test passes, kept (and named on stderr)
/// when it fails, so a failure can be read and a pass leaves nothing behind.
pub struct Scratch {
    dir: PathBuf,
}

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.dir
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("scratch kept for the failure: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `agentwire serve` on `socket`, with its dead-letter queue beside the socket and the
/// metrics endpoint on a free port, so tests running in parallel share nothing.
pub fn serve_command(socket: &Path) -> Command {
    let mut cmd = Command::new(AGENTWIRE);
    cmd.args(["serve", "--metrics-port", "0", "--socket"])
        .arg(socket)
        .env("AGENTWIRE_DLQ", socket.with_file_name("dlq.log"));
    cmd
}

/// A daemon process, killed if the test fails before stopping it.
pub struct Served {
    pub child: Child,
    pub socket: PathBuf,
    /// The uid the daemon runs as (the status queries trust it).
    pub daemon_uid: u32,
}

impl Served {
    pub fn start(socket: &Path, extra: &[&str]) -> Self {
        let child = serve_command(socket)
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self::adopt(child, socket)
    }

    /// Takes charge of a daemon process, waiting (watchdog) until it answers on `socket`;
    /// a daemon that exits first fails the test with its stderr (when piped).
    pub fn adopt(child: Child, socket: &Path) -> Self {
        Self::adopt_as(child, socket, rustix::process::getuid().as_raw())
    }

    /// [`Served::adopt`] for a daemon that runs as `daemon_uid`.
    pub fn adopt_as(child: Child, socket: &Path, daemon_uid: u32) -> Self {
        let mut served = Self {
            child,
            socket: socket.to_path_buf(),
            daemon_uid,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while query_status_trusting(socket, &[daemon_uid]).is_err() {
            if let Some(status) = served.child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut pipe) = served.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                panic!("the daemon exited ({status}) before answering: {stderr}");
            }
            assert!(
                Instant::now() < deadline,
                "watchdog: daemon did not come up at {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        served
    }

    /// The daemon's status, trusting its uid.
    pub fn status(&self) -> StatusReport {
        query_status_trusting(&self.socket, &[self.daemon_uid]).unwrap()
    }

    /// The status counter `name`, if the daemon reports it (an engine's counters appear
    /// once it runs).
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.status()
            .counters
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// Polls the status until counter `name` is at least `at_least` (the watchdog names
    /// `what`).
    pub fn wait_for_counter(&self, name: &str, at_least: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.counter(name).unwrap_or(0) < at_least {
            assert!(Instant::now() < deadline, "watchdog: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL: the daemon dies without any goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(mut self) -> Output {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        child.wait_with_output().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn cli_json(args: &[&str], socket: &Path) -> serde_json::Value {
    let out = Command::new(AGENTWIRE)
        .args(args)
        .arg("--socket")
        .arg(socket)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A plain HTTP/1.0 GET: (status code, body).
pub fn http_get(url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}
