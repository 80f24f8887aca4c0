"""Rust, C and Python agents through one daemon: a Python requester asks the C responder
(examples/c/respond.c, built here with the system C compiler against libagentwire) and
publishes each reply on a topic that a Rust subscriber (agentwire-router-peer, its own
process) receives. Every reply and every publish is checked, in order."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import agentwire
from conftest import REPO, agentwire_bin

WATCHDOG_S = 30.0
REQUESTS = 20


def built(name: str) -> Path:
    """A file the cargo tests built beside the daemon (target/<profile>/...)."""
    path = agentwire_bin().parent / name
    if not path.exists():
        pytest.fail(
            f"{path} is missing: build it with `cargo build -p agentwire-capi -p agentwire-router` "
            "(scripts/test.sh's cargo steps build it)",
            pytrace=False,
        )
    return path


def compile_responder(out_dir: Path) -> Path:
    """examples/c/respond.c, -Wall -Wextra -Werror, linked to this build's libagentwire.so."""
    cc = os.environ.get("CC") or shutil.which("cc")
    assert cc, "no C compiler on PATH (scripts/setup.sh installs build-essential)"
    lib_dir = built("deps/libagentwire.so").parent
    exe = out_dir / "respond"
    subprocess.run(
        [cc, "-Wall", "-Wextra", "-Werror", "-std=c11",
         "-I", str(REPO / "shm/capi/include"),
         str(REPO / "examples/c/respond.c"),
         "-L", str(lib_dir), "-lagentwire", f"-Wl,-rpath,{lib_dir}",
         "-o", str(exe)],
        check=True,
        timeout=WATCHDOG_S * 4,
    )
    return exe


def read_line(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline()
    assert line, f"{proc.args[0]} exited ({proc.wait(WATCHDOG_S)}) before writing a line"
    return line.rstrip("\n")


def test_python_requester_c_responder_rust_subscriber(socket, tmp_path):
    responder_exe = compile_responder(tmp_path)
    peer = built("agentwire-router-peer")
    responder = subprocess.Popen(
        [str(responder_exe), socket, str(REQUESTS)], stdout=subprocess.PIPE, text=True
    )
    subscriber = subprocess.Popen(
        [str(peer), "agent-subscribe", socket, "rust-subscriber", "interop", str(REQUESTS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # Both print `ready` once registered (the subscriber with its topic).
        assert read_line(responder) == "ready"
        assert read_line(subscriber) == "ready"
        with agentwire.Agent("python-requester", socket=socket) as asker:
            echo = asker.discover("echo", "^1")
            assert [p.name for p in echo] == ["responder"], echo
            for i in range(REQUESTS):
                reply = asker.request(echo[0].agent_id, f"ping {i}".encode(), timeout=WATCHDOG_S)
                assert bytes(reply) == f"echo: ping {i}".encode()
                asker.publish("interop", bytes(reply))
        got = [read_line(subscriber) for _ in range(REQUESTS)]
        assert got == [f"msg echo: ping {i}" for i in range(REQUESTS)]
        assert read_line(responder) == f"answered {REQUESTS}"
        assert responder.wait(WATCHDOG_S) == 0
        assert subscriber.wait(WATCHDOG_S) == 0
    finally:
        for proc in (responder, subscriber):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
