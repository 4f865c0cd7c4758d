"""The link's one I/O driver, used by both ends: handshake, read, write, heartbeat.

A :class:`Link` is one authenticated connection between a gateway and an app-server
worker. It owns the socket: a reader task turns bytes into events and hands them to a
:class:`LinkHandler` (the gateway, or a worker's runtime), a writer task sends what is
queued in as few system calls as it can, and a heartbeat task proves the peer alive.
What the frames *mean* is the handler's business.

Frames queued on an idle link leave when the task step that queued them ends (a trio
instrument, :class:`_Corks`), all of that step's frames for that link in one system
call: a handshake's Registry announcement and its Open, or a worker's group joins and
its Accept, cost one send and wake the peer once, not two or three times. Nothing
waits for a timer (unlike TCP_CORK): a step is synchronous, so a frame leaves
microseconds after it was queued.

:func:`open_link` is the gateway's side of the handshake (connect, Hello, Welcome);
:func:`accept_link` is the app server's (Challenge, verify the Hello). Both go through
:class:`~gateway.link.connection.LinkConnection`, so no frame leaves unchecked.
"""

from __future__ import annotations

import logging
import socket
from typing import Protocol

import trio
from trio.lowlevel import RunVar, Task

from gateway.link.codec import Frame
from gateway.link.connection import PROTOCOL_VERSION, LinkConnection, LinkState, Role
from gateway.link.errors import LinkProtocolError, LinkRefused, LinkUsageError
from gateway.link.events import Event, Heartbeat, Hello, Refused, Welcome
from gateway.link.net import (
    READS_PER_YIELD,
    SendBuffer,
    SendOverflow,
    connect_tcp,
    receive_some,
)

__all__ = [
    "HANDSHAKE_TIMEOUT_S",
    "HEARTBEAT_S",
    "LINK_BUFFER_LIMIT",
    "Link",
    "LinkHandler",
    "accept_link",
    "open_link",
]

log = logging.getLogger(__name__)

#: Each link sends a heartbeat this often; one silent for three periods is ended, so a
#: hung peer is detected within three to four periods (a dead one at once: its socket
#: closes).
HEARTBEAT_S = 5.0
#: How long the handshake may take, either side.
HANDSHAKE_TIMEOUT_S = 10.0
#: Bytes queued towards the peer before the link is judged stuck and closed.
LINK_BUFFER_LIMIT = 256 * 1024 * 1024


class _Corks(trio.abc.Instrument):
    """The links whose frames wait for the end of the current task step."""

    def __init__(self) -> None:
        self.links: list[Link] = []

    def after_task_step(self, task: Task) -> None:
        """Send what the step queued on each link, once per link."""
        if self.links:
            links, self.links = self.links, []
            for link in links:
                try:
                    link.uncork()
                except Exception:  # trio would drop the instrument: no link would send
                    log.exception("link %d: could not send; closing it", link.id)
                    link.close()


_CORKS: RunVar[_Corks] = RunVar("wsgate_link_corks")


def _corks() -> _Corks:
    """This trio run's :class:`_Corks` (installed by the first link)."""
    try:
        return _CORKS.get()
    except LookupError:
        corks = _Corks()
        trio.lowlevel.add_instrument(corks)
        _CORKS.set(corks)
        return corks


class LinkHandler(Protocol):
    """What a link reports to: the gateway, or a worker's runtime."""

    def link_event(self, link: Link, event: Event) -> None:
        """An event arrived on a link."""

    def link_batch_done(self, link: Link) -> None:
        """Every event of one read has been handled (flush what they queued)."""

    def link_lost(self, link: Link) -> None:
        """A link closed; its sockets need a decision."""


class Link:
    """One authenticated connection between a gateway and an app-server worker."""

    def __init__(self, sock: socket.socket, conn: LinkConnection, *, worker_pid: int,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        self.sock = sock
        self.conn = conn
        #: The link's number: the same in the gateway's log and the worker's.
        self.id = conn.link_id
        #: The gateway at the other end (on a worker), or this gateway's own id.
        self.gateway_id = conn.gateway_id
        self.worker_pid = worker_pid
        self.out = SendBuffer(sock, limit=LINK_BUFFER_LIMIT)
        #: A heartbeat goes out this often; a peer silent for three periods is dead.
        self.heartbeat_s = heartbeat_s
        self.up = True
        self.since = trio.current_time()
        self.frames_in = 0
        self.frames_out = 0
        self._wakeup = trio.Event()
        self._writing = False
        self._corks = _corks()
        #: Frames wait for the end of this task step (see the module docstring).
        self._corked = False
        self._drained = trio.Event()
        self._last_heard = trio.current_time()
        self._closed = trio.Event()

    def send(self, event: Event) -> None:
        """Queue one event for the peer (nothing, once the link is down).

        Raises :class:`~gateway.link.errors.FrameTooBig` for an event that does not fit.
        """
        if self.up:
            self._queue(self.conn.send(event))

    def send_frame(self, frame: Frame) -> None:
        """Queue a frame encoded once for many links (checked by this link's connection)."""
        if self.up:
            self._queue(self.conn.send_frame(frame))

    def _queue(self, data: bytes) -> None:
        idle = not self.out.pending and not self._writing
        try:
            self.out.push(data)
        except SendOverflow as exc:
            log.error("link %d (worker pid %d) stuck: %s; closing it", self.id,
                      self.worker_pid, exc)
            self.close()
            return
        self.frames_out += 1
        if self._corked:
            return  # it leaves with the step's other frames
        # An idle link sends when this task step ends (latency, and one call for the
        # step's frames); a busy one leaves it to the writer task, which sends
        # everything queued meanwhile in one call (throughput).
        if idle:
            self._corked = True
            self._corks.links.append(self)
        else:
            self._wakeup.set()

    def uncork(self) -> None:
        """Send what this task step queued (the end of a step: :class:`_Corks`)."""
        self._corked = False
        if self.up and not self._writing and not self.out.try_send():
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
        """End the link; :meth:`run` returns soon after. What this task step queued on
        an idle link still leaves (as it would have without the cork)."""
        if self.up:
            if self._corked:
                self.out.try_send()
            self.up = False
            self._closed.set()
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
        except LinkUsageError:
            log.exception("link %d (worker pid %d): misused; closing it", self.id,
                          self.worker_pid)
        except trio.ClosedResourceError:
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
                    log.warning("link %d (worker pid %d): the peer hung up", self.id,
                                self.worker_pid)
                    self.close()
                    return
        except trio.ClosedResourceError:
            self.close()

    async def _heartbeat(self) -> None:
        seq = 0
        while True:
            await trio.sleep(self.heartbeat_s)
            silent = trio.current_time() - self._last_heard
            if silent > 3 * self.heartbeat_s:
                log.error("link %d (worker pid %d) silent for %.0f s; closing it", self.id,
                          self.worker_pid, silent)
                self.close()
                return
            seq += 1
            self.send(Heartbeat(seq))


async def _next_handshake_event(conn: LinkConnection, sock: socket.socket, peer: str
                                ) -> Event:
    while True:
        event = conn.next_event()
        if event is not None:
            return event
        data = await receive_some(sock)
        if not data:
            raise LinkProtocolError(f"the {peer} closed the link during the handshake")
        conn.receive_data(data)


async def _send_now(sock: socket.socket, data: bytes) -> None:
    out = SendBuffer(sock, limit=len(data))
    out.push(data)
    await out.drain()


async def open_link(
    address: tuple[str, int], secret: bytes, gateway_id: str
) -> tuple[socket.socket, LinkConnection, Welcome]:
    """The gateway's side: connect and authenticate; raise on refusal or a bad peer.

    Returns the socket, its open connection and the app server's Welcome; the caller
    builds its :class:`Link` from them.
    """
    sock = await connect_tcp(*address)
    try:
        conn = LinkConnection(Role.GATEWAY, secret=secret)
        with trio.fail_after(HANDSHAKE_TIMEOUT_S):
            await _next_handshake_event(conn, sock, "app server")  # the Challenge
            await _send_now(sock, conn.send(Hello(PROTOCOL_VERSION, gateway_id)))
            reply = await _next_handshake_event(conn, sock, "app server")
        if isinstance(reply, Refused):
            raise LinkRefused(reply.reason, busy=reply.busy)
        assert isinstance(reply, Welcome)
        return sock, conn, reply
    except BaseException:
        sock.close()
        raise


async def accept_link(sock: socket.socket, secret: bytes) -> LinkConnection:
    """The app server's side: challenge the gateway and verify its Hello.

    Returns the connection in ``SEND_WELCOME``: the caller sends the Welcome (or a
    refusal) once it knows which worker takes the link. A gateway that fails the
    challenge is told so (``Refused``) before :class:`LinkAuthError` is raised.
    """
    conn = LinkConnection(Role.APPSERVER, secret=secret)
    with trio.fail_after(HANDSHAKE_TIMEOUT_S):
        await _send_now(sock, conn.initiate())
        try:
            await _next_handshake_event(conn, sock, "gateway")  # the verified Hello
        except LinkProtocolError as exc:
            if conn.state is LinkState.REFUSING:
                await _send_now(sock, conn.refuse("authentication failed"))
            raise exc from None
    return conn
