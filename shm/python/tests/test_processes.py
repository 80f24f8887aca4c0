"""Threads and processes: the GIL is released while waiting, and a Python agent killed with
SIGKILL mid-stream leaves the daemon and the other agents unaffected."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import agentwire
from conftest import PYTHON, python_env

WATCHDOG_S = 30.0


def test_gil_is_released_while_blocked_in_recv(socket):
    with agentwire.Agent("waiter", socket=socket) as a:
        counted = 0
        started = threading.Event()

        def count():
            nonlocal counted
            started.set()
            deadline = time.monotonic() + WATCHDOG_S
            while waiting.is_alive() and time.monotonic() < deadline:
                counted += 1

        waiting = threading.Thread(target=lambda: a.recv(timeout=2.0))
        waiting.start()
        counter = threading.Thread(target=count)
        counter.start()
        started.wait()
        waiting.join()
        counter.join()
        # Holding the GIL for 2 s would leave the counter at a few switch intervals' worth.
        assert counted > 100_000


def test_gil_is_released_while_a_request_waits(socket):
    with agentwire.Agent("silent", socket=socket) as s, agentwire.Agent("asker", socket=socket) as a:
        ticks = 0
        done = threading.Event()

        def ask():
            try:
                a.request(s.agent_id, b"?", timeout=1.0)
            except agentwire.Timeout:
                pass
            done.set()

        t = threading.Thread(target=ask)
        t.start()
        while not done.is_set():
            ticks += 1
        t.join()
        assert ticks > 100_000


STREAMER = """
import sys, agentwire
a = agentwire.Agent("streamer", socket=sys.argv[1])
print(a.agent_id, flush=True)
n = 0
while True:
    try:
        a.send(int(sys.argv[2]), n.to_bytes(8, "little"))
        n += 1
    except agentwire.Backpressure:
        pass
"""


def test_sigkill_mid_stream_leaves_the_daemon_and_others_unaffected(daemon):
    socket = str(daemon.socket)
    with agentwire.Agent("sink", socket=socket) as sink, agentwire.Agent(
        "a", socket=socket
    ) as a, agentwire.Agent("b", socket=socket) as b:
        proc = subprocess.Popen(
            [PYTHON, "-c", STREAMER, socket, str(sink.agent_id)],
            stdout=subprocess.PIPE,
            env=python_env(),
        )
        try:
            streamer_id = int(proc.stdout.readline())
            got = 0
            while got < 1000:  # mid-stream: frames are flowing
                m = sink.recv(timeout=WATCHDOG_S)
                assert m is not None, "watchdog: the streamer sent nothing"
                assert m.source == streamer_id
                got += 1
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(WATCHDOG_S) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # The daemon still answers, and reclaims the dead agent.
        deadline = time.monotonic() + WATCHDOG_S
        while True:
            status = daemon.status()
            assert status is not None, "the daemon stopped answering"
            if status["agents"] == 3:
                break
            assert time.monotonic() < deadline, f"watchdog: agents {status['agents']}"
            time.sleep(0.05)
        # The others keep exchanging messages.
        while sink.recv(timeout=0) is not None:
            pass
        for i in range(100):
            a.send(b.agent_id, b"%d" % i)
            assert bytes(b.recv(timeout=WATCHDOG_S).payload) == b"%d" % i
        with agentwire.Agent("late", socket=socket) as late:
            late.send(sink.agent_id, b"still here")
            assert bytes(sink.recv(timeout=WATCHDOG_S).payload) == b"still here"
