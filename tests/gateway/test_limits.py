"""Bad or hostile browser input costs that socket only: refused, closed or dropped, while
every other socket goes on chatting."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed

from gateway.browser import Phase
from gateway.gateway import Gateway
from tests.chatting import (
    assert_chatting,
    bystanders,
    http_get,
    open_raw,
    read_until_closed,
    response_head,
    upgrade_request,
)
from tests.harness import Harness, running
from tests.support import ChatClient, b64, open_ws, unb64


def _sample(text: str, name: str) -> float:
    """The one unlabelled sample ``name`` of a Prometheus exposition."""
    values = [sample.value for family in text_string_to_metric_families(text)
              for sample in family.samples if sample.name == name and not sample.labels]
    assert len(values) == 1, f"{name} in:\n{text}"
    return values[0]


def _wsids(gw: Gateway) -> set[str]:
    return {bs.wsid for bs in gw.table}


async def _new_open_socket(h: Harness, known: set[str]) -> str:
    """Wait for an open socket whose id is not in ``known``; return its id."""
    await h.wait_for(lambda: any(bs.wsid not in known and bs.phase is Phase.OPEN
                                 for bs in h.gateway.table))
    (wsid,) = _wsids(h.gateway) - known
    return wsid


async def test_headers_the_link_cannot_carry_get_431(tmp_path: Path) -> None:
    """A header name over 255 bytes is answered 431 before any worker hears of the
    socket; the gateway and the others carry on."""
    with trio.fail_after(30):
        async with running(tmp_path) as h, bystanders(h):
            known = _wsids(h.gateway)
            request = upgrade_request(extra_headers=b"X-" + b"n" * 300 + b": v\r\n")
            response = await response_head(h.port, request)
            assert response.startswith(b"HTTP/1.1 431 ")
            assert b"too long" in response
            assert _wsids(h.gateway) == known
            assert all(len(runtime.ports) == len(runtime.registry) == 2
                       for runtime in h.runtimes)
            assert h.gateway.stats["sockets_opened"] == 2


@pytest.mark.parametrize(
    ("cookie", "session"),
    [(("CSPSESSIONID=" + "é" * 200).encode("latin-1"), ""),
     (b"theme=dark; CSPSESSIONID=abc.123_x", "abc.123_x")],
    ids=["odd", "plausible"],
)
async def test_an_odd_session_cookie_is_ignored(
    tmp_path: Path, cookie: bytes, session: str,
) -> None:
    """A CSPSESSIONID that is not a plausible id (here 200 non-ASCII bytes) is ignored:
    the socket opens without a session (a plausible one is kept) and the gateway
    carries on."""
    with trio.fail_after(30):
        async with running(tmp_path) as h, bystanders(h):
            known = _wsids(h.gateway)
            request = upgrade_request(extra_headers=b"Cookie: " + cookie + b"\r\n")
            async with await trio.open_tcp_stream("127.0.0.1", h.port) as stream:
                await stream.send_all(request)
                response = b""
                while b"\r\n\r\n" not in response:
                    response += await stream.receive_some()
                assert response.startswith(b"HTTP/1.1 101 ")
                wsid = await _new_open_socket(h, known)
                bs = h.gateway.table.get(wsid)
                assert bs is not None
                assert bs.session == session
                # The worker heard the socket's session (none) with its announcement.
                assert [runtime.registry.session(wsid) for runtime in h.runtimes] == [session]
            await h.settled(wsid)


async def test_message_over_the_limit_closes_with_1009(tmp_path: Path) -> None:
    """A message over max_message_bytes closes that socket with 1009 only."""
    with trio.fail_after(30):
        async with running(tmp_path, workers=2, max_message_bytes=4096) as h, \
                bystanders(h), open_ws(h.ws_url()) as ws:
            wsid = json.loads(await ws.get_message())["WSID"]
            await ws.send_message("x" * 5000)
            with pytest.raises(ConnectionClosed) as excinfo:
                await read_until_closed(ws)
            reason = excinfo.value.reason
            assert reason is not None
            assert reason.code == 1009
            assert "4096" in (reason.reason or "")
            await h.settled(wsid)
            assert h.gateway.stats["messages_too_big"] == 1
            assert len(h.gateway.table) == 2


async def test_unknown_class_is_404(tmp_path: Path) -> None:
    """An upgrade for a class the app server does not serve is refused with 404."""
    with trio.fail_after(30):
        async with running(tmp_path) as h, bystanders(h):
            known = _wsids(h.gateway)
            status, body = await open_raw(h.port, "/csp/user/No.Such.cls")
            assert status == 404
            assert b"No.Such" in body
            status, body = await open_raw(h.port, "/csp/elsewhere/Chat.Server.cls")
            assert status == 404
            assert b"elsewhere" in body
            assert _wsids(h.gateway) == known


async def test_a_slow_client_is_dropped_not_buffered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that never reads is dropped once socket_buffer_bytes are queued for it;
    the others go on chatting, and the drop is counted (in the stats and /metrics)."""
    big = "x" * 60000
    with trio.fail_after(60):
        async with running(tmp_path, socket_buffer_bytes=262144) as h, \
                bystanders(h) as (one, two):
            known = _wsids(h.gateway)
            with trio.socket.socket() as slow:
                slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                await slow.connect(("127.0.0.1", h.port))
                await trio.SocketStream(slow).send_all(upgrade_request())
                wsid = await _new_open_socket(h, known)
                dropped = h.gateway.table.get(wsid)
                assert dropped is not None
                for _ in range(100):  # 6 MB to every socket; the slow one reads nothing
                    await one.say(big, author="one")
                    for client in (one, two):
                        await client.expect("Chat")
                await h.settled(wsid)
            assert h.gateway.stats["sockets_dropped"] == 1
            assert (dropped.close_code, dropped.close_reason) == (1008, "slow client")
            assert f"wsid={wsid} closed: slow client" in caplog.text
            metrics = await http_get(h.port, "/metrics")
            assert _sample(metrics.body.decode(),
                           "wsgate_gateway_sockets_dropped_total") == 1
            await assert_chatting(one, two, "still here")
            assert _wsids(h.gateway) == known


def _errors(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT kind, detail, wsid FROM errors ORDER BY id").fetchall()


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
        ('{"Message": "aGk=", "Author": "x", "Cid": "short"}', "Cid must be 8 to 64"),
        ('{"Message": "aGk=", "Author": "x", "Cid": 12345678}', "Cid must be 8 to 64"),
        ('{"Message": "%%%", "Author": "x", "Cid": "page-cid-1"}', "not valid base64"),
    ],
    ids=["json", "not-object", "base64", "message-type", "no-message", "empty-alias",
         "binary", "cid-short", "cid-type", "base64-with-cid"],
)
async def test_bad_chat_input_is_refused_to_the_sender(
    tmp_path: Path, payload: str | bytes, answer: str
) -> None:
    """The sender gets {"Type": "Error"} naming the problem and stays in the room;
    nothing is stored or broadcast; the error is recorded; the others go on chatting."""
    with trio.fail_after(30):
        async with running(tmp_path, workers=2) as h, bystanders(h) as (one, two), \
                ChatClient.connect(h.ws_url()) as bad:
            bad_wsid = (await bad.expect("Status"))["WSID"]
            await bad.send(payload)
            error = await bad.expect("Error")
            assert answer in error["Message"]
            # a refused line's Cid comes back with the Error, so the page forgets it
            assert error.get("Cid") == ("page-cid-1" if "page-cid-1" in str(payload) else None)
            await assert_chatting(one, two, "during")
            await bad.expect("Chat", Message=b64("during"))
        assert one.of_type("Error") == two.of_type("Error") == []
        for client in (one, two):
            assert [unb64(m["Message"]) for m in client.of_type("Chat")] == [
                "before", "during", "after"]
    with sqlite3.connect(h.db) as db:
        stored = [json.loads(r[0]) for r in db.execute("SELECT raw FROM messages ORDER BY id")]
    assert [unb64(m["Message"]) for m in stored] == ["before", "during", "after"]
    refused = [row for row in _errors(h.db) if row[0] == "bad input"]
    assert refused == [("bad input", error["Message"], bad_wsid)]
