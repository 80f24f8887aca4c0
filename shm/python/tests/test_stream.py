"""Events from a Python agent to the streaming engine of a real daemon: a batch with an ack
counts what the engine took and refused, a fire-and-forget batch reaches it too (seen in
`agentwire stream status`), and what cannot be encoded is refused here with the event's
index."""

from __future__ import annotations

import subprocess
import time

import pytest

import agentwire
from conftest import Daemon, agentwire_bin

WATCHDOG_S = 10.0
CONFIG = """
[streaming]
enabled = true
detector = "windowed-gaussian"
results_topic = ""
state_dir = ""
"""


@pytest.fixture
def engine_daemon(tmp_path):
    config = tmp_path / "agentwire.toml"
    config.write_text(CONFIG)
    d = Daemon(agentwire_bin(), tmp_path / "agentwire.sock", ("--config", str(config)))
    d.start()
    try:
        yield d
    finally:
        d.stop()


def engine_id(agent: agentwire.Agent) -> int:
    """The engine's agent id once it registered (the socket answers before the engines
    start); a watchdog, not a timing assertion."""
    deadline = time.monotonic() + WATCHDOG_S
    while True:
        found = agent.discover(agentwire.STREAM_CAPABILITY, "^1")
        if found:
            return found[0].agent_id
        assert time.monotonic() < deadline, "the streaming engine never registered"
        time.sleep(0.005)


def stream_status(d: Daemon) -> dict:
    r = subprocess.run(
        [str(d.binary), "stream", "status", "--json", "--socket", str(d.socket)],
        capture_output=True, text=True, timeout=WATCHDOG_S, check=True,
    )
    import json
    return json.loads(r.stdout)["streaming"]


def test_acked_and_plain_batches_reach_the_engine(engine_daemon):
    t0 = 1_700_000_000_000_000_000
    with agentwire.Agent("py-sensor", socket=str(engine_daemon.socket)) as a:
        engine = engine_id(a)
        events = [("disk-1", t0 + i * 1_000_000, float(i % 7)) for i in range(100)]
        events.append((42, t0, 0.5, {"host": "a", "rack": "7"}))
        ack = a.stream_batch_acked(engine, events, timeout=WATCHDOG_S)
        assert (ack.accepted, ack.malformed, ack.first_problem) == (101, 0, "")
        # A key name longer than the schema's 23 bytes: the engine refuses and counts it.
        ack = a.stream_batch_acked(engine, [("k" * 40, t0, 1.0), (7, t0, 1.0)], timeout=WATCHDOG_S)
        assert (ack.accepted, ack.malformed) == (1, 1), ack
        assert ack.first_problem
        a.stream_batch([(7, t0 + i, 2.0) for i in range(50)])
        deadline = time.monotonic() + WATCHDOG_S
        while stream_status(engine_daemon)["events_accepted"] < 152:
            assert time.monotonic() < deadline, stream_status(engine_daemon)
            time.sleep(0.01)
        assert stream_status(engine_daemon)["events_malformed"] == 1


def test_events_that_cannot_be_encoded_are_refused_with_their_index(socket):
    with agentwire.Agent("py-bad", socket=socket) as a:
        with pytest.raises(TypeError, match="event 1: an event is a tuple"):
            a.stream_batch([(1, 0, 1.0), [1, 0, 1.0]])
        with pytest.raises(TypeError, match="event 0: a key is an int"):
            a.stream_batch([(-1, 0, 1.0)])
        with pytest.raises(TypeError, match="event 0: attributes are a dict"):
            a.stream_batch([(1, 0, 1.0, {"a": 1})])
        with pytest.raises(TypeError, match="not 2 items"):
            a.stream_batch([(1, 0)])
