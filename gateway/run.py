"""``wsgate run``: the app server and the gateway as two processes, with one fresh secret.

The quick start. Both children are ordinary ``wsgate appserver`` / ``wsgate gateway``
processes (what a user would start on two hosts), each in its own session so that a
Ctrl-C reaches only this launcher, which then stops them in order: the gateway first
(browsers get a 1001 close), then the app server (workers run OnPostServer).

The launcher only waits on pipes and signals, so it uses the standard library alone:
importing trio would cost this process more memory than all its work does.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

from gateway.link.flags import APPSERVER_FLAGS, GATEWAY_FLAGS, add_flags, passed_on
from gateway.link.process import configure_logging, listen_error

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
#: How long a child may take to stop after SIGTERM (beyond the gateway's drain).
STOP_GRACE_S = 10.0
#: The gateway's drain on shutdown (its --drain-timeout), which the launcher waits out.
DRAIN_TIMEOUT_S = 10.0
_APPSERVER_READY = re.compile(r"^wsgate appserver: listening on (\S+) ")
_GATEWAY_READY = re.compile(r"^wsgate gateway: serving (\S+) ")


class LaunchError(Exception):
    """A child process did not start; ``code`` is the exit status to give."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _check_port(host: str, port: int) -> str:
    """Why the gateway could not listen on ``host:port`` ("" if it can), found before
    any process starts: a busy port is then one line, not the app server's start and
    stop."""
    if port == 0:
        return ""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            probe.listen(1)
        except OSError as exc:
            return listen_error(host, port, exc)
    return ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``wsgate run`` flags: its own, then those it passes on, as given, to the app
    server and to the gateway (declared once for both commands: gateway/link/flags.py)."""
    parser.add_argument("--host", default="127.0.0.1", help="address for browsers")
    parser.add_argument("--port", type=int, default=8080, help="port (0 picks a free one)")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="worker processes, and links from the gateway (default 2)")
    parser.add_argument("--db", default="./wsgate.db", metavar="PATH",
                        help="the SQLite store (default ./wsgate.db)")
    parser.add_argument("--store", default=None, metavar="URL",
                        help="a Redis store shared by many nodes, redis://HOST:PORT/DB "
                             "(default: the SQLite --db); the gateway then joins the "
                             "nodes' bus on it too")
    parser.add_argument("--drain-timeout", type=float, default=DRAIN_TIMEOUT_S, metavar="S",
                        help="on Ctrl-C or SIGTERM, how long the gateway may take closing "
                             "browser sockets (1001) before the app server stops "
                             f"(default {DRAIN_TIMEOUT_S:g})")
    parser.add_argument("--link-heartbeat", type=float, default=None, metavar="S",
                        help="heartbeat period of the links, both ways (default 5)")
    add_flags(parser.add_argument_group("passed on to the app server"), APPSERVER_FLAGS,
              for_launcher=True)
    add_flags(parser.add_argument_group("passed on to the gateway"), GATEWAY_FLAGS,
              for_launcher=True)


def _appserver_command(args: argparse.Namespace) -> list[str]:
    command = [sys.executable, "-m", "gateway.cli", "appserver", "--listen", "127.0.0.1:0",
               "--workers", str(args.workers), "--db", args.db, "--exit-with-parent",
               "--log-level", args.log_level]
    for flag, value in (("--store", args.store), ("--link-heartbeat", args.link_heartbeat)):
        if value is not None:
            command += [flag, str(value)]
    return command + passed_on(args, APPSERVER_FLAGS)


def _gateway_command(args: argparse.Namespace, appserver: str) -> list[str]:
    command = [sys.executable, "-m", "gateway.cli", "gateway", "--host", args.host,
               "--port", str(args.port), "--appserver", appserver, "--pool",
               str(args.workers), "--exit-with-parent", "--log-level", args.log_level,
               "--drain-timeout", str(args.drain_timeout)]
    for flag, value in (("--bus", args.store), ("--link-heartbeat", args.link_heartbeat)):
        if value is not None:
            command += [flag, str(value)]
    return command + passed_on(args, GATEWAY_FLAGS)


class Child:
    """A child process whose stdout lines this launcher echoes."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], *,
                 stop_grace_s: float = STOP_GRACE_S) -> None:
        self.name = name
        self.stop_grace_s = stop_grace_s
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env,
                                        start_new_session=True)
        assert self.process.stdout is not None
        self.fd = self.process.stdout.fileno()
        os.set_blocking(self.fd, False)
        self._partial = b""

    def read_lines(self) -> list[str] | None:
        """The complete lines available now; None at EOF."""
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        if not chunk:
            return None
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        return [line.decode(errors="replace") for line in lines]

    def stop(self) -> None:
        """SIGTERM, a grace period, then SIGKILL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.stop_grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) did not stop in %.0f s: killing it", self.name,
                            self.process.pid, self.stop_grace_s)
                self.process.kill()
                self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()


def _wait_ready(child: Child, ready: re.Pattern[str]) -> str:
    """Echo the child's lines until its ready line; return what that line announced."""
    selector = selectors.DefaultSelector()
    selector.register(child.fd, selectors.EVENT_READ)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            selector.select(deadline - time.monotonic())
            lines = child.read_lines()
            if lines is None:
                break
            for line in lines:
                print(line, flush=True)
                match = ready.match(line)
                if match:
                    return match[1]
    finally:
        selector.close()
    child.process.kill()
    code = child.process.wait()
    # Exit code 2: the child explained itself (a usage error, a busy port) on its stdout.
    raise LaunchError(f"the {child.name} did not start (exit code {code})",
                      code=2 if code == 2 else 1)


def _supervise(children: list[Child], signals_fd: int) -> int:
    """Echo the children's output until a signal (0) or a child's unexpected exit (1)."""
    selector = selectors.DefaultSelector()
    selector.register(signals_fd, selectors.EVENT_READ)
    for child in children:
        selector.register(child.fd, selectors.EVENT_READ, child)
    try:
        while True:
            for key, _ in selector.select():
                if key.fd == signals_fd:
                    signum = os.read(signals_fd, 1)[0]
                    log.info("%s: stopping", signal.Signals(signum).name)
                    return 0
                child = key.data
                lines = child.read_lines()
                if lines is None:
                    log.error("the %s (pid %d) exited with code %s: stopping", child.name,
                              child.process.pid, child.process.wait())
                    return 1
                for line in lines:
                    print(line, flush=True)
    finally:
        selector.close()


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Signals are read from the wakeup pipe; the handler itself does nothing."""


def run(args: argparse.Namespace) -> int:
    """``wsgate run``."""
    configure_logging(args.log_level)
    if args.workers < 1:
        print("wsgate run: --workers must be at least 1", flush=True)
        return 2
    busy = _check_port(args.host, args.port)
    if busy:
        print(f"wsgate: {busy}", flush=True)
        return 2
    env = dict(os.environ, WSGATE_SECRET=secrets.token_hex(32))
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _ignore)
    children: list[Child] = []
    try:
        appserver = Child("app server", _appserver_command(args), env)
        children.append(appserver)
        address = _wait_ready(appserver, _APPSERVER_READY)
        gateway = Child("gateway", _gateway_command(args, address), env,
                        stop_grace_s=args.drain_timeout + STOP_GRACE_S)
        children.append(gateway)
        url = _wait_ready(gateway, _GATEWAY_READY)
        print(f"wsgate: chat ready at {url} (app server pid {appserver.process.pid}, "
              f"gateway pid {gateway.process.pid}); Ctrl-C stops both", flush=True)
        return _supervise(children, wake_read)
    except LaunchError as exc:
        if exc.code != 2:
            print(f"wsgate run: {exc}", flush=True)
        return exc.code
    finally:
        for child in reversed(children):
            child.stop()
        signal.set_wakeup_fd(-1)
        os.close(wake_read)
        os.close(wake_write)
