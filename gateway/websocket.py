"""One browser WebSocket on the gateway: handshake through a worker, then read until closed.

The HTTP layer (:mod:`gateway.http`) parses the upgrade request with h11 and hands it
here with the bytes that followed it (hypercorn's pattern). We ask a worker to run
``OnPreServer`` (an ``Open`` frame), and only when it accepts do we answer 101; wsproto
validates the upgrade, parses the browser's frames and does the closing handshake.
Outbound data frames are encoded by :mod:`gateway.wsframe` and queued by the gateway.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import trio
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from gateway.frames import Accept, Adopt, Close, Data, Handoff, Open, Reject, SocketStatus
from gateway.links import Link
from gateway.net import READS_PER_YIELD, receive_some
from gateway.server import Gateway
from gateway.table import BrowserSocket, SocketPhase

__all__ = ["Rejection", "open_websocket", "run_websocket"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rejection:
    """The handshake failed: answer with this HTTP status and readable body."""

    status: int
    body: str


async def open_websocket(
    gw: Gateway, bs: BrowserSocket, request: h11.Request, trailing: bytes
) -> Rejection | None:
    """Take the socket from its upgrade request to its queued 101 (None), or refuse it.

    On None the caller starts :func:`run_websocket` in a task of its own, which then
    owns the TCP socket. The handshake's objects (the request, wsproto's handshake, the
    Open frame) die with this call: an open socket's task holds the socket alone, and
    that is most of a gateway's memory per idle socket.
    """
    gw.table.add(bs)
    opened = False
    try:
        outcome = await _handshake(gw, bs, request, trailing)
        opened = outcome is None
        return outcome
    finally:
        if not opened:  # refused, failed or cancelled: forget the socket now
            _finish(gw, bs)


async def run_websocket(gw: Gateway, bs: BrowserSocket) -> None:
    """Read an open socket until it closes; then forget it and close its TCP socket."""
    try:
        assert bs.reader_scope is not None
        with bs.reader_scope:
            await _read_loop(gw, bs)
    except (trio.ClosedResourceError, OSError):
        pass
    except Exception:
        log.exception("wsid=%s internal error", bs.wsid)
    finally:
        _finish(gw, bs)
        trio.lowlevel.notify_closing(bs.sock)
        bs.sock.close()


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
    too_big = _too_big_for_the_link(target.path, target.query, headers)
    if too_big:
        return Rejection(431, too_big)
    bs.session = _session_cookie(headers)
    opening = Open(bs.wsid, bs.class_name, target.path, target.query, headers,
                   bs.client_address, shared_allowed=gw.config.registry_enabled)
    _bind(bs, link)
    gw.announce(bs, SocketStatus.CONNECTING)
    bs.announced = True
    link.send(opening)
    reply: Accept | Reject | Handoff | Rejection | None = await _await_reply(gw, bs)
    if isinstance(reply, Handoff):
        reply = await _move_to_dedicated(gw, bs, opening, reply, deadline)
    if not isinstance(reply, Accept):
        return reply if isinstance(reply, Rejection) else _refusal(gw, bs, reply)
    _accept(gw, bs, handshake, reply, trailing)
    return None


def _busy(gw: Gateway) -> Rejection:
    gw.stats["sockets_refused_busy"] += 1
    return Rejection(
        503,
        f"All app server workers are busy: none was free within "
        f"{gw.config.queue_timeout_s:g} s (IRIS: Queued Request Timeout). Try again later.",
    )


_SESSION_ID = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")
#: The link carries a header name in 255 bytes and a value, path or query in 65535.
_NAME_BYTES, _VALUE_BYTES = 0xFF, 0xFFFF


def _too_big_for_the_link(path: str, query: str,
                          headers: tuple[tuple[str, str], ...]) -> str:
    """Why the request cannot travel in an Open frame ("" when it can)."""
    if len(path.encode()) > _VALUE_BYTES or len(query.encode()) > _VALUE_BYTES:
        return "the request target is too long"
    if len(headers) > 0xFFFF:
        return "too many request headers"
    for name, value in headers:
        if len(name.encode()) > _NAME_BYTES or len(value.encode()) > _VALUE_BYTES:
            return f"request header {name[:40]!r}... is too long"
    return ""


def _session_cookie(headers: tuple[tuple[str, str], ...]) -> str:
    """The CSPSESSIONID cookie, if it is a plausible session id (else none)."""
    for name, value in headers:
        if name.lower() == "cookie":
            for part in value.split(";"):
                key, _, session = part.strip().partition("=")
                if key == "CSPSESSIONID" and _SESSION_ID.match(session):
                    return session
    return ""


def _bind(bs: BrowserSocket, link: Link) -> None:
    bs.link = link
    link.sockets.add(bs.wsid)


async def _await_reply(gw: Gateway, bs: BrowserSocket) -> Accept | Reject | Handoff | None:
    with trio.move_on_after(gw.config.response_timeout_s):
        await bs.reply_ready.wait()
    return bs.reply


async def _move_to_dedicated(
    gw: Gateway, bs: BrowserSocket, opening: Open, handoff: Handoff, deadline: float
) -> Accept | Reject | Handoff | Rejection | None:
    """OnPreServer chose private on a busy worker: give the socket its own worker."""
    if bs.link is not None:
        bs.link.sockets.discard(bs.wsid)
        bs.link = None
    link = await gw.links.open_dedicated(bs.wsid, max(deadline - trio.current_time(), 0.0))
    if link is None:
        bs.worker_told = True  # no worker holds it any more
        return _busy(gw)
    log.info("wsid=%s moves to dedicated link %d (worker pid %d)", bs.wsid, link.id,
             link.worker_pid)
    _bind(bs, link)
    bs.reply, bs.reply_ready = None, trio.Event()
    link.send(Adopt(opening, handoff.state))
    return await _await_reply(gw, bs)


def _refusal(gw: Gateway, bs: BrowserSocket, reply: Reject | Handoff | None) -> Rejection:
    bs.close_code = 1006
    if isinstance(reply, Reject):
        bs.worker_told = True  # the worker refused it: it knows
        return Rejection(reply.status, reply.body)
    if isinstance(reply, Handoff):  # a dedicated worker must not hand off again
        return Rejection(502, "The app server moved a private socket twice.")
    if bs.worker_told:
        return Rejection(502, "The app server worker was lost during the handshake.")
    return Rejection(
        504, f"The app server did not answer the handshake within "
             f"{gw.config.response_timeout_s:g} s (IRIS: Server Response Timeout).",
    )


def _accept(
    gw: Gateway, bs: BrowserSocket, handshake: H11Handshake, reply: Accept, trailing: bytes
) -> None:
    bs.shared = reply.shared
    bs.binary = reply.binary
    bs.reply = None
    bs.reader_scope = trio.CancelScope()
    # A private socket's link was dedicated when its Accept arrived (Gateway._handle_reply);
    # the pool opens another link in its place.
    # extensions=[]: no permessage-deflate, so one encoded frame serves every socket.
    response = handshake.send(AcceptConnection(extensions=[]))
    ws = handshake.connection
    assert ws is not None
    bs.ws = ws
    bs.out.push_unchecked(response)
    for frame, shared_only in bs.early:
        if bs.shared or not shared_only:  # others may not write to a private socket
            bs.out.push_unchecked(frame)
    bs.early.clear()
    bs.phase = SocketPhase.OPEN
    gw.announce(bs, SocketStatus.SHARED if bs.shared else SocketStatus.PRIVATE)
    gw.stats["sockets_opened"] += 1
    if bs.pending_close is not None:
        pending, bs.pending_close = bs.pending_close, None
        gw.close_socket(bs, *pending)
    bs.flush(gw.nursery)
    log.debug("wsid=%s open (%s) on link %d from %s", bs.wsid, bs.mode,
              bs.link.id if bs.link else -1, bs.client_address)
    ws.receive_data(trailing)


async def _read_loop(gw: Gateway, bs: BrowserSocket) -> None:
    ws = bs.ws
    assert ws is not None
    limit = gw.config.max_message_bytes
    parts: list[bytes] = []
    size = 0
    reads = 0
    while True:
        for event in ws.events():
            if isinstance(event, TextMessage | BytesMessage):
                if bs.phase is not SocketPhase.OPEN:
                    continue  # data after our close frame is discarded (RFC 6455 7.1.2)
                chunk = event.data.encode() if isinstance(event, TextMessage) else event.data
                size += len(chunk)
                if size > limit:
                    parts, size = [], 0
                    gw.stats["messages_too_big"] += 1
                    log.info("wsid=%s closed: message over %d bytes", bs.wsid, limit)
                    gw.close_socket(bs, 1009, f"message too big (limit {limit} bytes)")
                    bs.flush(gw.nursery)
                    continue
                parts.append(bytes(chunk))
                bs.last_activity = trio.current_time()
                if event.message_finished:
                    payload = parts[0] if len(parts) == 1 else b"".join(parts)
                    parts, size = [], 0
                    _forward(gw, bs, isinstance(event, BytesMessage), payload)
            elif isinstance(event, Ping):
                bs.out.push_unchecked(ws.send(event.response()))
                bs.flush(gw.nursery)
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    bs.out.push_unchecked(ws.send(event.response()))
                    bs.out.try_send()
                if bs.phase is SocketPhase.OPEN:  # the browser closed first
                    bs.close_code, bs.close_reason = event.code, event.reason or ""
                return
        if ws.state is ConnectionState.CLOSED:
            return
        reads += 1
        if reads % READS_PER_YIELD == 0:
            await trio.lowlevel.checkpoint()
        data = await receive_some(bs.sock, checkpoint=False)
        gw.stats["bytes_in"] += len(data)
        ws.receive_data(data or None)


def _forward(gw: Gateway, bs: BrowserSocket, binary: bool, payload: bytes) -> None:
    link = bs.link
    if link is None or not link.up:
        return
    gw.stats["frames_in"] += 1
    link.send(Data(bs.wsid, binary, payload))


def _finish(gw: Gateway, bs: BrowserSocket) -> None:
    """Forget the socket everywhere, exactly once, however it ended."""
    bs.phase = SocketPhase.CLOSED
    gw.table.remove(bs.wsid)
    link = bs.link
    if link is not None:
        link.sockets.discard(bs.wsid)
        if link.up and bs.announced and not bs.worker_told:
            link.send(Close(bs.wsid, bs.close_code, bs.close_reason))
        if link.private_wsid == bs.wsid:
            # IRIS ends the private process with its socket; we end the link, and the
            # worker goes back to its supervisor's idle pool.
            link.close()
    if bs.announced:
        gw.announce(bs, SocketStatus.CLOSED)
    bs.out.try_send()  # a last close frame, if the kernel takes it
    bs.out.closed = True
    if bs.ws is not None:
        gw.stats["sockets_closed"] += 1
    if bs.dropped:
        gw.stats["sockets_dropped"] += 1
