"""An nginx of the test's own in front of gateways: examples/nginx/wsgate.conf with the
test's ports, in a directory under the test's tmp_path, stopped by PID.

The configuration is the example users are given, unchanged but for its ports; the
main file around it holds only what a non-system nginx needs (its pid file, logs and
temporary directories in the test's directory, one worker, no daemon): the same files
the benchmark's many-node topology runs (bench/nodes.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.nodes import free_port, nginx_main

START_TIMEOUT_S = 15.0


@dataclass
class Nginx:
    """A running nginx."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/``."""
        return f"http://127.0.0.1:{self.port}/"

    def ws_url(self, path: str = "/csp/user/Chat.Server.cls", query: str = "") -> str:
        """A ws:// URL through nginx."""
        url = f"ws://127.0.0.1:{self.port}{path}"
        return f"{url}?{query}" if query else url

    def log(self) -> str:
        """nginx's error log."""
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def nginx_server(directory: Path, upstreams: Sequence[int]) -> Iterator[Nginx]:
    """nginx on a free port of 127.0.0.1, proxying to gateways on ``upstreams``."""
    port = free_port()
    command = nginx_main(directory, port, upstreams)
    if not Path(command[0]).exists():
        raise AssertionError("nginx is missing: scripts/test.sh installs Debian's nginx")
    log = open(directory / "stderr.log", "wb")  # noqa: SIM115 - the process owns it
    process = subprocess.Popen(command, stdout=log, stderr=log)
    log.close()
    server = Nginx(process, port, directory)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"nginx did not start on {port}: "
                        f"{(directory / 'stderr.log').read_text()}{server.log()}") from None
                time.sleep(0.05)
        yield server
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)  # the master stops its worker
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(5)
