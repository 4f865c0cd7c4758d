"""The systems under test: how each is started, found ready, measured and stopped.

Names are contracts (they appear in the JSON): ``wsgate-shared`` (``wsgate run``, at
several worker counts), ``wsgate-private`` (``wsgate run --mode private``),
``wsgate-nodes`` (two nodes on Redis behind nginx, :mod:`bench.nodes`),
``baseline-trio-websocket``, ``baseline-websockets``, ``baseline-picows`` and
``baseline-socketify`` (one process each, from :mod:`bench.baselines`), and
``external`` for ``--url`` (someone else's process: not started, not stopped, measured
only if its PID is given).

Every process is started in its own session with its output in files of a fresh temp
directory (the wsgate store goes there too), bound to 127.0.0.1, and stopped by PID:
SIGTERM, a grace period, SIGKILL; then any descendant that outlived it is stopped the
same way, by PID and start time, never by name.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench.procstat import ProcessId, TreeSample, descendants, identify, sample_tree

__all__ = [
    "BASELINES",
    "SYSTEM_NAMES",
    "RunningSystem",
    "SystemSpec",
    "SystemStartError",
    "start_system",
]

SYSTEM_NAMES = ("wsgate-shared", "wsgate-private", "wsgate-nodes",
                "baseline-trio-websocket", "baseline-websockets", "baseline-picows",
                "baseline-socketify")
BASELINES = {"baseline-trio-websocket": "bench.baselines.trio_ws",
             "baseline-websockets": "bench.baselines.websockets_server",
             "baseline-picows": "bench.baselines.picows_server",
             "baseline-socketify": "bench.baselines.socketify_server"}
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
_WSGATE_READY = re.compile(r"chat ready at (\S+) ")
_BASELINE_READY = re.compile(r"^ready (\S+)")


class SystemStartError(Exception):
    """A system under test did not come up; the message holds the end of its log."""


@dataclass(frozen=True, slots=True)
class SystemSpec:
    """Which system to start, and how."""

    name: str
    workers: int | None = None
    #: Private mode: most worker processes, and how long a socket waits for one.
    max_workers: int | None = None
    queue_timeout_s: float | None = None
    url: str | None = None  # external: where it is
    pid: int | None = None  # external: its root process, for memory and CPU
    #: wsgate-shared as two commands whose gateway can restart (bench/split.py): the
    #: reconnect storm's system.
    split: bool = False

    @property
    def private(self) -> bool:
        """Private mode: every socket holds a worker process of its own (IRIS sync)."""
        return self.name == "wsgate-private"

    @property
    def label(self) -> str:
        """A short name for tables and progress: the system and its worker count."""
        if self.private:
            return f"{self.name} max{self.max_workers}"
        if self.name == "wsgate-nodes":
            return f"{self.name} 2x w{self.workers or 1}"
        return self.name if self.workers is None else f"{self.name} w{self.workers}"


@dataclass
class RunningSystem:
    """A started (or external) system: its URL and, when known, its root process."""

    spec: SystemSpec
    url: str
    root_pid: int | None
    popen: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of its HTTP/WebSocket listener."""
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 80

    def ws_path(self, path: str) -> str:
        """The upgrade target for a class path: private sockets ask for private mode."""
        return f"{path}?mode=private" if self.spec.private else path

    def restart_gateway(self) -> None:
        """Restart the gateway (a ``split`` system): every browser socket is closed
        with 1001, and the gateway comes back on the same port."""
        if not self.spec.split or self.popen is None:
            raise ValueError(f"{self.spec.label} cannot restart its gateway")
        self.popen.send_signal(signal.SIGUSR1)

    def sample(self) -> TreeSample | None:
        """Its processes, memory and CPU now; None when its root process is unknown."""
        return None if self.root_pid is None else sample_tree(self.root_pid)

    def stop(self) -> None:
        """Stop it (if we started it) and everything below it; remove its temp dir."""
        if self.popen is not None:
            tree = [p for p in map(identify, descendants(self.popen.pid)[1:]) if p]
            _stop_root(self.popen)
            for process in tree:
                _stop_leftover(process)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _stop_root(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def _stop_leftover(process: ProcessId) -> None:
    """Stop a descendant that outlived its parent, if that PID is still the same process."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if identify(process.pid) != process:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)
        deadline = time.monotonic() + STOP_GRACE_S / 2
        while identify(process.pid) == process and time.monotonic() < deadline:
            time.sleep(0.05)


def _wsgate() -> str:
    found = shutil.which("wsgate", path=os.path.dirname(sys.executable))
    if found is None:
        raise SystemStartError(f"no wsgate executable next to {sys.executable}")
    return found


def _command(spec: SystemSpec, workdir: Path, log_level: str) -> list[str]:
    if spec.name in BASELINES:
        return [sys.executable, "-m", BASELINES[spec.name], "--host", "127.0.0.1",
                "--port", "0", "--log-level", log_level]
    if spec.split:
        return [sys.executable, "-m", "bench.split", "--workers", str(spec.workers or 1),
                "--dir", str(workdir), "--log-level", log_level]
    if spec.name == "wsgate-nodes":
        return [sys.executable, "-m", "bench.nodes", "--nodes", "2", "--workers",
                str(spec.workers or 1), "--dir", str(workdir), "--log-level", log_level]
    # The benchmark's load comes from one address: no per-address connect rate limit.
    command = [_wsgate(), "run", "--host", "127.0.0.1", "--port", "0",
               "--db", str(workdir / "bench.db"), "--max-connect-rate", "0",
               "--log-level", log_level]
    if spec.name == "wsgate-shared":
        return [*command, "--workers", str(spec.workers or 1)]
    if spec.private:
        return [*command, "--mode", "private", "--workers", str(spec.workers or 2),
                "--max-workers", str(spec.max_workers or 4),
                "--queue-timeout", f"{spec.queue_timeout_s or 3.0:g}"]
    raise ValueError(f"unknown system {spec.name!r}")


def start_system(spec: SystemSpec, *, log_level: str = "WARNING") -> RunningSystem:
    """Start ``spec`` and wait until it serves (or, for ``--url``, just describe it)."""
    if spec.url is not None:
        return RunningSystem(spec, spec.url, spec.pid)
    workdir = Path(tempfile.mkdtemp(prefix="wsgate-bench-"))
    stdout_path, stderr_path = workdir / "stdout.log", workdir / "stderr.log"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        popen = subprocess.Popen(_command(spec, workdir, log_level), stdout=out, stderr=err,
                                 stdin=subprocess.DEVNULL, start_new_session=True,
                                 cwd=workdir)
    system = RunningSystem(spec, "", popen.pid, popen, workdir)
    try:
        pattern = _BASELINE_READY if spec.name in BASELINES else _WSGATE_READY
        system.url = _wait_for_line(popen, stdout_path, stderr_path, pattern, spec.label)
        if spec.name not in BASELINES:
            _wait_healthy(system.url, popen, stderr_path)
    except BaseException:
        system.stop()
        raise
    return system


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _wait_for_line(popen: subprocess.Popen[bytes], stdout_path: Path, stderr_path: Path,
                   pattern: re.Pattern[str], name: str) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for line in stdout_path.read_text(errors="replace").splitlines():
            match = pattern.search(line)
            if match:
                return match[1]
        if popen.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemStartError(f"{name} printed no ready line "
                           f"(exit code {popen.poll()}); its log ends:\n{_tail(stderr_path)}")


def _wait_healthy(url: str, popen: subprocess.Popen[bytes], stderr_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    health = url.rstrip("/") + "/healthz"
    while time.monotonic() < deadline and popen.poll() is None:
        try:
            with urllib.request.urlopen(health, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise SystemStartError(f"{health} never answered 200; log ends:\n{_tail(stderr_path)}")
