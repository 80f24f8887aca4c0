"""The exceptions agentwire raises: one class per kind of failure of the Rust client.

Defined in Python (not in the extension) so that they can have several bases, such as
``Timeout`` being a ``TimeoutError`` too; the extension raises them by name.
"""

from __future__ import annotations


class Error(Exception):
    """Base class of every agentwire error."""


class Refused(Error):
    """The daemon refused the connection (``reason``: the daemon's reason class, ``detail``:
    its explanation), e.g. no protocol version in common or the agent limit reached."""

    def __init__(self, message: str, reason: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.detail = detail


class UntrustedDaemon(Error):
    """The process serving the socket runs as a uid this agent does not trust; nothing was
    sent. Pass ``daemon_uid=`` to trust it."""


class Disconnected(Error):
    """The daemon is gone (its socket closed or the segment closed), or every reconnect
    attempt failed; ``Agent.reconnect()`` tries again."""


class Backpressure(Error):
    """The tx ring stayed full past the send timeout: the daemon is not draining."""


class Timeout(Error, TimeoutError):
    """No response to a request within its timeout."""


class Nacked(Error):
    """The daemon nacked a request: ``reason`` is the nack code (1 no such agent, 2 no
    subscriber, 3 destination full, 4 malformed, 5 not permitted, 6 dead letter refused),
    ``detail`` the daemon's explanation."""

    def __init__(self, message: str, reason: int = 0, detail: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.detail = detail


class TooLarge(Error, ValueError):
    """The frame can never fit the ring (payload larger than a ring frame may be)."""


class ProtocolError(Error):
    """The daemon or a frame broke the protocol (a bad control reply, a corrupt ring, a
    frame that failed validation, a full request stash, a failed segment mapping)."""


class Released(Error, ValueError):
    """The message (or claim) was released: its payload was a view onto ring bytes that the
    daemon may now reuse. Copy what you keep with ``bytes(msg.payload)`` before the next
    receive."""


class ClaimOpen(Error):
    """A claim is open on this agent: commit or abort it before any other call."""


class Closed(Error):
    """The agent was closed."""


__all__ = [
    "Error",
    "Refused",
    "UntrustedDaemon",
    "Disconnected",
    "Backpressure",
    "Timeout",
    "Nacked",
    "TooLarge",
    "ProtocolError",
    "Released",
    "ClaimOpen",
    "Closed",
]
