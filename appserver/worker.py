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
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from typing import Any

import trio

from appserver.classes import load_classes
from appserver.lifecycle import finish_all
from appserver.runtime import SHUTDOWN_GRACE_S, WorkerRuntime, install_runtime
from gateway.links import Link
from gateway.logsetup import configure_logging
from gateway.protocol import LinkConnection, Role
from store.aio import AsyncStore
from store.sqlite import ChatStore

__all__ = ["main"]

log = logging.getLogger(__name__)

#: How often a worker reports its counters to the supervisor.
STATS_INTERVAL_S = 1.0


def send_control(ctrl: socket.socket, message: dict[str, Any]) -> None:
    """Send one control message (the socket has room: these are tiny and rare)."""
    with contextlib.suppress(OSError):  # the supervisor is gone; the control loop notices
        ctrl.send(json.dumps(message).encode())


async def _run_link(runtime: WorkerRuntime, link: Link, ctrl: socket.socket) -> None:
    try:
        await link.run(runtime)
        await runtime.drain_link(link)
    finally:
        send_control(ctrl, {"event": "link-closed", "link": link.id})
        log.info("link %d from gateway %s closed", link.id, link.gateway_id)


def _adopt_link(runtime: WorkerRuntime, command: dict[str, Any], fd: int) -> Link:
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = LinkConnection(Role.APPSERVER, authenticated=True)
    conn.gateway_id = str(command["gateway"])
    leftover = base64.b64decode(command.get("leftover", ""))
    if leftover:
        conn.receive_data(leftover)
    link = Link(int(command["link"]), sock, conn, worker_pid=os.getpid())
    runtime.link_up(link)
    log.info("link %d from gateway %s adopted", link.id, link.gateway_id)
    return link


async def _control_loop(runtime: WorkerRuntime, ctrl: socket.socket,
                        nursery: trio.Nursery) -> None:
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
            link = _adopt_link(runtime, command, fds[0])
            nursery.start_soon(_run_link, runtime, link, ctrl)
        else:
            for fd in fds:
                os.close(fd)
            log.error("unknown control message from the supervisor: %r", command)


async def _report_stats(runtime: WorkerRuntime, ctrl: socket.socket) -> None:
    """Tell the supervisor this worker's counters, for its /metrics."""
    stats = runtime.store.stats
    while True:
        send_control(ctrl, {"event": "stats", "sockets": len(runtime.ports),
                            "commits": stats.commits, "writes": stats.writes,
                            "commit_seconds": stats.commit_seconds})
        await trio.sleep(STATS_INTERVAL_S)


async def _serve(runtime: WorkerRuntime, ctrl: socket.socket) -> None:
    ctrl.setblocking(False)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            runtime.nursery = nursery

            async def stop() -> None:
                with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_GRACE_S):
                    await finish_all(runtime)
                nursery.cancel_scope.cancel()

            async def stop_on_signal() -> None:
                async for _ in signals:
                    await stop()

            nursery.start_soon(stop_on_signal)
            nursery.start_soon(_report_stats, runtime, ctrl)
            send_control(ctrl, {"event": "ready", "pid": os.getpid()})
            await _control_loop(runtime, ctrl, nursery)
            await stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of a worker process."""
    parser = argparse.ArgumentParser(prog="appserver.worker")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--config", required=True, help="JSON from the supervisor")
    args = parser.parse_args(argv)
    config = json.loads(args.config)
    configure_logging(config.get("log_level", "INFO"))
    ctrl = socket.socket(fileno=args.control_fd)
    store = AsyncStore(ChatStore.open(config["db"], migrate=False))
    runtime = WorkerRuntime(
        appserver_id=config["appserver_id"], classes=load_classes(config.get("apps", [])),
        store=store, settings=config.get("settings", {}),
    )
    install_runtime(runtime)
    try:
        trio.run(_serve, runtime, ctrl)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
