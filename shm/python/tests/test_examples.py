"""The examples in examples/python run against a daemon."""

from __future__ import annotations

import subprocess

import agentwire
from conftest import PYTHON, REPO, python_env

EXAMPLES = REPO / "examples" / "python"
WATCHDOG_S = 60


def start(script: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [PYTHON, str(EXAMPLES / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=python_env(),
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("serving as agent"), proc.stderr.read()
    return proc


def test_service_and_client_examples(socket):
    service = start("service.py", socket)
    try:
        out = subprocess.run(
            [PYTHON, str(EXAMPLES / "client.py"), socket],
            capture_output=True,
            text=True,
            env=python_env(),
            timeout=WATCHDOG_S,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "stnega ,olleh"
    finally:
        service.kill()
        service.wait()


def test_asyncio_example_answers_requests(socket):
    service = start("async_agent.py", socket, "3")
    try:
        with agentwire.Agent("asker", socket=socket) as a:
            [peer] = a.discover("echo", "^1")
            for word in (b"one", b"two", b"three"):
                assert bytes(a.request(peer.agent_id, word, timeout=WATCHDOG_S).payload) == word
        assert service.wait(WATCHDOG_S) == 0
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()


def test_examples_stay_short():
    for script in ("service.py", "client.py"):
        lines = (EXAMPLES / script).read_text().splitlines()
        assert len(lines) < 20, script
