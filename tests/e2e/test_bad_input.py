"""Bad input of every kind gets a clear answer and leaves every other socket chatting."""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from gateway.link.connection import PROTOCOL_VERSION, LinkConnection, Role
from gateway.link.events import Challenge, Hello, Refused
from tests.conftest import StartRun
from tests.support import WSGATE, ChatClient, Process, System, b64, open_ws, raw_upgrade


@asynccontextmanager
async def bystanders(system: System) -> AsyncIterator[tuple[ChatClient, ChatClient]]:
    """Two clients that chat before and after the test's bad input."""
    async with ChatClient.connect(system.ws_url()) as one, \
            ChatClient.connect(system.ws_url()) as two:
        await one.expect("Status")
        await two.expect("Status")
        await assert_chatting(one, two, "before")
        yield one, two
        await assert_chatting(one, two, "after")


async def assert_chatting(one: ChatClient, two: ChatClient, text: str) -> None:
    await one.say(text, author="one")
    for client in (one, two):
        assert (await client.expect("Chat", Message=b64(text)))["Author"] == "one"


async def read_until_closed(ws: WebSocketConnection) -> None:
    while True:
        await ws.get_message()


def errors(system: System) -> list[tuple[str, str]]:
    with sqlite3.connect(system.db) as db:
        return db.execute("SELECT kind, detail FROM errors ORDER BY id").fetchall()


@pytest.mark.parametrize(
    ("payload", "answer"),
    [
        ("{not json", "malformed JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"Message": "%%% not base64 %%%", "Author": "x"}', "not valid base64"),
        ('{"Message": 42}', "Message must be a base64 string"),
        ('{"Author": "x"}', 'expected {"Message"'),
        ('{"User": ""}', "User must be a non-empty name"),
        (b"\x00\x01binary", "binary frames are not part of the chat protocol"),
    ],
    ids=["json", "not-object", "base64", "message-type", "no-message", "empty-alias",
         "binary"],
)
async def test_bad_chat_input_is_refused_to_the_sender(
    start_run: StartRun, payload: str | bytes, answer: str
) -> None:
    """The sender gets {"Type": "Error"} naming the problem; nothing is stored or
    broadcast; the error is recorded; the others go on chatting."""
    system = start_run(workers=2)
    with trio.fail_after(60):
        async with bystanders(system) as (one, two), \
                ChatClient.connect(system.ws_url()) as bad:
            await bad.expect("Status")
            await bad.send(payload)
            error = await bad.expect("Error")
            assert answer in error["Message"]
            await assert_chatting(one, two, "during")
    with sqlite3.connect(system.db) as db:
        stored = [r[0] for r in db.execute("SELECT raw FROM messages")]
    assert all("not json" not in raw and "binary" not in raw for raw in stored)
    assert len(stored) == 3  # before, during, after
    assert ("bad input", error["Message"]) in errors(system)


async def test_message_over_the_limit_closes_with_1009(start_run: StartRun) -> None:
    """A message over --max-message-bytes closes that socket with 1009 only."""
    system = start_run("--max-message-bytes", "4096", workers=2)
    with trio.fail_after(60):
        async with bystanders(system), open_ws(system.ws_url()) as ws:
            await ws.get_message()  # Status
            await ws.send_message("x" * 5000)
            with pytest.raises(ConnectionClosed) as excinfo:
                await read_until_closed(ws)
            assert excinfo.value.reason.code == 1009
            assert "4096" in (excinfo.value.reason.reason or "")


async def test_unknown_class_is_404(start_run: StartRun) -> None:
    """An upgrade for a class the app server does not serve is refused with 404."""
    system = start_run(workers=1)
    with trio.fail_after(30):
        async with bystanders(system):
            status, body = await trio.to_thread.run_sync(
                raw_upgrade, system, "/csp/user/No.Such.cls")
            assert status == 404
            assert b"No.Such" in body
            status, _ = await trio.to_thread.run_sync(
                raw_upgrade, system, "/csp/elsewhere/Chat.Server.cls")
            assert status == 404


def _link_port(system: System) -> tuple[str, int]:
    status = system.status()
    host, port = status["appserver"].rsplit(":", 1)
    return host, int(port)


async def test_wrong_secret_is_refused_and_logged_without_the_secret(
    start_split: StartRun, secret_file: Path, tmp_path: Path
) -> None:
    """A link presenting the wrong secret is refused; the log says so and holds no
    secret; a gateway with the wrong secret never becomes healthy."""
    system = start_split(workers=2)
    host, port = _link_port(system)
    wrong = b"not-the-secret-" + os.urandom(8).hex().encode()

    conn = LinkConnection(Role.GATEWAY, secret=wrong)
    with socket.create_connection((host, port), timeout=10) as sock:
        conn.receive_data(sock.recv(4096))
        assert isinstance(conn.next_event(), Challenge)
        sock.sendall(conn.send(Hello(PROTOCOL_VERSION, "intruder")))
        conn.receive_data(sock.recv(4096))
        refused = conn.next_event()
    assert isinstance(refused, Refused)
    assert refused.reason == "authentication failed"

    bad_secret = tmp_path / "wrong.secret"
    bad_secret.write_bytes(wrong)
    rogue = Process([WSGATE, "gateway", "--port", "0", "--appserver", f"{host}:{port}",
                     "--secret-file", str(bad_secret), "--name", "rogue"],
                    log_path=tmp_path / "rogue.log")
    try:
        rogue_url = rogue.wait_for_line(r"serving (http://\S+) ")[1]
        rogue_system = System(rogue_url, system.db)
        with trio.fail_after(30):
            async with bystanders(system):
                while "refused: authentication failed" not in rogue.log():  # noqa: ASYNC110
                    await trio.sleep(0.1)  # polling the rogue's log file
                code, _, _ = rogue_system.get("/healthz")
                assert code == 503
    finally:
        assert rogue.stop() == 0

    log = system.processes[0].log()
    assert "link from 127.0.0.1" in log
    assert "gateway 'intruder' failed the challenge (wrong secret)" in log
    everything = log + system.processes[1].log() + rogue.log()
    assert secret_file.read_text().strip() not in everything  # noqa: ASYNC240
    assert wrong.decode() not in everything


@pytest.mark.parametrize(
    "garbage",
    [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(4096), b"\xff\xff\xff\xff" * 8],
    ids=["http", "random", "huge-length"],
)
async def test_arbitrary_bytes_on_the_link_port(start_split: StartRun, garbage: bytes) -> None:
    """Bytes that are not a link end that connection with a logged reason; the app
    server and every chat socket carry on."""
    system = start_split(workers=2)
    host, port = _link_port(system)
    with trio.fail_after(60):
        async with bystanders(system):
            for _ in range(3):
                with socket.create_connection((host, port), timeout=10) as sock:
                    sock.recv(4096)  # the challenge
                    sock.sendall(garbage)
                    sock.settimeout(10)
                    while sock.recv(4096):  # the app server hangs up
                        pass
    log = system.processes[0].log()
    assert log.count("link from 127.0.0.1") >= 3
    assert "closed:" in log
    assert system.processes[0].popen.poll() is None
