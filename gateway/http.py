"""The gateway's HTTP/1.1 side, on h11: the chat page, /healthz, /status, and upgrades.

One connection is served by one task. Plain requests are answered here (keep-alive
works); a WebSocket upgrade for ``/csp/<namespace>/<Class>.cls`` is handed, with the
bytes that followed it, to :func:`gateway.websocket.serve_websocket`. This task owns the
TCP socket in every case and closes it when it returns.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import h11
import trio

from client import load_assets
from gateway.net import SendBuffer, receive_some
from gateway.server import Gateway
from gateway.status import render_metrics, render_status_html, status_snapshot
from gateway.table import BrowserSocket
from gateway.websocket import serve_websocket

__all__ = ["Response", "serve_connection"]

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
#: How long a connection may sit between requests, or take to send one.
IDLE_TIMEOUT_S = 30.0
_CLS_PATH = re.compile(r"^/csp/([A-Za-z0-9_%]+)/([A-Za-z0-9_.%]+)\.cls$")
_SERVER = b"wsgate"
_PHRASES = {status.value for status in HTTPStatus}


@dataclass(slots=True)
class Response:
    """A complete HTTP response."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

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


async def _send(conn: h11.Connection, sock: socket.socket, response: Response,
                *, head: bool = False, close: bool = False) -> None:
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        ("Server", _SERVER.decode()),
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


def _header(request: h11.Request, name: bytes) -> str:
    for key, value in request.headers:
        if key == name:
            return value.decode("latin-1")
    return ""


async def serve_connection(gw: Gateway, sock: socket.socket, client_host: str) -> None:
    """Serve one browser TCP connection until it closes."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    try:
        while True:
            received = None
            with trio.move_on_after(IDLE_TIMEOUT_S):  # idle or too slow: hang up
                received = await _read_request(conn, sock)
            if received is None:
                return
            request, upgrade = received
            if upgrade:
                await _serve_upgrade(gw, conn, sock, client_host, request)
                return
            response = route(gw, request, client_host)
            with trio.move_on_after(IDLE_TIMEOUT_S):
                await _send(conn, sock, response, head=request.method == b"HEAD")
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except h11.RemoteProtocolError as exc:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = exc.error_status_hint
            await _send(conn, sock, Response.text(status, f"bad request: {exc}"), close=True)
    except (trio.ClosedResourceError, OSError, h11.LocalProtocolError):
        pass
    except Exception:
        # A bug must cost one connection, never the gateway and its other sockets.
        log.exception("internal error serving a connection from %s", client_host)
    finally:
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


async def _serve_upgrade(
    gw: Gateway, conn: h11.Connection, sock: socket.socket, client_host: str,
    request: h11.Request,
) -> None:
    path = urlsplit(request.target.decode("latin-1")).path
    match = _CLS_PATH.match(path)
    is_websocket = _header(request, b"upgrade").lower() == "websocket"
    if match is None or not is_websocket:
        await _send(conn, sock, Response.text(404, f"no WebSocket endpoint at {path}"),
                    close=True)
        return
    class_key = f"{match[1].lower()}/{match[2]}"
    if class_key not in gw.classes:
        if not gw.classes:
            response = Response.text(503, "the app server is not linked yet; try again soon")
        else:
            response = Response.text(404, f"no server class {match[2]} in namespace "
                                          f"{match[1]}")
        await _send(conn, sock, response, close=True)
        return
    bs = BrowserSocket(gw.new_wsid(), sock, client_host, class_key,
                       buffer_limit=gw.config.socket_buffer_bytes)
    rejection = await serve_websocket(gw, bs, request, conn.trailing_data[0])
    if rejection is not None:
        log.info("wsid=%s handshake refused: %d %s", bs.wsid, rejection.status,
                 rejection.body)
        await _send(conn, sock, Response.text(rejection.status, rejection.body), close=True)


def route(gw: Gateway, request: h11.Request, client_host: str) -> Response:
    """Answer a plain (non-upgrade) request."""
    if request.method not in (b"GET", b"HEAD"):
        return Response(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD")])
    target = urlsplit(request.target.decode("latin-1"))
    path = target.path
    if path == "/healthz":
        return _healthz(gw)
    if path in ("/status", "/metrics"):
        if not gw.config.status_allowed(client_host):
            return Response.text(403, f"{path} is served to loopback clients only "
                                      "(see --status-allow)")
        if path == "/metrics":
            return Response(200, render_metrics(gw).encode(),
                            "text/plain; version=0.0.4; charset=utf-8")
        snapshot = status_snapshot(gw)
        wants_html = "html" in parse_qs(target.query).get("format", []) or (
            "text/html" in _header(request, b"accept")
        )
        if wants_html:
            return Response(200, render_status_html(snapshot).encode(),
                            "text/html; charset=utf-8")
        return Response.json(200, snapshot)
    match = _CLS_PATH.match(path)
    if match is not None:
        class_key = f"{match[1].lower()}/{match[2]}"
        if not gw.classes:
            return Response.text(503, "the app server is not linked yet; try again soon")
        if class_key not in gw.classes:
            return Response.text(404, f"no server class {match[2]} in namespace {match[1]}")
        return Response(
            426,
            (f"{path} is a WebSocket endpoint (server class {match[2]}). Open it with a "
             f"WebSocket client, for example: new WebSocket(\"ws://HOST{path}\")\n").encode(),
            headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")],
        )
    return _static(path)


def _healthz(gw: Gateway) -> Response:
    links = list(gw.links.all_links())
    body = {
        "status": "ok" if links else "starting",
        "gateway": gw.id,
        "links": len(links),
        "sockets": len(gw.table),
    }
    return Response.json(200 if links else 503, body)


_ASSETS = load_assets()


def _static(path: str) -> Response:
    name = "index.html" if path == "/" else path.lstrip("/")
    asset = _ASSETS.get(name)
    if asset is None:
        return Response.text(404, "not found")
    body, content_type = asset
    headers = [("Cache-Control", "no-cache")]
    if content_type.startswith("text/html"):
        headers.append((
            "Content-Security-Policy",
            "default-src 'self'; connect-src 'self' ws: wss:; object-src 'none'; "
            "base-uri 'none'; frame-ancestors 'none'",
        ))
    return Response(200, body, content_type, headers)
