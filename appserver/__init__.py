"""The app server: a supervisor, worker processes, and the %CSP.WebSocket base class."""

from appserver.errors import (
    ClientClosed,
    NotBound,
    OpenServerError,
    ReadTimeout,
    SocketGone,
    WebSocketError,
)
from appserver.websocket import HandshakeRequest, WebSocket

__all__ = [
    "ClientClosed",
    "HandshakeRequest",
    "NotBound",
    "OpenServerError",
    "ReadTimeout",
    "SocketGone",
    "WebSocket",
    "WebSocketError",
]
