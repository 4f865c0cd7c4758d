"""A socket's worker-side end: the queue ``Read`` takes from, and the flags of its life.

IRIS queues a shared socket's incoming frames in ``^CacheTemp.cspWebSockets("DATA",
wsid, n)`` and wakes the process waiting in ``Read``. Here the frames arrive over the
socket's home link into :attr:`SocketPort.inbox`, and a waiting ``Read`` is woken by an
event. Every instance bound to the socket on this worker (the one running ``Server()``
and any made by ``OpenServer``) shares the port, so a piece that ``Read`` leaves over is
continued by the next ``Read``, whoever calls it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from appserver.errors import ClientClosed, ReadTimeout

if TYPE_CHECKING:
    from appserver.websocket import WebSocket
    from gateway.links import Link

__all__ = ["MAX_INBOX_BYTES", "SocketPort"]

log = logging.getLogger(__name__)

#: Unread bytes one socket may have waiting on its worker before it is closed (1008).
MAX_INBOX_BYTES = 16 * 1024 * 1024


class SocketPort:
    """The worker-side state of one socket whose home link ends on this worker."""

    __slots__ = (
        "_waiter", "close_code", "closed", "dispatching", "ended", "inbox", "inbox_bytes",
        "instance", "link", "post_server_done", "server_done", "shared", "wsid",
    )

    def __init__(self, wsid: str, link: Link, instance: WebSocket) -> None:
        self.wsid = wsid
        self.link = link
        self.instance = instance
        #: True shared, False private, None while OnPreServer is still choosing.
        self.shared: bool | None = None
        #: True while a task hands queued messages to OnClientMessage.
        self.dispatching = False
        # A list, not a deque: an empty deque costs 600 bytes per idle socket, and a
        # socket rarely has more than one message waiting.
        self.inbox: list[str | bytes] = []
        self.inbox_bytes = 0
        #: The browser socket is gone (closed by the client, by EndServer or by a crash).
        self.closed = False
        self.close_code = 1006
        #: EndServer ran (here or on another worker): OnPostServer is not this port's job.
        self.ended = False
        self.server_done = False
        self.post_server_done = False
        self._waiter: trio.Event | None = None

    def deliver(self, item: str | bytes) -> bool:
        """Queue one message from the browser; False if the socket has too much unread."""
        if self.closed:
            return True
        self.inbox_bytes += len(item)
        if self.inbox_bytes > MAX_INBOX_BYTES:
            log.warning("wsid=%s has %d unread bytes: closing it", self.wsid, self.inbox_bytes)
            return False
        self.inbox.append(item)
        self._wake()
        return True

    def mark_closed(self, code: int, *, ended: bool = False) -> None:
        """The browser socket closed: pending reads end with 7951 once the queue is empty."""
        self.closed = True
        self.close_code = code
        self.ended = self.ended or ended
        self._wake()

    def push_back(self, rest: str | bytes) -> None:
        """Put the unread rest of a message back at the head of the queue."""
        self.inbox.insert(0, rest)
        self.inbox_bytes += len(rest)

    def _wake(self) -> None:
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None

    async def take(self, timeout_s: float) -> str | bytes:
        """The next queued message; raise ReadTimeout (7950) or ClientClosed (7951)."""
        if not self.inbox and not self.closed:
            with trio.move_on_after(timeout_s):
                while not self.inbox and not self.closed:
                    if self._waiter is None:
                        self._waiter = trio.Event()
                    await self._waiter.wait()
        else:
            await trio.lowlevel.checkpoint()
        if self.inbox:
            item = self.inbox.pop(0)
            self.inbox_bytes -= len(item)
            return item
        if self.closed:
            raise ClientClosed(f"socket {self.wsid} closed by the client",
                               wsid=self.wsid, close_code=self.close_code)
        raise ReadTimeout(f"no data from {self.wsid} within {timeout_s:g} s", wsid=self.wsid)
