"""The gateway: holds the browsers' sockets and multiplexes them over links to workers.

IRIS's Web Gateway in one trio process. :class:`Gateway` accepts browser connections
(handed to :mod:`gateway.http`, and to :mod:`gateway.websocket` on upgrade), keeps the
:class:`~gateway.table.ConnectionTable`, and handles what the workers send over the
links: handshake answers, writes by WebSocketID, closes and ``EndServer`` requests.
"""

from __future__ import annotations

import itertools
import logging
import socket
from collections import Counter
from collections.abc import Iterable

import trio

from gateway.codec import encode_frame
from gateway.config import GatewayConfig
from gateway.frames import (
    Accept,
    Close,
    End,
    Ended,
    Event,
    Group,
    Handoff,
    Reject,
    SocketState,
    SocketStatus,
    Write,
    WriteGroup,
    WriteMany,
)
from gateway.links import Link, LinkPool
from gateway.net import listen_tcp
from gateway.table import BrowserSocket, ConnectionTable, SocketPhase
from gateway.wsframe import encode_message

__all__ = ["Gateway", "serve_gateway"]

log = logging.getLogger(__name__)


class Gateway:
    """One gateway process's state; see the module docstring."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.id = config.gateway_id
        self.table = ConnectionTable()
        self.links = LinkPool(
            self, config.appserver, size=config.pool, secret=config.secret,
            gateway_id=config.gateway_id,
        )
        self.stats: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._dirty: set[BrowserSocket] = set()
        self._nursery: trio.Nursery | None = None
        self._classes: frozenset[str] = frozenset()
        self._first_link = trio.Event()

    @property
    def nursery(self) -> trio.Nursery:
        """The nursery that outlives every socket (drain tasks run here)."""
        assert self._nursery is not None, "the gateway is not serving"
        return self._nursery

    @property
    def classes(self) -> frozenset[str]:
        """Server classes the app server registered, as ``namespace/Package.Class``.

        Remembered from the last link that came up, so that a moment with no link up
        (a private socket's link closing before its replacement opens) queues new
        sockets instead of refusing them.
        """
        return self._classes

    async def wait_linked(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the first link ever; True once there is one."""
        with trio.move_on_after(timeout_s):
            while not self._classes:
                await self._first_link.wait()
        return bool(self._classes)

    def new_wsid(self) -> str:
        """A WebSocketID unique across gateways: ``<gateway id>-<n>``."""
        return f"{self.id}-{next(self._ids)}"

    def announce(self, bs: BrowserSocket, status: SocketStatus) -> None:
        """Tell every worker (the Registry) that a socket changed state."""
        if status is SocketStatus.CLOSED:
            if bs.unregistered or not bs.announced:
                return
            bs.unregistered = True
        self.links.broadcast(encode_frame(SocketState(bs.wsid, status, bs.session)))

    def close_socket(self, bs: BrowserSocket, code: int, reason: str) -> bool:
        """Close a browser socket from the server side; False if it was closing already.

        The Registry hears of it now, not when the browser has answered the close, so
        that OpenServer elsewhere fails at once instead of writing into the void.
        """
        if not bs.close_from_server(code, reason):
            return False
        if bs.phase is not SocketPhase.HANDSHAKE:
            self.announce(bs, SocketStatus.CLOSED)
        self._dirty.add(bs)
        return True

    # --- serving ----------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
        """Listen, keep the links up and serve until cancelled; report the bound address."""
        from gateway.http import serve_connection  # the HTTP layer calls back into us

        listener = listen_tcp(self.config.host, self.config.port)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self.links.run)
                if self.config.session_timeout_s > 0:
                    nursery.start_soon(self._expire_idle_sockets)
                host, port = listener.getsockname()[:2]
                task_status.started((host, port))
                while True:
                    await trio.lowlevel.wait_readable(listener)
                    # Take every pending connection per wake: connect storms stay cheap.
                    while True:
                        try:
                            sock, address = listener.accept()
                        except BlockingIOError:
                            break
                        except OSError as exc:  # EMFILE and friends: log, back off
                            log.error("accept failed: %s", exc)
                            await trio.sleep(0.1)
                            break
                        sock.setblocking(False)
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        nursery.start_soon(serve_connection, self, sock, address[0])
        finally:
            listener.close()

    async def close_all(self, code: int, reason: str, grace_s: float) -> None:
        """Close every browser socket (e.g. 1001 on shutdown) and wait up to ``grace_s``
        for the closing handshakes to finish."""
        for bs in self.table:
            if self.close_socket(bs, code, reason):
                bs.flush(self.nursery)
        with trio.move_on_after(grace_s):
            await self.table.wait_empty()

    async def _expire_idle_sockets(self) -> None:
        timeout = self.config.session_timeout_s
        while True:
            await trio.sleep(min(timeout / 4, 5.0))
            now = trio.current_time()
            for bs in self.table:
                if bs.phase is SocketPhase.OPEN and now - bs.last_activity > timeout:
                    log.info("wsid=%s closed: no activity for %.0f s (session timeout)",
                             bs.wsid, now - bs.last_activity)
                    self.stats["sockets_timed_out"] += 1
                    if self.close_socket(bs, 1001, "session timed out"):
                        bs.flush(self.nursery)

    # --- the links (LinkHandler) --------------------------------------------------------

    def link_up(self, link: Link) -> None:
        """Send a new link the Registry snapshot before anything else."""
        self._classes = link.classes
        self._first_link.set()
        for bs in self.table:
            if bs.phase is SocketPhase.HANDSHAKE:
                status = SocketStatus.CONNECTING
            elif bs.phase is SocketPhase.OPEN:
                status = SocketStatus.SHARED if bs.shared else SocketStatus.PRIVATE
            else:
                continue
            link.send(SocketState(bs.wsid, status, bs.session))

    def link_event(self, link: Link, event: Event) -> None:
        """Dispatch one event from a worker."""
        if isinstance(event, Write):
            self._handle_write(link, event)
        elif isinstance(event, WriteGroup):
            self._handle_write_group(event)
        elif isinstance(event, WriteMany):
            self._handle_write_many(event)
        elif isinstance(event, Group):
            self._handle_group(event)
        elif isinstance(event, Accept | Reject | Handoff):
            self._handle_reply(link, event)
        elif isinstance(event, Close):
            self._handle_close(link, event)
        elif isinstance(event, End):
            self._handle_end(link, event)
        else:  # the protocol's table admits nothing else from a worker
            log.error("link %d: unexpected %s", link.id, type(event).__name__)

    def link_batch_done(self, link: Link) -> None:
        """Flush every socket the batch wrote to: one send per socket per batch."""
        dirty, self._dirty = self._dirty, set()
        nursery = self.nursery
        for bs in dirty:
            bs.flush(nursery)

    def link_lost(self, link: Link) -> None:
        """The worker behind ``link`` is gone: its sockets' servers are gone with it."""
        for wsid in list(link.sockets):
            bs = self.table.get(wsid)
            if bs is None:
                continue
            bs.worker_told = True
            if bs.phase is SocketPhase.HANDSHAKE:
                bs.reply_ready.set()  # no reply will come: the handshake fails (502)
            else:
                self.close_socket(bs, 1011, "app server worker lost")
                bs.flush(self.nursery)
        link.sockets.clear()

    def _handle_reply(self, link: Link, event: Accept | Reject | Handoff) -> None:
        bs = self.table.get(event.wsid)
        if bs is None or bs.phase is not SocketPhase.HANDSHAKE or bs.link is not link:
            log.warning("link %d: answer for unknown handshake wsid=%s", link.id, event.wsid)
            return
        bs.reply = event
        if isinstance(event, Accept) and not event.shared:
            # Now, not when the handshake task resumes: pick() must not lend this link
            # to another socket in between.
            link.dedicate(event.wsid)
        bs.reply_ready.set()

    def _handle_write(self, link: Link, event: Write) -> None:
        bs = self.table.get(event.wsid)
        if bs is None:
            self.stats["writes_dropped"] += 1
            log.debug("wsid=%s write dropped: no such socket", event.wsid)
            return
        if not bs.shared and bs.link is not link:
            self.stats["writes_dropped"] += 1
            log.warning("wsid=%s write from link %d refused: the socket is private to "
                        "link %d", event.wsid, link.id, bs.link.id if bs.link else -1)
            return
        frame = encode_message(event.payload, binary=event.binary)
        if bs.queue(frame, shared_only=link is not bs.link):
            bs.last_activity = trio.current_time()
            self.stats["frames_out"] += 1
            self.stats["bytes_out"] += len(event.payload)
            self._dirty.add(bs)

    def _fan_out(self, sockets: Iterable[BrowserSocket], binary: bool, payload: bytes) -> None:
        """Queue one frame, encoded once, on every shared socket given."""
        frame = encode_message(payload, binary=binary)
        now = trio.current_time()
        dirty = self._dirty
        sent = 0
        for bs in sockets:
            if bs.shared and bs.queue(frame, shared_only=True):
                bs.last_activity = now
                dirty.add(bs)
                sent += 1
        self.stats["frames_out"] += sent
        self.stats["bytes_out"] += sent * len(payload)

    def _handle_write_group(self, event: WriteGroup) -> None:
        members = self.table.groups.get(event.name)
        if members:
            self._fan_out(members, event.binary, event.payload)

    def _handle_write_many(self, event: WriteMany) -> None:
        table = self.table
        found = [bs for bs in map(table.get, event.wsids) if bs is not None]
        self.stats["writes_dropped"] += len(event.wsids) - len(found)
        self._fan_out(found, event.binary, event.payload)

    def _handle_group(self, event: Group) -> None:
        bs = self.table.get(event.wsid)
        if bs is None or bs.phase in (SocketPhase.CLOSING, SocketPhase.CLOSED):
            return
        if event.join:
            self.table.join(bs, event.name)
        else:
            self.table.leave(bs, event.name)

    def _handle_close(self, link: Link, event: Close) -> None:
        bs = self.table.get(event.wsid)
        if bs is None:
            return
        if link is bs.link:
            bs.worker_told = True
        self.close_socket(bs, event.code, event.reason)

    def _handle_end(self, link: Link, event: End) -> None:
        bs = self.table.get(event.wsid)
        first = False
        if bs is not None and not bs.worker_told:
            first = self.close_socket(bs, event.code, event.reason)
            if first:
                bs.worker_told = True
                home = bs.link
                if home is not None and home is not link and home.up:
                    home.send(Close(bs.wsid, event.code, event.reason, ended=True))
        link.send(Ended(event.request_id, first))


async def serve_gateway(
    config: GatewayConfig,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a gateway until cancelled (``await nursery.start(serve_gateway, config)``)."""
    await Gateway(config).serve(task_status=task_status)
