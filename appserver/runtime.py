"""What a worker process knows and does: its links, its sockets, the Registry, the store.

One :class:`WorkerRuntime` exists per worker (IRIS: the process's context), and
``WebSocket`` instances find it through :func:`appserver.context.current_runtime`. The
runtime is also the :class:`~gateway.link.driver.LinkHandler` of the worker's links: it
dispatches what the gateway sends, and it is the one place that writes to links on
behalf of server classes.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Mapping

import trio

from appserver.bus import Bus
from appserver.csp import WebSocket
from appserver.errors import SocketGone, WebSocketError
from appserver.lifecycle import (
    adopt_socket,
    after_server,
    finish_orphan,
    resume_socket,
    serve_resumed,
    serve_socket,
)
from appserver.port import SocketPort
from appserver.registry import Lookup, SocketRegistry, parse_wsid
from gateway.link.codec import encode
from gateway.link.driver import Link
from gateway.link.errors import FrameTooBig
from gateway.link.events import (
    Adopt,
    Close,
    Data,
    Done,
    End,
    Ended,
    Event,
    Group,
    Open,
    Reject,
    Resume,
    SocketState,
    Write,
    WriteGroup,
    WriteMany,
)
from store.api import Store

__all__ = ["LINK_HIGH_WATER_BYTES", "WorkerRuntime"]

log = logging.getLogger(__name__)

#: Bytes queued towards the gateway above which ``Write`` waits for the link to drain.
LINK_HIGH_WATER_BYTES = 4 * 1024 * 1024


class _PendingEnd:
    """An ``End`` sent to a gateway, waiting for its ``Ended``."""

    __slots__ = ("done", "first", "link")

    def __init__(self, link: Link) -> None:
        self.link = link
        self.done = trio.Event()
        self.first = False


class WorkerRuntime:
    """One worker's state; see the module docstring."""

    def __init__(
        self, *, appserver_id: str, classes: Mapping[str, type[WebSocket]], store: Store,
        settings: Mapping[str, str] | None = None, pid: int | None = None,
        node_ttl_s: float = 15.0, bus: Bus | None = None,
    ) -> None:
        #: The worker's process id (tests that run several workers in one process give
        #: each its own number).
        self.pid = os.getpid() if pid is None else pid
        self.appserver_id = appserver_id
        self.classes = dict(classes)
        self.store = store
        self.settings = dict(settings or {})
        self.registry = SocketRegistry()
        self.links: dict[int, Link] = {}
        self.ports: dict[str, SocketPort] = {}
        self._ends: dict[int, _PendingEnd] = {}
        self._request_ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._port_gone = trio.Event()
        #: A gateway not renewed for this long counts as gone (appserver/leases.py).
        self.node_ttl_s = node_ttl_s
        #: Sweeps for lapsed gateways' sockets this worker has run (for /metrics).
        self.sweeps = 0
        #: The way to gateways of other nodes (appserver/bus.py), when there are nodes.
        self.bus = bus
        #: The worker is stopping: it takes no new socket, and its sockets stay open at
        #: their gateways, which resume them elsewhere.
        self.stopping = False

    @property
    def nursery(self) -> trio.Nursery:
        """Where Server() tasks run."""
        assert self._nursery is not None, "the worker runtime is not running"
        return self._nursery

    @nursery.setter
    def nursery(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    # --- writes and ends, from any instance ---------------------------------------------

    def link_for(self, wsid: str, port: SocketPort | None) -> Link:
        """The link a write to ``wsid`` goes out on: its home link, else one to its gateway."""
        if port is not None and port.link.up:
            return port.link
        parsed = parse_wsid(wsid)
        gateway = parsed[0] if parsed else ""
        for link in self.links.values():
            if link.up and link.gateway_id == gateway:
                return link
        raise SocketGone(f"socket {wsid}: this worker has no link to its gateway {gateway!r}",
                         wsid=wsid)

    def _check_open(self, wsid: str, port: SocketPort | None, what: str) -> None:
        if (port is not None and port.closed) or self.registry.lookup(wsid) is Lookup.CLOSED:
            raise SocketGone(f"socket {wsid} is closed: {what}", wsid=wsid)

    async def write(self, wsid: str, binary: bool, payload: bytes,
                    port: SocketPort | None, *, group: str = "", seq: int = 0) -> None:
        """Send a message to a browser socket, from whichever instance asks (``group``
        and ``seq``: message ``seq`` of that group's sequence); a socket of another
        node's gateway is reached over the bus."""
        self._check_open(wsid, port, "the write was not sent")
        event = Write(wsid, binary, payload, group, seq)
        try:
            link = self.link_for(wsid, port)
        except SocketGone:
            parsed = parse_wsid(wsid)
            if self.bus is None or parsed is None:
                raise
            try:
                self.bus.send(parsed[0], encode(event).data)
            except FrameTooBig as exc:
                raise WebSocketError(exc.reason, wsid=wsid) from None
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        try:
            link.send(event)
        except FrameTooBig as exc:
            raise WebSocketError(exc.reason, wsid=wsid) from None
        if link.out.pending > LINK_HIGH_WATER_BYTES:
            await link.wait_below(LINK_HIGH_WATER_BYTES)  # a slow gateway slows writers
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    def gateway_links(self) -> list[Link]:
        """One link to each gateway this worker is linked to (a broadcast's routes)."""
        chosen: dict[str, Link] = {}
        for link in self.links.values():
            if link.up:
                chosen.setdefault(link.gateway_id, link)
        return list(chosen.values())

    async def write_group(self, name: str, binary: bool, payload: bytes, seq: int = 0) -> None:
        """One frame per gateway: each fans the message out to the group's sockets."""
        try:
            frame = encode(WriteGroup(name, binary, payload, seq))
        except FrameTooBig as exc:
            raise WebSocketError(exc.reason) from None
        links = self.gateway_links()
        for link in links:
            link.send_frame(frame)
        if self.bus is not None:  # and once to each other gateway, over the bus
            self.bus.broadcast(frame.data, [link.gateway_id for link in links])
        await trio.lowlevel.checkpoint_if_cancelled()

    async def write_many(self, wsids: list[str], binary: bool, payload: bytes) -> None:
        """One frame per gateway listing that gateway's sockets."""
        by_gateway: dict[str, list[str]] = {}
        for wsid in wsids:
            parsed = parse_wsid(wsid)
            if parsed is not None:
                by_gateway.setdefault(parsed[0], []).append(wsid)
        links = {link.gateway_id: link for link in self.gateway_links()}
        for gateway, ids in by_gateway.items():
            try:
                frame = encode(WriteMany(tuple(ids), binary, payload))
            except FrameTooBig as exc:
                raise WebSocketError(exc.reason) from None
            if gateway in links:
                links[gateway].send_frame(frame)
            elif self.bus is not None:
                self.bus.send(gateway, frame.data)
        await trio.lowlevel.checkpoint_if_cancelled()

    def group(self, wsid: str, port: SocketPort | None, name: str, *, join: bool,
              since: int | None = None, latest: bool = False) -> None:
        """Ask the socket's gateway to add it to (or remove it from) a group."""
        try:
            self.link_for(wsid, port).send(Group(wsid, name, join, since, latest))
        except FrameTooBig as exc:
            raise WebSocketError(exc.reason, wsid=wsid) from None

    async def end(self, wsid: str, port: SocketPort | None) -> bool:
        """Ask the gateway to close ``wsid``; True if this call closed it (EndServer).

        The gateway answers True to exactly one ``EndServer`` of a socket, whichever
        worker sent it: that caller runs OnPostServer.
        """
        self._check_open(wsid, port, "EndServer has nothing to end")
        link = self.link_for(wsid, port)
        request_id = next(self._request_ids)
        pending = _PendingEnd(link)
        self._ends[request_id] = pending
        link.send(End(request_id, wsid))
        try:
            await pending.done.wait()
        finally:
            self._ends.pop(request_id, None)
        self.registry.mark_closed(wsid)
        if port is not None:
            port.mark_closed(1000, ended=pending.first)
        return pending.first

    def post_server_ran(self, wsid: str, port: SocketPort | None) -> None:
        """Tell the socket's gateway that its OnPostServer ran here (``Done``)."""
        try:
            link = self.link_for(wsid, port)
        except SocketGone:
            return  # its gateway is gone: nobody is waiting for it
        link.send(Done(wsid))

    def forget_port(self, port: SocketPort) -> None:
        """A socket's life on this worker is over."""
        if self.ports.get(port.wsid) is port:
            del self.ports[port.wsid]
        self._port_gone.set()
        self._port_gone = trio.Event()

    async def wait_no_ports(self) -> None:
        """Wait until no socket is left on this worker."""
        while self.ports:
            await self._port_gone.wait()

    async def drain_link(self, link: Link) -> None:
        """Wait until every socket that came over ``link`` has finished on this worker.

        A worker is lent out again only after this: a private socket's worker serves
        nothing else until its Server() has returned (and OnPostServer has run).
        """
        while any(port.link is link for port in self.ports.values()):
            await self._port_gone.wait()

    # --- LinkHandler --------------------------------------------------------------------

    def link_up(self, link: Link) -> None:
        """A link from a gateway was handed to this worker."""
        self.links[link.id] = link

    def link_event(self, link: Link, event: Event) -> None:
        """Dispatch one event from the gateway."""
        if isinstance(event, Data):
            self._handle_data(event)
        elif isinstance(event, SocketState):
            self.registry.update(event.wsid, event.status, event.session)
        elif isinstance(event, Open):
            if self.stopping:
                link.send(Reject(event.wsid, 503, "the app server is stopping; try again"))
            else:
                self.nursery.start_soon(serve_socket, self, link, event)
        elif isinstance(event, Adopt):
            self.nursery.start_soon(adopt_socket, self, link, event)
        elif isinstance(event, Resume):
            self._handle_resume(link, event)
        elif isinstance(event, Close):
            self._handle_close(event)
        elif isinstance(event, Ended):
            pending = self._ends.get(event.request_id)
            if pending is not None:
                pending.first = event.first
                pending.done.set()
        else:
            log.error("link %d: unexpected %s from the gateway", link.id, type(event).__name__)

    def link_batch_done(self, link: Link) -> None:
        """Nothing to flush: the link's writer coalesces on its own."""

    def link_lost(self, link: Link) -> None:
        """The gateway link closed: its open sockets are detached (the gateway, if it
        lives, resumes them on another worker), and pending EndServers end."""
        self.links.pop(link.id, None)
        for port in list(self.ports.values()):
            # The registry keeps the socket: its gateway resumes it elsewhere, or, if
            # the gateway is gone, its lease lapses and a sweep runs its OnPostServer.
            if port.link is link and port.detach() and not port.serving:
                self.forget_port(port)
        for pending in self._ends.values():
            if pending.link is link:
                pending.done.set()

    def _handle_resume(self, link: Link, event: Resume) -> None:
        if self.stopping:
            return  # this worker's links close soon: the gateway resumes it elsewhere
        if event.ended:
            self.nursery.start_soon(finish_orphan, self, link.gateway_id, event.wsid,
                                    event.class_name, event.state)
            return
        # The port exists before the unacknowledged messages that follow the Resume.
        port = resume_socket(self, link, event)
        if port is not None:
            self.nursery.start_soon(serve_resumed, self, port)

    def _handle_data(self, event: Data) -> None:
        port = self.ports.get(event.wsid)
        if port is None:
            log.debug("wsid=%s: data for a socket this worker does not serve", event.wsid)
            return
        item: str | bytes
        if event.binary:
            item = event.payload
        else:
            item = event.payload.decode("utf-8", errors="surrogateescape")
        if not port.deliver(event.seq, item):
            port.link.send(Close(port.wsid, 1008, "too much unread data"))
            self._closed(port, 1008, ended=False)
            return
        if not port.serving:
            after_server(self, port)

    def _handle_close(self, event: Close) -> None:
        port = self.ports.get(event.wsid)
        self.registry.mark_closed(event.wsid)
        if port is not None:
            self._closed(port, event.code, ended=event.ended)

    def _closed(self, port: SocketPort, code: int, *, ended: bool) -> None:
        port.mark_closed(code, ended=ended)
        if not port.serving:
            after_server(self, port)
