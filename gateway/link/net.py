"""Non-blocking stdlib sockets driven by trio's readiness waits.

The gateway, the links and the workers work on plain ``socket.socket`` objects rather
than trio streams, for two reasons the benchmark measures: a broadcast can try a
non-blocking ``send`` on each socket without a task switch per socket, and bytes that
are queued while a send is in flight leave in one system call (coalescing). trio's
``wait_readable``/``wait_writable`` do the waiting, so cancellation works as usual.
A non-blocking TLS socket (``ssl.SSLSocket``) works the same: its want-read and
want-write errors wait as a would-block does.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl

import trio

__all__ = [
    "READS_PER_YIELD",
    "RECV_BYTES",
    "SendBuffer",
    "SendOverflow",
    "connect_tcp",
    "listen_tcp",
    "receive_some",
    "tls_handshake",
]

#: How much one read takes from the kernel.
RECV_BYTES = 65536

_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class SendOverflow(Exception):
    """More bytes are queued for a peer than its limit allows: the peer is too slow."""


def listen_tcp(host: str, port: int, *, backlog: int = 4096) -> socket.socket:
    """Bind a non-blocking listening socket (``port`` 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_tcp(host: str, port: int) -> socket.socket:
    """Open a non-blocking TCP connection, with Nagle off (links carry small frames)."""
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, type_, proto, _, address = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(address)
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, f"connect to {host}:{port}: {os.strerror(err)}")
        if err:
            await trio.lowlevel.wait_writable(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, f"connect to {host}:{port}: {os.strerror(err)}")
    except BaseException:
        sock.close()
        raise
    return sock


#: Hot read loops yield to the scheduler after this many reads that did not wait.
READS_PER_YIELD = 32


async def receive_some(sock: socket.socket, max_bytes: int = RECV_BYTES, *,
                       checkpoint: bool = True) -> bytes:
    """Read what is available (waiting if nothing is); ``b""`` at EOF or on reset.

    With ``checkpoint`` false a read that finds data returns without yielding; the
    caller then yields itself every :data:`READS_PER_YIELD` reads, so a busy peer does
    not starve the other tasks. Each yield costs a round of the scheduler, which is
    what the echo round trip's latency is made of.
    """
    waited = False
    while True:
        try:
            data = sock.recv(max_bytes)
        except (BlockingIOError, ssl.SSLWantReadError):
            await trio.lowlevel.wait_readable(sock)
            waited = True
            continue
        except ssl.SSLWantWriteError:  # TLS: the handshake or a key update must write
            await trio.lowlevel.wait_writable(sock)
            waited = True
            continue
        except (*_GONE, ssl.SSLError):  # TLS: the peer's close_notify, or a bad record
            data = b""
        except OSError as exc:
            if exc.errno == errno.EBADF:  # closed under us by another task
                data = b""
            else:
                raise
        if checkpoint and not waited:
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        return data


class SendBuffer:
    """Bytes queued for one non-blocking socket, sent in order, in as few calls as can be.

    :meth:`push` only queues. :meth:`try_send` writes what the kernel takes right now,
    without waiting. :meth:`drain` waits until everything queued has left. Above
    ``limit`` queued bytes :meth:`push` raises :class:`SendOverflow`, so a slow peer
    bounds memory instead of growing it.
    """

    __slots__ = ("_chunks", "_size", "_sock", "closed", "limit")

    def __init__(self, sock: socket.socket, *, limit: int) -> None:
        self._sock = sock
        self._chunks: list[bytes] = []
        self._size = 0
        self.limit = limit
        self.closed = False

    @property
    def pending(self) -> int:
        """Bytes queued and not yet accepted by the kernel."""
        return self._size

    def push(self, data: bytes) -> None:
        """Queue ``data`` after everything already queued."""
        if self.closed:
            return
        if self._size + len(data) > self.limit:
            raise SendOverflow(f"{self._size + len(data)} bytes queued, limit {self.limit}")
        self._chunks.append(data)
        self._size += len(data)

    def push_unchecked(self, data: bytes) -> None:
        """Queue ``data`` even above the limit (a close frame must still go out)."""
        if not self.closed:
            self._chunks.append(data)
            self._size += len(data)

    def try_send(self) -> bool:
        """Send what the kernel accepts now; return True when nothing is left queued."""
        if not self._size or self.closed:
            return True
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            sent = self._sock.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            # TLS retries the same bytes (Python's ssl accepts a moved buffer, and what
            # is queued meanwhile only ever extends it).
            sent = 0
        except (*_GONE, OSError):
            self._gone()
            return True
        if sent == len(data):
            chunks.clear()
            self._size = 0
            return True
        rest = data[sent:]
        self._chunks = [rest]
        self._size = len(rest)
        return False

    async def drain(self) -> None:
        """Wait until every queued byte has been handed to the kernel (or the peer left)."""
        while not self.try_send():
            await trio.lowlevel.wait_writable(self._sock)

    def _gone(self) -> None:
        self.closed = True
        self._chunks.clear()
        self._size = 0


async def tls_handshake(sock: ssl.SSLSocket) -> None:
    """Run a non-blocking TLS socket's handshake (the caller bounds the time)."""
    while True:
        try:
            sock.do_handshake()
            return
        except ssl.SSLWantReadError:
            await trio.lowlevel.wait_readable(sock)
        except ssl.SSLWantWriteError:
            await trio.lowlevel.wait_writable(sock)
