"""The errors of the %CSP.WebSocket API, carrying IRIS's status codes.

IRIS returns a ``%Status``; the port raises instead. Every error is a
:class:`WebSocketError` with the IRIS ``code`` a ported ``$$$GETERRORCODE(sc)`` check
compares against::

    WebSocketError (code)
    +-- ReadTimeout      7950  $$$CSPWebSocketTimeout: Read waited `timeout` seconds
    +-- ClientClosed     7951  $$$CSPWebSocketClosed: the browser closed the socket
    +-- OpenServerError  5001  OpenServer refused: empty id, closed, unreachable
    |   +-- PrivateSocket  5001  ...because the socket is private (SharedConnection = 0)
    +-- SocketGone       5001  Write/EndServer on a socket that has closed
    +-- NotBound         5001  Read/Write on an instance with no socket behind it

    HandshakeRejected          OnPreServer refuses the socket: the browser gets `status`
"""

from __future__ import annotations

__all__ = [
    "CSP_WEBSOCKET_CLOSED",
    "CSP_WEBSOCKET_TIMEOUT",
    "GENERAL_ERROR",
    "ClientClosed",
    "HandshakeRejected",
    "NotBound",
    "OpenServerError",
    "PrivateSocket",
    "ReadTimeout",
    "SocketGone",
    "WebSocketError",
]

#: $$$CSPWebSocketTimeout (%occErrors.inc)
CSP_WEBSOCKET_TIMEOUT = 7950
#: $$$CSPWebSocketClosed (%occErrors.inc)
CSP_WEBSOCKET_CLOSED = 7951
#: $$$GeneralError
GENERAL_ERROR = 5001


class WebSocketError(Exception):
    """Base of every %CSP.WebSocket error; ``code`` is the IRIS error code."""

    code = GENERAL_ERROR

    def __init__(self, message: str, *, wsid: str = "") -> None:
        super().__init__(message)
        self.wsid = wsid


class ReadTimeout(WebSocketError):
    """``Read`` got no data within its timeout (IRIS 7950)."""

    code = CSP_WEBSOCKET_TIMEOUT


class ClientClosed(WebSocketError):
    """The browser closed the socket (IRIS 7951); ``close_code`` is its close code."""

    code = CSP_WEBSOCKET_CLOSED

    def __init__(self, message: str, *, wsid: str = "", close_code: int = 1006) -> None:
        super().__init__(message, wsid=wsid)
        self.close_code = close_code


class OpenServerError(WebSocketError):
    """``OpenServer`` refused the id: empty, malformed, private or closed."""


class PrivateSocket(OpenServerError):
    """``OpenServer`` of a private socket: IRIS opens only shared (async) sockets."""


class SocketGone(WebSocketError):
    """``Write`` or ``EndServer`` on a socket that has closed or been ended."""


class NotBound(WebSocketError):
    """``Read``/``Write`` on an instance that neither serves nor opened a socket."""


class HandshakeRejected(Exception):
    """Raise in ``OnPreServer`` to refuse the socket with an HTTP status and a body.

    IRIS answers a failed CSP login with a 404-style page; the default is the same.
    """

    def __init__(self, status: int = 404, body: str = "not found") -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"a refusal needs a 4xx or 5xx status, not {status}")
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body
