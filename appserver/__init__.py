"""The app server: a supervisor, worker processes, and the %CSP.WebSocket base class."""

from appserver.csp import HandshakeRequest, WebSocket
from appserver.errors import (
    ClientClosed,
    HandshakeRejected,
    NotBound,
    OpenServerError,
    PrivateSocket,
    ReadTimeout,
    SocketGone,
    WebSocketError,
)

__all__ = [
    "ClientClosed",
    "HandshakeRejected",
    "HandshakeRequest",
    "NotBound",
    "OpenServerError",
    "PrivateSocket",
    "ReadTimeout",
    "SocketGone",
    "WebSocket",
    "WebSocketError",
]
