"""Every error the link raises, in one tree.

::

    LinkError                    base: something is wrong with one link
    +-- LinkProtocolError        the peer broke the protocol (remote); the link must close
    |   +-- LinkAuthError        the peer failed the challenge-response (wrong secret)
    +-- LinkRefused              the app server refused the link (``busy``: all workers taken)
    +-- LinkUsageError           this side misused a connection (local): wrong state or
        |                        direction, an event the link does not know
        +-- FrameTooBig          an event does not fit in a frame: a field or the payload
                                 is longer than the wire format carries

Errors follow h11's rule: what the peer does wrong is raised as a
:class:`LinkProtocolError` at the one receive entry point
(:meth:`~gateway.link.connection.LinkConnection.next_event`), and ends that link only.
``reason`` is always a short loggable sentence that never holds a secret or a payload.
"""

from __future__ import annotations

__all__ = [
    "FrameTooBig",
    "LinkAuthError",
    "LinkError",
    "LinkProtocolError",
    "LinkRefused",
    "LinkUsageError",
]


class LinkError(Exception):
    """Base of every link error; ``reason`` says what happened, loggably."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LinkProtocolError(LinkError):
    """The peer sent something the link protocol does not allow; close the link."""


class LinkAuthError(LinkProtocolError):
    """The peer failed the challenge-response: it does not hold the link secret."""


class LinkRefused(LinkError):
    """The app server refused the link; ``busy`` when all its workers serve links."""

    def __init__(self, reason: str, *, busy: bool = False) -> None:
        super().__init__(reason)
        self.busy = busy


class LinkUsageError(LinkError):
    """This side asked a connection for something its role or state does not allow."""


class FrameTooBig(LinkUsageError):
    """An event does not fit in one frame; ``reason`` names the field that is too long."""
