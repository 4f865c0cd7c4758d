"""The app server: a supervisor, worker processes, and the %CSP.WebSocket base class."""

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
from appserver.websocket import HandshakeRequest, WebSocket

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
