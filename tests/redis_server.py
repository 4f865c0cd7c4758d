"""A redis-server of the test's own: a free port on 127.0.0.1, a directory under the
test's tmp_path, append-only persistence, stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.nodes import free_port, redis_command

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT_S = 15.0


@dataclass
class RedisServer:
    """One redis-server process (it can be stopped and started again, same port)."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (its data, if any, is read back from the append-only file)."""
        if not Path(REDIS_SERVER).exists():
            raise AssertionError("redis-server is missing: scripts/test.sh installs Debian's "
                                 "redis-server")
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - the process owns it
        self.process = subprocess.Popen(redis_command(self.directory, self.port),
                                        stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"redis-server did not start on {self.port}: "
                             f"{(self.directory / 'redis.log').read_text()[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it by PID (SIGTERM, or SIGKILL for a crash) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.process = None


@contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    """A running redis-server, stopped afterwards."""
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
