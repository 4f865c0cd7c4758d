"""Heartbeats to browsers (``ping_interval_s``/``ping_timeout_s``) and the graceful drain,
in one process (tests/harness.py).

A browser that never answers is a raw client on trio streams: it completes the
WebSocket handshake and then reads frames without ever sending one (no pong, no close
reply). trio-websocket answers pings and close frames by itself: it plays the browser
that does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed

from gateway.browser import BrowserSocket, Phase
from tests.chatting import upgrade_request
from tests.harness import Harness, running
from tests.support import ChatClient, b64

TIMEOUT_S = 30
#: Small heartbeat periods, so that a silent browser is closed within a second.
HEARTBEAT = {"ping_interval_s": 0.2, "ping_timeout_s": 0.3}
OP_TEXT, OP_CLOSE, OP_PING = 0x1, 0x8, 0x9


class SilentBrowser:
    """A WebSocket client that reads the server's frames and never sends one."""

    def __init__(self, stream: trio.SocketStream, buffer: bytearray) -> None:
        self.stream = stream
        self._buffer = buffer

    async def _exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = await self.stream.receive_some()
            if not chunk:
                raise AssertionError(f"the gateway hung up with {bytes(self._buffer)!r} unread")
            self._buffer += chunk
        taken = bytes(self._buffer[:n])
        del self._buffer[:n]
        return taken

    async def frame(self) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload)."""
        first, second = await self._exactly(2)
        assert first & 0x80, "a fragmented frame"
        assert not second & 0x80, "a server frame must not be masked (RFC 6455 5.1)"
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await self._exactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await self._exactly(8), "big")
        return first & 0x0F, await self._exactly(length)

    async def frames_until_close(self) -> tuple[list[int], int]:
        """Read frames up to the server's close frame: (the opcodes, the close code)."""
        opcodes = []
        while True:
            opcode, payload = await self.frame()
            opcodes.append(opcode)
            if opcode == OP_CLOSE:
                return opcodes, int.from_bytes(payload[:2], "big")


@asynccontextmanager
async def silent_browser(h: Harness) -> AsyncIterator[SilentBrowser]:
    """A chat socket whose client completed the handshake and then falls silent."""
    async with await trio.open_tcp_stream("127.0.0.1", h.port) as stream:
        await stream.send_all(upgrade_request())
        buffer = bytearray()
        while b"\r\n\r\n" not in buffer:
            chunk = await stream.receive_some()
            assert chunk, f"no HTTP response, got {bytes(buffer)!r}"
            buffer += chunk
        end = buffer.index(b"\r\n\r\n") + 4
        assert bytes(buffer[:end]).startswith(b"HTTP/1.1 101 "), bytes(buffer[:end])
        del buffer[:end]
        yield SilentBrowser(stream, buffer)


def socket_of(h: Harness, client: ChatClient) -> BrowserSocket:
    """The gateway's BrowserSocket for this client's connection."""
    port = client.ws.local.port
    (bs,) = [bs for bs in h.gateway.table if bs.sock.getpeername()[1] == port]
    return bs


async def test_silent_browser_is_pinged_then_closed_with_1001(tmp_path: Path) -> None:
    """A browser that never answers gets ping frames once it has been silent for
    ping_interval_s, then a close frame with 1001 after ping_timeout_s more."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, **HEARTBEAT) as h, silent_browser(h) as browser:
            opcodes, code = await browser.frames_until_close()
            assert opcodes[0] == OP_TEXT  # the chat's Status
            assert opcodes[-1] == OP_CLOSE
            assert code == 1001
            pings = opcodes[1:-1]
            assert pings, opcodes
            assert set(pings) == {OP_PING}
            assert h.gateway.stats["sockets_ping_timeout"] == 1


async def test_browser_that_answers_pings_stays_open(tmp_path: Path) -> None:
    """A browser that answers pings (trio-websocket does) stays open while three silent
    browsers opened after it are closed one after another by the ping timeout; the
    gateway heard its pongs, and it still chats."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, **HEARTBEAT) as h, \
                ChatClient.connect(h.ws_url()) as answering:
            await answering.expect("Status")
            bs = socket_of(h, answering)
            heard_at_start = bs.last_heard
            for _ in range(3):  # each lives ping_interval_s + ping_timeout_s, at least
                async with silent_browser(h) as browser:
                    _, code = await browser.frames_until_close()
                    assert code == 1001
            assert h.gateway.stats["sockets_ping_timeout"] == 3
            assert bs.phase is Phase.OPEN
            assert bs.last_heard > heard_at_start
            await answering.say("still here", author="a")
            await answering.expect("Chat", Message=b64("still here"))


async def test_drain_closes_every_socket_with_1001_and_refuses_new_ones(
    tmp_path: Path,
) -> None:
    """Gateway.drain(): every open socket gets a 1001 close, a new connection is refused
    once the drain has started, and drain() returns True once all have closed."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2) as h, AsyncExitStack() as stack:
            clients = []
            for _ in range(3):
                client = await stack.enter_async_context(ChatClient.connect(h.ws_url()))
                await client.expect("Status")
                clients.append(client)
            drained: list[bool] = []

            async def drain() -> None:
                drained.append(await h.gateway.drain(10.0))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain)
                await h.wait_for(lambda: all(bs.phase is not Phase.OPEN
                                             for bs in h.gateway.table))
                with trio.socket.socket() as newcomer, \
                        pytest.raises(ConnectionRefusedError):
                    await newcomer.connect(("127.0.0.1", h.port))
            assert drained == [True]
            assert len(h.gateway.table) == 0
            for client in clients:
                with pytest.raises(ConnectionClosed) as closed:
                    await client.ws.get_message()
                assert closed.value.reason.code == 1001


async def test_drain_returns_false_when_a_browser_never_answers_the_close(
    tmp_path: Path,
) -> None:
    """drain(timeout_s) returns False when a socket is still closing after timeout_s:
    the browser got the 1001 close frame but never answered it."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path) as h, silent_browser(h) as browser:
            assert (await browser.frame())[0] == OP_TEXT
            assert await h.gateway.drain(0.3) is False
            assert [bs.phase for bs in h.gateway.table] == [Phase.CLOSING]
            opcodes, code = await browser.frames_until_close()
            assert (opcodes, code) == ([OP_CLOSE], 1001)
