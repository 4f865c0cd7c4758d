"""A worker process: runs server classes for the links its supervisor hands it.

Started by the supervisor as ``python -m appserver.worker --control-fd N --config JSON``.
The control socket (``AF_UNIX``, ``SOCK_SEQPACKET``, one message per packet) carries,
supervisor to worker, ``{"cmd": "link", ...}`` with the link's file descriptor attached
(``SCM_RIGHTS``) or ``{"cmd": "stop"}``; worker to supervisor, ``{"event": "ready"}``
``{"event": "link-closed", "link": n}`` (once every socket of that link has finished)
and, each second, ``{"event": "stats", ...}`` for /metrics. The worker never sees the
link secret
(it is not in its environment): the supervisor authenticates each link before handing
it over.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import trio

from appserver.bus import Bus
from appserver.classes import load_classes
from appserver.context import install_runtime
from appserver.control import send_control
from appserver.leases import NODE_TTL_S, keep_leases, renew_now
from appserver.lifecycle import SHUTDOWN_GRACE_S, stop_serving
from appserver.runtime import WorkerRuntime
from gateway.link.connection import LinkConnection, Role
from gateway.link.driver import HEARTBEAT_S, Link
from gateway.link.process import configure_logging
from store.engine import open_store

__all__ = ["main", "run_worker"]

log = logging.getLogger(__name__)

#: How long a new link waits for its gateway's lease to be renewed (Redis may be down).
RENEW_FIRST_S = 1.0
#: How often a worker reports its counters to the supervisor.
STATS_INTERVAL_S = 1.0


async def _run_link(runtime: WorkerRuntime, link: Link, ctrl: socket.socket) -> None:
    try:
        # The gateway's lease first, before any of its sockets registers: a broadcast
        # over the bus goes to the gateways with a lease (appserver/bus.py).
        with trio.move_on_after(RENEW_FIRST_S):
            await renew_now(runtime, link.gateway_id)
        await link.run(runtime)
        await runtime.drain_link(link)
    finally:
        if link.sock.fileno() != -1:  # cancelled before it ran (its run closes it)
            link.sock.close()
        send_control(ctrl, {"event": "link-closed", "link": link.id})
        log.info("link %d from gateway %s closed", link.id, link.gateway_id)


def _adopt_link(runtime: WorkerRuntime, command: dict[str, Any], fd: int,
                heartbeat_s: float) -> Link:
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = LinkConnection.adopted(Role.APPSERVER, gateway_id=str(command["gateway"]),
                                  link_id=int(command["link"]))
    leftover = base64.b64decode(command.get("leftover", ""))
    if leftover:
        conn.receive_data(leftover)
    link = Link(sock, conn, worker_pid=runtime.pid, heartbeat_s=heartbeat_s)
    runtime.link_up(link)
    log.info("link %d from gateway %s adopted", link.id, link.gateway_id)
    return link


async def _control_loop(runtime: WorkerRuntime, ctrl: socket.socket,
                        nursery: trio.Nursery, heartbeat_s: float) -> None:
    while True:
        await trio.lowlevel.wait_readable(ctrl)
        try:
            message, fds, _flags, _addr = socket.recv_fds(ctrl, 65536, 4)
        except BlockingIOError:
            continue
        except OSError:
            return
        if not message:
            log.info("the supervisor is gone; stopping")
            return
        command = json.loads(message)
        if command.get("cmd") == "stop":
            return
        if command.get("cmd") == "link" and len(fds) == 1:
            link = _adopt_link(runtime, command, fds[0], heartbeat_s)
            nursery.start_soon(_run_link, runtime, link, ctrl)
        else:
            for fd in fds:
                os.close(fd)
            log.error("unknown control message from the supervisor: %r", command)


async def _report_stats(runtime: WorkerRuntime, ctrl: socket.socket) -> None:
    """Tell the supervisor this worker's counters, for its /metrics."""
    stats = runtime.store.stats
    while True:
        report = {"event": "stats", "sockets": len(runtime.ports),
                  "commits": stats.commits, "writes": stats.writes,
                  "commit_seconds": stats.commit_seconds, "store_up": int(stats.up),
                  "commits_on_loop": stats.commits_on_loop,
                  "checkpoints": stats.checkpoints,
                  "checkpoint_seconds": stats.checkpoint_seconds,
                  "sweeps": runtime.sweeps}
        if runtime.bus is not None:
            report["bus_up"] = int(runtime.bus.up)
        send_control(ctrl, report)
        await trio.sleep(STATS_INTERVAL_S)


async def _serve(runtime: WorkerRuntime, ctrl: socket.socket,
                 stop_requests: AsyncIterator[object] | None, heartbeat_s: float,
                 task_status: trio.TaskStatus[WorkerRuntime]) -> None:
    ctrl.setblocking(False)
    async with trio.open_nursery() as nursery:
        runtime.nursery = nursery

        async def stop() -> None:
            with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_GRACE_S):
                await stop_serving(runtime)
            nursery.cancel_scope.cancel()

        async def stop_when_asked(requests: AsyncIterator[object]) -> None:
            async for _ in requests:
                await stop()

        if stop_requests is not None:
            nursery.start_soon(stop_when_asked, stop_requests)
        nursery.start_soon(_report_stats, runtime, ctrl)
        nursery.start_soon(keep_leases, runtime)
        if runtime.bus is not None:
            nursery.start_soon(runtime.bus.run)
        task_status.started(runtime)
        send_control(ctrl, {"event": "ready", "pid": runtime.pid})
        await _control_loop(runtime, ctrl, nursery, heartbeat_s)
        await stop()


async def run_worker(
    config: dict[str, Any], ctrl: socket.socket, *, pid: int | None = None,
    stop_requests: AsyncIterator[object] | None = None,
    task_status: trio.TaskStatus[WorkerRuntime] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve as a worker until the supervisor says stop (or goes away).

    ``config`` is what the supervisor sends; ``ctrl`` the worker's end of the control
    socket; each item of ``stop_requests`` (a process's SIGTERM and SIGINT) stops it
    gracefully. ``task_status`` reports the runtime once it serves. Tests run workers
    in-process, each with its own ``pid``.
    """
    async with open_store(config["store"]) as store:
        runtime = WorkerRuntime(
            appserver_id=config["appserver_id"],
            classes=load_classes(config.get("apps", [])), store=store,
            settings=config.get("settings", {}), pid=pid,
            node_ttl_s=float(config.get("node_ttl_s", NODE_TTL_S)),
        )
        if config.get("bus"):
            runtime.bus = Bus(str(config["bus"]))
        install_runtime(runtime)
        await _serve(runtime, ctrl, stop_requests,
                     float(config.get("link_heartbeat_s", HEARTBEAT_S)), task_status)


async def _run_process(config: dict[str, Any], ctrl: socket.socket) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        await run_worker(config, ctrl, stop_requests=signals)


def main(argv: list[str] | None = None) -> int:
    """Entry point of a worker process."""
    parser = argparse.ArgumentParser(prog="appserver.worker")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--config", required=True, help="JSON from the supervisor")
    args = parser.parse_args(argv)
    config = json.loads(args.config)
    configure_logging(config.get("log_level", "INFO"))
    trio.run(_run_process, config, socket.socket(fileno=args.control_fd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
