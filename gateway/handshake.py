"""A browser socket's handshake: the upgrade request, a worker's OnPreServer, then 101.

The HTTP layer (:mod:`gateway.routes`) parses the upgrade request with h11 and hands it
here with the bytes that followed it (hypercorn's pattern). We ask a worker to run
``OnPreServer`` (an ``Open`` frame), and only when it accepts do we answer 101; wsproto
validates the upgrade. A private socket whose handshake worker already serves others
moves to a dedicated worker (``Handoff``, then ``Adopt``) without running OnPreServer
twice.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import h11
import trio
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from gateway.browser import BrowserSocket
from gateway.link.codec import encode
from gateway.link.errors import FrameTooBig
from gateway.link.events import Accept, Adopt, Handoff, Open, Reject

if TYPE_CHECKING:
    from gateway.gateway import Gateway

__all__ = ["Rejection", "open_websocket"]

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


async def _handshake(
    gw: Gateway, bs: BrowserSocket, request: h11.Request, trailing: bytes
) -> Rejection | None:
    """From the upgrade request to the queued 101 (None), or to a refusal."""
    handshake = H11Handshake(ConnectionType.SERVER)
    try:
        handshake.initiate_upgrade_connection(list(request.headers), request.target)
        upgrade = next(handshake.events())
    except RemoteProtocolError as exc:
        return Rejection(400, f"bad WebSocket handshake: {exc}")
    assert isinstance(upgrade, Request)
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
    response = handshake.send(AcceptConnection(subprotocol=reply.subprotocol or None,
                                               extensions=[]))
    assert handshake.connection is not None
    bs.accept(response, handshake.connection, reply, trailing)
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
