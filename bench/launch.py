"""Starting and stopping the processes of a topology the benchmark builds itself
(bench/nodes.py, bench/split.py): free ports, output in files, ready lines, stops by PID.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["START_TIMEOUT_S", "free_port", "start", "stop", "wait_line", "wait_port"]

START_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0


def free_port() -> int:
    """A port nobody listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(command: list[str], directory: Path, name: str) -> subprocess.Popen[bytes]:
    """Start ``command`` with its output (both streams) in ``directory/name.log``."""
    with open(directory / f"{name}.log", "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID, a grace period, then SIGKILL."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


def wait_port(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    """Wait until something listens on 127.0.0.1:``port``."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on {port} (exit code {process.poll()})")


def wait_line(process: subprocess.Popen[bytes], log: Path, pattern: re.Pattern[str],
              *, after: int = 0) -> re.Match[str]:
    """Wait until the log (from byte ``after`` on) has a line matching ``pattern``."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        with open(log, "rb") as file:
            file.seek(after)
            match = pattern.search(file.read().decode(errors="replace"))
        if match:
            return match
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{log.name}: no line matching {pattern.pattern!r} (exit code "
                       f"{process.poll()}): {log.read_text(errors='replace')[-2000:]}")
