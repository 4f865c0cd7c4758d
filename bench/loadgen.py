"""One load-generator process: many client sockets on one ``epoll`` loop.

The coordinator (:mod:`bench.fleet`) starts several of these with the ``spawn`` context
and drives each through a pipe, one command at a time: ``connect``, then ``broadcast``
+ ``drain`` or ``echo`` (the :mod:`bench.traffic` tasks), then ``close``; ``exit`` ends
the process. Every reply carries the process's CPU seconds so far, which is how the
benchmark reports its own cost.

Nothing here uses trio, asyncio or a WebSocket library: one ``select.epoll`` watches
the sockets and the control pipe (``selectors`` would cost a lookup and a tuple per
event), and :class:`~bench.client.ClientSocket` does the framing. The loop never blocks
on a socket: what the kernel does not take at once waits for writability, so a slow
server cannot stall the other sockets' timing.
"""

from __future__ import annotations

import contextlib
import errno
import resource
import select
import socket
import time
from array import array
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

from bench.client import (
    OP_CLOSE,
    ClientSocket,
    Phase,
    ProtocolError,
    encode_frame,
    upgrade_request,
)
from bench.traffic import Broadcast, Drain, Echo, Task

__all__ = ["Agent", "agent_main", "raise_fd_limit"]

#: One read's buffer. Reads go into one preallocated buffer: ``recv(n)`` would allocate
#: n bytes each time, and above malloc's mmap threshold (128 KiB) that is an mmap and a
#: munmap per read, which cost more kernel time than the read itself.
RECV_BYTES = 256 * 1024
#: How often the loop wakes with nothing to do, to check deadlines (seconds).
TICK_S = 0.02
_NS_PER_S = 1_000_000_000
#: Done checks walk every socket: at most one per this interval, not one per event.
CHECK_EVERY_NS = 5_000_000
_READ = select.EPOLLIN
_WRITE = select.EPOLLOUT
_READ_OR_HANGUP = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR
MAX_EVENTS = 4096
#: A connect that failed in a reconnect storm is tried again this much later.
RETRY_NS = 50_000_000

Message = dict[str, Any]


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_seconds() -> float:
    """User + system CPU seconds this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Connecting:
    """The ``connect`` command in progress: what is left to open, and what happened."""

    def __init__(self, message: Message, first: int) -> None:
        self.target: tuple[str, int, str] = (message["host"], message["port"],
                                             message["path"])
        self.want_status: bool = message["wait_status"]
        self.concurrency: int = message["concurrency"]
        self.stop_on_reject: bool = message["stop_on_reject"]
        self.left: int = message["count"]
        self.in_flight = 0
        self.first = first  # index of the first socket of this command
        self.opened = 0
        self.rejected: dict[int, int] = {}
        self.first_reject_opened: int | None = None
        self.start_ns = self.last_open_ns = time.monotonic_ns()
        self.deadline_ns = self.start_ns + int(message["timeout_s"] * _NS_PER_S)
        #: Each opened socket's handshake: from its connect to its open (ns).
        self.handshakes: array[int] = array("q")
        #: A refused or failed attempt is tried again (a reconnect storm: the server is
        #: coming back), after RETRY_NS, instead of being counted.
        self.retry: bool = message.get("retry", False)
        self.retries = 0
        self.retry_at: list[int] = []

    def done(self) -> bool:
        return not self.left and not self.in_flight and not self.retry_at


class _AllClosed(Task):
    """Wait until the server has closed every socket (a gateway restart)."""

    def __init__(self, clients: list[ClientSocket], deadline_ns: int) -> None:
        self.clients = clients
        self.deadline_ns = deadline_ns

    def done(self) -> bool:
        return all(c.phase is Phase.CLOSED for c in self.clients)

    def report(self, timed_out: bool) -> Message:
        return {"op": "all_closed", "still_open": sum(c.phase is not Phase.CLOSED
                                                      for c in self.clients),
                "closed_ns": time.monotonic_ns()}


class Agent:
    """The state of one load-generator process; see the module docstring."""

    def __init__(self, control: Connection) -> None:
        self.control = control
        self.epoll = select.epoll()
        self.control_fd = control.fileno()
        self.epoll.register(self.control_fd, _READ)
        self.by_fd: dict[int, ClientSocket] = {}
        self.recv_buffer = bytearray(RECV_BYTES)
        self.recv_view = memoryview(self.recv_buffer)
        self.clients: list[ClientSocket] = []
        self.latencies: array[int] = array("q")
        self.errors: Counter[str] = Counter()
        self.connecting: _Connecting | None = None
        self.task: Task | None = None
        #: The sockets that a broadcast addressed, kept for the drain that follows it.
        self.audience: list[ClientSocket] = []
        self.next_check_ns = 0
        self.running = True

    # --- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        """Serve commands until ``exit``."""
        while self.running:
            timeout = TICK_S
            task = self.task
            wake_ns = task.wake_ns() if task is not None else None
            if wake_ns is not None:
                timeout = max(0.0, min(timeout, (wake_ns - time.monotonic_ns()) / _NS_PER_S))
            for fd, events in self.epoll.poll(timeout, MAX_EVENTS):
                if fd == self.control_fd:
                    self._command(self.control.recv())
                    continue
                client = self.by_fd.get(fd)
                if client is None:
                    continue  # dropped earlier in this same batch of events
                if events & _WRITE:
                    self._writable(client)
                elif events & _READ_OR_HANGUP:
                    self._readable(client)
            now_ns = time.monotonic_ns()
            if self.connecting is not None and self.connecting.retry_at:
                self._start_connects()
            if self.task is not None:
                self.task.tick(now_ns)
            if now_ns >= self.next_check_ns:
                self.next_check_ns = now_ns + CHECK_EVERY_NS
                self._check_done(now_ns)

    def _reply(self, message: Message) -> None:
        message["cpu_s"] = cpu_seconds()
        message["now_ns"] = time.monotonic_ns()
        message["errors"] = dict(self.errors)
        self.control.send(message)

    def _command(self, message: Message) -> None:
        getattr(self, f"_handle_{message['op']}")(message)
        self.next_check_ns = 0  # a new command may already be done: look at once

    def _check_done(self, now_ns: int) -> None:
        connecting, task = self.connecting, self.task
        if connecting is not None and (connecting.done() or now_ns >= connecting.deadline_ns):
            self.connecting = None
            self._finish_connect(connecting, timed_out=not connecting.done())
        if task is not None:
            done = task.done()
            if done or now_ns >= task.deadline_ns:
                self.task = None
                self._reply(task.report(timed_out=not done))

    # --- connecting ---------------------------------------------------------------------

    def _handle_connect(self, message: Message) -> None:
        self.errors.clear()
        self.connecting = _Connecting(message, len(self.clients))
        self._start_connects()

    def _start_connects(self) -> None:
        connecting = self.connecting
        if connecting is None:
            return
        host, port, _ = connecting.target
        now_ns = time.monotonic_ns()
        while connecting.retry_at and connecting.retry_at[0] <= now_ns:
            connecting.retry_at.pop(0)
            connecting.left += 1
        while connecting.left and connecting.in_flight < connecting.concurrency:
            connecting.left -= 1
            connecting.in_flight += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = ClientSocket(len(self.clients), sock, self.latencies)
            client.started_ns = now_ns
            self.clients.append(client)
            self.by_fd[client.fd] = client
            self.epoll.register(client.fd, _WRITE)
            err = sock.connect_ex((host, port))
            if err not in (0, errno.EINPROGRESS):
                self._fail(client, f"connect: {errno.errorcode.get(err, err)}")

    def _connected(self, client: ClientSocket) -> None:
        err = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err or self.connecting is None:
            self._fail(client, f"connect: {errno.errorcode.get(err, err)}")
            return
        host, port, path = self.connecting.target
        request, client.accept = upgrade_request(host, port, path)
        client.phase = Phase.UPGRADING
        client.out = request
        self._flush(client)

    def _settle(self, client: ClientSocket) -> None:
        """After a read: count a socket whose attempt just ended, opened or refused."""
        connecting = self.connecting
        if connecting is None:
            return
        if client.phase is Phase.CLOSED:
            self._fail(client, f"HTTP {client.reject_status}")
        elif client.phase is Phase.OPEN and (client.status or not connecting.want_status):
            client.settled = True
            connecting.in_flight -= 1
            connecting.opened += 1
            connecting.last_open_ns = now_ns = time.monotonic_ns()
            connecting.handshakes.append(now_ns - client.started_ns)
            self._start_connects()

    def _fail(self, client: ClientSocket, why: str) -> None:
        self.errors[why] += 1
        self._drop(client)
        connecting = self.connecting
        if client.settled or connecting is None:
            return
        client.settled = True
        connecting.in_flight -= 1
        if connecting.retry:
            connecting.retries += 1
            connecting.retry_at.append(time.monotonic_ns() + RETRY_NS)
            return
        if client.reject_status:
            status = client.reject_status
            connecting.rejected[status] = connecting.rejected.get(status, 0) + 1
            if connecting.first_reject_opened is None:
                connecting.first_reject_opened = connecting.opened
            if connecting.stop_on_reject:
                connecting.left = 0
        self._start_connects()

    def _finish_connect(self, connecting: _Connecting, timed_out: bool) -> None:
        for client in self.clients[connecting.first:]:
            if not client.settled:
                self._drop(client)
        self._reply({"op": "connected", "opened": connecting.opened,
                     "rejected": connecting.rejected, "retries": connecting.retries,
                     "handshakes": connecting.handshakes.tobytes(),
                     "first_reject_opened": connecting.first_reject_opened,
                     "start_ns": connecting.start_ns, "end_ns": connecting.last_open_ns,
                     "timed_out": timed_out})

    def _drop(self, client: ClientSocket) -> None:
        client.phase = Phase.CLOSED
        if client.fd >= 0:
            self.epoll.unregister(client.fd)
            del self.by_fd[client.fd]
            client.sock.close()
            client.fd = -1

    # --- socket events ------------------------------------------------------------------

    def _writable(self, client: ClientSocket) -> None:
        if client.phase is Phase.CONNECTING:
            self._connected(client)
        else:
            self._flush(client)

    def _flush(self, client: ClientSocket) -> None:
        try:
            sent = client.sock.send(client.out)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._fail(client, f"send: {exc.strerror}")
            return
        client.out = client.out[sent:]
        self.epoll.modify(client.fd, _READ | _WRITE if client.out else _READ)

    def send(self, client: ClientSocket, frame: bytes) -> None:
        """Send a frame now, or queue it behind what the kernel has not taken yet."""
        if client.out:
            client.out += frame
            return
        client.out = frame
        self._flush(client)

    def _readable(self, client: ClientSocket) -> None:
        if client.phase is Phase.CONNECTING:
            return  # a stale event for a reused descriptor: connects end on writability
        try:
            size = client.sock.recv_into(self.recv_buffer)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(client, f"recv: {exc.strerror}")
            return
        now_ns = time.monotonic_ns()
        if not size:
            self._fail(client, "closed by server")
            return
        data = self.recv_view[:size].tobytes()
        try:
            if client.phase is Phase.UPGRADING:
                client.feed_upgrade(data, now_ns)
            else:
                client.feed(data, now_ns)
        except ProtocolError as exc:
            self._fail(client, f"protocol: {exc}")
            return
        if not client.settled:
            self._settle(client)
        if client.out and client.fd >= 0:
            self._flush(client)  # pongs and close replies
        if self.task is not None:
            self.task.received(client, now_ns)

    # --- the traffic commands and the end ---------------------------------------------

    def _open_clients(self) -> list[ClientSocket]:
        return [c for c in self.clients if c.phase is Phase.OPEN]

    def _handle_broadcast(self, message: Message) -> None:
        self.audience = self._open_clients()
        self.task = Broadcast(self.audience, self.latencies, self.send, message)

    def _handle_drain(self, message: Message) -> None:
        # The sockets open when the broadcast began: one dropped since then still
        # expects every message, and what it missed counts as lost.
        self.task = Drain(self.audience, self.latencies, message)

    def _handle_echo(self, message: Message) -> None:
        self.task = Echo(self._open_clients(), self.latencies, self.send, message)

    def _handle_await_closed(self, message: Message) -> None:
        """Reply once every socket is closed (by the server: a gateway restart), or at
        the deadline; then forget them."""
        self.task = _AllClosed(self.clients, message["deadline_ns"])

    def _handle_close(self, message: Message) -> None:
        self._close_all()
        self._reply({"op": "closed"})

    def _close_all(self) -> None:
        goodbye = encode_frame((1000).to_bytes(2, "big"), OP_CLOSE)
        for client in self.clients:
            if client.phase is Phase.OPEN and not client.out:
                with contextlib.suppress(OSError):
                    client.sock.send(goodbye)
            self._drop(client)
        self.clients = []
        self.audience = []
        self.connecting = None
        self.task = None

    def _handle_usage(self, message: Message) -> None:
        self._reply({"op": "usage"})

    def _handle_exit(self, message: Message) -> None:
        self._close_all()  # no reply: the coordinator has stopped listening
        self.running = False


def agent_main(control: Connection) -> None:
    """The entry point of a load-generator process (``multiprocessing``, spawn)."""
    raise_fd_limit()
    agent = Agent(control)
    # EOFError: the coordinator is gone; KeyboardInterrupt: Ctrl-C reached the whole
    # process group. Either way there is nobody left to report to: just exit.
    with contextlib.suppress(EOFError, KeyboardInterrupt):
        agent.run()
