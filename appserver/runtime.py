"""What a worker process knows and does: its links, its sockets, the Registry, the store.

One :class:`WorkerRuntime` exists per worker process (IRIS: the process's context), and
``WebSocket`` instances find it through :func:`current_runtime`, so that
``Chat.Server()`` followed by ``OpenServer(id)`` works anywhere in a worker, as
``%New()`` + ``OpenServer`` does in IRIS. The runtime is also the
:class:`~gateway.links.LinkHandler` of the worker's links: it dispatches what the
gateway sends.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Mapping

import trio

from appserver.errors import SocketGone, WebSocketError
from appserver.port import SocketPort
from appserver.registry import Lookup, SocketRegistry, parse_wsid
from appserver.websocket import WebSocket
from gateway.frames import (
    Adopt,
    Close,
    Data,
    End,
    Ended,
    Event,
    Group,
    Open,
    SocketState,
    Write,
    WriteGroup,
    WriteMany,
)
from gateway.links import Link
from gateway.protocol import MAX_PAYLOAD_BYTES
from store.aio import AsyncStore

__all__ = ["WorkerRuntime", "check_payload", "current_runtime", "install_runtime"]

log = logging.getLogger(__name__)

#: Bytes queued towards the gateway above which ``Write`` waits for the link to drain.
LINK_HIGH_WATER_BYTES = 4 * 1024 * 1024
#: How long OnPostServer may run while the worker shuts down.
SHUTDOWN_GRACE_S = 2.0

_current: WorkerRuntime | None = None


def check_payload(payload: bytes) -> None:
    """Refuse a message the link cannot carry, before it is sent."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WebSocketError(f"a message of {len(payload)} bytes is over the "
                             f"{MAX_PAYLOAD_BYTES} a link frame carries")


def current_runtime() -> WorkerRuntime:
    """The runtime of this worker process."""
    if _current is None:
        raise RuntimeError("no wsgate worker runtime: WebSocket server classes run inside "
                           "an app-server worker (wsgate appserver)")
    return _current


def install_runtime(runtime: WorkerRuntime | None) -> None:
    """Make ``runtime`` this process's runtime (None removes it; tests use this)."""
    global _current
    _current = runtime


class WorkerRuntime:
    """One worker process's state; see the module docstring."""

    def __init__(
        self, *, appserver_id: str, classes: Mapping[str, type[WebSocket]], store: AsyncStore,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.pid = os.getpid()
        self.appserver_id = appserver_id
        self.classes = dict(classes)
        self.store = store
        self.settings = dict(settings or {})
        self.registry = SocketRegistry()
        self.links: dict[int, Link] = {}
        self.ports: dict[str, SocketPort] = {}
        self._ends: dict[int, tuple[Link, trio.Event, list[bool]]] = {}
        self._request_ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._port_gone = trio.Event()

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

    async def write(self, wsid: str, binary: bool, payload: bytes,
                    port: SocketPort | None) -> None:
        """Send a message to a browser socket, from whichever instance asks."""
        if (port is not None and port.closed) or self.registry.lookup(wsid) is Lookup.CLOSED:
            raise SocketGone(f"socket {wsid} is closed: the write was not sent", wsid=wsid)
        check_payload(payload)
        link = self.link_for(wsid, port)
        link.send(Write(wsid, binary, payload))
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

    async def write_group(self, name: str, binary: bool, payload: bytes) -> None:
        """One frame per gateway: each fans the message out to the group's sockets."""
        check_payload(payload)
        for link in self.gateway_links():
            link.send(WriteGroup(name, binary, payload))
        await trio.lowlevel.checkpoint_if_cancelled()

    async def write_many(self, wsids: list[str], binary: bool, payload: bytes) -> None:
        """One frame per gateway listing that gateway's sockets."""
        check_payload(payload)
        by_gateway: dict[str, list[str]] = {}
        for wsid in wsids:
            parsed = parse_wsid(wsid)
            if parsed is not None:
                by_gateway.setdefault(parsed[0], []).append(wsid)
        for link in self.gateway_links():
            ids = by_gateway.get(link.gateway_id)
            if ids:
                link.send(WriteMany(tuple(ids), binary, payload))
        await trio.lowlevel.checkpoint_if_cancelled()

    def group(self, wsid: str, port: SocketPort | None, name: str, *, join: bool) -> None:
        """Ask the socket's gateway to add it to (or remove it from) a group."""
        self.link_for(wsid, port).send(Group(wsid, name, join))

    async def end(self, wsid: str, port: SocketPort | None) -> bool:
        """Ask the gateway to close ``wsid``; True if this call closed it (EndServer)."""
        if (port is not None and port.closed) or self.registry.lookup(wsid) is Lookup.CLOSED:
            raise SocketGone(f"socket {wsid} is closed: EndServer has nothing to end",
                             wsid=wsid)
        link = self.link_for(wsid, port)
        request_id = next(self._request_ids)
        done = trio.Event()
        answer = [False]
        self._ends[request_id] = (link, done, answer)
        link.send(End(request_id, wsid))
        try:
            await done.wait()
        finally:
            self._ends.pop(request_id, None)
        self.registry.mark_closed(wsid)
        if port is not None:
            port.mark_closed(1000, ended=True)
        return answer[0]

    def forget_port(self, port: SocketPort) -> None:
        """A socket's life on this worker is over (after OnPostServer)."""
        if self.ports.get(port.wsid) is port:
            del self.ports[port.wsid]
        self._port_gone.set()
        self._port_gone = trio.Event()

    async def drain_link(self, link: Link) -> None:
        """Wait until every socket that came over ``link`` has finished on this worker.

        A worker is lent out again only after this: a private socket's worker serves
        nothing else until its Server() has returned (and OnPostServer has run).
        """
        while any(port.link is link for port in self.ports.values()):
            await self._port_gone.wait()

    async def run_post_server(self, instance: WebSocket) -> None:
        """Run OnPostServer, logging (never raising) what it raises."""
        try:
            await instance.OnPostServer()
        except Exception:
            log.exception("wsid=%s OnPostServer() failed", instance.WebSocketID)

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
            from appserver.lifecycle import serve_socket

            self.nursery.start_soon(serve_socket, self, link, event)
        elif isinstance(event, Adopt):
            from appserver.lifecycle import adopt_socket

            self.nursery.start_soon(adopt_socket, self, link, event)
        elif isinstance(event, Close):
            self._handle_close(event)
        elif isinstance(event, Ended):
            pending = self._ends.get(event.request_id)
            if pending is not None:
                pending[2][0] = event.first
                pending[1].set()
        else:
            log.error("link %d: unexpected %s from the gateway", link.id, type(event).__name__)

    def link_batch_done(self, link: Link) -> None:
        """Nothing to flush: the link's writer coalesces on its own."""

    def link_lost(self, link: Link) -> None:
        """The gateway link closed: its sockets are gone, and so are pending EndServers."""
        self.links.pop(link.id, None)
        for port in list(self.ports.values()):
            if port.link is link:
                self._closed(port, 1006, ended=False)
        for _, done, _answer in [v for v in self._ends.values() if v[0] is link]:
            done.set()

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
        if not port.deliver(item):
            port.link.send(Close(port.wsid, 1008, "too much unread data"))
            self._closed(port, 1008, ended=False)
            return
        if port.server_done:
            from appserver.lifecycle import after_server

            after_server(self, port)

    def _handle_close(self, event: Close) -> None:
        port = self.ports.get(event.wsid)
        self.registry.mark_closed(event.wsid)
        if port is not None:
            self._closed(port, event.code, ended=event.ended)

    def _closed(self, port: SocketPort, code: int, *, ended: bool) -> None:
        from appserver.lifecycle import after_server

        port.mark_closed(code, ended=ended)
        if port.server_done:
            after_server(self, port)
