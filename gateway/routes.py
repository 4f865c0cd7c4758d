"""The gateway's HTTP/1.1 routes, on h11: the chat page, /healthz, /status, and upgrades.

One connection is served by one task. Plain requests are answered here (keep-alive
works); a WebSocket upgrade for ``/csp/<namespace>/<Class>.cls`` is handed, with the
bytes that followed it, to :func:`gateway.handshake.open_websocket`; an open socket then
runs in a task of its own (:meth:`gateway.browser.BrowserSocket.run`), which owns the
TCP socket from there on.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import h11
import trio
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from client import load_assets
from gateway.admission import origin_refusal
from gateway.handshake import open_websocket
from gateway.link.httpserver import Response, send_response, serve_http
from gateway.link.net import tls_handshake
from gateway.status import render_status_html, status_snapshot

if TYPE_CHECKING:
    from gateway.gateway import Gateway

__all__ = ["route", "serve_connection"]

log = logging.getLogger(__name__)

_CLS_PATH = re.compile(r"^/csp/([A-Za-z0-9_%]+)/([A-Za-z0-9_.%]+)\.cls$")


def _header(request: h11.Request, name: bytes) -> str:
    for key, value in request.headers:
        if key == name:
            return value.decode("latin-1")
    return ""


async def serve_connection(gw: Gateway, sock: socket.socket, client_host: str) -> None:
    """Serve one browser TCP connection until it closes."""
    timeout = gw.config.handshake_timeout_s
    admitted = gw.connect_rate.admit(client_host, trio.current_time())
    if isinstance(sock, ssl.SSLSocket):
        if not admitted:  # no TLS handshake is spent on a connection over the rate
            gw.stats["connections_rate_limited"] += 1
            trio.lowlevel.notify_closing(sock)
            sock.close()
            return
        with trio.move_on_after(timeout) as waited:
            try:
                await tls_handshake(sock)
            except (OSError, ssl.SSLError) as exc:
                log.info("TLS handshake with %s failed: %s", client_host, exc)
        if waited.cancelled_caught or sock.version() is None:
            if waited.cancelled_caught:
                log.info("TLS handshake with %s timed out", client_host)
            trio.lowlevel.notify_closing(sock)
            sock.close()
            return
    if not admitted:
        gw.stats["connections_rate_limited"] += 1
        refusal = Response.text(429, f"too many new connections from {client_host} "
                                     f"(at most {gw.config.max_connect_rate:g} a second); "
                                     "try again later")
        refusal.headers.append(("Retry-After", "1"))
        refusal.close = True

        async def refuse(conn: h11.Connection, request: h11.Request) -> bool:
            await send_response(conn, sock, refusal, close=True)
            return False

        await serve_http(sock, client_host, lambda request: refusal, refuse,
                         request_timeout_s=timeout)
        return

    async def upgrade(conn: h11.Connection, request: h11.Request) -> bool:
        return await _serve_upgrade(gw, conn, sock, client_host, request)

    await serve_http(sock, client_host, lambda request: route(gw, request, client_host),
                     upgrade, request_timeout_s=timeout)


async def _serve_upgrade(
    gw: Gateway, conn: h11.Connection, sock: socket.socket, client_host: str,
    request: h11.Request,
) -> bool:
    """Answer an upgrade request; True once an open socket's task owns ``sock``."""
    path = urlsplit(request.target.decode("latin-1")).path
    match = _CLS_PATH.match(path)
    is_websocket = _header(request, b"upgrade").lower() == "websocket"
    if match is None or not is_websocket:
        await send_response(conn, sock, Response.text(404, f"no WebSocket endpoint at {path}"),
                            close=True)
        return False
    refusal = _admission(gw, request)
    if refusal is not None:
        await send_response(conn, sock, refusal, close=True)
        return False
    class_key = f"{match[1].lower()}/{match[2]}"
    if not gw.classes:  # never linked yet: wait as for a busy pool
        await gw.wait_linked(gw.config.queue_timeout_s)
    if class_key not in gw.classes:
        if not gw.classes:
            response = Response.text(503, "the app server is not linked yet; try again soon")
        else:
            response = Response.text(404, f"no server class {match[2]} in namespace "
                                          f"{match[1]}")
        await send_response(conn, sock, response, close=True)
        return False
    bs = gw.new_socket(sock, client_host, class_key)
    rejection = await open_websocket(gw, bs, request, conn.trailing_data[0])
    if rejection is not None:
        log.info("wsid=%s handshake refused: %d %s", bs.wsid, rejection.status,
                 rejection.body)
        await send_response(conn, sock, Response.text(rejection.status, rejection.body),
                            close=True)
        return False
    # The socket may live for days: it gets a reader task of its own that holds nothing
    # of this HTTP connection (or none until the browser speaks: it is parked), and
    # this task ends here.
    bs.start_reading()
    return True


def _admission(gw: Gateway, request: h11.Request) -> Response | None:
    """The answer to an upgrade that may not open a socket (its Origin, the limit of
    sockets), or None."""
    why = origin_refusal(_header(request, b"origin"), _header(request, b"host"),
                         gw.config.allowed_origins)
    if why:
        gw.stats["sockets_refused_origin"] += 1
        log.info("upgrade refused (403): %s", why)
        return Response.text(403, why)
    if len(gw.table) >= gw.config.max_sockets:
        gw.stats["sockets_refused_full"] += 1
        return Response.text(503, f"this gateway holds as many sockets as it may "
                                  f"(--max-sockets {gw.config.max_sockets}); try again "
                                  "later")
    return None


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
            return Response(200, generate_latest(gw.metrics), CONTENT_TYPE_PLAIN_0_0_4)
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
    degraded = gw.bus is not None and not gw.bus.up
    body = {
        # degraded: its own sockets are served, other nodes' writes cannot reach them
        "status": ("degraded" if degraded else "ok") if links else "starting",
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
