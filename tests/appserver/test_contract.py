"""The faithfulness checks of the IRIS reference, in one process: a real gateway, a real
supervisor and real worker runtimes (tests/harness.py).

Each test names the check of ``iris-websockets.md`` ("Faithfulness checks") it proves.
The server class is ``tests/apps/probe.py``: it does what a JSON command says and
records its lifecycle events, with the pid of the worker that ran them, in
``events.log``, so OnPostServer can be counted across workers. Negative checks wait
for :meth:`~tests.harness.Harness.settled` (the socket is gone everywhere and every
task is idle), then count exactly. Checks 9 to 15 (the chat) are in test_chat.py and
tests/e2e/test_browser.py; tests/e2e/test_contract.py keeps the checks whose point is
separate OS processes. Check 18 needs several app servers sharing one store.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.apps.probe import ProbeClient, events, probe
from tests.harness import Harness, running
from tests.support import raw_upgrade

MODES = ["shared", "private"]
#: Read's default and fallback size (IRIS: 32656 characters).
READ_SIZE = 32656
#: Every test's bound: generous, since one process runs everything.
TIMEOUT_S = 30


@asynccontextmanager
async def probe_system(tmp_path: Path, *, workers: int = 2, **options: Any
                       ) -> AsyncIterator[Harness]:
    """The harness serving Probe.Server and ProbeOCM.Server, logging to ``tmp_path``."""
    async with running(tmp_path, workers=workers,
                       apps=("tests.apps.probe:Probe", "tests.apps.probe:ProbeOCM"),
                       settings={"probe-dir": str(tmp_path)}, **options) as h:
        yield h
        # A product bug: Supervisor.spawn (appserver/supervisor.py) leaks its end of a
        # new worker's control socket when cancelled while that worker starts, and a
        # private socket makes the pool grow in the background. Leave only once no
        # worker is starting, or the ResourceWarning fails the test.
        await h.wait_for(lambda: h.supervisor.starting == 0)


def link_of(status: dict[str, Any], wsid: str) -> dict[str, Any]:
    """The /status link that holds ``wsid``."""
    holding = [link for link in status["links"] if wsid in link["sockets"]]
    assert len(holding) == 1, status
    return holding[0]


def shared_flag(mode: str) -> int:
    """SharedConnection for ``mode``."""
    return 1 if mode == "shared" else 0


async def wait_events(h: Harness, directory: Path, event: str, wsid: str, count: int = 1
                      ) -> list[list[str]]:
    """Wait until ``event`` for ``wsid`` was recorded ``count`` times; those events."""
    await h.wait_for(lambda: len(events(directory, event, wsid)) >= count)
    return events(directory, event, wsid)


# --- Check 1: the mode is fixed by OnPreServer ------------------------------------------

@pytest.mark.parametrize("mode", MODES)
async def test_check1_shared_connection_set_late_has_no_effect(tmp_path: Path,
                                                               mode: str) -> None:
    """Check 1: SharedConnection flipped in Server() or later changes neither the value
    nor the mode the socket runs in."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path) as h, probe(h, mode, "late=1") as client:
            assert client.hello["SharedConnection"] == shared_flag(mode)
            assert h.status()["socket_modes"][client.wsid] == mode
            answer = await client.ask("set_shared", value=1 - shared_flag(mode))
            assert answer == {"SharedConnection": shared_flag(mode)}
            assert h.status()["socket_modes"][client.wsid] == mode
            assert link_of(h.status(), client.wsid)["mode"] == mode


async def test_check1_registry_disabled_runs_shared_request_private(tmp_path: Path) -> None:
    """Check 1: with the gateway's Registry disabled, a socket whose OnPreServer asks
    for shared runs private."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, registry_enabled=False) as h, \
                probe(h, "shared") as client:
            assert client.hello["SharedConnection"] == 0
            status = h.status()
            assert status["socket_modes"][client.wsid] == "private"
            assert link_of(status, client.wsid)["mode"] == "private"
            assert (await client.ask("set_shared", value=1)) == {"SharedConnection": 0}


# --- Check 2: private sockets run on the handshake worker, and free it -----------------

async def test_check2_private_runs_on_the_handshake_worker_until_server_returns(
    tmp_path: Path,
) -> None:
    """Check 2: private Server() and OnPostServer run on the handshake worker, which
    serves only that socket; Server()'s return closes the socket (1000) and frees it."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=1, max_workers=2) as h:
            async with probe(h, "private") as first:
                assert first.hello["pre_pid"] == first.pid
                link = link_of(h.status(), first.wsid)
                assert link["mode"] == "private"
                assert link["sockets"] == [first.wsid]
                assert link["worker_pid"] == first.pid
                await first.cmd("return")
                assert await first.close_code() == 1000
            await h.settled(first.wsid)
            posts = events(tmp_path, "post", first.wsid)
            assert [post[2] for post in posts] == [str(first.pid)]
            # The private link goes; the pool link that replaced it is up.
            await h.wait_for(lambda: [x["mode"] for x in h.status()["links"]] == ["shared"])
            # max_workers=2: two more private sockets at once fit only if the first
            # socket's worker was given back.
            async with probe(h, "private") as second, probe(h, "private") as third:
                assert second.pid != third.pid
                assert first.pid in {second.pid, third.pid}
                for client in (second, third):
                    assert client.hello["pre_pid"] == client.pid
                    assert link_of(h.status(), client.wsid)["mode"] == "private"
            for client in (second, third):
                await h.settled(client.wsid)
    assert len(events(tmp_path, "post", first.wsid)) == 1
    for client in (second, third):
        assert len(events(tmp_path, "post", client.wsid)) == 1


async def test_check2_private_socket_on_a_busy_worker_moves_to_its_own(
    tmp_path: Path,
) -> None:
    """Check 2 (the port's hand-off): a private socket whose handshake worker already
    serves a shared socket runs Server() and OnPostServer on a worker of its own;
    OnPreServer ran once."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=1) as h, probe(h, "shared") as shared:
            async with probe(h, "private") as moved:
                assert moved.hello["pre_pid"] == shared.pid
                assert moved.pid != shared.pid
                link = link_of(h.status(), moved.wsid)
                assert (link["mode"], link["sockets"]) == ("private", [moved.wsid])
                assert link["worker_pid"] == moved.pid
                assert link_of(h.status(), shared.wsid)["sockets"] == [shared.wsid]
                answer = await moved.ask("read", timeout=0.05)
                assert answer["error"] == 7950
                await moved.cmd("return")
                assert await moved.close_code() == 1000
            await h.settled(moved.wsid)
            posts = events(tmp_path, "post", moved.wsid)
            assert [post[2] for post in posts] == [str(moved.pid)]
            assert (await shared.ask("read", timeout=0.05))["error"] == 7950
    assert len(events(tmp_path, "pre", moved.wsid)) == 1
    assert len(events(tmp_path, "post", moved.wsid)) == 1


# --- Check 3: shared sockets free the handshake worker; Server() may return ------------

async def test_check3_one_worker_serves_two_shared_sockets_at_once(tmp_path: Path) -> None:
    """Check 3: with one worker, a second shared socket is accepted while the first
    socket's Server() is still running, and both are served by that worker."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=1) as h, \
                probe(h, "shared") as a, probe(h, "shared") as b:
            assert a.pid == b.pid == a.hello["pre_pid"] == b.hello["pre_pid"]
            assert a.wsid != b.wsid
            for client in (a, b):
                answer = await client.ask("read", timeout=0.05)
                assert answer["error"] == 7950
            links = h.status()["links"]
            assert len(links) == 1
            assert links[0]["sockets"] == [a.wsid, b.wsid]
            assert len(h.runtimes) == 1


async def test_check3_socket_stays_open_after_server_returns(tmp_path: Path) -> None:
    """Check 3: a shared Server() that returns without EndServer leaves the socket
    open, and OpenServer + Write from another worker reaches the browser."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=2) as h, \
                probe(h, "shared") as a, probe(h, "shared") as b:
            assert a.pid != b.pid
            await a.cmd("return")
            await wait_events(h, tmp_path, "return", a.wsid)
            assert h.status()["socket_modes"][a.wsid] == "shared"
            answer = await b.ask("write_to", id=a.wsid, text="from the other worker")
            assert answer["ok"] is True
            assert answer["pid"] == b.pid
            assert await a.ws.get_message() == "from the other worker"
            assert events(tmp_path, "post", a.wsid) == []
            await a.ws.aclose()
            # No OnClientMessage: the client's close still ends the socket.
            await h.settled(a.wsid)
            posts = events(tmp_path, "post", a.wsid)
            assert [post[2] for post in posts] == [str(a.pid)]
            assert a.wsid not in h.status()["socket_modes"]
    assert len(events(tmp_path, "post", a.wsid)) == 1


# --- Check 4: OpenServer ------------------------------------------------------------------

async def test_check4_open_server_of_empty_id_fails(tmp_path: Path) -> None:
    """Check 4: OpenServer("") fails."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=1) as h, probe(h, "shared") as client:
            answer = await client.ask("write_to", id="", text="nowhere")
            assert answer["type"] == "OpenServerError"
            assert answer["error"] == 5001


async def test_check4_open_server_of_a_private_socket_is_refused(tmp_path: Path) -> None:
    """Check 4: OpenServer of a private (sync) socket is refused, from any worker."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=2) as h, \
                probe(h, "private") as private, probe(h, "shared") as shared:
            assert private.pid != shared.pid
            for command in ("write_to", "open_info", "end_other"):
                answer = await shared.ask(command, id=private.wsid, text="no")
                assert answer["type"] == "PrivateSocket", answer
                assert answer["error"] == 5001
            await private.cmd("write_binary", hex="00")
            assert await private.ws.get_message() == b"\x00"  # still open, untouched
            assert h.status()["socket_modes"][private.wsid] == "private"


async def test_check4_open_server_restores_session_and_mode(tmp_path: Path) -> None:
    """Check 4: OpenServer restores SessionId (the CSPSESSIONID cookie) and
    SharedConnection, on another worker too."""
    cookie = [(b"Cookie", b"theme=dark; CSPSESSIONID=abc123")]
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=2) as h, \
                probe(h, "shared", headers=cookie) as with_session, \
                probe(h, "shared") as asker:
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

async def test_check5_end_server_in_shared_mode(tmp_path: Path) -> None:
    """Check 5: EndServer closes the browser socket (1000), runs OnPostServer exactly
    once, and a later OpenServer + Write from another worker fails."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=2) as h, \
                probe(h, "shared") as ended, probe(h, "shared") as b:
            assert b.pid != ended.pid
            await ended.cmd("end")
            assert await ended.close_code() == 1000
            await h.settled(ended.wsid)
            posts = events(tmp_path, "post", ended.wsid)
            assert [post[2] for post in posts] == [str(ended.pid)]
            assert len(events(tmp_path, "ended", ended.wsid)) == 1
            assert ended.wsid not in h.status()["socket_modes"]
            answer = await b.ask("write_to", id=ended.wsid, text="too late")
            assert answer["type"] in ("OpenServerError", "SocketGone"), answer
            assert answer["error"] == 5001
    assert len(events(tmp_path, "post", ended.wsid)) == 1


@pytest.mark.parametrize("workers", [1, 2], ids=["same-worker", "other-worker"])
async def test_check5_end_server_from_another_socket(tmp_path: Path, workers: int) -> None:
    """Check 5: EndServer on an OpenServer instance closes the target and runs its
    OnPostServer once, in the caller's worker (IRIS: EndServer calls OnPostServer)."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=workers) as h:
            async with probe(h, "shared") as target, probe(h, "shared") as caller:
                assert (target.pid == caller.pid) == (workers == 1)
                answer = await caller.ask("end_other", id=target.wsid)
                assert answer["ok"] is True
                assert answer["pid"] == caller.pid
                assert await target.close_code() == 1000
                # The target's own Server() sees the close; it must not run OnPostServer.
                await h.settled(target.wsid)
                posts = events(tmp_path, "post", target.wsid)
                assert [post[2] for post in posts] == [str(caller.pid)]
                assert len(events(tmp_path, "closed", target.wsid)) == 1
                assert target.wsid not in h.status()["socket_modes"]
                answer = await caller.ask("end_other", id=target.wsid)
                assert answer["type"] in ("OpenServerError", "SocketGone"), answer
            await h.settled(caller.wsid)
    assert len(events(tmp_path, "post", target.wsid)) == 1
    assert len(events(tmp_path, "post", caller.wsid)) == 1


async def test_check5_end_server_in_private_mode(tmp_path: Path) -> None:
    """Check 5: EndServer in a private Server() closes the socket and OnPostServer runs
    exactly once."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=1) as h:
            async with probe(h, "private") as client:
                await client.cmd("end")
                assert await client.close_code() == 1000
            await h.settled(client.wsid)
            posts = events(tmp_path, "post", client.wsid)
            assert [post[2] for post in posts] == [str(client.pid)]
            assert len(events(tmp_path, "ended", client.wsid)) == 1
            assert client.wsid not in h.status()["socket_modes"]
    assert len(events(tmp_path, "post", client.wsid)) == 1


class SilentBrowser:
    """A hand-made WebSocket client that never answers the server's close frame."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    @asynccontextmanager
    async def connect(cls, h: Harness, target: str) -> AsyncIterator[SilentBrowser]:
        """Upgrade ``target`` by hand; the browser, once the 101 is in."""
        stream = await trio.open_tcp_stream("127.0.0.1", h.port)
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

    async def receive_close_code(self) -> int:
        """The next frame, which must be an unmasked close frame; its code."""
        first, length = await self._take(2)
        assert first == 0x88, hex(first)
        return int.from_bytes((await self._take(length))[:2], "big")

    async def send_text(self, text: str) -> None:
        """One masked text frame (of under 126 bytes)."""
        payload = text.encode()
        assert len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await self.stream.send_all(bytes([0x81, 0x80 | len(payload)]) + mask + masked)


async def test_check5_ended_socket_is_unregistered_at_once(tmp_path: Path) -> None:
    """Check 5: once EndServer has returned, OpenServer of that id fails on every
    worker, even while the browser has not answered the close frame yet."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=2) as h, \
                SilentBrowser.connect(h, "/csp/user/Probe.Server.cls") as target:
            wsid = json.loads(await target.receive_text())["wsid"]
            async with probe(h) as other:
                assert other.pid != int(events(tmp_path, "server", wsid)[0][2])
                await target.send_text(json.dumps({"cmd": "end"}))
                assert await target.receive_close_code() == 1000
                await wait_events(h, tmp_path, "ended", wsid)
                # The browser has not answered: the gateway still holds the socket.
                assert h.gateway.table.get(wsid) is not None
                answer = await other.ask("write_to", id=wsid, text="too late")
                assert answer.get("type") in ("OpenServerError", "SocketGone"), answer
                assert answer["error"] == 5001


# --- Check 6: Read's timeout and client close -------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_check6_read_timeout_and_client_close(tmp_path: Path, mode: str) -> None:
    """Check 6: a Read with no data raises 7950 with AtEnd 1; after the client closes,
    Read raises 7951."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=1) as h:
            async with probe(h, mode) as client:
                answer = await client.ask("read", timeout=0.2)
                assert answer["error"] == 7950
                assert answer["type"] == "ReadTimeout"
                assert answer["AtEnd"] == 1
            await h.settled(client.wsid)
    closed = events(tmp_path, "closed", client.wsid)
    assert [(e[2], e[3]) for e in closed] == [(str(client.pid), "7951")]


# --- Check 7: Read in pieces ------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_check7_read_splits_long_messages(tmp_path: Path, mode: str) -> None:
    """Check 7: size 0 means 32656; a 70000-character message comes in pieces of at most
    size characters, AtEnd 0 until the last; with size 1000 likewise."""
    text = "é" * 70000
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=1) as h, probe(h, mode) as client:
            await client.cmd("read", size=0, count=3)
            await client.ws.send_message(text)
            pieces = [await client.answer() for _ in range(3)]
            assert [p["len"] for p in pieces] == [READ_SIZE, READ_SIZE, 70000 - 2 * READ_SIZE]
            assert [p["AtEnd"] for p in pieces] == [0, 0, 1]
            assert not any(p["binary"] for p in pieces)
            assert "".join(p["piece"] for p in pieces) == text

            count = -(-70000 // 1000)
            await client.cmd("read", size=1000, count=count)
            await client.ws.send_message(text)
            pieces = [await client.answer() for _ in range(count)]
            assert all(p["len"] <= 1000 for p in pieces)
            assert [p["AtEnd"] for p in pieces] == [0] * (count - 1) + [1]
            assert "".join(p["piece"] for p in pieces) == text


@pytest.mark.parametrize("mode", MODES)
async def test_check7_binary_data_comes_back_unchanged(tmp_path: Path, mode: str) -> None:
    """Check 7: with BinaryData set, a binary message is read as bytes, unchanged,
    in pieces of at most size bytes."""
    data = os.urandom(70000)
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=1) as h, \
                probe(h, mode, query="binary=1") as client:
            await client.cmd("read", size=0, count=3)
            await client.ws.send_message(data)
            pieces = [await client.answer() for _ in range(3)]
            assert all(p["binary"] for p in pieces)
            assert [p["len"] for p in pieces] == [READ_SIZE, READ_SIZE, 70000 - 2 * READ_SIZE]
            assert [p["AtEnd"] for p in pieces] == [0, 0, 1]
            assert bytes.fromhex("".join(p["piece"] for p in pieces)) == data


@pytest.mark.parametrize("mode", MODES)
async def test_check7_binary_data_reads_a_text_frame_as_its_utf8_bytes(
    tmp_path: Path, mode: str
) -> None:
    """Check 7: with BinaryData set, a text message is read as bytes (its UTF-8
    encoding), in pieces of at most size bytes; without it, as text."""
    text = "é€" * 10  # 50 UTF-8 bytes: the pieces count bytes, not characters
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=1) as h:
            async with probe(h, mode, query="binary=1") as client:
                await client.cmd("read", size=0, count=1)
                await client.ws.send_message(text)
                piece = await client.answer()
                assert piece == {"piece": text.encode().hex(), "binary": True, "AtEnd": 1,
                                 "len": len(text.encode())}
                await client.cmd("read", size=30, count=2)
                await client.ws.send_message(text)
                pieces = [await client.answer() for _ in range(2)]
                assert [(p["binary"], p["len"], p["AtEnd"]) for p in pieces] == [
                    (True, 30, 0), (True, 20, 1)]
                assert bytes.fromhex("".join(p["piece"] for p in pieces)) == text.encode()
            async with probe(h, mode) as plain:
                await plain.cmd("read", size=0, count=1)
                await plain.ws.send_message(text)
                assert await plain.answer() == {"piece": text, "binary": False, "AtEnd": 1,
                                                "len": len(text)}


# --- Check 8: Write's frame type --------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_check8_write_text_by_default_binary_with_binary_data(tmp_path: Path,
                                                                    mode: str) -> None:
    """Check 8: Write sends a text frame by default, a binary frame with BinaryData."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=1) as h, probe(h, mode) as client:
            assert isinstance(client.hello, dict)  # the hello was a text frame
            await client.cmd("write_binary", hex="00ff10")
            frame = await client.ws.get_message()
            assert frame == b"\x00\xff\x10"


@pytest.mark.parametrize("mode", MODES)
async def test_check8_write_of_text_with_binary_data_sends_a_binary_frame(
    tmp_path: Path, mode: str
) -> None:
    """Check 8: Write of a string with BinaryData set sends a binary frame of its UTF-8
    bytes (the hello, written with BinaryData 0, was a text frame)."""
    text = "héllo €"
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=1) as h, probe(h, mode) as client:
            await client.cmd("write_text_binary", text=text)
            assert await client.ws.get_message() == text.encode()


# --- OnClientMessage and a crashing Server() --------------------------------------------


async def test_on_client_message_after_server_returns(tmp_path: Path) -> None:
    """A shared socket whose Server() returned hands later messages to OnClientMessage,
    then its close (close = 1), then OnPostServer runs exactly once."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=1) as h:
            async with probe(h, cls="ProbeOCM") as client:
                await client.cmd("return")
                await wait_events(h, tmp_path, "return", client.wsid)
                await client.ws.send_message("hi")
                assert await client.answer() == {"ocm": "hi"}
            await h.settled(client.wsid)
    kinds = [e[0] for e in events(tmp_path, wsid=client.wsid)]
    assert kinds == ["pre", "server", "return", "ocm", "ocm", "post"]
    ocm = events(tmp_path, "ocm", client.wsid)
    assert ocm[0][3] == "0 'hi'"
    assert ocm[1][3] == "1 ''"


@pytest.mark.parametrize("mode", MODES)
async def test_a_crashing_server_closes_1011_and_post_server_runs_once(
    tmp_path: Path, mode: str
) -> None:
    """Server() raising closes the socket with 1011; OnPostServer still runs, once."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=1) as h:
            async with probe(h, mode) as client:
                await client.cmd("crash")
                assert await client.close_code() == 1011
            await h.settled(client.wsid)
    posts = events(tmp_path, "post", client.wsid)
    assert [post[2] for post in posts] == [str(client.pid)]


# --- Check 16: refused handshakes and the session timeout -------------------------------


async def test_check16_refused_handshake_is_404(tmp_path: Path) -> None:
    """Check 16: OnPreServer refusing (IRIS: failed login) makes the handshake fail with
    a 404 page, and no socket is left behind."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=1) as h:
            # raw_upgrade reads only .port of its System; a thread, since it blocks.
            status, body = await trio.to_thread.run_sync(
                raw_upgrade, h, "/csp/user/Probe.Server.cls?reject=1")
            assert status == 404
            assert b"login failed" in body
            assert events(tmp_path) == []  # OnPreServer refused before recording "pre"
            await h.wait_for(lambda: len(h.gateway.table) == 0
                             and not any(r.ports for r in h.runtimes))


@pytest.mark.parametrize("mode", MODES)
async def test_check16_idle_socket_closes_after_the_session_timeout(tmp_path: Path,
                                                                    mode: str) -> None:
    """Check 16: a socket with no traffic either way is closed (1001) after the
    gateway's session timeout."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=1, session_timeout_s=0.5) as h:
            async with probe(h, mode) as client:
                assert await client.close_code() == 1001
            await h.settled(client.wsid)
            assert h.gateway.stats["sockets_timed_out"] == 1
    assert len(events(tmp_path, "post", client.wsid)) == 1


# --- Check 17: one worker per private socket; a fixed pool for shared ones --------------


async def test_check17_one_worker_per_private_socket(tmp_path: Path) -> None:
    """Check 17: three private sockets run on three distinct workers, each on a private
    link holding that socket only."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=1) as h, AsyncExitStack() as stack:
            clients: list[ProbeClient] = [
                await stack.enter_async_context(probe(h, "private")) for _ in range(3)]
            status = h.status()
            for client in clients:
                link = link_of(status, client.wsid)
                assert link["mode"] == "private"
                assert link["sockets"] == [client.wsid]
                assert link["worker_pid"] == client.pid
                assert [p.wsid for p in h.runtime(client.pid).ports.values()] == [client.wsid]
            assert len({c.pid for c in clients}) == 3


async def test_check17_a_fixed_pool_serves_many_shared_sockets(tmp_path: Path) -> None:
    """Check 17: 20 shared sockets are served by the pool's 2 links and workers."""
    with trio.fail_after(TIMEOUT_S):
        async with probe_system(tmp_path, workers=2) as h, AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(probe(h)) for _ in range(20)]
            links = h.status()["links"]
            assert len(links) == 2
            assert all(link["mode"] == "shared" for link in links)
            held = [wsid for link in links for wsid in link["sockets"]]
            assert sorted(held) == sorted(c.wsid for c in clients)
            assert {c.pid for c in clients} == {link["worker_pid"] for link in links}
            assert len(h.workers) == 2
