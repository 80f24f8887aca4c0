"""asyncio: recv_async waits on the agent's doorbell on the running loop, with no thread."""

from __future__ import annotations

import asyncio
import threading

import pytest

import agentwire


def test_recv_async_wakes_on_arrival_without_a_thread(socket):
    async def main():
        with agentwire.Agent("rx", socket=socket) as rx, agentwire.Agent("tx", socket=socket) as tx:
            threads = threading.active_count()
            waiting = asyncio.ensure_future(rx.recv_async(timeout=30))
            await asyncio.sleep(0.2)  # recv_async is parked on the fd now
            assert not waiting.done()
            assert threading.active_count() == threads
            tx.send(rx.agent_id, b"ding")
            m = await waiting
            assert bytes(m.payload) == b"ding" and m.held
            assert threading.active_count() == threads

    asyncio.run(main())


def test_recv_async_returns_none_on_timeout(socket):
    async def main():
        with agentwire.Agent("rx", socket=socket) as rx:
            assert await rx.recv_async(timeout=0.1) is None

    asyncio.run(main())


def test_async_iterator_yields_every_message_in_order(socket):
    async def main():
        with agentwire.Agent("rx", socket=socket) as rx, agentwire.Agent("tx", socket=socket) as tx:

            async def produce():
                for i in range(200):
                    tx.send(rx.agent_id, b"%d" % i)
                    if i % 50 == 0:
                        await asyncio.sleep(0.01)  # let the consumer park now and then

            producer = asyncio.ensure_future(produce())
            seen = []
            async for m in rx.messages():
                seen.append(bytes(m.payload))
                if len(seen) == 200:
                    break
            await producer
            assert seen == [b"%d" % i for i in range(200)]

    asyncio.run(asyncio.wait_for(main(), 60))


def test_recv_async_raises_disconnected_when_the_daemon_goes(daemon):
    async def main():
        with agentwire.Agent("rx", socket=str(daemon.socket), reconnect_attempts=1) as rx:
            waiting = asyncio.ensure_future(rx.recv_async())
            await asyncio.sleep(0.1)
            await asyncio.get_running_loop().run_in_executor(None, daemon.stop)
            with pytest.raises(agentwire.Disconnected):
                await asyncio.wait_for(waiting, 30)

    asyncio.run(main())
