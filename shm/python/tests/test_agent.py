"""Every Agent call against a real daemon."""

from __future__ import annotations

import json

import pytest

import agentwire


def pair(socket, **service):
    service.setdefault("capabilities", {"echo": "1.0.0"})
    return (
        agentwire.Agent("echo", socket=socket, **service),
        agentwire.Agent("asker", socket=socket),
    )


def test_send_arrives_with_its_header_fields(socket):
    a, c = pair(socket)
    with a, c:
        c.send(a.agent_id, b"hello", priority=1, feature_id=0)
        m = a.recv(timeout=5)
        assert m is not None
        assert (m.kind, m.source, m.destination, m.priority) == ("send", c.agent_id, a.agent_id, 1)
        assert isinstance(m.payload, memoryview) and m.payload.readonly
        assert bytes(m.payload) == b"hello" == bytes(m)
        assert len(m) == 5 and m.held


def test_recv_returns_none_on_timeout_and_try_recv_when_empty(socket):
    with agentwire.Agent("lonely", socket=socket) as a:
        assert a.recv(timeout=0.05) is None
        assert a.try_recv() is None
        assert a.recv(timeout=0) is None


def test_payloads_may_be_any_contiguous_buffer(socket):
    a, c = pair(socket)
    with a, c:
        for p in (b"b", bytearray(b"ba"), memoryview(b"mv!"), b""):
            c.send(a.agent_id, p)
            assert bytes(a.recv(timeout=5).payload) == bytes(p)


def test_discover_lists_agents_offering_a_capability(socket):
    a, c = pair(socket)
    with a, c:
        [peer] = c.discover("echo", "^1")
        assert (peer.agent_id, peer.name, peer.version) == (a.agent_id, "echo", "1.0.0")
        assert peer.capabilities == {"echo": "1.0.0"}
        assert c.discover("echo", "^2") == []
        assert c.discover("nothing") == []


def test_request_gets_the_response_from_respond(socket):
    import threading

    a, c = pair(socket)
    with a, c:

        def serve():
            req = a.recv(timeout=10)
            assert req.kind == "request" and req.correlation_id != 0
            a.respond(req, bytes(req.payload) + b" pong")

        t = threading.Thread(target=serve)
        t.start()
        reply = c.request(a.agent_id, b"ping", timeout=10)
        t.join()
        assert reply.kind == "response" and reply.source == a.agent_id
        assert bytes(reply.payload) == b"ping pong"
        assert not reply.held  # a copy: the request waited, so nothing stays in the ring


def test_publish_reaches_subscribers_by_registration_and_by_subscribe(socket):
    with agentwire.Agent("reg", socket=socket, topics=["news"]) as r, agentwire.Agent(
        "sub", socket=socket
    ) as s, agentwire.Agent("pub", socket=socket) as p:
        topic = s.subscribe("news")
        assert isinstance(topic, int)
        p.publish("news", b"headline")
        for agent in (r, s):
            m = agent.recv(timeout=5)
            assert (m.kind, bytes(m.payload), m.source) == ("publish", b"headline", p.agent_id)
        s.unsubscribe("news")
        p.publish("news", b"second")
        assert bytes(r.recv(timeout=5).payload) == b"second"
        assert s.recv(timeout=0.2) is None


def test_anycast_reaches_an_agent_with_the_capability(socket):
    a, c = pair(socket)
    with a, c:
        c.anycast("echo", "^1", b"any")
        m = a.recv(timeout=5)
        assert bytes(m.payload) == b"any" and m.source == c.agent_id
        # Any node may take it; with no linked node, the local agent does (flag bit 3).
        c.anycast_any_node("echo", "^1", b"all")
        m = a.recv(timeout=5)
        assert bytes(m.payload) == b"all" and m.flags & 8


def test_send_feature_reaches_the_agent_registered_for_it(socket):
    with agentwire.Agent("feat", socket=socket, features=[12]) as f, agentwire.Agent(
        "client", socket=socket
    ) as c:
        c.send_feature(12, b"embed me")
        m = f.recv(timeout=5)
        assert bytes(m.payload) == b"embed me" and m.feature_id == 12


def test_send_batch_and_recv_batch(socket):
    a, c = pair(socket)
    with a, c:
        payloads = [b"%d" % i for i in range(50)] + [bytearray(b"ba"), memoryview(b"mv")]
        assert c.send_batch(a.agent_id, payloads) == len(payloads)
        got = []
        while len(got) < len(payloads):
            batch = a.recv_batch(16, timeout=5)
            assert batch, "watchdog: the batch did not arrive"
            assert len(batch) <= 16
            got += batch
        assert [bytes(m.payload) for m in got] == [bytes(p) for p in payloads]
        assert not any(m.held for m in got)
        assert a.recv_batch(16) == []


def test_claim_commits_on_exit_and_aborts_on_exception(socket):
    a, c = pair(socket)
    with a, c:
        with c.claim(a.agent_id, 8) as buf:
            assert isinstance(buf, memoryview) and not buf.readonly and len(buf) == 8
            buf[:] = b"zerocopy"
        assert bytes(a.recv(timeout=5).payload) == b"zerocopy"
        with pytest.raises(RuntimeError):
            with c.claim(a.agent_id, 3) as buf:
                buf[:] = b"bad"
                raise RuntimeError("abort")
        claim = c.claim(a.agent_id, 2)
        with pytest.raises(agentwire.ClaimOpen):
            c.send(a.agent_id, b"while claiming")
        claim.buffer[:] = b"ok"
        claim.commit()
        with pytest.raises(agentwire.Released):
            claim.buffer
        assert bytes(a.recv(timeout=5).payload) == b"ok"  # the aborted one never arrived
        assert a.recv(timeout=0.1) is None


def test_claim_refuses_to_commit_while_its_buffer_is_exported(socket):
    a, c = pair(socket)
    with a, c:
        claim = c.claim(a.agent_id, 4)
        part = claim.buffer[:2]
        with pytest.raises(BufferError, match="bytes\\(msg.payload\\)"):
            claim.commit()
        del part
        claim.buffer[:] = b"done"
        claim.commit()
        assert bytes(a.recv(timeout=5).payload) == b"done"


def test_wakeup_calls_and_liveness(socket):
    a, c = pair(socket)
    with a, c:
        assert isinstance(a.wakeup_fd(), int) and a.wakeup_fd() >= 0
        assert a.arm_wakeup() is False
        c.send(a.agent_id, b"x")
        assert a.recv(timeout=5) is not None
        a.clear_wakeup()
        a.ensure_connected()
        a.heartbeat()
        a.flush()
        assert a.protocol_version >= 1 and a.name == "echo" and not a.closed


def test_json_helpers(socket):
    a, c = pair(socket)
    with a, c:
        c.send_json(a.agent_id, {"k": [1, 2]})
        assert agentwire.json_payload(a.recv(timeout=5)) == {"k": [1, 2]}
        c.send(a.agent_id, json.dumps("s").encode())
        assert agentwire.json_payload(a.recv(timeout=5)) == "s"


def test_close_is_idempotent_and_closed_agents_refuse(socket):
    a = agentwire.Agent("short", socket=socket)
    a.close()
    a.close()
    assert a.closed
    with pytest.raises(agentwire.Closed):
        a.send(1, b"x")


def test_reconnect_after_the_daemon_restarts(daemon):
    a = agentwire.Agent("phoenix", socket=str(daemon.socket), reconnect_attempts=200)
    with a:
        daemon.stop()
        with pytest.raises(agentwire.Disconnected):
            while True:  # the daemon's going is noticed within a few receives
                a.recv(timeout=0.5)
        daemon.start()
        a.reconnect()
        with agentwire.Agent("peer", socket=str(daemon.socket)) as p:
            p.send(a.agent_id, b"again")
            assert bytes(a.recv(timeout=5).payload) == b"again"


def test_close_aborts_an_open_claim(socket):
    a, c = pair(socket)
    with a:
        claim = c.claim(a.agent_id, 4)
        claim.buffer[:] = b"lost"
        view = claim.buffer
        c.close()
        assert c.closed
        view[:] = b"late"  # the segment stays mapped while the view lives: no crash
        claim.abort()  # the claim went with the agent: nothing to do
        assert a.recv(timeout=0.2) is None
