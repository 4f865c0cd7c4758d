"""The gateway's links to the app server: connect, authenticate, read, write, heartbeat.

A :class:`Link` is one authenticated connection to one app-server worker process. The
:class:`LinkPool` keeps ``pool`` of them up (IRIS: the Web Gateway's connection pool)
and replaces any that drops. What the frames *mean* is the gateway's business: each
link hands its events to a :class:`LinkHandler`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from typing import Protocol

import trio

from gateway.frames import Event, Heartbeat, Hello, LinkProtocolError, Refused, Welcome
from gateway.net import (
    READS_PER_YIELD,
    SendBuffer,
    SendOverflow,
    connect_tcp,
    receive_some,
)
from gateway.protocol import PROTOCOL_VERSION, LinkConnection, LinkUsageError, Role

__all__ = ["HEARTBEAT_S", "Link", "LinkHandler", "LinkPool", "LinkRefused"]

log = logging.getLogger(__name__)

#: Each link sends a heartbeat this often; one silent for three periods is ended.
HEARTBEAT_S = 5.0
#: How long the handshake with the app server may take.
HANDSHAKE_TIMEOUT_S = 10.0
#: Bytes queued towards one worker before the link is judged stuck and closed.
LINK_BUFFER_LIMIT = 256 * 1024 * 1024
_RETRY_MAX_S = 1.0


class LinkRefused(Exception):
    """The app server refused the link (``busy`` when all its workers are taken)."""

    def __init__(self, reason: str, *, busy: bool) -> None:
        super().__init__(reason)
        self.busy = busy


class LinkHandler(Protocol):
    """What a link reports to: the gateway."""

    def link_up(self, link: Link) -> None:
        """A link finished its handshake and joined the pool."""

    def link_event(self, link: Link, event: Event) -> None:
        """An event arrived on a link."""

    def link_batch_done(self, link: Link) -> None:
        """Every event of one read has been handled (flush what they queued)."""

    def link_lost(self, link: Link) -> None:
        """A link closed; its sockets need a decision."""


class Link:
    """One authenticated connection between a gateway and an app-server worker.

    Both ends use this class: the gateway with itself as the :class:`LinkHandler`, a
    worker with its runtime.
    """

    def __init__(
        self, link_id: int, sock: socket.socket, conn: LinkConnection, *, worker_pid: int,
        appserver_id: str = "", classes: Iterable[str] = (),
    ) -> None:
        self.id = link_id
        self.sock = sock
        self.conn = conn
        self.worker_pid = worker_pid
        self.appserver_id = appserver_id
        self.classes = frozenset(classes)
        #: The gateway at the other end (on a worker) or this gateway's own id.
        self.gateway_id = conn.gateway_id
        #: The WebSocketID this link is dedicated to (private mode), or None (pool).
        self.private_wsid: str | None = None
        #: Sockets whose inbound traffic goes over this link (their home link).
        self.sockets: set[str] = set()
        self.out = SendBuffer(sock, limit=LINK_BUFFER_LIMIT)
        self.up = True
        self.since = trio.current_time()
        self.frames_in = 0
        self.frames_out = 0
        self._wakeup = trio.Event()
        self._writing = False
        self._drained = trio.Event()
        self._last_heard = trio.current_time()
        self._closed = trio.Event()
        #: Set when the link stops taking new sockets: it closed, or became private.
        self.left_pool = trio.Event()

    @property
    def mode(self) -> str:
        """``shared`` for a pool link, ``private`` for a link dedicated to one socket."""
        return "shared" if self.private_wsid is None else "private"

    def dedicate(self, wsid: str) -> None:
        """Give the link to one private socket for the socket's whole life."""
        self.private_wsid = wsid
        self.left_pool.set()

    def send(self, event: Event) -> None:
        """Queue one event for the worker."""
        self.send_frame(self.conn.send(event))

    def send_frame(self, frame: bytes) -> None:
        """Queue an already-encoded frame (a broadcast encodes once for every link)."""
        if not self.up:
            return
        idle = not self.out.pending and not self._writing
        try:
            self.out.push(frame)
        except SendOverflow as exc:
            log.error("link %d (worker pid %d) stuck: %s; closing it", self.id,
                      self.worker_pid, exc)
            self.close()
            return
        self.frames_out += 1
        # An idle link sends at once (latency); a busy one leaves it to the writer task,
        # which sends everything queued meanwhile in one call (throughput).
        if not (idle and self.out.try_send()):
            self._wakeup.set()

    async def wait_below(self, limit: int) -> None:
        """Wait until at most ``limit`` bytes are queued (or the link is down).

        Flow control for writers: only the link's writer task sends, since trio lets
        one task at a time wait to write on a socket; the others wait for it here.
        """
        while self.up and self.out.pending > limit:
            self._wakeup.set()
            await self._drained.wait()

    def close(self) -> None:
        """End the link; :meth:`run` returns soon after."""
        if self.up:
            self.up = False
            self._closed.set()
            self.left_pool.set()
            self._drained.set()

    async def run(self, handler: LinkHandler) -> None:
        """Read, write and heartbeat until the link ends; then report it lost."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer)
                nursery.start_soon(self._heartbeat)
                nursery.start_soon(self._reader, handler)
                await self._closed.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.up = False
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()
            handler.link_lost(self)

    async def _reader(self, handler: LinkHandler) -> None:
        reads = 0
        try:
            while True:
                # Events first: bytes handed over with the link may already hold frames.
                for event in self.conn.events():
                    self.frames_in += 1
                    if isinstance(event, Heartbeat):
                        if not event.reply:
                            self.send(Heartbeat(event.seq, reply=True))
                        continue
                    try:
                        handler.link_event(self, event)
                    except Exception:
                        # A bug handling one frame must not take the link (and every
                        # socket on it) down with it.
                        log.exception("link %d: internal error handling %s", self.id,
                                      type(event).__name__)
                handler.link_batch_done(self)
                if self.conn.eof:
                    log.warning("link %d (worker pid %d): the peer closed it", self.id,
                                self.worker_pid)
                    break
                reads += 1
                if reads % READS_PER_YIELD == 0:
                    await trio.lowlevel.checkpoint()
                data = await receive_some(self.sock, checkpoint=False)
                self._last_heard = trio.current_time()
                self.conn.receive_data(data)
        except LinkProtocolError as exc:
            log.error("link %d (worker pid %d) closed: %s", self.id, self.worker_pid,
                      exc.reason)
        except (trio.ClosedResourceError, LinkUsageError):
            pass
        self.close()

    async def _writer(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                self._writing = True
                try:
                    await self.out.drain()
                finally:
                    self._writing = False
                    self._drained.set()
                    self._drained = trio.Event()
                if self.out.closed:
                    log.warning("link %d (worker pid %d): the app server hung up",
                                self.id, self.worker_pid)
                    self.close()
                    return
        except trio.ClosedResourceError:
            self.close()

    async def _heartbeat(self) -> None:
        seq = 0
        while True:
            await trio.sleep(HEARTBEAT_S)
            silent = trio.current_time() - self._last_heard
            if silent > 3 * HEARTBEAT_S:
                log.error("link %d (worker pid %d) silent for %.0f s; closing it", self.id,
                          self.worker_pid, silent)
                self.close()
                return
            seq += 1
            self.send(Heartbeat(seq))


async def _next_handshake_event(conn: LinkConnection, sock: socket.socket) -> Event:
    while True:
        event = conn.next_event()
        if event is not None:
            return event
        data = await receive_some(sock)
        if not data:
            raise LinkProtocolError("the app server closed the link during the handshake")
        conn.receive_data(data)


async def open_link(
    link_id: int, address: tuple[str, int], secret: bytes, gateway_id: str
) -> Link:
    """Connect to the app server and authenticate; raise on refusal or a bad peer."""
    sock = await connect_tcp(*address)
    try:
        conn = LinkConnection(Role.GATEWAY, secret=secret)
        with trio.fail_after(HANDSHAKE_TIMEOUT_S):
            await _next_handshake_event(conn, sock)  # the Challenge
            hello = SendBuffer(sock, limit=4096)
            hello.push(conn.send(Hello(PROTOCOL_VERSION, gateway_id)))
            await hello.drain()
            reply = await _next_handshake_event(conn, sock)
        if isinstance(reply, Refused):
            raise LinkRefused(reply.reason, busy=reply.busy)
        assert isinstance(reply, Welcome)
        return Link(link_id, sock, conn, worker_pid=reply.worker_pid,
                    appserver_id=reply.appserver_id, classes=reply.classes)
    except BaseException:
        sock.close()
        raise


class LinkPool:
    """Keeps ``size`` pool links to one app server up, and lends them to new sockets."""

    def __init__(
        self, handler: LinkHandler, address: tuple[str, int], *, size: int, secret: bytes,
        gateway_id: str,
    ) -> None:
        self.handler = handler
        self.address = address
        self.size = size
        self.secret = secret
        self.gateway_id = gateway_id
        self.links: dict[int, Link] = {}
        self._next_id = 1
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None

    @property
    def pool_links(self) -> list[Link]:
        """Links that take new sockets (not dedicated to a private one)."""
        return [link for link in self.links.values() if link.up and link.private_wsid is None]

    def all_links(self) -> Iterable[Link]:
        """Every link that is up."""
        return [link for link in self.links.values() if link.up]

    def pick(self) -> Link | None:
        """The pool link for a new socket: the one with the fewest sockets."""
        candidates = self.pool_links
        if not candidates:
            return None
        return min(candidates, key=lambda link: (len(link.sockets), link.id))

    async def acquire(self, timeout_s: float) -> Link | None:
        """A pool link, waiting up to ``timeout_s`` for one (IRIS: Queued Request Timeout)."""
        with trio.move_on_after(timeout_s):
            while True:
                link = self.pick()
                if link is not None:
                    return link
                await self._changed.wait()
        return None

    def broadcast(self, frame: bytes) -> None:
        """Queue one encoded frame on every link."""
        for link in self.links.values():
            link.send_frame(frame)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self) -> None:
        """Keep the pool full, forever."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for slot in range(self.size):
                nursery.start_soon(self._keep_slot, slot)

    async def _connect(self) -> Link:
        link_id = self._next_id
        self._next_id += 1
        return await open_link(link_id, self.address, self.secret, self.gateway_id)

    async def _keep_slot(self, slot: int) -> None:
        """Keep one pool link up; when it closes or turns private, open another."""
        delay = 0.05
        last_error = ""
        while True:
            try:
                link = await self._connect()
            except (OSError, LinkProtocolError, LinkRefused, trio.TooSlowError) as exc:
                error = _describe(exc)
                if error != last_error:
                    log.warning("link slot %d: cannot link to %s:%d: %s", slot,
                                *self.address, error)
                    last_error = error
                # A link closing somewhere may free a worker soon: then retry quickly.
                with trio.move_on_after(delay) as waited:
                    await self._changed.wait()
                delay = min(delay * 2, _RETRY_MAX_S) if waited.cancelled_caught else 0.05
                continue
            delay, last_error = 0.05, ""
            self._start(link)
            await link.left_pool.wait()

    def _start(self, link: Link) -> None:
        log.info("link %d up: worker pid %d on app server %s", link.id, link.worker_pid,
                 link.appserver_id)
        assert self._nursery is not None
        self._nursery.start_soon(self._run_link, link)

    async def _run_link(self, link: Link) -> None:
        self.links[link.id] = link
        try:
            self.handler.link_up(link)
            self._notify()
            await link.run(self.handler)
        finally:
            del self.links[link.id]
            self._notify()

    async def open_dedicated(self, wsid: str, timeout_s: float) -> Link | None:
        """A new link for one private socket, retrying while the app server is busy."""
        with trio.move_on_after(timeout_s):
            while True:
                try:
                    link = await self._connect()
                except (OSError, LinkProtocolError, LinkRefused, trio.TooSlowError) as exc:
                    if not (isinstance(exc, LinkRefused) and exc.busy):
                        log.warning("wsid=%s: no dedicated link: %s", wsid, _describe(exc))
                    with trio.move_on_after(_RETRY_MAX_S):
                        await self._changed.wait()
                    continue
                link.dedicate(wsid)
                self._start(link)
                return link
        return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, LinkProtocolError):
        return exc.reason
    if isinstance(exc, LinkRefused):
        return f"refused: {exc}"
    if isinstance(exc, trio.TooSlowError):
        return "the handshake timed out"
    return str(exc) or type(exc).__name__

