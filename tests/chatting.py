"""Talking to a running wsgate by hand: chatting bystanders, raw HTTP, raw upgrades.

Shared by the in-process tests (:mod:`tests.harness`) and the end-to-end ones
(:mod:`tests.support`): anything with a ``port`` and a ``ws_url()`` will do. Raw
requests go over trio streams in the test's own trio run, never through a thread, so
that a test on a mock clock sees every byte when it happens; and over a raw socket
rather than trio-websocket, which leaves its socket open when a handshake is refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import h11
import trio
from trio_websocket import WebSocketConnection

from tests.support import CHAT_PATH, ChatClient, b64

__all__ = [
    "Reply",
    "Served",
    "assert_chatting",
    "bystanders",
    "exchange",
    "http_get",
    "open_raw",
    "read_until_closed",
    "response_head",
    "upgrade_request",
]


class Served(Protocol):
    """A running wsgate: in-process (``Harness``) or real processes (``System``)."""

    @property
    def port(self) -> int:
        """The gateway's port."""

    def ws_url(self, path: str = ..., query: str = ...) -> str:
        """The ws:// URL of a server class."""


@asynccontextmanager
async def bystanders(system: Served) -> AsyncIterator[tuple[ChatClient, ChatClient]]:
    """Two clients that chat before and after the test's bad input."""
    async with ChatClient.connect(system.ws_url()) as one, \
            ChatClient.connect(system.ws_url()) as two:
        await one.expect("Status")
        await two.expect("Status")
        await assert_chatting(one, two, "before")
        yield one, two
        await assert_chatting(one, two, "after")


async def assert_chatting(one: ChatClient, two: ChatClient, text: str) -> None:
    """``one`` says ``text``; both receive it, from ``one``."""
    await one.say(text, author="one")
    for client in (one, two):
        assert (await client.expect("Chat", Message=b64(text)))["Author"] == "one"


async def read_until_closed(ws: WebSocketConnection) -> None:
    """Read and discard messages until the connection closes (and raises)."""
    while True:
        await ws.get_message()


def upgrade_request(target: str = CHAT_PATH, extra_headers: bytes = b"") -> bytes:
    """A WebSocket upgrade request for ``target``; ``extra_headers`` are CRLF-ended lines."""
    return (f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n").encode() + extra_headers + b"\r\n"


async def exchange(port: int, request: bytes) -> bytes:
    """Send ``request``, end the sending side, and return all the server sent back."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(request)
        await stream.send_eof()
        response = b""
        while chunk := await stream.receive_some():
            response += chunk
    return response


async def response_head(port: int, request: bytes) -> bytes:
    """Send ``request``; return the response head (and whatever came with it)."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(request)
        response = b""
        while b"\r\n\r\n" not in response and (chunk := await stream.receive_some()):
            response += chunk
    return response


@dataclass(frozen=True, slots=True)
class Reply:
    """A parsed HTTP response; header names are lower case."""

    status: int
    headers: dict[str, str]
    body: bytes


async def http_get(port: int, path: str) -> Reply:
    """One GET, its response parsed by h11 (which also checks that it is valid HTTP)."""
    conn = h11.Connection(h11.CLIENT)
    request = conn.send(h11.Request(method="GET", target=path,
                                    headers=[("Host", "127.0.0.1")]))
    request += conn.send(h11.EndOfMessage())
    status, headers, body = 0, {}, b""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(request)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some())
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    return Reply(status, headers, body)


async def _receive_exactly(stream: trio.SocketStream, buffer: bytearray, n: int) -> bytes:
    while len(buffer) < n:
        chunk = await stream.receive_some()
        if not chunk:
            raise AssertionError(f"connection closed after {len(buffer)} of {n} bytes")
        buffer += chunk
    taken = bytes(buffer[:n])
    del buffer[:n]
    return taken


async def open_raw(port: int, target: str = CHAT_PATH) -> tuple[int, bytes]:
    """Upgrade by hand: (101, the first text message) or (status, the error body).

    An accepted socket is closed (abruptly, no close frame) once its first message is
    read.
    """
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(upgrade_request(target))
        buffer = bytearray()
        while b"\r\n\r\n" not in buffer:
            chunk = await stream.receive_some()
            if not chunk:
                raise AssertionError(f"no HTTP response, got {bytes(buffer)!r}")
            buffer += chunk
        end = buffer.index(b"\r\n\r\n") + 4
        status = int(bytes(buffer[:end]).split()[1])
        del buffer[:end]
        if status != 101:
            while chunk := await stream.receive_some():
                buffer += chunk
            return status, bytes(buffer)
        first, length = await _receive_exactly(stream, buffer, 2)
        assert first == 0x81, f"expected an unfragmented text frame, got {first:#x}"
        if length == 126:
            length = int.from_bytes(await _receive_exactly(stream, buffer, 2), "big")
        elif length == 127:
            length = int.from_bytes(await _receive_exactly(stream, buffer, 8), "big")
        return 101, await _receive_exactly(stream, buffer, length)
