"""A service agent: answers every request with its payload reversed (examples/python)."""
import sys

import agentwire

socket = sys.argv[1] if len(sys.argv) > 1 else None  # None: the daemon's default socket
with agentwire.Agent("reverser", socket=socket, capabilities={"reverse": "1.0.0"}) as agent:
    print("serving as agent", agent.agent_id, flush=True)
    while True:
        msg = agent.recv(timeout=1.0)  # a Message or None; the GIL is released meanwhile
        if msg is not None and msg.kind == "request":
            agent.respond(msg, bytes(msg.payload)[::-1])  # payload: a view onto the ring
