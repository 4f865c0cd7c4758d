"""A link's flow control: writers wait for the link's own writer task to drain it."""

from __future__ import annotations

import contextlib
import socket

import trio

from gateway.link.codec import encode
from gateway.link.connection import LinkConnection, Role
from gateway.link.driver import Link
from gateway.link.events import Event, Write


class Quiet:
    """A LinkHandler that ignores everything."""

    def link_event(self, link: Link, event: Event) -> None:
        """Nothing to do."""

    def link_batch_done(self, link: Link) -> None:
        """Nothing to do."""

    def link_lost(self, link: Link) -> None:
        """Nothing to do."""


async def test_many_writers_wait_below_the_limit_while_the_peer_reads_slowly() -> None:
    """Ten writers fill a link whose peer does not read; each waits below the limit,
    none touches the socket itself (trio allows one waiting writer per socket), and
    every frame arrives once the peer reads."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    conn = LinkConnection.adopted(Role.APPSERVER, gateway_id="gw.a", link_id=1)
    link = Link(ours, conn, worker_pid=0)
    frame = encode(Write("gw.a-1", False, b"x" * 10_000))
    limit = 50_000
    received = bytearray()

    async def writer() -> None:
        for _ in range(20):
            link.send_frame(frame)
            await link.wait_below(limit)

    async def slow_reader() -> None:
        while len(received) < 10 * 20 * len(frame.data):
            await trio.sleep(0.001)
            with contextlib.suppress(BlockingIOError):
                received.extend(theirs.recv(65536))

    with trio.fail_after(30):
        async with trio.open_nursery() as outer:
            outer.start_soon(link.run, Quiet())
            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(writer)
                nursery.start_soon(slow_reader)
            link.close()
    assert bytes(received) == frame.data * 200
    theirs.close()
