"""An asyncio agent: echoes what it receives, woken by its doorbell on the event loop
(no thread, no polling), while other coroutines run (examples/python)."""
import asyncio
import sys

import agentwire


async def main(socket, count):
    with agentwire.Agent("async-echo", socket=socket, capabilities={"echo": "1.0.0"}) as agent:
        print("serving as agent", agent.agent_id, flush=True)
        handled = 0
        async for msg in agent.messages():  # each message is held until the next one
            if msg.kind == "request":
                agent.respond(msg, msg.payload)  # any buffer: the view is sent as is
            handled += 1
            if count and handled == count:
                break


socket = sys.argv[1] if len(sys.argv) > 1 else None
asyncio.run(main(socket, int(sys.argv[2]) if len(sys.argv) > 2 else 0))
