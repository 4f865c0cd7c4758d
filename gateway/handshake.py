"""A browser socket's handshake: the upgrade request, a worker's OnPreServer, then 101.

The HTTP layer (:mod:`gateway.routes`) parses the upgrade request with h11 and hands it
here with the bytes that followed it (hypercorn's pattern). :func:`check_upgrade`
checks what RFC 6455 section 4.2.1 asks of it, on the headers h11 has already parsed
and validated; we ask a worker to run ``OnPreServer`` (an ``Open`` frame), and only
when it accepts do we answer 101 (:func:`switching_protocols`) and hand the bytes after
it to a wsproto connection. (wsproto's own H11Handshake parses the request a second
time through h11 and writes the 101 through a third h11 state machine: 110 us a
handshake, a fifth of a gateway's CPU when they come one after another.) A private
socket whose handshake worker already serves others moves to a dedicated worker
(``Handoff``, then ``Adopt``) without running OnPreServer twice.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import h11
import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.utilities import generate_accept_token

from gateway.browser import BrowserSocket
from gateway.link.codec import encode
from gateway.link.errors import FrameTooBig
from gateway.link.events import Accept, Adopt, Handoff, Open, Reject

if TYPE_CHECKING:
    from gateway.gateway import Gateway

__all__ = ["Rejection", "Upgrade", "check_upgrade", "open_websocket",
           "switching_protocols"]

log = logging.getLogger(__name__)

_SESSION_ID = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")


@dataclass(frozen=True, slots=True)
class Rejection:
    """The handshake failed: answer with this HTTP status and readable body."""

    status: int
    body: str


async def open_websocket(
    gw: Gateway, bs: BrowserSocket, request: h11.Request, trailing: bytes
) -> Rejection | None:
    """Take the socket from its upgrade request to its queued 101 (None), or refuse it.

    On None the caller starts :meth:`BrowserSocket.run` in a task of its own, which
    then owns the TCP socket. The handshake's objects (the request, wsproto's
    handshake, the Open frame) die with this call: an open socket's task holds the
    socket alone, and that is most of a gateway's memory per idle socket.
    """
    gw.table.add(bs)
    try:
        outcome = await _handshake(gw, bs, request, trailing)
    finally:
        if bs.ws is None:  # refused, failed or cancelled: forget the socket now
            bs.fail()
    return outcome


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A valid WebSocket upgrade request: its key, and the subprotocols it offers."""

    key: bytes
    subprotocols: tuple[str, ...]


def _tokens(value: bytes) -> list[str]:
    return [token.strip() for token in value.decode("latin-1").split(",") if token.strip()]


def check_upgrade(request: h11.Request) -> Upgrade | str:
    """The upgrade request's key and subprotocols, or why it is no WebSocket handshake
    (RFC 6455 section 4.2.1; h11 has checked the method's and headers' syntax)."""
    if request.method != b"GET":
        return "Request method must be GET"
    connection: list[str] | None = None
    key = version = None
    upgrade = b""
    host = False
    subprotocols: list[str] = []
    for name, value in request.headers:  # h11 lower-cases the names
        if name == b"connection":
            connection = _tokens(value)
        elif name == b"sec-websocket-key":
            key = value
        elif name == b"sec-websocket-version":
            version = value
        elif name == b"upgrade":
            upgrade = value
        elif name == b"sec-websocket-protocol":
            subprotocols.extend(_tokens(value))
        elif name == b"host":
            host = True
    if connection is None or not any(token.lower() == "upgrade" for token in connection):
        return "Missing header, 'Connection: Upgrade'"
    if version != b"13":
        return "Missing header, 'Sec-WebSocket-Version'"
    if key is None:
        return "Missing header, 'Sec-WebSocket-Key'"
    if upgrade.lower() != b"websocket":
        return "Missing header, 'Upgrade: websocket'"
    if not host:
        return "Missing header, 'Host'"
    return Upgrade(key, tuple(subprotocols))


def switching_protocols(key: bytes, subprotocol: str | None) -> bytes:
    """The 101 response to an upgrade with ``key``, choosing ``subprotocol`` (or none;
    no extension: permessage-deflate is never offered back)."""
    head = [b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket",
            b"Connection: Upgrade", b"Sec-WebSocket-Accept: " + generate_accept_token(key)]
    if subprotocol:
        head.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode("latin-1"))
    return b"\r\n".join(head) + b"\r\n\r\n"


async def _handshake(
    gw: Gateway, bs: BrowserSocket, request: h11.Request, trailing: bytes
) -> Rejection | None:
    """From the upgrade request to the queued 101 (None), or to a refusal."""
    upgrade = check_upgrade(request)
    if isinstance(upgrade, str):
        return Rejection(400, f"bad WebSocket handshake: {upgrade}")
    deadline = trio.current_time() + gw.config.queue_timeout_s
    link = await gw.links.acquire(gw.config.queue_timeout_s)
    if link is None:
        return _busy(gw)
    target = urlsplit(request.target.decode("latin-1"))
    headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers)
    bs.session = _session_cookie(headers)
    opening = Open(bs.wsid, bs.class_name, target.path, target.query, headers,
                   bs.client_address, shared_allowed=gw.config.registry_enabled)
    try:
        frame = encode(opening)
    except FrameTooBig as exc:  # checked before anything is announced
        return Rejection(431, f"the request cannot reach the app server: {exc.reason}")
    # The Registry first: the worker reads the socket's session from it in OnPreServer.
    gw.socket_connecting(bs)
    bs.opening(link)
    link.send_frame(frame)
    reply: Accept | Reject | Handoff | Rejection | None = await bs.wait_answer(
        gw.config.response_timeout_s)
    if isinstance(reply, Handoff):
        reply = await _move_to_dedicated(gw, bs, opening, reply, deadline)
    if not isinstance(reply, Accept):
        return reply if isinstance(reply, Rejection) else _refusal(gw, bs, reply)
    if reply.subprotocol and reply.subprotocol not in upgrade.subprotocols:
        return Rejection(502, "The app server chose a subprotocol the browser did not "
                              "offer.")
    # extensions=[]: no permessage-deflate, so one encoded frame serves every socket.
    response = switching_protocols(upgrade.key, reply.subprotocol or None)
    bs.accept(response, Connection(ConnectionType.SERVER, extensions=[]), reply, trailing)
    log.debug("wsid=%s open (%s) on link %d from %s", bs.wsid, bs.mode,
              bs.home.id if bs.home else -1, bs.client_address)
    return None


def _busy(gw: Gateway) -> Rejection:
    gw.stats["sockets_refused_busy"] += 1
    return Rejection(
        503,
        f"All app server workers are busy: none was free within "
        f"{gw.config.queue_timeout_s:g} s (IRIS: Queued Request Timeout). Try again later.",
    )


def _session_cookie(headers: tuple[tuple[str, str], ...]) -> str:
    """The CSPSESSIONID cookie, if it is a plausible session id (else none)."""
    for name, value in headers:
        if name.lower() == "cookie":
            for part in value.split(";"):
                key, _, session = part.strip().partition("=")
                if key == "CSPSESSIONID" and _SESSION_ID.match(session):
                    return session
    return ""


async def _move_to_dedicated(
    gw: Gateway, bs: BrowserSocket, opening: Open, handoff: Handoff, deadline: float
) -> Accept | Reject | Handoff | Rejection | None:
    """OnPreServer chose private on a busy worker: give the socket its own worker."""
    bs.leave_home()  # the handshake worker forgot it when it handed it off
    link = await gw.links.open_dedicated(bs.wsid, max(deadline - trio.current_time(), 0.0))
    if link is None:
        return _busy(gw)
    log.info("wsid=%s moves to dedicated link %d (worker pid %d)", bs.wsid, link.id,
             link.worker_pid)
    bs.opening(link)
    link.send(Adopt(opening, handoff.state))
    return await bs.wait_answer(gw.config.response_timeout_s)


def _refusal(gw: Gateway, bs: BrowserSocket, reply: Reject | Handoff | None) -> Rejection:
    if isinstance(reply, Reject):
        bs.leave_home()  # the worker refused it: it knows
        return Rejection(reply.status, reply.body)
    if isinstance(reply, Handoff):  # a dedicated worker must not hand off again
        return Rejection(502, "The app server moved a private socket twice.")
    if bs.home is None:
        return Rejection(502, "The app server worker was lost during the handshake.")
    return Rejection(
        504, f"The app server did not answer the handshake within "
             f"{gw.config.response_timeout_s:g} s (IRIS: Server Response Timeout).",
    )
