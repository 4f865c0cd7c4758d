"""A plain HTTP/1.1 request loop on h11, for the non-blocking sockets of :mod:`gateway.link.net`.

The gateway serves its page, /healthz, /status and /metrics with it (and hands
upgrades on to the WebSocket code); the app server's supervisor serves /metrics with
it. Keep-alive works; a connection idle, or slow sending a request, for
``request_timeout_s`` (:data:`IDLE_TIMEOUT_S` unless the caller says) is closed.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import h11
import trio

from gateway.link.net import SendBuffer, receive_some

__all__ = ["IDLE_TIMEOUT_S", "Response", "send_response", "serve_http"]

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
#: How long a connection may sit between requests, or take to send one.
IDLE_TIMEOUT_S = 30.0
_SERVER = "wsgate"
_PHRASES = {status.value for status in HTTPStatus}


@dataclass(slots=True)
class Response:
    """A complete HTTP response."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: End the connection after this response (no keep-alive).
    close: bool = False

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        """A plain-text response (a trailing newline is added)."""
        return cls(status, (text + "\n").encode())

    @classmethod
    def json(cls, status: int, value: object) -> Response:
        """A JSON response."""
        return cls(status, json.dumps(value, indent=1).encode() + b"\n",
                   "application/json")


async def _next_event(conn: h11.Connection, sock: socket.socket) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await receive_some(sock))


async def send_response(conn: h11.Connection, sock: socket.socket, response: Response,
                        *, head: bool = False, close: bool = False) -> None:
    """Send one whole response (no body for HEAD); ``close`` says the connection ends."""
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        ("Server", _SERVER),
        ("X-Content-Type-Options", "nosniff"),
        *response.headers,
    ]
    if close:
        headers.append(("Connection", "close"))
    out = SendBuffer(sock, limit=1 << 30)
    reason = HTTPStatus(response.status).phrase.encode() if response.status in _PHRASES else b""
    out.push(conn.send(h11.Response(status_code=response.status, headers=headers,
                                    reason=reason)) or b"")
    if response.body and not head:
        out.push(conn.send(h11.Data(data=response.body)) or b"")
    out.push(conn.send(h11.EndOfMessage()) or b"")
    await out.drain()


Route = Callable[[h11.Request], Response]
#: Answers an upgrade request; returns True when it has taken the socket over.
Upgrade = Callable[[h11.Connection, h11.Request], Awaitable[bool]]


async def serve_http(sock: socket.socket, client_host: str, route: Route,
                     upgrade: Upgrade | None = None, *,
                     request_timeout_s: float = IDLE_TIMEOUT_S) -> None:
    """Serve one connection until it closes; this task owns ``sock`` and closes it.

    ``route`` answers plain requests. A request with an Upgrade header goes to
    ``upgrade``, or gets 404 without one; when ``upgrade`` returns True it has taken
    the socket over, and this task leaves it open.
    """
    handed_over = False
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    try:
        while True:
            received = None
            # Idle, or too slow sending its request (slowloris): hang up.
            with trio.move_on_after(request_timeout_s):
                received = await _read_request(conn, sock)
            if received is None:
                return
            request, wants_upgrade = received
            if wants_upgrade:
                if upgrade is None:
                    await send_response(conn, sock, Response.text(404, "no upgrade here"),
                                        close=True)
                    return
                handed_over = await upgrade(conn, request)
                return
            response = route(request)
            with trio.move_on_after(IDLE_TIMEOUT_S):
                await send_response(conn, sock, response, head=request.method == b"HEAD",
                                    close=response.close)
            if (response.close or conn.our_state is not h11.DONE
                    or conn.their_state is not h11.DONE):
                return
            conn.start_next_cycle()
    except h11.RemoteProtocolError as exc:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = exc.error_status_hint
            await send_response(conn, sock, Response.text(status, f"bad request: {exc}"),
                                close=True)
    except (trio.ClosedResourceError, OSError, h11.LocalProtocolError):
        pass
    except Exception:
        # A bug must cost one connection, never the server and its other connections.
        log.exception("internal error serving a connection from %s", client_host)
    finally:
        if not handed_over:
            trio.lowlevel.notify_closing(sock)
            sock.close()


async def _read_request(
    conn: h11.Connection, sock: socket.socket
) -> tuple[h11.Request, bool] | None:
    """The next request with its body consumed, and whether it asks to switch protocols
    (h11 pauses after an Upgrade request); None when the client went away."""
    event = await _next_event(conn, sock)
    if isinstance(event, h11.ConnectionClosed):
        return None
    if not isinstance(event, h11.Request):
        raise h11.RemoteProtocolError("expected a request", error_status_hint=400)
    # h11 bounds a head only while it is incomplete; one that arrived whole in one read
    # is measured here, so the limit does not depend on how the bytes came.
    head = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
    if head > MAX_HEADER_BYTES:
        raise h11.RemoteProtocolError("request header fields too large",
                                      error_status_hint=431)
    received = 0
    while True:
        part = await _next_event(conn, sock)
        if isinstance(part, h11.Data):
            received += len(part.data)
            if received > MAX_BODY_BYTES:
                raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
        elif isinstance(part, h11.EndOfMessage) or part is h11.PAUSED:
            # h11 switches protocols (and stops parsing) iff the request has Upgrade.
            return event, any(name == b"upgrade" for name, _ in event.headers)
        elif isinstance(part, h11.ConnectionClosed):
            return None
