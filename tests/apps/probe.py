"""Probe.Server: a server class that does what the test asks, and says what happened.

Served with ``--app tests.apps.probe:Probe`` (and ``ProbeOCM`` for OnClientMessage),
with ``--set probe-dir=DIR``: lifecycle events are appended to ``DIR/events.log`` as
``<event> <wsid> <pid> [detail]``, one per line, so a test can count OnPostServer calls
across worker processes.

Handshake query: ``mode=shared|private``; ``binary=1`` (BinaryData before the first
Write); ``late=1`` (Server() tries to flip SharedConnection); ``reject=1``
(OnPreServer refuses with 404).

Commands, one JSON text message each; every answer is a JSON text message:

* ``{"cmd": "read", "size": n, "timeout": s, "count": k}``: k Reads of the *following*
  messages, each answered ``{"piece": text or hex, "binary": b, "AtEnd": a, "len": n}``
  or ``{"error": code, "AtEnd": a}``
* ``{"cmd": "write_to", "id": wsid, "text": t}``: ``OpenServer(id)`` + ``Write(t)``
* ``{"cmd": "end_other", "id": wsid}``: ``OpenServer(id)`` + ``EndServer()``
* ``{"cmd": "open_info", "id": wsid}``: what ``OpenServer(id)`` restored
* ``{"cmd": "write_binary", "hex": h}``: ``BinaryData = 1`` and ``Write(bytes)``
* ``{"cmd": "write_text_binary", "text": t}``: ``BinaryData = 1`` and ``Write(t)``, a
  ``str`` (the browser should get a binary frame of its UTF-8 bytes)
* ``{"cmd": "set_shared", "value": v}``: set SharedConnection now (no effect)
* ``{"cmd": "return"}``: Server() returns (shared: the socket stays open)
* ``{"cmd": "end"}``: ``EndServer()`` from Server()
* ``{"cmd": "crash"}``: Server() raises

The browser's side is here too, for the in-process and the end-to-end tests alike:
:func:`probe` opens a socket on a probe and reads its hello, :class:`ProbeClient` sends
commands and reads answers, :func:`events` reads ``events.log``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from trio_websocket import ConnectionClosed, WebSocketConnection

from appserver import HandshakeRejected, WebSocket, WebSocketError
from appserver.context import current_runtime
from appserver.errors import ClientClosed
from tests.support import open_ws


def _error(exc: WebSocketError) -> dict[str, Any]:
    return {"error": exc.code, "type": type(exc).__name__, "message": str(exc)}


class Probe(WebSocket):
    """See the module docstring."""

    CLASS_NAME = "Probe.Server"

    def __init__(self) -> None:
        super().__init__()
        self.pre_pid = 0
        self.late = False

    def record(self, event: str, detail: str = "") -> None:
        """Append one lifecycle event to the probe directory's log."""
        directory = self.settings.get("probe-dir")
        if directory:
            with open(Path(directory) / "events.log", "a") as log:
                line = f"{event} {self.WebSocketID} {current_runtime().pid} {detail}"
                log.write(line.rstrip() + "\n")

    async def OnPreServer(self) -> None:
        """Choose the mode from ?mode=; refuse with ?reject=1."""
        request = self.request
        assert request is not None
        if request.get("reject"):
            raise HandshakeRejected(404, "login failed")
        self.SharedConnection = 0 if request.get("mode") == "private" else 1
        # Kept now: a shared socket's Server() runs without the request, as in IRIS.
        self.late = bool(request.get("late"))
        if request.get("binary"):
            self.BinaryData = 1
        self.pre_pid = current_runtime().pid
        self.record("pre")

    async def send(self, value: dict[str, Any]) -> None:
        """Answer the test (as text, whatever BinaryData says)."""
        binary, self.BinaryData = self.BinaryData, 0
        try:
            await self.Write(json.dumps(value))
        finally:
            self.BinaryData = binary

    async def Server(self) -> None:
        """Say hello, then obey commands until told to stop or the client closes."""
        if self.late:
            self.SharedConnection = 1 - self.SharedConnection
        self.record("server")
        await self.send({"event": "hello", "wsid": self.WebSocketID,
                         "pre_pid": self.pre_pid, "server_pid": current_runtime().pid,
                         "SharedConnection": self.SharedConnection,
                         "SessionId": self.SessionId})
        while True:
            try:
                raw = await self.Read()
            except ClientClosed as exc:
                self.record("closed", str(exc.code))
                return
            command = json.loads(raw)
            if not await self.obey(command):
                return

    async def obey(self, command: dict[str, Any]) -> bool:
        """Carry out one command; False when Server() should return."""
        match command.get("cmd"):
            case "read":
                await self._read(command)
            case "write_to":
                await self.send(await self._on_other(command, "write"))
            case "end_other":
                await self.send(await self._on_other(command, "end"))
            case "open_info":
                await self.send(await self._on_other(command, "info"))
            case "write_binary":
                self.BinaryData = 1
                await self.Write(bytes.fromhex(command["hex"]))
                self.BinaryData = 0
            case "write_text_binary":
                self.BinaryData = 1
                await self.Write(str(command["text"]))
                self.BinaryData = 0
            case "set_shared":
                self.SharedConnection = command["value"]
                await self.send({"SharedConnection": self.SharedConnection})
            case "return":
                self.record("return")
                return False
            case "end":
                await self.EndServer()
                self.record("ended")
                return False
            case "crash":
                raise RuntimeError("the probe was told to crash")
        return True

    async def _read(self, command: dict[str, Any]) -> None:
        for _ in range(command.get("count", 1)):
            try:
                piece = await self.Read(command.get("size", 32656),
                                        command.get("timeout", 86400))
            except WebSocketError as exc:
                await self.send({**_error(exc), "AtEnd": self.AtEnd})
                continue
            binary = isinstance(piece, bytes)
            await self.send({
                "piece": piece.hex() if isinstance(piece, bytes) else piece,
                "binary": binary, "AtEnd": self.AtEnd, "len": len(piece),
            })

    async def _on_other(self, command: dict[str, Any], action: str) -> dict[str, Any]:
        other = type(self)()
        try:
            await other.OpenServer(command["id"])
            if action == "write":
                await other.Write(command["text"])
            elif action == "end":
                await other.EndServer()
        except WebSocketError as exc:
            return _error(exc)
        return {"ok": True, "SessionId": other.SessionId,
                "SharedConnection": other.SharedConnection, "pid": current_runtime().pid}

    async def OnPostServer(self) -> None:
        """Record that it ran, where."""
        self.record("post")


class ProbeOCM(Probe):
    """A probe that also defines OnClientMessage (served as ProbeOCM.Server)."""

    CLASS_NAME = "ProbeOCM.Server"

    async def OnClientMessage(self, data: str | bytes, close: int) -> bool:
        """Echo what arrives after Server() returned, and record it."""
        self.record("ocm", f"{close} {data!r}")
        if not close:
            await self.send({"ocm": data if isinstance(data, str) else data.hex()})
        return True


# --- the browser's side ------------------------------------------------------------------


class Serves(Protocol):
    """Whatever serves the probes: a harness or a system of real processes."""

    def ws_url(self, path: str = ..., query: str = "") -> str:
        """The ws:// URL of a server class."""


class ProbeClient:
    """A browser socket on a probe; ``hello`` is what its Server() said first."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.hello: dict[str, Any] = {}

    @property
    def wsid(self) -> str:
        """The socket's WebSocketID, as its Server() saw it."""
        return str(self.hello["wsid"])

    @property
    def pid(self) -> int:
        """The pid of the worker running this socket's Server()."""
        return int(self.hello["server_pid"])

    async def answer(self) -> dict[str, Any]:
        """The next message, which must be a JSON text frame."""
        raw = await self.ws.get_message()
        assert isinstance(raw, str), raw
        answer: dict[str, Any] = json.loads(raw)
        return answer

    async def cmd(self, cmd: str, **fields: Any) -> None:
        """Send a command (see the module docstring)."""
        await self.ws.send_message(json.dumps({"cmd": cmd, **fields}))

    async def ask(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """Send a command and return its answer."""
        await self.cmd(cmd, **fields)
        return await self.answer()

    async def close_code(self) -> int:
        """Read (and drop) messages until the server closes the socket; its close code."""
        try:
            while True:
                await self.ws.get_message()
        except ConnectionClosed as exc:
            return int(exc.reason.code)


@asynccontextmanager
async def probe(system: Serves, mode: str = "shared", query: str = "",
                headers: list[tuple[bytes, bytes]] | None = None,
                cls: str = "Probe") -> AsyncIterator[ProbeClient]:
    """A socket on ``cls``.Server in ``mode``, its hello already read."""
    full_query = "&".join(q for q in (f"mode={mode}", query) if q)
    url = system.ws_url(f"/csp/user/{cls}.Server.cls", query=full_query)
    async with open_ws(url, headers) as ws:
        client = ProbeClient(ws)
        client.hello = await client.answer()
        assert client.hello["event"] == "hello"
        yield client


def events(directory: Path, event: str | None = None, wsid: str | None = None
           ) -> list[list[str]]:
    """The probe's events as [event, wsid, pid, detail...] (optionally filtered)."""
    path = directory / "events.log"
    lines = path.read_text().splitlines() if path.exists() else []
    found = [line.split(" ", 3) for line in lines]
    return [e for e in found
            if (event is None or e[0] == event) and (wsid is None or e[1] == wsid)]
