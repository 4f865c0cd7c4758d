"""The app server's supervisor: listens for links, authenticates them, hands each to a worker.

IRIS runs a CSP server process per Web Gateway connection. Here the supervisor accepts
a gateway's TCP connection, runs the challenge-response itself (workers never hold the
secret), and passes the authenticated socket's file descriptor to a worker process
(``SCM_RIGHTS``), so the bytes of a link never go through the supervisor. Each link is
served by one worker; the pool starts with ``workers`` processes, grows on demand up
to ``max_workers``, and retires idle workers above ``workers`` after ``idle_timeout``
(IRIS: Maximum Server Connections, No Activity Timeout). A worker that dies is
replaced.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from appserver.config import AppServerConfig
from appserver.metrics import metrics_registry, serve_metrics
from gateway.link.connection import LinkConnection
from gateway.link.driver import HANDSHAKE_TIMEOUT_S, accept_link
from gateway.link.errors import LinkAuthError, LinkProtocolError
from gateway.link.events import Welcome
from gateway.link.net import SendBuffer, listen_tcp

__all__ = ["ProcessHandle", "StartWorker", "Supervisor", "WorkerProcess", "start_worker_process"]

log = logging.getLogger(__name__)

WORKER_START_TIMEOUT_S = 60.0
WORKER_STOP_GRACE_S = 5.0


class ProcessHandle(Protocol):
    """What the supervisor needs of a worker process (``trio.Process`` has it all)."""

    @property
    def pid(self) -> int:
        """The process id."""

    @property
    def returncode(self) -> int | None:
        """The exit code, or None while it runs."""

    async def wait(self) -> int:
        """Wait for the exit; return its code."""

    def send_signal(self, sig: int) -> None:
        """Send a signal."""

    def terminate(self) -> None:
        """SIGTERM."""

    def kill(self) -> None:
        """SIGKILL."""


#: Starts one worker, given its config (JSON) and its end of the control socket.
StartWorker = Callable[[str, socket.socket], Awaitable[ProcessHandle]]


async def start_worker_process(config: str, control: socket.socket) -> ProcessHandle:
    """Start a worker as an OS process: ``python -m appserver.worker``."""
    command = [sys.executable, "-m", "appserver.worker", "--control-fd",
               str(control.fileno()), "--config", config]
    # Workers never need the secret (the supervisor authenticates every link).
    env = {k: v for k, v in os.environ.items() if k != "WSGATE_SECRET"}
    process = await trio.lowlevel.open_process(command, pass_fds=(control.fileno(),),
                                               env=env)
    return process


class WorkerProcess:
    """A worker process as the supervisor sees it."""

    def __init__(self, process: ProcessHandle, ctrl: socket.socket) -> None:
        self.process = process
        self.ctrl = ctrl
        self.pid = process.pid
        self.links: set[int] = set()
        self.ready = trio.Event()
        self.alive = True
        #: Stopped on purpose (idle above --workers): its exit is not a failure.
        self.retiring = False
        self.idle_since = trio.current_time()
        #: The counters the worker last reported (sockets, store commits and writes).
        self.stats: dict[str, float] = {}

    def command(self, message: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
        """Send a control message (with file descriptors attached)."""
        socket.send_fds(self.ctrl, [json.dumps(message).encode()], list(fds))


class Supervisor:
    """See the module docstring."""

    def __init__(self, config: AppServerConfig, class_names: tuple[str, ...], *,
                 start_worker: StartWorker = start_worker_process) -> None:
        self.config = config
        self.class_names = class_names
        self._start_worker = start_worker
        self.workers: dict[int, WorkerProcess] = {}
        self.stopping = False
        self.restarts = 0
        #: Workers started but not yet registered: they count against --max-workers.
        self.starting = 0
        #: Counters of workers that have exited, so the totals never go down.
        self.departed: dict[str, float] = {}
        self._link_ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None


    @property
    def nursery(self) -> trio.Nursery:
        """The supervisor's long-lived nursery."""
        assert self._nursery is not None, "the supervisor is not serving"
        return self._nursery

    def _worker_config(self) -> str:
        return json.dumps({
            "store": self.config.store,
            "bus": self.config.bus_url,
            "apps": list(self.config.apps),
            "settings": self.config.settings,
            "appserver_id": self.config.appserver_id,
            "log_level": self.config.log_level,
            "link_heartbeat_s": self.config.link_heartbeat_s,
            "node_ttl_s": self.config.node_ttl_s,
        })

    async def serve_metrics(
        self, listener: socket.socket, *, task_status: trio.TaskStatus[tuple[str, int]]
    ) -> None:
        """Serve /metrics on ``listener`` until cancelled; report the bound address."""
        registry = metrics_registry(self)
        try:
            task_status.started(listener.getsockname()[:2])
            async with trio.open_nursery() as nursery:
                while True:
                    await trio.lowlevel.wait_readable(listener)
                    try:
                        sock, address = listener.accept()
                    except BlockingIOError:
                        continue
                    sock.setblocking(False)
                    nursery.start_soon(serve_metrics, self, registry, sock, address[0])
        finally:
            listener.close()

    async def serve(
        self, *, task_status: trio.TaskStatus[tuple[str, int]],
        listener: socket.socket | None = None,
    ) -> None:
        """Start the workers, then accept links (on ``listener`` when the caller bound
        it) until cancelled; report the address."""
        if listener is None:
            listener = listen_tcp(self.config.host, self.config.port)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    async with trio.open_nursery() as starting:
                        for _ in range(self.config.workers):
                            starting.start_soon(self.spawn)
                    nursery.start_soon(self._retire_idle)
                    task_status.started(listener.getsockname()[:2])
                    await self._accept(listener, nursery)
                finally:
                    self.stopping = True
                    with trio.CancelScope(shield=True):
                        await self.stop_workers()
        finally:
            listener.close()

    async def _accept(self, listener: socket.socket, nursery: trio.Nursery) -> None:
        while True:
            await trio.lowlevel.wait_readable(listener)
            while True:
                try:
                    sock, address = listener.accept()
                except BlockingIOError:
                    break
                sock.setblocking(False)
                nursery.start_soon(self._handshake, sock, f"{address[0]}:{address[1]}")

    # --- workers ------------------------------------------------------------------------

    @property
    def worker_count(self) -> int:
        """Workers running or starting: what --max-workers limits."""
        return len(self.workers) + self.starting

    async def spawn(self, *, counted: bool = False) -> WorkerProcess | None:
        """Start one worker and wait until it is ready; None if it failed to start.

        The worker counts against --max-workers from the call (``counted``: the caller
        already added it to ``starting``) until it is registered or has failed.
        """
        if not counted:
            self.starting += 1
        registered = False
        try:
            parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                process = await self._start_worker(self._worker_config(), child)
            except BaseException:  # failed or cancelled: no worker holds the other end
                parent.close()
                raise
            finally:
                child.close()
            parent.setblocking(False)
            worker = WorkerProcess(process, parent)
            self.workers[worker.pid] = worker
            self.starting -= 1
            registered = True
        finally:
            if not registered:
                self.starting -= 1
        self.nursery.start_soon(self._watch, worker)
        with trio.move_on_after(WORKER_START_TIMEOUT_S):
            await worker.ready.wait()
        if not worker.ready.is_set() or not worker.alive:
            log.error("worker pid %d did not start", worker.pid)
            return None
        log.info("worker pid %d ready (%d workers)", worker.pid, len(self.workers))
        return worker

    async def _watch(self, worker: WorkerProcess) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_control, worker)
                code = await worker.process.wait()
                nursery.cancel_scope.cancel()
        finally:  # cancelled too (the supervisor stopping): the control socket goes
            worker.alive = False
            worker.ready.set()
            worker.ctrl.close()

        self.workers.pop(worker.pid, None)
        for key, value in worker.stats.items():
            self.departed[key] = self.departed.get(key, 0) + value
        if self.stopping:
            return
        if worker.retiring:
            log.info("worker pid %d retired (exit code %s)", worker.pid, code)
            return
        log.warning("worker pid %d exited with code %s (%d links lost)", worker.pid, code,
                    len(worker.links))
        self.restarts += 1
        if self.worker_count < self.config.workers:
            self.nursery.start_soon(self.spawn)

    async def _read_control(self, worker: WorkerProcess) -> None:
        while True:
            await trio.lowlevel.wait_readable(worker.ctrl)
            try:
                message = worker.ctrl.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not message:
                return
            event = json.loads(message)
            if event.get("event") == "ready":
                worker.ready.set()
            elif event.get("event") == "stats":
                worker.stats = {k: v for k, v in event.items() if k != "event"}
            elif event.get("event") == "link-closed":
                worker.links.discard(int(event["link"]))
                if not worker.links:
                    worker.idle_since = trio.current_time()


    async def _retire_idle(self) -> None:
        while True:
            await trio.sleep(min(1.0, self.config.idle_timeout_s / 4))
            now = trio.current_time()
            idle = sorted(
                (w for w in self.workers.values() if w.alive and w.ready.is_set()
                 and not w.links and now - w.idle_since > self.config.idle_timeout_s),
                key=lambda w: w.idle_since,
            )
            surplus = sum(1 for w in self.workers.values() if not w.retiring) - self.config.workers
            for worker in idle[:max(surplus, 0)]:
                log.info("worker pid %d idle for %.0f s: retiring it", worker.pid,
                         now - worker.idle_since)
                worker.alive = False
                worker.retiring = True
                self._stop(worker)

    def _stop(self, worker: WorkerProcess) -> None:
        try:
            worker.command({"cmd": "stop"})
        except OSError:
            worker.process.terminate()

    async def stop_workers(self) -> None:
        """Stop every worker: ask, wait a grace period, then kill."""
        workers = list(self.workers.values())
        for worker in workers:
            if worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(WORKER_STOP_GRACE_S):
            for worker in workers:
                await worker.process.wait()
        for worker in workers:
            if worker.process.returncode is None:
                log.warning("worker pid %d did not stop: killing it", worker.pid)
                worker.process.kill()
                await worker.process.wait()

    def _reserve_worker(self, link_id: int) -> WorkerProcess | None:
        # Synchronous on purpose: choosing and reserving happen without a checkpoint.
        for worker in sorted(self.workers.values(), key=lambda w: w.pid):
            if worker.alive and worker.ready.is_set() and not worker.links:
                worker.links.add(link_id)
                return worker
        return None

    async def _worker_for_link(self, link_id: int) -> WorkerProcess | None:
        worker = self._reserve_worker(link_id)
        if worker is not None or self.worker_count >= self.config.max_workers:
            return worker
        # The pool had to grow on demand (private sockets do that): start one more
        # worker in the background too, so the next link does not wait for a process
        # to start (it retires after --idle-timeout if nobody needs it).
        if self.worker_count + 1 < self.config.max_workers:
            self.starting += 1  # counted now, so that concurrent handshakes see it
            self.nursery.start_soon(functools.partial(self.spawn, counted=True))
        spawned = await self.spawn()
        if spawned is None:
            return None
        if spawned.links:  # another handshake took it first
            return self._reserve_worker(link_id)
        spawned.links.add(link_id)
        return spawned

    # --- links --------------------------------------------------------------------------

    async def _handshake(self, sock: socket.socket, peer: str) -> None:
        try:
            conn = await accept_link(sock, self.config.secret)
            await self._hand_over(sock, conn, peer)
        except LinkAuthError as exc:
            log.warning("link from %s refused: %s", peer, exc.reason)
        except LinkProtocolError as exc:
            log.warning("link from %s closed: %s", peer, exc.reason)
        except trio.TooSlowError:
            log.warning("link from %s closed: no handshake within %.0f s", peer,
                        HANDSHAKE_TIMEOUT_S)
        finally:
            sock.close()

    async def _hand_over(self, sock: socket.socket, conn: LinkConnection, peer: str) -> None:
        link_id = next(self._link_ids)
        worker = await self._worker_for_link(link_id)
        out = SendBuffer(sock, limit=1 << 20)
        if worker is None:
            busy = (f"busy: all {self.worker_count} workers serve links "
                    f"(--max-workers {self.config.max_workers})")
            log.info("link from gateway %s (%s) refused: %s", conn.gateway_id, peer, busy)
            out.push(conn.refuse(busy, busy=True))
            await out.drain()
            return
        out.push(conn.send(Welcome(link_id, worker.pid, self.config.appserver_id,
                                   self.class_names)))
        await out.drain()
        leftover = base64.b64encode(conn.take_buffered()).decode()
        try:
            worker.command({"cmd": "link", "link": link_id, "gateway": conn.gateway_id,
                            "leftover": leftover}, (sock.fileno(),))
        except OSError as exc:
            worker.links.discard(link_id)
            log.error("could not hand link %d to worker pid %d: %s", link_id, worker.pid, exc)
            return
        log.info("link %d from gateway %s (%s) -> worker pid %d", link_id, conn.gateway_id,
                 peer, worker.pid)
