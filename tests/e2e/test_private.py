"""Private mode's worker pool: one worker per socket, a queue when all are taken, no leaks.

IRIS ties a private (SharedConnection = 0) socket to one server process for its whole
life; beyond Maximum Server Connections a new request waits in the gateway's queue for
the Queued Request Timeout, then fails; idle processes above the minimum exit after the
No Activity Timeout. These tests drive the chat (``wsgate run --mode private``).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

from tests.conftest import StartRun
from tests.support import WSGATE, ChatClient, Process, System, b64, children_of

HANDSHAKE = ("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n")


def _recv_exactly(sock: socket.socket, buffer: bytearray, n: int) -> bytes:
    while len(buffer) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {len(buffer)} of {n} bytes")
        buffer += chunk
    taken = bytes(buffer[:n])
    del buffer[:n]
    return taken


def raw_open(system: System, target: str = "/csp/user/Chat.Server.cls"
             ) -> tuple[int, bytes]:
    """Upgrade by hand: (101, the first text message) or (status, the error body).

    A raw socket, because trio-websocket leaves its socket open when a handshake is
    refused. An accepted socket is closed (abruptly) once its first message is read.
    """
    with socket.create_connection(("127.0.0.1", system.port), timeout=20) as sock:
        sock.sendall(HANDSHAKE.format(target=target).encode())
        buffer = bytearray()
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"no HTTP response, got {bytes(buffer)!r}")
            buffer += chunk
        end = buffer.index(b"\r\n\r\n") + 4
        status = int(bytes(buffer[:end]).split()[1])
        del buffer[:end]
        if status != 101:
            while chunk := sock.recv(65536):
                buffer += chunk
            return status, bytes(buffer)
        first, length = _recv_exactly(sock, buffer, 2)
        assert first == 0x81, f"expected an unfragmented text frame, got {first:#x}"
        if length == 126:
            length = int.from_bytes(_recv_exactly(sock, buffer, 2), "big")
        elif length == 127:
            length = int.from_bytes(_recv_exactly(sock, buffer, 8), "big")
        return 101, _recv_exactly(sock, buffer, length)


async def wait_status(system: System, ok: Callable[[dict[str, Any]], bool]
                      ) -> dict[str, Any]:
    """Poll /status until ``ok(status)`` holds."""
    while not ok(status := system.status()):  # noqa: ASYNC110
        await trio.sleep(0.05)  # polling another process's HTTP endpoint
    return status


def has_pool_link(status: dict[str, Any]) -> bool:
    return any(link["mode"] == "shared" for link in status["links"])


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def process_state(pid: int) -> str:
    """The one-letter state of a process ("Z" for a zombie), or "" if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def supervisor_of(system: System) -> int:
    """The app server (supervisor) process started by ``wsgate run``."""
    found = [pid for pid in children_of(system.processes[0].pid)
             if "appserver" in cmdline(pid)]
    assert len(found) == 1, found
    return found[0]


async def test_full_pool_queues_then_refuses_with_503(start_run: StartRun) -> None:
    """With --max-workers 3, three private sockets hold the three workers; a fourth
    waits the queue timeout and gets 503 with a readable reason; once one socket closes
    a new one is admitted."""
    system = start_run("--mode", "private", "--max-workers", "3", "--queue-timeout", "2",
                       workers=2)
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            clients = []
            for _ in range(3):
                client = await stack.enter_async_context(ChatClient.connect(system.ws_url()))
                await client.expect("Status")
                clients.append(client)
                # Let the pool settle before the next socket, so that each socket
                # takes its own worker in turn.
                await wait_status(system, lambda s: len(s["links"]) == 3)
            status = system.status()
            assert len({link["worker_pid"] for link in status["links"]}) == 3
            assert all(link["mode"] == "private" for link in status["links"])

            code, body = await trio.to_thread.run_sync(raw_open, system)
            assert code == 503
            assert "busy" in body.decode()
            assert "Try again later" in body.decode()

            await clients[0].ws.aclose()
            for _attempt in range(10):
                code, first = await trio.to_thread.run_sync(raw_open, system)
                if code == 101:
                    break
                assert code == 503, first
                await trio.sleep(0.2)
            assert code == 101
            assert json.loads(first)["Type"] == "Status"
            await clients[1].say("still here", author="x")
            for client in clients[1:]:  # the others chat on (private: by polling)
                await client.expect("Chat", Message=b64("still here"))


async def test_no_worker_process_leaks_after_50_private_sockets(start_run: StartRun) -> None:
    """50 private sockets open and close, up to four at a time: afterwards the idle
    workers above --workers have exited, none is a zombie, and no private link is left."""
    system = start_run("--mode", "private", "--max-workers", "4", "--idle-timeout", "1",
                       workers=1)
    supervisor = supervisor_of(system)
    opened = 0
    with trio.fail_after(120):
        while opened < 50:
            batch = min(4, 50 - opened)
            async with AsyncExitStack() as stack:  # `batch` sockets open at once
                for _ in range(batch):
                    client = await stack.enter_async_context(
                        ChatClient.connect(system.ws_url()))
                    await client.expect("Status")
            opened += batch
        status = await wait_status(system, lambda s: not any(
            link["mode"] == "private" for link in s["links"]))
        assert status["sockets"]["total"] == 0
        while len(children_of(supervisor)) > 1:  # noqa: ASYNC110
            await trio.sleep(0.1)  # idle workers exit after --idle-timeout
    workers = children_of(supervisor)
    assert len(workers) == 1
    assert all(process_state(pid) not in ("Z", "") for pid in workers)


async def test_handshake_while_every_link_is_down_waits_in_the_queue(
    start_run: StartRun,
) -> None:
    """A handshake that arrives while the only link has just gone (a private socket's
    worker was freed, its replacement is still starting) waits for a link instead of
    being refused."""
    system = start_run("--mode", "private", workers=1)
    with trio.fail_after(30):
        for _ in range(3):
            async with ChatClient.connect(system.ws_url()) as client:
                await client.expect("Status")
                await client.ws.aclose()
            code, first = await trio.to_thread.run_sync(raw_open, system)
            assert code == 101, first
            assert json.loads(first)["Type"] == "Status"


async def test_max_workers_holds_when_links_arrive_at_once(
    start_split: StartRun, secret_file: Path, tmp_path: Path
) -> None:
    """--max-workers bounds the worker processes even when a second gateway asks for
    six links at the same moment."""
    system = start_split(workers=1, appserver_extra=("--max-workers", "3"))
    supervisor = system.processes[0].pid
    address = system.status()["appserver"]
    greedy = Process([WSGATE, "gateway", "--port", "0", "--appserver", address, "--pool",
                      "6", "--secret-file", str(secret_file), "--name", "greedy"],
                     log_path=tmp_path / "greedy.log")
    try:
        greedy.wait_for_line(r"serving (http://\S+) ")
        seen = set()
        with trio.fail_after(30):
            while "busy: all" not in greedy.log():
                seen.add(len(children_of(supervisor)))
                await trio.sleep(0.05)  # the greedy gateway is refused once the pool is full
            for _ in range(20):
                seen.add(len(children_of(supervisor)))
                await trio.sleep(0.05)
        assert max(seen) <= 3, seen
        assert len(seen) >= 1
    finally:
        assert greedy.stop() == 0
