"""Idle browser sockets without a task: one epoll set watches them all.

A socket's reader (:meth:`BrowserSocket.run <gateway.browser.BrowserSocket.run>`) is a
trio task, and a task waiting for its socket costs some 3.6 KB of trio's objects (the
task, its coroutine frames, its cancel status, its registration in trio's epoll),
about a quarter of what an idle chat socket costs the gateway and its worker
together (``scripts/memory_breakdown.py``). Most sockets of a chat are silent most of
the time, so a silent one is *parked*: its reader ends, and its descriptor joins this
one epoll set, which one task watches through trio. The first bytes the browser sends
(or its hang-up) start a reader for it again, which reads them. Sockets are parked
right after their handshake (until the page first speaks) and after
:data:`PARK_AFTER_S` of silence.

Writing never needed the reader (:meth:`BrowserSocket.flush
<gateway.browser.BrowserSocket.flush>` sends, a drain task waits when the kernel is
full), so a parked socket gets its broadcasts as fast as any. Closing one starts its
reader first, for the closing handshake. TLS sockets are never parked: their library
may hold decrypted bytes that no epoll event announces.
"""

from __future__ import annotations

import logging
import select
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from gateway.browser import BrowserSocket

__all__ = ["PARK_AFTER_S", "Parking"]

log = logging.getLogger(__name__)

#: A socket silent this long (nothing from the browser) is parked.
PARK_AFTER_S = 1.0
#: Sockets woken per look at the epoll set; more wait for the next round.
_EVENTS_PER_ROUND = 1024
_WATCH = select.EPOLLIN | select.EPOLLRDHUP


class Parking:
    """The parked sockets, by descriptor, and the one task that wakes them; and the
    open sockets that have a reader, the only ones a look for silent sockets reads."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._parked: dict[int, BrowserSocket] = {}
        #: Open sockets with a reader task (woken, or never parked).
        self.awake: set[BrowserSocket] = set()
        #: Sockets parked and woken since the start (the metrics count them).
        self.parks = 0
        self.wakes = 0

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, bs: BrowserSocket) -> None:
        """Watch ``bs`` here; its reader has ended (or never started)."""
        fd = bs.sock.fileno()
        self._epoll.register(fd, _WATCH)
        self._parked[fd] = bs
        self.awake.discard(bs)
        self.parks += 1

    def unpark(self, bs: BrowserSocket) -> bool:
        """Stop watching ``bs`` (its reader starts again); False if it was not parked."""
        fd = bs.sock.fileno()
        if self._parked.get(fd) is not bs:
            return False
        del self._parked[fd]
        self._epoll.unregister(fd)
        self.awake.add(bs)
        self.wakes += 1
        return True

    def reading(self, bs: BrowserSocket) -> None:
        """``bs`` starts with a reader (it could not be parked at once)."""
        self.awake.add(bs)

    def forget(self, bs: BrowserSocket) -> None:
        """The socket is gone."""
        self.awake.discard(bs)

    async def run(self) -> None:
        """Wake each parked socket the browser sends to (or hangs up), until cancelled;
        then close the sockets still parked (no reader is left to close them)."""
        try:
            while True:
                await trio.lowlevel.wait_readable(self._epoll)
                for fd, _ in self._epoll.poll(0, _EVENTS_PER_ROUND):
                    bs = self._parked.get(fd)
                    if bs is not None:
                        bs.wake()
        finally:
            for bs in list(self._parked.values()):
                bs.hang_up_parked()
            self._epoll.close()
