"""The gateway's links to its app server: a pool kept full, and links dedicated to one.

The :class:`LinkPool` keeps ``size`` pool links up (IRIS: the Web Gateway's connection
pool) and replaces any that drops. A private socket takes its link out of the pool for
its whole life (:meth:`GatewayLink.dedicate`), and the pool opens another in its place.
Each :class:`GatewayLink` is a :class:`~gateway.link.driver.Link` that also knows the
sockets whose home it is.
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import trio

from gateway.link.connection import LinkConnection
from gateway.link.driver import HEARTBEAT_S, Link, LinkHandler, open_link
from gateway.link.errors import LinkProtocolError, LinkRefused
from gateway.link.events import Welcome

if TYPE_CHECKING:
    from gateway.browser import BrowserSocket

__all__ = ["RETRY_MAX_S", "RETRY_MIN_S", "GatewayLink", "LinkPool", "PoolHandler"]

log = logging.getLogger(__name__)

#: Reconnecting waits from RETRY_MIN_S, doubling to RETRY_MAX_S, each wait drawn at
#: random below its bound ("full jitter"), so that gateways that lost an app server
#: together do not come back in step.
RETRY_MIN_S = 0.05
RETRY_MAX_S = 2.0


class GatewayLink(Link):
    """A link as the gateway sees it: its worker, its mode, the sockets it is home to."""

    def __init__(self, sock: socket.socket, conn: LinkConnection, welcome: Welcome, *,
                 heartbeat_s: float) -> None:
        super().__init__(sock, conn, worker_pid=welcome.worker_pid, heartbeat_s=heartbeat_s)
        self.appserver_id = welcome.appserver_id
        self.classes = frozenset(welcome.classes)
        #: The WebSocketID this link is dedicated to (private mode), or None (pool).
        self.private_wsid: str | None = None
        #: Sockets whose inbound traffic goes over this link (their home link).
        self.sockets: set[str] = set()
        #: Sockets whose OnPostServer this link's worker owes (until it says Done): if
        #: the worker is lost first, another runs it.
        self.owed: dict[str, BrowserSocket] = {}
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

    def close(self) -> None:
        """End the link; it leaves the pool at once."""
        super().close()
        self.left_pool.set()


class PoolHandler(LinkHandler, Protocol):
    """What the pool reports to, besides a link's events: the gateway."""

    def link_up(self, link: GatewayLink) -> None:
        """A link finished its handshake and joined the pool."""


class LinkPool:
    """Keeps ``size`` pool links to one app server up, and lends them to new sockets."""

    def __init__(
        self, handler: PoolHandler, address: tuple[str, int], *, size: int, secret: bytes,
        gateway_id: str, heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.handler = handler
        self.heartbeat_s = heartbeat_s
        self.address = address
        self.size = size
        self.secret = secret
        self.gateway_id = gateway_id
        self.links: list[GatewayLink] = []
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None

    @property
    def pool_links(self) -> list[GatewayLink]:
        """Links that take new sockets (not dedicated to a private one)."""
        return [link for link in self.links if link.up and link.private_wsid is None]

    def all_links(self) -> Iterable[GatewayLink]:
        """Every link that is up."""
        return [link for link in self.links if link.up]

    def pick(self) -> GatewayLink | None:
        """The pool link for a new socket: the one with the fewest sockets."""
        candidates = self.pool_links
        if not candidates:
            return None
        return min(candidates, key=lambda link: (len(link.sockets), link.id))

    async def acquire(self, timeout_s: float) -> GatewayLink | None:
        """A pool link, waiting up to ``timeout_s`` for one (IRIS: Queued Request Timeout)."""
        link = self.pick()
        if link is not None:  # the usual case: no deadline to register (nor a yield,
            return link       # after which the link picked might be gone)
        with trio.move_on_after(timeout_s):
            while True:
                link = self.pick()
                if link is not None:
                    return link
                await self._changed.wait()
        return None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self) -> None:
        """Keep the pool full, forever."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for slot in range(self.size):
                nursery.start_soon(self._keep_slot, slot)

    async def _connect(self) -> GatewayLink:
        sock, conn, welcome = await open_link(self.address, self.secret, self.gateway_id)
        return GatewayLink(sock, conn, welcome, heartbeat_s=self.heartbeat_s)

    async def _keep_slot(self, slot: int) -> None:
        """Keep one pool link up; when it closes or turns private, open another."""
        bound = RETRY_MIN_S
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
                refused = isinstance(exc, LinkRefused) and exc.busy
                if refused:
                    # A link closing somewhere may free a worker soon: then retry quickly.
                    with trio.move_on_after(bound):
                        await self._changed.wait()
                else:
                    await trio.sleep(random.uniform(0, bound))
                bound = min(bound * 2, RETRY_MAX_S)
                continue
            if last_error:
                log.info("link slot %d: linked again to %s:%d", slot, *self.address)
            bound, last_error = RETRY_MIN_S, ""
            self._start(link)
            await link.left_pool.wait()

    def _start(self, link: GatewayLink) -> None:
        log.info("link %d up: worker pid %d on app server %s", link.id, link.worker_pid,
                 link.appserver_id)
        assert self._nursery is not None
        self._nursery.start_soon(self._run_link, link)

    async def _run_link(self, link: GatewayLink) -> None:
        self.links.append(link)
        try:
            self.handler.link_up(link)
            self._notify()
            await link.run(self.handler)
        finally:
            self.links.remove(link)
            self._notify()

    async def open_dedicated(self, wsid: str, timeout_s: float) -> GatewayLink | None:
        """A new link for one private socket, retrying while the app server is busy."""
        with trio.move_on_after(timeout_s):
            while True:
                try:
                    link = await self._connect()
                except (OSError, LinkProtocolError, LinkRefused, trio.TooSlowError) as exc:
                    if not (isinstance(exc, LinkRefused) and exc.busy):
                        log.warning("wsid=%s: no dedicated link: %s", wsid, _describe(exc))
                    with trio.move_on_after(RETRY_MAX_S):
                        await self._changed.wait()
                    continue
                link.dedicate(wsid)
                self._start(link)
                return link
        return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, LinkRefused):
        return f"refused: {exc.reason}"
    if isinstance(exc, LinkProtocolError):
        return exc.reason
    if isinstance(exc, trio.TooSlowError):
        return "the handshake timed out"
    return str(exc) or type(exc).__name__
