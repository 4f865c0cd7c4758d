"""A browser by hand, for the limits tests: upgrades with any header from any loopback
address, the response head as it came, and WebSocket frames built bit by bit.

trio-websocket cannot send a reserved bit, an unmasked frame or half a request, and it
leaves its socket open when an upgrade is refused; this client does exactly what the
test says, on a trio stream, and its context manager always closes the TCP socket.
"""

from __future__ import annotations

import os
import re
import socket
import struct
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.support import CHAT_PATH

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
FIN, RSV1 = 0x80, 0x40


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
                 masked: bool = True) -> bytes:
    """One frame as a browser sends it (RFC 6455 section 5.2): masked unless told not."""
    first = (FIN if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head = bytes((first, mask_bit | n))
    elif n < 65536:
        head = struct.pack(">BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack(">BBQ", first, mask_bit | 127, n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's payload: the code, then the UTF-8 reason."""
    return struct.pack(">H", code) + reason.encode()


def upgrade_head(port: int, target: str = CHAT_PATH,
                 headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A browser's upgrade request for ``target`` (Host names the port, as a browser's
    does), with ``headers`` added."""
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             "Sec-WebSocket-Version: 13", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(frozen=True, slots=True)
class Head:
    """An HTTP response head; header names lower case (the last of repeated ones)."""

    status: int
    headers: dict[str, str]
    raw: bytes


class RawClient:
    """One TCP connection to the gateway, read and written by hand."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def send(self, data: bytes) -> None:
        """Send bytes as they are."""
        await self.stream.send_all(data)

    async def more(self) -> bytes:
        """Read what is there into the buffer (waiting for some); b"" at the end."""
        try:
            chunk = await self.stream.receive_some()
        except trio.BrokenResourceError:  # a reset: the end, as far as a test cares
            chunk = b""
        self.buffer += chunk
        return chunk

    async def head(self) -> Head:
        """The response head (what follows it stays in the buffer)."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self.more():
                raise AssertionError(f"no HTTP response head, got {bytes(self.buffer)!r}")
        end = self.buffer.index(b"\r\n\r\n") + 4
        raw = bytes(self.buffer[:end])
        del self.buffer[:end]
        lines = raw.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return Head(int(lines[0].split()[1]), headers, raw)

    async def body(self, head: Head) -> bytes:
        """The body that follows ``head`` (its Content-Length bytes)."""
        length = int(head.headers["content-length"])
        while len(self.buffer) < length:
            if not await self.more():
                raise AssertionError(f"the body ended after {len(self.buffer)} of "
                                     f"{length} bytes")
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return body

    async def until_eof(self) -> bytes:
        """Everything until the gateway ends the connection (FIN or reset)."""
        while await self.more():
            pass
        rest = bytes(self.buffer)
        self.buffer.clear()
        return rest

    async def frame(self) -> tuple[bool, int, bytes]:
        """The next server frame: (fin, opcode, payload); server frames are unmasked."""
        while True:
            if len(self.buffer) >= 2:
                assert not self.buffer[1] & 0x80, "a server frame was masked"
                length = self.buffer[1] & 0x7F
                start = {126: 4, 127: 10}.get(length, 2)
                if len(self.buffer) >= start:
                    if length == 126:
                        length = int.from_bytes(self.buffer[2:4], "big")
                    elif length == 127:
                        length = int.from_bytes(self.buffer[2:10], "big")
                    if len(self.buffer) >= start + length:
                        fin, opcode = bool(self.buffer[0] & FIN), self.buffer[0] & 0x0F
                        payload = bytes(self.buffer[start:start + length])
                        del self.buffer[:start + length]
                        return fin, opcode, payload
            if not await self.more():
                raise AssertionError("the connection ended without a close frame "
                                     f"({len(self.buffer)} bytes of a frame left)")

    async def close_frame(self) -> tuple[int, str, list[int]]:
        """Read frames until a close frame: (its code, its reason, the opcodes before)."""
        opcodes: list[int] = []
        while True:
            _, opcode, payload = await self.frame()
            if opcode == OP_CLOSE:
                return (int.from_bytes(payload[:2], "big"), payload[2:].decode(), opcodes)
            opcodes.append(opcode)


@asynccontextmanager
async def connect(port: int, *, source: str = "127.0.0.1",
                  rcvbuf: int | None = None) -> AsyncIterator[RawClient]:
    """A TCP connection from ``source`` (any 127/8 address: the gateway sees another
    client), with a receive buffer of ``rcvbuf`` bytes if given; closed on exit."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:  # before connect, so that the window is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.bind((source, 0))
        await sock.connect(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    async with trio.SocketStream(sock) as stream:
        yield RawClient(stream)


@asynccontextmanager
async def upgraded(port: int, target: str = CHAT_PATH,
                   headers: Sequence[tuple[str, str]] = (), *, source: str = "127.0.0.1",
                   rcvbuf: int | None = None) -> AsyncIterator[tuple[Head, RawClient]]:
    """Send an upgrade request; yield the response head and the connection."""
    async with connect(port, source=source, rcvbuf=rcvbuf) as client:
        await client.send(upgrade_head(port, target, headers))
        yield await client.head(), client


async def refused(port: int, target: str = CHAT_PATH,
                  headers: Sequence[tuple[str, str]] = ()) -> tuple[Head, str]:
    """An upgrade the gateway must refuse: its response head and body (text)."""
    async with upgraded(port, target, headers) as (head, client):
        assert head.status != 101, head.raw
        body = await client.until_eof()
    assert head.headers["content-type"].startswith("text/plain"), head.raw
    assert len(body) == int(head.headers["content-length"]), (head.raw, body)
    return head, body.decode()


async def get(port: int, path: str, *, source: str = "127.0.0.1") -> tuple[Head, bytes]:
    """One GET from ``source`` on a connection of its own: the head and the body."""
    async with connect(port, source=source) as client:
        await client.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                          "Connection: close\r\n\r\n".encode())
        head = await client.head()
        return head, await client.body(head)


async def metric(port: int, name: str, *, source: str = "127.0.0.1") -> float:
    """One unlabelled sample of the gateway's /metrics (asked from ``source``)."""
    head, body = await get(port, "/metrics", source=source)
    assert head.status == 200, head.raw
    values = [sample.value for family in text_string_to_metric_families(body.decode())
              for sample in family.samples if sample.name == name and not sample.labels]
    assert len(values) == 1, (name, body[:2000])
    return values[0]


def vm_rss_kib(pid: int) -> int:
    """A process's resident set size (VmRSS in /proc/<pid>/status), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        match = re.search(r"^VmRSS:\s+(\d+) kB$", status.read(), re.MULTILINE)
    assert match, f"no VmRSS for pid {pid}"
    return int(match[1])
