"""The faithfulness checks of the IRIS reference, against real gateway and worker processes.

Each test names the check of ``iris-websockets.md`` ("Faithfulness checks") it proves.
The server class is ``tests/apps/probe.py``: it does what a JSON command says and
records its lifecycle events, with the PID of the process that ran them, in
``events.log`` (``--set probe-dir=DIR``), so OnPostServer can be counted across workers.
Checks 9 to 15 (the chat and its page) are in test_chat_e2e.py, test_chat_modes.py
and test_browser.py. Check 18 needs several app servers sharing one store, which these
fixtures do not start.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from tests.conftest import StartRun
from tests.support import System, open_ws, raw_upgrade

MODES = ["shared", "private"]
#: Read's default and fallback size (IRIS: 32656 characters).
READ_SIZE = 32656

StartProbe = Callable[..., System]


def probe_args(directory: Path) -> tuple[str, ...]:
    """The flags that serve Probe.Server and ProbeOCM.Server, logging to ``directory``."""
    return ("--app", "tests.apps.probe:Probe", "--app", "tests.apps.probe:ProbeOCM",
            "--set", f"probe-dir={directory}")


@pytest.fixture
def start_probe(start_run: StartRun, tmp_path: Path) -> StartProbe:
    """``wsgate run`` serving the probes (extra flags and ``workers`` passed on)."""

    def start(*extra: str, workers: int = 2) -> System:
        return start_run(*probe_args(tmp_path), *extra, workers=workers)

    return start


class ProbeClient:
    """A browser socket on a probe; ``hello`` is what its Server() said first."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.hello: dict[str, Any] = {}

    @property
    def wsid(self) -> str:
        return str(self.hello["wsid"])

    @property
    def pid(self) -> int:
        """The PID of the process running this socket's Server()."""
        return int(self.hello["server_pid"])

    async def answer(self) -> dict[str, Any]:
        """The next message, which must be a JSON text frame."""
        raw = await self.ws.get_message()
        assert isinstance(raw, str), raw
        answer: dict[str, Any] = json.loads(raw)
        return answer

    async def cmd(self, cmd: str, **fields: Any) -> None:
        await self.ws.send_message(json.dumps({"cmd": cmd, **fields}))

    async def ask(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """Send a command and return its answer."""
        await self.cmd(cmd, **fields)
        return await self.answer()

    async def close_code(self) -> int:
        """Read until the server closes the socket; its close code."""
        with pytest.raises(ConnectionClosed) as excinfo:
            await self._read_forever()
        return int(excinfo.value.reason.code)

    async def _read_forever(self) -> None:
        while True:
            await self.ws.get_message()


@asynccontextmanager
async def probe(system: System, mode: str = "shared", query: str = "",
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


async def wait_events(directory: Path, event: str, wsid: str, count: int = 1
                      ) -> list[list[str]]:
    """Poll events.log until ``event`` for ``wsid`` is there ``count`` times."""
    while len(found := events(directory, event, wsid)) < count:  # noqa: ASYNC110
        await trio.sleep(0.05)  # another process appends to the file
    return found


async def wait_status(system: System, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll /status until ``ok`` holds; return that status."""
    while not ok(status := system.status()):  # noqa: ASYNC110
        await trio.sleep(0.05)  # polling another process's HTTP endpoint
    return status


def link_of(status: dict[str, Any], wsid: str) -> dict[str, Any]:
    """The /status link that holds ``wsid``."""
    holding = [link for link in status["links"] if wsid in link["sockets"]]
    assert len(holding) == 1, status
    return holding[0]


def shared_flag(mode: str) -> int:
    """SharedConnection for ``mode``."""
    return 1 if mode == "shared" else 0


# --- Check 1: the mode is fixed by OnPreServer ------------------------------------------

@pytest.mark.parametrize("mode", MODES)
async def test_check1_shared_connection_set_late_has_no_effect(
    start_probe: StartProbe, mode: str
) -> None:
    """Check 1: SharedConnection flipped in Server() or later changes neither the value
    nor the mode the socket runs in."""
    system = start_probe()
    with trio.fail_after(30):
        async with probe(system, mode, "late=1") as client:
            assert client.hello["SharedConnection"] == shared_flag(mode)
            assert system.status()["socket_modes"][client.wsid] == mode
            answer = await client.ask("set_shared", value=1 - shared_flag(mode))
            assert answer == {"SharedConnection": shared_flag(mode)}
            assert system.status()["socket_modes"][client.wsid] == mode
            assert link_of(system.status(), client.wsid)["mode"] == mode


async def test_check1_registry_disabled_runs_shared_request_private(
    start_split: StartRun, tmp_path: Path
) -> None:
    """Check 1: with the gateway's Registry disabled, a socket whose OnPreServer asks
    for shared runs private."""
    system = start_split("--registry-methods", "disabled", workers=2,
                         appserver_extra=probe_args(tmp_path))
    with trio.fail_after(30):
        async with probe(system, "shared") as client:
            assert client.hello["SharedConnection"] == 0
            status = system.status()
            assert status["socket_modes"][client.wsid] == "private"
            assert link_of(status, client.wsid)["mode"] == "private"
            assert (await client.ask("set_shared", value=1)) == {"SharedConnection": 0}


# --- Check 2: private sockets run on the handshake worker, and free it -----------------

async def test_check2_private_runs_on_the_handshake_worker_until_server_returns(
    start_probe: StartProbe, tmp_path: Path
) -> None:
    """Check 2: private Server() and OnPostServer run on the handshake worker, which
    serves only that socket; Server()'s return closes the socket (1000) and frees it."""
    system = start_probe("--max-workers", "2", workers=1)
    with trio.fail_after(60):
        async with probe(system, "private") as first:
            assert first.hello["pre_pid"] == first.pid
            link = link_of(system.status(), first.wsid)
            assert link["mode"] == "private"
            assert link["sockets"] == [first.wsid]
            assert link["worker_pid"] == first.pid
            await first.cmd("return")
            assert await first.close_code() == 1000
        posts = await wait_events(tmp_path, "post", first.wsid)
        assert posts[0][2] == str(first.pid)
        # The private link goes; the pool link that replaced it is up.
        await wait_status(system, lambda s: [x["mode"] for x in s["links"]] == ["shared"])
        # --max-workers 2: two more private sockets at once fit only if the first
        # socket's worker was given back.
        async with probe(system, "private") as second, probe(system, "private") as third:
            assert second.pid != third.pid
            assert first.pid in {second.pid, third.pid}
            for client in (second, third):
                assert client.hello["pre_pid"] == client.pid
                assert link_of(system.status(), client.wsid)["mode"] == "private"
    assert len(events(tmp_path, "post", first.wsid)) == 1


async def test_check2_private_socket_on_a_busy_worker_moves_to_its_own(
    start_probe: StartProbe, tmp_path: Path
) -> None:
    """Check 2 (the port's hand-off): a private socket whose handshake worker already
    serves a shared socket runs Server() and OnPostServer on a worker of its own;
    OnPreServer ran once."""
    system = start_probe(workers=1)
    with trio.fail_after(30):
        async with probe(system, "shared") as shared:
            async with probe(system, "private") as moved:
                assert moved.hello["pre_pid"] == shared.pid
                assert moved.pid != shared.pid
                link = link_of(system.status(), moved.wsid)
                assert (link["mode"], link["sockets"]) == ("private", [moved.wsid])
                assert link["worker_pid"] == moved.pid
                assert link_of(system.status(), shared.wsid)["sockets"] == [shared.wsid]
                answer = await moved.ask("read", timeout=0.05)
                assert answer["error"] == 7950
                await moved.cmd("return")
                assert await moved.close_code() == 1000
            posts = await wait_events(tmp_path, "post", moved.wsid)
            assert posts[0][2] == str(moved.pid)
            assert (await shared.ask("read", timeout=0.05))["error"] == 7950
    assert len(events(tmp_path, "pre", moved.wsid)) == 1
    assert len(events(tmp_path, "post", moved.wsid)) == 1


# --- Check 3: shared sockets free the handshake worker; Server() may return ------------

async def test_check3_one_worker_serves_two_shared_sockets_at_once(
    start_probe: StartProbe,
) -> None:
    """Check 3: with one worker, a second shared socket is accepted while the first
    socket's Server() is still running, and both are served by that worker."""
    system = start_probe(workers=1)
    with trio.fail_after(30):
        async with probe(system, "shared") as a, probe(system, "shared") as b:
            assert a.pid == b.pid == a.hello["pre_pid"] == b.hello["pre_pid"]
            assert a.wsid != b.wsid
            for client in (a, b):
                answer = await client.ask("read", timeout=0.05)
                assert answer["error"] == 7950
            links = system.status()["links"]
            assert len(links) == 1
            assert links[0]["sockets"] == [a.wsid, b.wsid]


async def test_check3_socket_stays_open_after_server_returns(
    start_probe: StartProbe, tmp_path: Path
) -> None:
    """Check 3: a shared Server() that returns without EndServer leaves the socket
    open, and OpenServer + Write from another worker reaches the browser."""
    system = start_probe(workers=2)
    with trio.fail_after(30):
        async with probe(system, "shared") as a, probe(system, "shared") as b:
            assert a.pid != b.pid
            await a.cmd("return")
            await wait_events(tmp_path, "return", a.wsid)
            assert system.status()["socket_modes"][a.wsid] == "shared"
            answer = await b.ask("write_to", id=a.wsid, text="from the other worker")
            assert answer["ok"] is True
            assert answer["pid"] == b.pid
            assert await a.ws.get_message() == "from the other worker"
            assert events(tmp_path, "post", a.wsid) == []
            await a.ws.aclose()
        # No OnClientMessage: the client's close still ends the socket, with one post.
        posts = await wait_events(tmp_path, "post", a.wsid)
        assert posts[0][2] == str(a.pid)
        await wait_status(system, lambda s: a.wsid not in s["socket_modes"])
    assert len(events(tmp_path, "post", a.wsid)) == 1


# --- Check 4: OpenServer ------------------------------------------------------------------

async def test_check4_open_server_of_empty_id_fails(start_probe: StartProbe) -> None:
    """Check 4: OpenServer("") fails."""
    system = start_probe(workers=1)
    with trio.fail_after(30):
        async with probe(system, "shared") as client:
            answer = await client.ask("write_to", id="", text="nowhere")
            assert answer["type"] == "OpenServerError"
            assert answer["error"] == 5001


async def test_check4_open_server_of_a_private_socket_is_refused(
    start_probe: StartProbe,
) -> None:
    """Check 4: OpenServer of a private (sync) socket is refused, from any worker."""
    system = start_probe(workers=2)
    with trio.fail_after(30):
        async with probe(system, "private") as private, probe(system, "shared") as shared:
            for command in ("write_to", "open_info", "end_other"):
                answer = await shared.ask(command, id=private.wsid, text="no")
                assert answer["type"] == "PrivateSocket", answer
            await private.cmd("write_binary", hex="00")
            assert await private.ws.get_message() == b"\x00"  # still open, untouched


async def test_check4_open_server_restores_session_and_mode(start_probe: StartProbe) -> None:
    """Check 4: OpenServer restores SessionId (the CSPSESSIONID cookie) and
    SharedConnection, on another worker too."""
    system = start_probe(workers=2)
    cookie = [(b"Cookie", b"theme=dark; CSPSESSIONID=abc123")]
    with trio.fail_after(30):
        async with probe(system, "shared", headers=cookie) as with_session, \
                probe(system, "shared") as asker:
            assert with_session.hello["SessionId"] == "abc123"
            assert asker.hello["SessionId"] == ""
            assert asker.pid != with_session.pid
            info = await asker.ask("open_info", id=with_session.wsid)
            assert info["ok"] is True
            assert info["SessionId"] == "abc123"
            assert info["SharedConnection"] == 1
            info = await with_session.ask("open_info", id=asker.wsid)
            assert (info["SessionId"], info["SharedConnection"]) == ("", 1)


# --- Check 5: EndServer -------------------------------------------------------------------

async def test_check5_end_server_in_shared_mode(start_probe: StartProbe, tmp_path: Path) -> None:
    """Check 5: EndServer closes the browser socket (1000), runs OnPostServer exactly
    once, and a later OpenServer + Write from another worker fails."""
    system = start_probe(workers=2)
    with trio.fail_after(30):
        async with probe(system, "shared") as ended, probe(system, "shared") as b:
            await ended.cmd("end")
            assert await ended.close_code() == 1000
            posts = await wait_events(tmp_path, "post", ended.wsid)
            assert posts[0][2] == str(ended.pid)
            await wait_status(system, lambda s: ended.wsid not in s["socket_modes"])
            answer = await b.ask("write_to", id=ended.wsid, text="too late")
            assert answer["type"] in ("OpenServerError", "SocketGone"), answer
            assert answer["error"] == 5001
            await wait_events(tmp_path, "ended", ended.wsid)
    assert len(events(tmp_path, "post", ended.wsid)) == 1


@pytest.mark.parametrize("workers", [1, 2], ids=["same-worker", "other-worker"])
async def test_check5_end_server_from_another_socket(
    start_probe: StartProbe, tmp_path: Path, workers: int
) -> None:
    """Check 5: EndServer on an OpenServer instance closes the target and runs its
    OnPostServer once, in the caller's process (IRIS: EndServer calls OnPostServer)."""
    system = start_probe(workers=workers)
    with trio.fail_after(30):
        async with probe(system, "shared") as target, probe(system, "shared") as caller:
            assert (target.pid == caller.pid) == (workers == 1)
            answer = await caller.ask("end_other", id=target.wsid)
            assert answer["ok"] is True
            assert await target.close_code() == 1000
            posts = await wait_events(tmp_path, "post", target.wsid)
            assert posts[0][2] == str(caller.pid)
            # The target's own Server() sees the close; it must not run OnPostServer too.
            await wait_events(tmp_path, "closed", target.wsid)
            await wait_status(system, lambda s: target.wsid not in s["socket_modes"])
            answer = await caller.ask("end_other", id=target.wsid)
            assert answer["type"] in ("OpenServerError", "SocketGone"), answer
        await wait_events(tmp_path, "post", caller.wsid)
    assert len(events(tmp_path, "post", target.wsid)) == 1
    assert len(events(tmp_path, "post", caller.wsid)) == 1


async def test_check5_end_server_in_private_mode(start_probe: StartProbe, tmp_path: Path) -> None:
    """Check 5: EndServer in a private Server() closes the socket and OnPostServer runs
    exactly once."""
    system = start_probe(workers=1)
    with trio.fail_after(30):
        async with probe(system, "private") as client:
            await client.cmd("end")
            assert await client.close_code() == 1000
        posts = await wait_events(tmp_path, "post", client.wsid)
        assert posts[0][2] == str(client.pid)
        await wait_events(tmp_path, "ended", client.wsid)
        await wait_status(system, lambda s: client.wsid not in s["socket_modes"])
    assert len(events(tmp_path, "post", client.wsid)) == 1


class SilentBrowser:
    """A hand-made WebSocket client that never answers the server's close frame."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    @asynccontextmanager
    async def connect(cls, system: System, target: str) -> AsyncIterator[SilentBrowser]:
        stream = await trio.open_tcp_stream("127.0.0.1", system.port)
        async with stream:
            browser = cls(stream)
            request = (f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n")
            await stream.send_all(request.encode())
            while b"\r\n\r\n" not in browser.buffer:
                browser.buffer += await stream.receive_some()
            head, _, rest = bytes(browser.buffer).partition(b"\r\n\r\n")
            assert head.split()[1] == b"101", head
            browser.buffer = bytearray(rest)
            yield browser

    async def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = await self.stream.receive_some()
            assert chunk, "the server hung up"
            self.buffer += chunk
        taken = bytes(self.buffer[:n])
        del self.buffer[:n]
        return taken

    async def receive_text(self) -> str:
        """One unfragmented text message (of under 64 KiB)."""
        first, length = await self._take(2)
        assert first == 0x81, hex(first)
        if length == 126:
            length = int.from_bytes(await self._take(2), "big")
        return (await self._take(length)).decode()

    async def send_text(self, text: str) -> None:
        """One masked text frame (of under 126 bytes)."""
        payload = text.encode()
        assert len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await self.stream.send_all(bytes([0x81, 0x80 | len(payload)]) + mask + masked)


async def test_check5_ended_socket_is_unregistered_at_once(
    start_probe: StartProbe, tmp_path: Path
) -> None:
    """Check 5: once EndServer has returned, OpenServer of that id fails on every
    worker, even while the browser has not answered the close frame yet."""
    system = start_probe(workers=2)
    with trio.fail_after(30):
        async with SilentBrowser.connect(system, "/csp/user/Probe.Server.cls") as target:
            hello = json.loads(await target.receive_text())
            wsid = hello["wsid"]
            async with probe(system) as other:
                await target.send_text(json.dumps({"cmd": "end"}))
                await wait_events(tmp_path, "ended", wsid)
                answer = await other.ask("write_to", id=wsid, text="too late")
                assert answer.get("type") in ("OpenServerError", "SocketGone"), answer


# --- Check 6: Read's timeout and client close -------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_check6_read_timeout_and_client_close(
    start_probe: StartProbe, tmp_path: Path, mode: str
) -> None:
    """Check 6: a Read with no data raises 7950 with AtEnd 1; after the client closes,
    Read raises 7951."""
    system = start_probe(workers=1)
    with trio.fail_after(30):
        async with probe(system, mode) as client:
            answer = await client.ask("read", timeout=0.2)
            assert answer["error"] == 7950
            assert answer["type"] == "ReadTimeout"
            assert answer["AtEnd"] == 1
        closed = await wait_events(tmp_path, "closed", client.wsid)
    assert closed[0][3] == "7951"
    assert closed[0][2] == str(client.pid)


# --- Check 7: Read in pieces ------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_check7_read_splits_long_messages(start_probe: StartProbe, mode: str) -> None:
    """Check 7: size 0 means 32656; a 70000-character message comes in pieces of at most
    size characters, AtEnd 0 until the last; with size 1000 likewise."""
    system = start_probe(workers=1)
    text = "é" * 70000
    with trio.fail_after(30):
        async with probe(system, mode) as client:
            await client.cmd("read", size=0, count=3)
            await client.ws.send_message(text)
            pieces = [await client.answer() for _ in range(3)]
            assert [p["len"] for p in pieces] == [READ_SIZE, READ_SIZE, 70000 - 2 * READ_SIZE]
            assert [p["AtEnd"] for p in pieces] == [0, 0, 1]
            assert "".join(p["piece"] for p in pieces) == text

            count = -(-70000 // 1000)
            await client.cmd("read", size=1000, count=count)
            await client.ws.send_message(text)
            pieces = [await client.answer() for _ in range(count)]
            assert all(p["len"] <= 1000 for p in pieces)
            assert [p["AtEnd"] for p in pieces] == [0] * (count - 1) + [1]
            assert "".join(p["piece"] for p in pieces) == text


@pytest.mark.parametrize("mode", MODES)
async def test_check7_binary_data_comes_back_unchanged(start_probe: StartProbe,
                                                       mode: str) -> None:
    """Check 7: with BinaryData set, a binary message is read as bytes, unchanged,
    in pieces of at most size bytes."""
    system = start_probe(workers=1)
    data = os.urandom(70000)
    with trio.fail_after(30):
        async with probe(system, mode, query="binary=1") as client:
            await client.cmd("read", size=0, count=3)
            await client.ws.send_message(data)
            pieces = [await client.answer() for _ in range(3)]
            assert all(p["binary"] for p in pieces)
            assert [p["AtEnd"] for p in pieces] == [0, 0, 1]
            assert bytes.fromhex("".join(p["piece"] for p in pieces)) == data


# --- Check 8: Write's frame type --------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_check8_write_text_by_default_binary_with_binary_data(
    start_probe: StartProbe, mode: str
) -> None:
    """Check 8: Write sends a text frame by default, a binary frame with BinaryData."""
    system = start_probe(workers=1)
    with trio.fail_after(30):
        async with probe(system, mode) as client:
            assert isinstance(client.hello, dict)  # the hello was a text frame
            await client.cmd("write_binary", hex="00ff10")
            frame = await client.ws.get_message()
            assert frame == b"\x00\xff\x10"


# --- OnClientMessage and a crashing Server() --------------------------------------------


async def test_on_client_message_after_server_returns(start_probe: StartProbe,
                                                      tmp_path: Path) -> None:
    """A shared socket whose Server() returned hands later messages to OnClientMessage,
    then its close (close = 1), then OnPostServer runs exactly once."""
    system = start_probe(workers=1)
    with trio.fail_after(30):
        async with probe(system, cls="ProbeOCM") as client:
            await client.cmd("return")
            await wait_events(tmp_path, "return", client.wsid)
            await client.ws.send_message("hi")
            assert await client.answer() == {"ocm": "hi"}
        await wait_events(tmp_path, "post", client.wsid)
    kinds = [e[0] for e in events(tmp_path, wsid=client.wsid)]
    assert kinds == ["pre", "server", "return", "ocm", "ocm", "post"]
    ocm = events(tmp_path, "ocm", client.wsid)
    assert ocm[0][3] == "0 'hi'"
    assert ocm[1][3] == "1 ''"


@pytest.mark.parametrize("mode", MODES)
async def test_a_crashing_server_closes_1011_and_post_server_runs_once(
    start_probe: StartProbe, tmp_path: Path, mode: str
) -> None:
    """Server() raising closes the socket with 1011; OnPostServer still runs, once."""
    system = start_probe(workers=1)
    with trio.fail_after(30):
        async with probe(system, mode) as client:
            await client.cmd("crash")
            assert await client.close_code() == 1011
        await wait_events(tmp_path, "post", client.wsid)
        await trio.sleep(0.3)  # a second OnPostServer would show up by now
    assert len(events(tmp_path, "post", client.wsid)) == 1


# --- Check 16: refused handshakes and the session timeout -------------------------------


async def test_check16_refused_handshake_is_404(start_probe: StartProbe) -> None:
    """Check 16: OnPreServer refusing (IRIS: failed login) makes the handshake fail with
    a 404 page."""
    system = start_probe(workers=1)
    status, body = await trio.to_thread.run_sync(
        raw_upgrade, system, "/csp/user/Probe.Server.cls?reject=1")
    assert status == 404
    assert b"login failed" in body


@pytest.mark.parametrize("mode", MODES)
async def test_check16_idle_socket_closes_after_the_session_timeout(
    start_run: StartRun, tmp_path: Path, mode: str
) -> None:
    """Check 16: a socket with no traffic either way is closed (1001) after the
    gateway's --session-timeout."""
    system = start_run(*probe_args(tmp_path), "--session-timeout", "1", workers=1)
    with trio.fail_after(30):
        async with probe(system, mode) as client:
            assert await client.close_code() == 1001


# --- Check 17: one worker per private socket; a fixed pool for shared ones --------------


async def test_check17_one_worker_process_per_private_socket(start_probe: StartProbe) -> None:
    """Check 17: three private sockets run on three distinct worker processes, each on
    a private link holding that socket only."""
    system = start_probe(workers=1)
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(probe(system, "private"))
                       for _ in range(3)]
            status = system.status()
            for client in clients:
                link = link_of(status, client.wsid)
                assert link["mode"] == "private"
                assert link["sockets"] == [client.wsid]
                assert link["worker_pid"] == client.pid
            assert len({c.pid for c in clients}) == 3


async def test_check17_a_fixed_pool_serves_many_shared_sockets(start_probe: StartProbe) -> None:
    """Check 17: 20 shared sockets are served by the pool's 2 links and workers."""
    system = start_probe(workers=2)
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(probe(system))
                       for _ in range(20)]
            links = system.status()["links"]
            assert len(links) == 2
            assert all(link["mode"] == "shared" for link in links)
            held = [wsid for link in links for wsid in link["sockets"]]
            assert sorted(held) == sorted(c.wsid for c in clients)
            assert {c.pid for c in clients} == {link["worker_pid"] for link in links}
