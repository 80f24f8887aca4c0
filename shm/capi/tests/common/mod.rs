//! What the C API tests share: finding the built `agentwire` binary and libagentwire,
//! starting a real daemon, compiling C programs against the library and running them under
//! a watchdog.
#![allow(dead_code)] // each test binary uses its own subset

use agentwire_shm::client::query_status_trusting;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a C program may run before the watchdog kills it.
pub const PROGRAM_WATCHDOG: Duration = Duration::from_secs(60);

const BUILD_HINT: &str = "build them first: cargo build -p agentwire-tools -p agentwire-capi \
     (cargo test --workspace builds them before running any test)";

/// The profile directory the running test binary was built into (`target/<profile>`): the
/// test binary lives in its `deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The `agentwire` binary of the same build.
pub fn agentwire_bin() -> PathBuf {
    let bin = profile_dir().join("agentwire");
    assert!(bin.exists(), "{} is missing: {BUILD_HINT}", bin.display());
    bin
}

/// The directory holding libagentwire.so and libagentwire.a of the same build:
/// `target/<profile>/deps`, beside this test binary. `cargo test` builds the library's
/// cdylib and staticlib there with the rlib the tests link, but copies them up to
/// `target/<profile>` only on `cargo build`, so the ones in `deps` are always this build's.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().to_path_buf();
    for lib in ["libagentwire.so", "libagentwire.a"] {
        assert!(
            dir.join(lib).exists(),
            "{} is missing: {BUILD_HINT}",
            dir.join(lib).display()
        );
    }
    dir
}

/// The crate's directory (the header, the C sources).
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The repository root (the examples).
pub fn repo_dir() -> PathBuf {
    crate_dir().join("../..").canonicalize().unwrap()
}

/// A fresh scratch directory of this test process.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aw-capi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A daemon process (`agentwire serve`), killed when dropped.
pub struct Daemon {
    child: Child,
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts `agentwire serve` on `dir/agentwire.sock` with its dead-letter queue beside
    /// it and the metrics endpoint on a free port; waits (watchdog) until it answers.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// [`Daemon::start`] with the streaming engine running (in memory: no state directory).
    pub fn start_with_engine(dir: &Path) -> Self {
        let config = dir.join("agentwire.toml");
        std::fs::write(
            &config,
            "[streaming]\nenabled = true\ndetector = \"windowed-gaussian\"\n\
             results_topic = \"\"\nstate_dir = \"\"\n",
        )
        .unwrap();
        Self::start_with(dir, &["--config".as_ref(), config.as_os_str()])
    }

    fn start_with(dir: &Path, extra: &[&std::ffi::OsStr]) -> Self {
        let socket = dir.join("agentwire.sock");
        let child = Command::new(agentwire_bin())
            .args(["serve", "--metrics-port", "0", "--socket"])
            .arg(&socket)
            .args(extra)
            .env("AGENTWIRE_DLQ", dir.join("dlq.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut daemon = Self { child, socket };
        let uid = rustix_uid();
        let deadline = Instant::now() + Duration::from_secs(20);
        while query_status_trusting(&daemon.socket, &[uid]).is_err() {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("the daemon exited ({status}) before answering");
            }
            assert!(
                Instant::now() < deadline,
                "watchdog: the daemon did not come up"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        daemon
    }

    /// Stops the daemon now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn rustix_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// How a program links libagentwire.
#[derive(Debug, Clone, Copy)]
pub enum Link {
    /// libagentwire.so, found at run time through an rpath.
    Shared,
    /// libagentwire.a, with its native dependencies.
    Static,
}

/// The native libraries the static library needs: the `Libs.private` of agentwire.pc.in,
/// so the static link test checks the list users get from `pkg-config --static`.
pub fn static_libs() -> Vec<String> {
    let pc = std::fs::read_to_string(crate_dir().join("agentwire.pc.in")).unwrap();
    let line = pc
        .lines()
        .find_map(|l| l.strip_prefix("Libs.private:"))
        .expect("agentwire.pc.in has a Libs.private line");
    line.split_whitespace().map(str::to_owned).collect()
}

/// Compiles `sources` into `dir/name` with `-Wall -Wextra -Werror -std=c11` against the
/// header and libagentwire.
pub fn compile(dir: &Path, name: &str, sources: &[PathBuf], link: Link) -> PathBuf {
    let out = dir.join(name);
    let lib_dir = lib_dir();
    let mut cc = Command::new("cc");
    cc.args(["-Wall", "-Wextra", "-Werror", "-std=c11", "-O1", "-o"])
        .arg(&out)
        .arg("-I")
        .arg(crate_dir().join("include"))
        .args(sources);
    match link {
        Link::Shared => {
            cc.arg("-L")
                .arg(&lib_dir)
                .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
                .arg("-lagentwire")
                .arg("-lpthread");
        }
        Link::Static => {
            cc.arg(lib_dir.join("libagentwire.a")).args(static_libs());
        }
    }
    let result = cc
        .output()
        .expect("cc runs (install a C compiler: apt-get install build-essential)");
    assert!(
        result.status.success(),
        "cc failed for {name}: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    out
}

/// A C program running as a child, its output going to files (no pipe to fill up).
pub struct Program {
    child: Child,
    name: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Program {
    pub fn spawn(exe: &Path, args: &[&str], dir: &Path) -> Self {
        let name = exe.file_name().unwrap().to_string_lossy().into_owned();
        let stdout = dir.join(format!("{name}.{}.out", std::process::id()));
        let stderr = dir.join(format!("{name}.{}.err", std::process::id()));
        // cargo test sets LD_LIBRARY_PATH to target/<profile> too, which outranks the
        // program's RUNPATH (deps/): a libagentwire.so an earlier `cargo build` left there
        // would be loaded instead of this build's (seen: an undefined new symbol).
        let child = Command::new(exe)
            .args(args)
            .env_remove("LD_LIBRARY_PATH")
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            name,
            stdout,
            stderr,
        }
    }

    /// Waits for the program to exit (watchdog: killed after [`PROGRAM_WATCHDOG`]) and
    /// returns its stdout; fails the test with its output if it failed.
    pub fn finish(mut self) -> String {
        let deadline = Instant::now() + PROGRAM_WATCHDOG;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let stdout = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        match status {
            Some(s) if s.success() => stdout,
            Some(s) => panic!("{} failed ({s}):\n{stdout}\n{stderr}", self.name),
            None => panic!(
                "watchdog: {} ran past {PROGRAM_WATCHDOG:?}:\n{stdout}\n{stderr}",
                self.name
            ),
        }
    }
}
