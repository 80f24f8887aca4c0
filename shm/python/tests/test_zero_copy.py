"""The payload is a view onto the rx ring while held, and never outlives its release."""

from __future__ import annotations

import array

import pytest

import agentwire


@pytest.fixture
def agents(socket):
    with agentwire.Agent("rx", socket=socket) as rx, agentwire.Agent("tx", socket=socket) as tx:
        yield rx, tx


def test_payload_lies_inside_the_mapped_segment(agents):
    rx, tx = agents
    tx.send(rx.agent_id, b"in place")
    m = rx.recv(timeout=5)
    start, length = rx._segment_range()
    address = m._payload_address()
    assert start <= address and address + len(m.payload) <= start + length
    assert m.held and bytes(m.payload) == b"in place"


def test_next_receive_releases_the_held_message(agents):
    rx, tx = agents
    tx.send(rx.agent_id, b"first")
    tx.send(rx.agent_id, b"second")
    first = rx.recv(timeout=5)
    view = first.payload
    second = rx.recv(timeout=5)
    assert bytes(second.payload) == b"second"
    assert not first.held and first._payload_address() == 0
    with pytest.raises(ValueError, match="released"):
        bytes(view)  # the memoryview itself was released
    with pytest.raises(agentwire.Released, match="bytes\\(msg.payload\\)"):
        first.payload
    assert isinstance(agentwire.Released("x"), ValueError)


def test_release_with_and_close_release_the_message(agents):
    rx, tx = agents
    for _ in range(3):
        tx.send(rx.agent_id, b"m")
    m = rx.recv(timeout=5)
    m.release()
    m.release()  # idempotent
    with pytest.raises(agentwire.Released):
        m.payload
    with rx.recv(timeout=5) as m2:
        assert bytes(m2.payload) == b"m"
    with pytest.raises(agentwire.Released):
        m2.payload
    m3 = rx.recv(timeout=5)
    rx.close()
    with pytest.raises(agentwire.Released):
        m3.payload


def test_derived_views_block_the_release_until_dropped(agents):
    rx, tx = agents
    tx.send(rx.agent_id, b"abcdef")
    tx.send(rx.agent_id, b"next")
    m = rx.recv(timeout=5)
    part = m.payload[1:3]  # a slice shares the ring bytes
    with pytest.raises(BufferError, match="bytes\\(msg.payload\\)"):
        rx.recv(timeout=5)
    with pytest.raises(BufferError):
        m.release()
    # Nothing was released: the message and its slice still read the same bytes.
    assert bytes(part) == b"bc" and bytes(m.payload) == b"abcdef" and m.held
    del part
    nested = memoryview(m.payload).cast("B")
    arr_view = memoryview(array.array("B", b"copy"))  # unrelated buffers do not count
    with pytest.raises(BufferError):
        rx.recv(timeout=5)
    del nested, arr_view
    assert bytes(rx.recv(timeout=5).payload) == b"next"
    assert not m.held


def test_a_copy_outlives_the_message(agents):
    rx, tx = agents
    tx.send(rx.agent_id, b"keep me")
    tx.send(rx.agent_id, b"then")
    kept = bytes(rx.recv(timeout=5).payload)
    rx.recv(timeout=5)
    assert kept == b"keep me"


def test_payload_view_is_read_only(agents):
    rx, tx = agents
    tx.send(rx.agent_id, b"ro")
    m = rx.recv(timeout=5)
    with pytest.raises(TypeError):
        m.payload[0] = 1


def test_request_releases_the_held_message(agents):
    rx, tx = agents
    tx.send(rx.agent_id, b"held")
    m = rx.recv(timeout=5)
    with pytest.raises(agentwire.Nacked):
        rx.request(999_999, b"?", timeout=5)
    assert not m.held


def test_threads_sharing_an_agent_never_read_a_reused_frame(agents):
    """Each receive releases the message held before it, whichever thread holds it: a
    thread then sees Released, never bytes the daemon wrote over its frame."""
    import threading

    rx, tx = agents
    total = 3000
    received = 0
    corrupt = []
    lock = threading.Lock()

    def receive():
        nonlocal received
        while True:
            with lock:
                if received >= total:
                    return
            m = rx.recv(timeout=5)
            if m is None:
                return  # watchdog: the sender is done and nothing is left
            with lock:
                received += 1
            try:
                data = bytes(m.payload)
            except agentwire.Released:
                continue  # released by the other thread's receive: allowed
            if data != data[:4] * 16:
                corrupt.append(data)

    threads = [threading.Thread(target=receive) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(total):
        tx.send(rx.agent_id, i.to_bytes(4, "little") * 16)
    for t in threads:
        t.join()
    assert received == total
    assert corrupt == []
