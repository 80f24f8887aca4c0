"""A client agent: finds a `reverse` service and asks it (examples/python)."""
import sys

import agentwire

socket = sys.argv[1] if len(sys.argv) > 1 else None
with agentwire.Agent("asker", socket=socket) as agent:
    peers = agent.discover("reverse", "^1")  # agent info: .agent_id, .name, .capabilities
    if not peers:
        sys.exit("no agent offers reverse ^1: start service.py first")
    reply = agent.request(peers[0].agent_id, b"hello, agents", timeout=1.0)
    print(bytes(reply.payload).decode())  # "stnega ,olleh"
