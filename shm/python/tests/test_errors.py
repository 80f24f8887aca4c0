"""Each client error arrives as its exception."""

from __future__ import annotations

import os

import pytest

import agentwire


def test_refused_when_no_protocol_version_is_shared(socket):
    with pytest.raises(agentwire.Refused) as e:
        agentwire.Agent("future", socket=socket, protocol_versions=(999, 999))
    assert e.value.reason == "VersionUnsupported"
    assert isinstance(e.value, agentwire.Error)


def test_timeout_when_nobody_answers(socket):
    with agentwire.Agent("silent", socket=socket) as s, agentwire.Agent("asker", socket=socket) as a:
        with pytest.raises(agentwire.Timeout) as e:
            a.request(s.agent_id, b"anyone?", timeout=0.1)
        assert isinstance(e.value, TimeoutError)


def test_nacked_when_the_agent_does_not_exist(socket):
    with agentwire.Agent("asker", socket=socket) as a:
        with pytest.raises(agentwire.Nacked) as e:
            a.request(424242, b"hello?", timeout=5)
        assert e.value.reason == 1 and "424242" in e.value.detail


def test_too_large_for_the_ring(socket):
    with agentwire.Agent("big", socket=socket, ring_capacity=64 * 1024) as a:
        with pytest.raises(agentwire.TooLarge):
            a.send(a.agent_id, bytes(1 << 20))


def test_disconnected_when_the_daemon_is_gone(daemon):
    a = agentwire.Agent("orphan", socket=str(daemon.socket), reconnect_attempts=1)
    daemon.stop()
    with pytest.raises(agentwire.Disconnected):
        while True:
            a.recv(timeout=0.5)
    with pytest.raises(agentwire.Disconnected):
        a.send(1, b"x")
    with pytest.raises(agentwire.Disconnected):
        a.reconnect()  # nobody serves the socket any more
    a.close()


def test_connecting_to_no_daemon_fails_with_an_agentwire_error(tmp_path):
    with pytest.raises(agentwire.Error):
        agentwire.Agent("nobody", socket=str(tmp_path / "none.sock"))


def test_untrusted_daemon_class_is_an_error():
    # The daemon runs as this uid in tests, which is trusted; the mapping is checked by type.
    assert issubclass(agentwire.UntrustedDaemon, agentwire.Error)
    assert issubclass(agentwire.Backpressure, agentwire.Error)
    assert issubclass(agentwire.ProtocolError, agentwire.Error)
    assert os.getuid() >= 0
