"""``wsgate run``: the app server and the gateway as two processes, with one fresh secret.

The quick start. Both children are ordinary ``wsgate appserver`` / ``wsgate gateway``
processes (what a user would start on two hosts), each in its own session so that a
Ctrl-C reaches only this launcher, which then stops them in order: the gateway first
(browsers get a 1001 close), then the app server (workers run OnPostServer).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import trio

from gateway.logsetup import configure_logging

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
_APPSERVER_READY = re.compile(r"^wsgate appserver: listening on (\S+) ")
_GATEWAY_READY = re.compile(r"^wsgate gateway: serving (\S+) ")


class LaunchError(Exception):
    """A child process did not start."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``wsgate run`` flags."""
    parser.add_argument("--host", default="127.0.0.1", help="address for browsers")
    parser.add_argument("--port", type=int, default=8080, help="port (0 picks a free one)")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="worker processes, and links from the gateway (default 2)")
    parser.add_argument("--max-workers", type=int, default=None, metavar="N",
                        help="most worker processes (IRIS: Maximum Server Connections; "
                             "default max(8, --workers))")
    parser.add_argument("--mode", choices=["shared", "private"], default="shared",
                        help="the chat's mode when the handshake has no ?mode= "
                             "(default shared)")
    parser.add_argument("--idle-timeout", type=float, default=None, metavar="S",
                        help="seconds before an idle worker above --workers exits "
                             "(IRIS: No Activity Timeout; default 60)")
    parser.add_argument("--queue-timeout", type=float, default=None, metavar="S",
                        help="how long a new socket waits for a free worker before 503 "
                             "(IRIS: Queued Request Timeout; default 10)")
    parser.add_argument("--session-timeout", type=float, default=None, metavar="S",
                        help="close sockets idle for S seconds (default never)")
    parser.add_argument("--db", default="./wsgate.db", metavar="PATH",
                        help="the SQLite store (default ./wsgate.db)")
    parser.add_argument("--app", action="append", default=[], metavar="MODULE:CLASS",
                        help="also serve this WebSocket server class (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        dest="settings", help="an option for server classes (repeatable)")
    parser.add_argument("--max-message-bytes", type=int, default=None, metavar="N",
                        help="largest message a browser may send (default 1 MiB)")


def _appserver_command(args: argparse.Namespace) -> list[str]:
    command = [sys.executable, "-m", "gateway.cli", "appserver", "--listen", "127.0.0.1:0",
               "--workers", str(args.workers), "--db", args.db, "--exit-with-parent",
               "--log-level", args.log_level, "--mode", args.mode]
    if args.max_workers is not None:
        command += ["--max-workers", str(args.max_workers)]
    if args.idle_timeout is not None:
        command += ["--idle-timeout", str(args.idle_timeout)]
    for app in args.app:
        command += ["--app", app]
    for setting in args.settings:
        command += ["--set", setting]
    return command


def _gateway_command(args: argparse.Namespace, appserver: str) -> list[str]:
    command = [sys.executable, "-m", "gateway.cli", "gateway", "--host", args.host,
               "--port", str(args.port), "--appserver", appserver, "--pool",
               str(args.workers), "--exit-with-parent", "--log-level", args.log_level]
    for flag, value in (("--max-message-bytes", args.max_message_bytes),
                        ("--queue-timeout", args.queue_timeout),
                        ("--session-timeout", args.session_timeout)):
        if value is not None:
            command += [flag, str(value)]
    return command


async def _start(command: list[str], ready: re.Pattern[str], env: dict[str, str],
                 nursery: trio.Nursery) -> tuple[trio.Process, str]:
    """Start a child; return it and what its ready line announced. Echo its stdout."""
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, env=env, start_new_session=True)
    assert process.stdout is not None
    lines = _lines(process.stdout)
    with trio.move_on_after(START_TIMEOUT_S):
        async for line in lines:
            print(line, flush=True)
            match = ready.match(line)
            if match:
                nursery.start_soon(_echo, lines)
                return process, match[1]
    process.kill()
    raise LaunchError(f"{command[3]} did not start (exit code {await process.wait()})")


async def _lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[str]:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            yield line.decode(errors="replace")


async def _echo(lines: AsyncIterator[str]) -> None:
    async for line in lines:
        print(line, flush=True)


async def _stop(process: trio.Process, name: str) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    with trio.move_on_after(STOP_GRACE_S):
        await process.wait()
    if process.returncode is None:
        log.warning("%s (pid %d) did not stop in %.0f s: killing it", name, process.pid,
                    STOP_GRACE_S)
        process.kill()
        await process.wait()


async def _run(args: argparse.Namespace) -> int:
    env = dict(os.environ, WSGATE_SECRET=secrets.token_hex(32))
    children: list[tuple[trio.Process, str]] = []
    status = 0
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                appserver, address = await _start(_appserver_command(args), _APPSERVER_READY,
                                                  env, nursery)
                children.append((appserver, "app server"))
                gateway, url = await _start(_gateway_command(args, address), _GATEWAY_READY,
                                            env, nursery)
                children.append((gateway, "gateway"))
                print(f"wsgate: chat ready at {url} (app server pid {appserver.pid}, "
                      f"gateway pid {gateway.pid}); Ctrl-C stops both", flush=True)
                stopped = trio.Event()

                async def child_exit(process: trio.Process, name: str) -> None:
                    nonlocal status
                    code = await process.wait()
                    if not stopped.is_set():
                        log.error("%s (pid %d) exited with code %s: stopping", name,
                                  process.pid, code)
                        status = 1
                        stopped.set()

                for process, name in children:
                    nursery.start_soon(child_exit, process, name)

                async def on_signal() -> None:
                    async for signum in signals:
                        log.info("%s: stopping", signal.Signals(signum).name)
                        stopped.set()
                        return

                nursery.start_soon(on_signal)
                await stopped.wait()
            except LaunchError as exc:
                print(f"wsgate run: {exc}", flush=True)
                status = 1
            finally:
                with trio.CancelScope(shield=True):
                    for process, name in reversed(children):
                        await _stop(process, name)
                nursery.cancel_scope.cancel()
    return status


def run(args: argparse.Namespace) -> int:
    """``wsgate run``."""
    configure_logging(args.log_level)
    if args.workers < 1:
        print("wsgate run: --workers must be at least 1", flush=True)
        return 2
    return trio.run(_run, args)
