"""The real gateway, supervisor and workers in one trio run: the in-process harness.

:func:`running` starts a real :class:`~gateway.gateway.Gateway` and a real
:class:`~appserver.supervisor.Supervisor` on loopback ports, with the supervisor's
workers running as tasks of this process instead of OS processes (each a real
:func:`~appserver.worker.run_worker`, with its own control socket, its links handed over
with ``SCM_RIGHTS``, its own ``pid`` number and its own runtime). Everything between the
browser and the server class runs for real, in one process: a failure points at a
module, negative checks need no sleep, and coverage sees it all.
"""

from __future__ import annotations

import itertools
import json
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio.testing

from appserver.classes import load_classes
from appserver.config import AppServerConfig
from appserver.runtime import WorkerRuntime
from appserver.supervisor import ProcessHandle, Supervisor
from appserver.worker import run_worker
from gateway.config import GatewayConfig
from gateway.gateway import Gateway
from gateway.status import status_snapshot
from store.migrations import migrate_file

SECRET = b"in-process-harness-secret"
_pids = itertools.count(900_001)


class InProcessWorker:
    """A worker run as a task of this process; what the supervisor sees of it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.runtime: WorkerRuntime | None = None
        self._exited = trio.Event()
        self._scope = trio.CancelScope()
        self._stop_send, self._stop_receive = trio.open_memory_channel[object](1)

    async def run(self, config: dict[str, Any], ctrl: socket.socket, *,
                  task_status: trio.TaskStatus[WorkerRuntime] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Serve until stopped (reporting the runtime once it serves), then exit."""
        try:
            with self._scope:
                await run_worker(config, ctrl, pid=self.pid, stop_requests=self._stop_receive,
                                 task_status=task_status)
            self.returncode = -signal.SIGKILL if self._scope.cancelled_caught else 0
        except BaseException:
            self.returncode = 1
            raise
        finally:
            ctrl.close()  # the OS would close it at a process's exit
            self._exited.set()

    async def wait(self) -> int:
        """Wait for the worker to end."""
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """SIGTERM asks the worker to stop (as its signal handler does); others kill."""
        if sig == signal.SIGTERM:
            self._stop_send.send_nowait(sig)
        else:
            self.kill()

    def terminate(self) -> None:
        """As SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """End the worker's task at once (its cancellation handlers still run)."""
        self._scope.cancel()


async def _start_in_process(nursery: trio.Nursery, workers: dict[int, InProcessWorker],
                            config: str, control: socket.socket) -> ProcessHandle:
    """The supervisor's StartWorker, for workers that are tasks of this process."""
    worker = InProcessWorker(next(_pids))
    worker.runtime = await nursery.start(worker.run, json.loads(config), control.dup())
    workers[worker.pid] = worker
    return worker


@dataclass
class Harness:
    """A running gateway + app server in this process, and ways to look inside."""

    gateway: Gateway
    supervisor: Supervisor
    base_url: str
    db: Path
    workers: dict[int, InProcessWorker] = field(default_factory=dict)

    def ws_url(self, path: str = "/csp/user/Chat.Server.cls", query: str = "") -> str:
        """The ws:// URL of a server class (the chat by default)."""
        url = self.base_url.replace("http://", "ws://").rstrip("/") + path
        return f"{url}?{query}" if query else url

    @property
    def port(self) -> int:
        """The gateway's port."""
        return int(self.base_url.rstrip("/").rsplit(":", 1)[1])

    def status(self) -> dict[str, Any]:
        """The gateway's /status, straight from the gateway."""
        return status_snapshot(self.gateway)

    @property
    def runtimes(self) -> list[WorkerRuntime]:
        """The runtimes of the workers that are running."""
        return [w.runtime for w in self.workers.values()
                if w.runtime is not None and w.returncode is None]

    def runtime(self, pid: int) -> WorkerRuntime:
        """The runtime of worker ``pid``."""
        runtime = self.workers[pid].runtime
        assert runtime is not None
        return runtime

    def gone(self, wsid: str) -> bool:
        """True once ``wsid`` is forgotten by the gateway and by every worker."""
        return self.gateway.table.get(wsid) is None and all(
            wsid not in runtime.ports for runtime in self.runtimes)

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds (it reads this process's state)."""
        while not condition():  # noqa: ASYNC110 - the state changes in other tasks
            await trio.sleep(0.005)

    async def settled(self, wsid: str) -> None:
        """Wait until ``wsid`` is gone everywhere and every task is idle: whatever its
        end was going to run has run."""
        await self.wait_for(lambda: self.gone(wsid))
        await trio.testing.wait_all_tasks_blocked(cushion=0.01)


@asynccontextmanager
async def running(
    tmp_path: Path, *, workers: int = 1, max_workers: int | None = None,
    idle_timeout_s: float = 60.0, apps: tuple[str, ...] = (),
    settings: dict[str, str] | None = None, pool: int | None = None, store_url: str = "",
    node: str = "as", **gateway: Any,
) -> AsyncIterator[Harness]:
    """A gateway and an app server (``workers`` in-process workers, SQLite in
    ``tmp_path``, or the Redis at ``store_url``, which is then the bus between nodes
    too) on loopback, stopped on exit; ``gateway`` sets GatewayConfig fields."""
    db = tmp_path / f"{node}.db"
    migrate_file(str(db))
    config = AppServerConfig(
        secret=SECRET, host="127.0.0.1", port=0, workers=workers,
        max_workers=max_workers if max_workers is not None else max(8, workers),
        idle_timeout_s=idle_timeout_s, db=str(db), apps=apps,
        settings={"mode": "shared", **(settings or {})}, appserver_id=node,
        store_url=store_url, bus_url=store_url,
    )
    gateway.setdefault("bus_url", store_url)
    class_names = tuple(sorted(load_classes(apps)))
    in_process: dict[int, InProcessWorker] = {}
    async with trio.open_nursery() as worker_tasks:
        supervisor = Supervisor(config, class_names,
                                start_worker=partial(_start_in_process, worker_tasks, in_process))
        async with trio.open_nursery() as servers:
            appserver = await servers.start(supervisor.serve)
            gateway_config = replace(
                GatewayConfig(appserver=appserver, secret=SECRET, port=0, pool=pool or workers),
                **gateway)
            gw = Gateway(gateway_config)
            host, port = await servers.start(gw.serve)
            harness = Harness(gw, supervisor, f"http://{host}:{port}/", db, in_process)
            await harness.wait_for(lambda: len(gw.links.pool_links) >= gateway_config.pool)
            yield harness
            servers.cancel_scope.cancel()
        worker_tasks.cancel_scope.cancel()
