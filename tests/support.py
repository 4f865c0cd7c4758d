"""Helpers for tests that start real wsgate processes and talk to them.

Processes are started the way a user starts them (the ``wsgate`` console script), on
127.0.0.1 and free ports, and stopped by PID: SIGTERM, a grace period, then SIGKILL.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

WSGATE = shutil.which("wsgate", path=str(Path(sys.executable).parent)) or "wsgate"
CHAT_PATH = "/csp/user/Chat.Server.cls"
START_TIMEOUT_S = 60.0


class Process:
    """A child process whose stdout lines are collected and whose stderr goes to a file."""

    def __init__(self, args: Sequence[str], *, log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.args = list(args)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=self._log, env=env, cwd=cwd,
        )
        self.pid = self.popen.pid
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    def wait_for_line(self, pattern: str, timeout_s: float = START_TIMEOUT_S) -> re.Match[str]:
        """Read stdout until a line matches ``pattern``; fail with the log if it does not."""
        regex = re.compile(pattern)
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout_s
        buffer = b""
        fd = self.popen.stdout.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                if self.popen.poll() is not None:
                    break
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                line = raw.decode(errors="replace")
                self.lines.append(line)
                match = regex.search(line)
                if match:
                    self._drain_rest(buffer)
                    return match
        raise AssertionError(
            f"{self.args[:3]} printed no line matching {pattern!r} (exit code "
            f"{self.popen.poll()}).\nstdout: {self.lines}\nlog:\n{self.log()[-3000:]}"
        )

    def _drain_rest(self, buffer: bytes) -> None:
        def drain() -> None:
            assert self.popen.stdout is not None
            rest = buffer
            for chunk in iter(lambda: self.popen.stdout.read1(65536), b""):  # type: ignore[union-attr]
                rest += chunk
                while b"\n" in rest:
                    raw, rest = rest.split(b"\n", 1)
                    self.lines.append(raw.decode(errors="replace"))

        self._reader = threading.Thread(target=drain, daemon=True)
        self._reader.start()

    def log(self) -> str:
        """What the process wrote to stderr so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, grace_s: float = 15.0) -> int:
        """Stop by PID (signal, wait, then kill); return the exit code."""
        if self.popen.poll() is None:
            os.kill(self.pid, sig)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log.close()
        return self.popen.returncode


def pids_alive(pids: Sequence[int]) -> list[int]:
    """Those of ``pids`` that still exist (zombies excluded)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def children_of(pid: int) -> list[int]:
    """Direct children of a process, from /proc."""
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(entry.name))
    return kids


@dataclass
class System:
    """A running wsgate: its URL, its store, its processes."""

    base_url: str
    db: Path
    processes: list[Process] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.base_url.rstrip("/").rsplit(":", 1)[1])

    def ws_url(self, path: str = CHAT_PATH, query: str = "") -> str:
        url = self.base_url.replace("http://", "ws://").rstrip("/") + path
        return f"{url}?{query}" if query else url

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """A plain HTTP GET: (status, headers, body); never raises for HTTP errors."""
        request = urllib.request.Request(self.base_url.rstrip("/") + path)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers), exc.read()

    def status(self) -> dict[str, Any]:
        code, _, body = self.get("/status")
        assert code == 200, body
        result: dict[str, Any] = json.loads(body)
        return result

    def wait_healthy(self, links: int = 1, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code, _, body = self.get("/healthz")
            if code == 200 and json.loads(body)["links"] >= links:
                return
            time.sleep(0.05)
        raise AssertionError(f"gateway not healthy with {links} links: {code} {body!r}")

    def logs(self) -> str:
        return "\n".join(p.log() for p in self.processes)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def raw_upgrade(system: System, target: str) -> tuple[int, bytes]:
    """Send a WebSocket upgrade request by hand; return the status and the body.

    A raw socket: trio-websocket leaves its socket open when a handshake is refused.
    """
    request = (f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", system.port), timeout=20) as sock:
        sock.sendall(request)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(data: str) -> str:
    return base64.b64decode(data).decode()


@asynccontextmanager
async def open_ws(url: str, headers: list[tuple[bytes, bytes]] | None = None
                  ) -> AsyncIterator[WebSocketConnection]:
    """``open_websocket_url`` (with extra request ``headers``) that always closes its
    TCP stream.

    trio-websocket 0.12's client skips closing its stream when the server started the
    close (``_aclose`` returns early once a close reason is set), leaving the socket
    to the garbage collector; tests run with ResourceWarning as an error.
    """
    async with open_websocket_url(url, extra_headers=headers or []) as ws:
        try:
            yield ws
        finally:
            with trio.CancelScope(shield=True):
                await ws._stream.aclose()


class ChatClient:
    """A chat client on trio-websocket that keeps every message it received."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []
        self._unread: list[dict[str, Any]] = []

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: str) -> AsyncIterator[ChatClient]:
        async with open_ws(url) as ws:
            yield cls(ws)

    async def send(self, value: dict[str, Any] | str | bytes) -> None:
        if isinstance(value, dict):
            value = json.dumps(value)
        await self.ws.send_message(value)

    async def say(self, text: str, author: str = "unknown") -> None:
        await self.send({"Message": b64(text), "Author": author})

    async def recv(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """The next message (JSON), in arrival order."""
        if self._unread:
            return self._unread.pop(0)
        with trio.fail_after(timeout_s):
            raw = await self.ws.get_message()
        message: dict[str, Any] = json.loads(raw)
        self.received.append(message)
        return message

    async def expect(self, type_: str, timeout_s: float = 10.0,
                     **fields: Any) -> dict[str, Any]:
        """The next message of ``Type`` ``type_`` (and these fields); others stay unread."""
        skipped = []
        try:
            with trio.fail_after(timeout_s):
                while True:
                    message = await self.recv(timeout_s)
                    if message.get("Type") == type_ and all(
                        message.get(k) == v for k, v in fields.items()
                    ):
                        return message
                    skipped.append(message)
        finally:
            self._unread = skipped + self._unread

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("Type") == type_]
