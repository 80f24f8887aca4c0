"""Fixtures: a real `agentwire serve` per test, on a socket under the test's tmp_path.

The daemon binary is $AGENTWIRE_BIN (scripts/test.sh sets it), else the workspace's
target/debug/agentwire (or $CARGO_TARGET_DIR/debug/agentwire). A missing binary fails the
test with the command that builds it; it is never skipped silently. Timeouts here are
watchdogs, not timing assertions.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
STARTUP_WATCHDOG_S = 20.0
STOP_WATCHDOG_S = 20.0


def agentwire_bin() -> Path:
    named = os.environ.get("AGENTWIRE_BIN")
    if named:
        candidates = [Path(named)]
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        candidates = [target / "debug" / "agentwire", REPO / "target" / "debug" / "agentwire"]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    pytest.fail(
        f"the daemon binary is missing (looked at {', '.join(map(str, candidates))}): build it "
        "with `cargo build -p agentwire-tools --bin agentwire` or set AGENTWIRE_BIN",
        pytrace=False,
    )


class Daemon:
    """A running `agentwire serve`."""

    def __init__(self, binary: Path, socket: Path, extra: tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.socket = socket
        self.extra = extra
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ, AGENTWIRE_DLQ=str(self.socket.with_name("dlq.log")))
        self.log = open(self.socket.with_name("daemon.log"), "ab")
        self.proc = subprocess.Popen(
            [str(self.binary), "serve", "--metrics-port", "0", "--socket", str(self.socket),
             *self.extra],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + STARTUP_WATCHDOG_S
        while self.status() is None:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the daemon exited ({self.proc.returncode}) before answering: "
                    + self.socket.with_name("daemon.log").read_text(errors="replace")
                )
            assert time.monotonic() < deadline, "watchdog: the daemon did not come up"
            time.sleep(0.02)

    def status(self) -> dict | None:
        """`agentwire status --json`, or None while it does not answer."""
        r = subprocess.run(
            [str(self.binary), "status", "--json", "--socket", str(self.socket)],
            capture_output=True,
            timeout=STOP_WATCHDOG_S,
        )
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_WATCHDOG_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("watchdog: the daemon did not stop on SIGTERM")
        finally:
            self.log.close()


@pytest.fixture
def daemon(tmp_path: Path):
    d = Daemon(agentwire_bin(), tmp_path / "agentwire.sock")
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def socket(daemon: Daemon) -> str:
    return str(daemon.socket)


def python_env() -> dict:
    """The environment for Python subprocesses (this interpreter, the package importable)."""
    return dict(os.environ, PYTHONUNBUFFERED="1")


PYTHON = sys.executable
