"""agentwire for Python agents.

``Agent`` connects to the agentwire daemon over its Unix socket and exchanges messages
through shared-memory rings: ``send``, ``publish``, ``anycast``, ``request``/``respond``,
``subscribe``, ``discover``, ``recv`` (a ``Message`` whose ``payload`` is a zero-copy
memoryview onto the ring while it is held), ``recv_batch``/``send_batch``, ``claim`` (a
writable memoryview onto the tx ring, committed on exit), and for asyncio ``recv_async``
and ``messages()``, driven by the agent's eventfd doorbell on the running loop.

Every wait releases the GIL. Failures raise the subclasses of ``agentwire.Error``.
"""

from __future__ import annotations

import asyncio
import json as _json
from typing import Any, AsyncIterator, Optional

from . import _errors, _native
from ._errors import (
    Backpressure,
    ClaimOpen,
    Closed,
    Disconnected,
    Error,
    Nacked,
    ProtocolError,
    Refused,
    Released,
    Timeout,
    TooLarge,
    UntrustedDaemon,
)
from ._native import (
    HEADER_BYTES,
    STREAM_CAPABILITY,
    STREAM_FEATURE_ID,
    AgentInfo,
    Claim,
    IngestAck,
    Message,
)

#: How often an asyncio wait checks that the daemon is still there (and shows it this agent
#: is alive), in seconds.
ASYNC_CHECK_INTERVAL = 0.5


class Agent(_native.Agent):
    """A connected agent; see the module's documentation. Use it as a context manager."""

    async def recv_async(self, timeout: Optional[float] = None) -> Optional[Message]:
        """Receives one message without blocking the running event loop: it waits on the
        agent's wakeup descriptor with ``loop.add_reader`` (no thread). Returns None after
        ``timeout`` seconds (None: wait until a message arrives). Raises ``Disconnected`` if
        the daemon goes away while waiting (checked every ``ASYNC_CHECK_INTERVAL`` s)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        woke = False
        while True:
            msg = self.try_recv()
            if msg is not None:
                return msg
            if woke:
                # Woken with nothing to take: the doorbell also stays readable once the
                # daemon is gone, so this is where a dead daemon shows.
                self.ensure_connected()
            if self.arm_wakeup():
                continue  # frames arrived while arming: take them
            wait = ASYNC_CHECK_INTERVAL
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                wait = min(wait, remaining)
            fd = self.wakeup_fd()
            rung = loop.create_future()

            def _ready(fut: asyncio.Future = rung) -> None:
                if not fut.done():
                    fut.set_result(None)

            loop.add_reader(fd, _ready)
            try:
                await asyncio.wait({rung}, timeout=wait)
            finally:
                loop.remove_reader(fd)
                if not rung.done():
                    rung.cancel()
            woke = rung.done() and not rung.cancelled()
            if woke:
                self.clear_wakeup()
            else:
                self.ensure_connected()
                self.heartbeat()

    async def messages(self) -> AsyncIterator[Message]:
        """Yields incoming messages for ``async for``. Each is held until the next one is
        taken: copy payloads you keep with ``bytes(msg.payload)``."""
        while True:
            msg = await self.recv_async()
            if msg is not None:
                yield msg

    def send_json(self, to: int, obj: Any, **options: Any) -> None:
        """Sends ``obj`` encoded as UTF-8 JSON."""
        self.send(to, _json.dumps(obj, separators=(",", ":")).encode(), **options)


def json_payload(msg: Message) -> Any:
    """Decodes a message's payload as JSON."""
    return _json.loads(bytes(msg.payload))


def msgpack_dumps(obj: Any) -> bytes:
    """Encodes ``obj`` with msgpack (needs the ``msgpack`` extra)."""
    import msgpack  # optional dependency

    return msgpack.packb(obj, use_bin_type=True)


def msgpack_loads(msg: Message) -> Any:
    """Decodes a message's payload with msgpack (needs the ``msgpack`` extra)."""
    import msgpack  # optional dependency

    return msgpack.unpackb(msg.payload, raw=False)


__all__ = [
    "Agent",
    "AgentInfo",
    "Claim",
    "Message",
    "HEADER_BYTES",
    "STREAM_CAPABILITY",
    "STREAM_FEATURE_ID",
    "IngestAck",
    "ASYNC_CHECK_INTERVAL",
    "json_payload",
    "msgpack_dumps",
    "msgpack_loads",
    *_errors.__all__,
]
