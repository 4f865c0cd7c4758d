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


class CountingSocket(socket.socket):
    """A socket that records the bytes of each send call."""

    sends: list[bytes]

    def send(self, data: bytes, flags: int = 0, /) -> int:  # type: ignore[override]
        sent = super().send(data, flags)
        self.sends.append(bytes(data[:sent]))
        return sent


async def test_frames_of_one_task_step_leave_in_one_send_and_close_flushes_them() -> None:
    """An idle link sends nothing while the step that queues runs on; when the step
    ends, everything it queued leaves in one send, in order. A close in the same step
    still sends what was queued (a private socket's Close before its link ends)."""
    ours, theirs = socket.socketpair()
    counted = CountingSocket(fileno=ours.detach())
    counted.sends = []
    counted.setblocking(False)
    conn = LinkConnection.adopted(Role.APPSERVER, gateway_id="gw.a", link_id=1)
    link = Link(counted, conn, worker_pid=0)
    frames = [encode(Write("gw.a-1", False, f"m{i}".encode())) for i in range(3)]
    with trio.fail_after(10):
        for frame in frames:
            link.send_frame(frame)
        assert counted.sends == []  # this step is not over
        await trio.lowlevel.checkpoint()
        assert counted.sends == [b"".join(f.data for f in frames)]
        link.send_frame(frames[0])
        link.close()
        assert counted.sends[1:] == [frames[0].data]
    theirs.setblocking(False)
    assert theirs.recv(65536) == b"".join(f.data for f in (*frames, frames[0]))
    counted.close()
    theirs.close()
