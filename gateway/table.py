"""The gateway's table of open browser sockets, keyed by WebSocketID."""

from __future__ import annotations

import enum
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import CloseConnection

from gateway.frames import Accept, Handoff, Reject
from gateway.net import SendBuffer, SendOverflow

if TYPE_CHECKING:
    from gateway.links import Link

__all__ = ["BrowserSocket", "ConnectionTable", "SocketPhase"]

log = logging.getLogger(__name__)

#: How long a closing socket waits for the browser's close frame before hanging up.
CLOSE_TIMEOUT_S = 5.0


class SocketPhase(enum.Enum):
    """Where a browser socket is in its life."""

    HANDSHAKE = "handshake"  # upgrade received, waiting for the worker's OnPreServer
    OPEN = "open"
    CLOSING = "closing"  # we sent a close frame and wait for the browser's
    CLOSED = "closed"


class BrowserSocket:
    """One browser WebSocket held by the gateway.

    Frames for it are queued on :attr:`out` and leave in order; :meth:`flush` sends
    what the kernel takes at once and starts a drain task only when it takes less.
    """

    __slots__ = (
        "announced", "binary", "class_name", "client_address", "close_code", "close_reason",
        "dropped", "early", "groups", "last_activity", "link", "out", "pending_close", "phase",
        "reader_scope", "reply", "reply_ready", "session", "shared", "sock", "unregistered",
        "worker_told", "writing", "ws", "wsid",
    )

    def __init__(
        self, wsid: str, sock: socket.socket, client_address: str, class_name: str,
        *, buffer_limit: int,
    ) -> None:
        self.wsid = wsid
        self.sock = sock
        self.client_address = client_address
        self.class_name = class_name
        self.out = SendBuffer(sock, limit=buffer_limit)
        self.phase = SocketPhase.HANDSHAKE
        self.link: Link | None = None
        self.shared = True
        self.binary = False
        self.ws: Connection | None = None
        self.reply: Accept | Reject | Handoff | None = None
        #: The CSP session id (CSPSESSIONID cookie), announced with the socket.
        self.session = ""
        #: When a message last went either way (the session timeout counts from it).
        self.last_activity = trio.current_time()
        #: The groups the socket belongs to (None until it joins one: most never do).
        self.groups: set[str] | None = None
        self.reply_ready = trio.Event()
        #: Frames written before the handshake finished, sent right after the 101; the
        #: flag marks frames only a shared socket may get (from other links or groups).
        self.early: list[tuple[bytes, bool]] = []
        self.writing = False
        #: Dropped for being too slow (counted once by the gateway when it ends).
        self.dropped = False
        self.reader_scope: trio.CancelScope | None = None
        self.close_code = 1006
        self.close_reason = ""
        #: A close asked for during the handshake, carried out right after the 101.
        self.pending_close: tuple[int, str] | None = None
        #: True once the home worker knows this socket closed (it asked, or was told).
        self.worker_told = False
        #: True once every worker was told the socket exists (it must hear of its end).
        self.announced = False
        #: True once every worker was told the socket is closed (announced just once).
        self.unregistered = False

    @property
    def mode(self) -> str:
        """``shared`` or ``private`` (IRIS: SharedConnection 1 or 0)."""
        return "shared" if self.shared else "private"

    def queue(self, frame: bytes, *, shared_only: bool = False) -> bool:
        """Queue an encoded frame; False (and the socket aborted) if the peer is too slow.

        ``shared_only`` frames (writes from other links, group writes) reach a socket
        still in its handshake only if it turns out shared.
        """
        if self.phase is SocketPhase.HANDSHAKE:
            self.early.append((frame, shared_only))
            return True
        if self.phase is not SocketPhase.OPEN:
            return False
        try:
            self.out.push(frame)
        except SendOverflow as exc:
            log.warning("wsid=%s dropped: slow client (%s)", self.wsid, exc)
            self.abort(1008, "slow client")
            self.dropped = True
            return False
        return True

    def flush(self, nursery: trio.Nursery) -> None:
        """Send what the kernel takes now; hand the rest to a drain task."""
        if self.writing or self.out.try_send():
            return
        self.writing = True
        nursery.start_soon(self._drain)

    async def _drain(self) -> None:
        try:
            await self.out.drain()
        except (trio.ClosedResourceError, OSError):
            pass
        finally:
            self.writing = False

    def close_from_server(self, code: int, reason: str) -> bool:
        """Start the closing handshake (RFC 6455 section 7.1.2). False if already closing."""
        if self.phase is SocketPhase.HANDSHAKE:
            if self.pending_close is not None:
                return False
            self.pending_close = (code, reason)
            return True
        if self.phase is not SocketPhase.OPEN or self.ws is None:
            return False
        self.close_code, self.close_reason = code, reason
        if self.ws.state is ConnectionState.OPEN:
            self.out.push_unchecked(self.ws.send(CloseConnection(code=code, reason=reason)))
        self.phase = SocketPhase.CLOSING
        self._cancel_reader(CLOSE_TIMEOUT_S)
        return True

    def abort(self, code: int, reason: str) -> None:
        """Hang up at once (no closing handshake): a slow or broken peer."""
        if self.phase is SocketPhase.CLOSED:
            return
        self.close_code, self.close_reason = code, reason
        self.phase = SocketPhase.CLOSED
        self.out.closed = True
        self._cancel_reader(0)

    def _cancel_reader(self, after_s: float) -> None:
        if self.reader_scope is not None:
            self.reader_scope.deadline = min(
                self.reader_scope.deadline, trio.current_time() + after_s
            )


class ConnectionTable:
    """Every browser socket this gateway holds, by WebSocketID, and its groups."""

    def __init__(self) -> None:
        self._sockets: dict[str, BrowserSocket] = {}
        #: Group name -> member sockets: what a WriteGroup fans out to.
        self.groups: dict[str, set[BrowserSocket]] = {}
        self._emptied = trio.Event()

    def add(self, bs: BrowserSocket) -> None:
        """Register a socket; its id must be new."""
        if bs.wsid in self._sockets:
            raise KeyError(f"duplicate WebSocketID {bs.wsid}")
        self._sockets[bs.wsid] = bs

    def remove(self, wsid: str) -> None:
        """Forget a socket and its group memberships (no error if it is already gone)."""
        bs = self._sockets.pop(wsid, None)
        if bs is not None and bs.groups:
            for name in list(bs.groups):
                self.leave(bs, name)
        if not self._sockets:
            self._emptied.set()
            self._emptied = trio.Event()

    async def wait_empty(self) -> None:
        """Return once no socket is left."""
        while self._sockets:
            await self._emptied.wait()

    def join(self, bs: BrowserSocket, name: str) -> None:
        """Put a socket in a group."""
        self.groups.setdefault(name, set()).add(bs)
        if bs.groups is None:
            bs.groups = set()
        bs.groups.add(name)

    def leave(self, bs: BrowserSocket, name: str) -> None:
        """Take a socket out of a group (the group goes when it is empty)."""
        members = self.groups.get(name)
        if members is not None:
            members.discard(bs)
            if not members:
                del self.groups[name]
        if bs.groups is not None:
            bs.groups.discard(name)

    def get(self, wsid: str) -> BrowserSocket | None:
        """The socket with this id, or None."""
        return self._sockets.get(wsid)

    def __len__(self) -> int:
        return len(self._sockets)

    def __iter__(self) -> Iterator[BrowserSocket]:
        return iter(list(self._sockets.values()))
