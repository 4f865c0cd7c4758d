"""Silent sockets without reader tasks (gateway/parking.py): parked after the handshake
and after --park-after of silence, woken by what the browser sends, its close or its
hang-up, and still getting every broadcast while parked."""

from __future__ import annotations

import socket
import struct
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed

from gateway.browser import BrowserSocket
from tests.chatting import upgrade_request
from tests.harness import Harness, running
from tests.limits.raw import OP_TEXT, client_frame
from tests.support import ChatClient, b64

TIMEOUT_S = 30
PARK_AFTER_S = 0.2


def _socket(h: Harness, wsid: str) -> BrowserSocket:
    return next(bs for bs in h.gateway.table if bs.wsid == wsid)


def _metric(h: Harness, name: str) -> float:
    text = generate_latest(h.gateway.metrics).decode()
    return next(sample.value for family in text_string_to_metric_families(text)
                for sample in family.samples if sample.name == name)


async def _client(stack: AsyncExitStack, h: Harness) -> tuple[ChatClient, str]:
    client = await stack.enter_async_context(ChatClient.connect(h.ws_url()))
    return client, (await client.expect("Status"))["WSID"]


async def test_a_parked_socket_gets_broadcasts_and_wakes_for_what_it_sends(
    tmp_path: Path,
) -> None:
    """Sockets start parked; one that speaks is woken and heard; one that never speaks
    gets every broadcast without ever having a reader; a woken one is parked again
    after --park-after of silence, and heard again when it speaks."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2, park_after_s=PARK_AFTER_S) as h, \
                AsyncExitStack() as stack:
            (talker, talker_id), (listener, listener_id) = [
                await _client(stack, h) for _ in range(2)]
            await h.wait_for(lambda: h.status()["sockets"]["parked"] == 2)
            assert h.gateway.parking.awake == set()  # no reader anywhere
            await talker.say("one")
            for client in (talker, listener):
                assert (await client.expect("Chat"))["Message"] == b64("one")
            assert _socket(h, listener_id).parked  # never woken: it sent nothing
            assert h.gateway.parking.awake <= {_socket(h, talker_id)}
            await h.wait_for(lambda: _socket(h, talker_id).parked)  # silent again
            assert h.gateway.parking.awake == set()
            await talker.say("two")
            for client in (talker, listener):
                assert (await client.expect("Chat"))["Message"] == b64("two")
            assert _socket(h, listener_id).parked
            # woken twice (the talker's two lines); parked at the start, once between,
            # and the talker again if it has been silent long enough by now
            assert _metric(h, "wsgate_gateway_socket_wakes_total") == 2
            assert _metric(h, "wsgate_gateway_socket_parks_total") in (3, 4)
            assert _metric(h, "wsgate_gateway_sockets_parked") == len(h.gateway.parking)
    for client in (talker, listener):
        assert [m["Message"] for m in client.of_type("Chat")] == [b64("one"), b64("two")]


async def test_frames_that_came_with_the_request_are_read_then_the_socket_is_parked(
    tmp_path: Path,
) -> None:
    """A client that sends its first frame in the same packet as its upgrade request:
    the socket starts with a reader (wsproto holds the frame), the line reaches the
    room, and the silent socket is parked afterwards like any other."""
    line = b'{"Message": "%s", "Author": "eager"}' % b64("early").encode()
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=1, park_after_s=PARK_AFTER_S) as h, \
                AsyncExitStack() as stack:
            listener, _ = await _client(stack, h)
            raw = socket.create_connection(("127.0.0.1", h.port), timeout=10)
            stack.callback(raw.close)
            raw.sendall(upgrade_request() + client_frame(OP_TEXT, line))
            assert (await listener.expect("Chat"))["Message"] == b64("early")
            await h.wait_for(lambda: len(h.gateway.parking) == 2)
            assert h.gateway.parking.awake == set()


async def test_closing_a_parked_socket_either_way_runs_the_closing_handshake(
    tmp_path: Path,
) -> None:
    """The browser's close frame wakes its parked socket, which answers it and runs
    OnPostServer; the gateway's drain wakes the others, which get 1001."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=1) as h, AsyncExitStack() as stack:
            clients = [await _client(stack, h) for _ in range(3)]
            await h.wait_for(lambda: h.status()["sockets"]["parked"] == 3)
            leaving, leaving_id = clients[0]
            await leaving.ws.aclose()  # returns once the gateway answered the close
            assert leaving.ws.closed is not None
            assert leaving.ws.closed.code == 1000
            await h.settled(leaving_id)
            assert await h.gateway.drain(5.0)
            for client, _ in clients[1:]:
                with pytest.raises(ConnectionClosed) as closed:
                    await client.recv()
                assert closed.value.reason.code == 1001
            assert len(h.gateway.table) == 0
            assert len(h.gateway.parking) == 0
            assert h.gateway.parking.awake == set()  # each woken one forgotten at its end


async def test_a_parked_socket_whose_browser_vanishes_is_forgotten(tmp_path: Path) -> None:
    """A TCP reset (no close frame) wakes the parked socket, which ends: the worker's
    OnPostServer runs (the connection row goes)."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=1) as h:
            raw = socket.create_connection(("127.0.0.1", h.port))
            raw.sendall(upgrade_request())
            await h.wait_for(lambda: len(h.gateway.parking) == 1)
            (wsid,) = [bs.wsid for bs in h.gateway.table]
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()  # a reset
            await h.settled(wsid)
            assert len(h.gateway.parking) == 0


async def test_the_gateway_stopping_closes_its_parked_sockets(tmp_path: Path) -> None:
    """No reader is left to close a parked socket: the parking closes them as the
    gateway stops, and the browser sees its connection end."""
    raw: socket.socket | None = None
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=1) as h:
            raw = socket.create_connection(("127.0.0.1", h.port), timeout=10)
            raw.sendall(upgrade_request())
            await h.wait_for(lambda: len(h.gateway.parking) == 1)
    assert raw is not None
    with raw:
        received = b""
        while chunk := raw.recv(65536):  # the 101 and the Status, then the end
            received += chunk
        assert received.startswith(b"HTTP/1.1 101 ")
