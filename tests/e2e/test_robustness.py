"""Hostile or broken peers cost their own connection only; shutdown is graceful."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.conftest import StartRun
from tests.support import System, open_ws
from tests.e2e.test_bad_input import assert_chatting, bystanders, read_until_closed
from tests.e2e.test_metrics import metric


def raw_request(system: System, request: bytes) -> bytes:
    """Send a request by hand; return the response head (and whatever came with it)."""
    with socket.create_connection(("127.0.0.1", system.port), timeout=10) as sock:
        sock.sendall(request)
        response = b""
        while b"\r\n\r\n" not in response and (chunk := sock.recv(65536)):
            response += chunk
    return response


UPGRADE = (b"GET /csp/user/Chat.Server.cls HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n")


async def test_headers_the_link_cannot_carry_get_431(start_run: StartRun) -> None:
    """A header name over 255 bytes is answered 431; the gateway and others carry on."""
    system = start_run(workers=1)
    with trio.fail_after(30):
        async with bystanders(system):
            request = UPGRADE + b"X-" + b"n" * 300 + b": v\r\n\r\n"
            response = await trio.to_thread.run_sync(raw_request, system, request)
            assert response.startswith(b"HTTP/1.1 431 ")
            assert b"too long" in response


async def test_an_odd_session_cookie_is_ignored(start_run: StartRun) -> None:
    """A CSPSESSIONID that is not a plausible id (here 200 non-ASCII bytes) is ignored:
    the socket opens without a session and the gateway carries on."""
    system = start_run(workers=1)
    cookie = ("CSPSESSIONID=" + "é" * 200).encode("latin-1")
    with trio.fail_after(30):
        async with bystanders(system):
            response = await trio.to_thread.run_sync(
                raw_request, system, UPGRADE + b"Cookie: " + cookie + b"\r\n\r\n")
            assert response.startswith(b"HTTP/1.1 101 ")


async def test_a_slow_client_is_dropped_not_buffered(start_split: StartRun) -> None:
    """A client that never reads is dropped once --max-queued-bytes are queued for it;
    the others go on chatting and /metrics counts the drop."""
    system = start_split("--max-queued-bytes", "262144", workers=1)
    big = "x" * 60000
    with trio.fail_after(60):
        async with bystanders(system) as (one, two):
            with socket.create_connection(("127.0.0.1", system.port)) as slow:
                slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                slow.sendall(UPGRADE + b"\r\n")
                for _ in range(100):  # 6 MB to every socket; the slow one reads nothing
                    await one.say(big, author="one")
                    for client in (one, two):
                        await client.expect("Chat")
            _, _, metrics = system.get("/metrics")
            assert metric(metrics.decode(), "wsgate_gateway_sockets_dropped_total") == 1
            await assert_chatting(one, two, "still here")


async def test_gateway_sigterm_closes_browsers_with_1001(start_run: StartRun) -> None:
    """Stopping wsgate run sends every browser a 1001 close, not a dropped connection."""
    system = start_run(workers=1)
    with trio.fail_after(30):
        async with open_ws(system.ws_url()) as ws:
            await ws.get_message()
            await trio.to_thread.run_sync(system.stop)
            with pytest.raises(ConnectionClosed) as excinfo:
                await read_until_closed(ws)
            assert excinfo.value.reason.code == 1001


def test_workers_do_not_hold_the_secret(start_run: StartRun) -> None:
    """The worker processes' environment has no WSGATE_SECRET (the supervisor
    authenticates links; the launcher and app server do hold it)."""
    system = start_run(workers=2)
    pids = [link["worker_pid"] for link in system.status()["links"]]
    assert len(pids) == 2
    for pid in pids:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert not any(entry.startswith(b"WSGATE_SECRET=") for entry in environ)
