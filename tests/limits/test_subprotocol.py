"""Sec-WebSocket-Protocol: the 101 names the subprotocol OnPreServer picked among those
the browser offered; none picked, no header; one not offered, the upgrade fails."""

from __future__ import annotations

import json

import pytest
import trio
from trio_websocket import open_websocket_url

from tests.conftest import StartRun
from tests.limits.raw import OP_TEXT, client_frame, refused, upgraded
from tests.support import System

APP = ("--app", "tests.apps.limits_app:Subprotocols")
PATH = "/csp/user/Limits.Subprotocols.cls"


@pytest.fixture
def system(start_run: StartRun) -> System:
    """``wsgate run`` serving Limits.Subprotocols."""
    return start_run(*APP, workers=1)


@pytest.mark.parametrize(
    ("offer", "pick", "answered"),
    [("a, b", "b", "b"), ("a, b", "first", "a"), ("a,b", "a", "a"), ("a, b", "", None),
     (None, "", None)],
    ids=["picks-b", "picks-first", "no-spaces", "picks-none", "none-offered"],
)
async def test_the_101_names_the_subprotocol_onpreserver_picked(
    system: System, offer: str | None, pick: str, answered: str | None,
) -> None:
    """The 101 carries Sec-WebSocket-Protocol with the one OnPreServer picked (and only
    then), and the socket is open with it."""
    headers = [] if offer is None else [("Sec-WebSocket-Protocol", offer)]
    with trio.fail_after(30):
        async with upgraded(system.port, f"{PATH}?pick={pick}", headers) as (head, client):
            assert head.status == 101, head.raw
            assert head.headers.get("sec-websocket-protocol") == answered, head.raw
            assert head.raw.lower().count(b"sec-websocket-protocol") == (answered is not None)
            _, opcode, hello = await client.frame()
            assert (opcode, json.loads(hello)) == (OP_TEXT, {"subprotocol": answered or ""})
            await client.send(client_frame(OP_TEXT, b"echo me"))
            assert await client.frame() == (True, OP_TEXT, b"echo me")


async def test_a_websocket_client_sees_the_chosen_subprotocol(system: System) -> None:
    """A WebSocket client library offering ["a", "b"] to a class that picks "b" ends up
    speaking "b"."""
    with trio.fail_after(30):
        async with open_websocket_url(system.ws_url(PATH, "pick=b"),
                                      subprotocols=["a", "b"]) as ws:
            try:
                assert ws.subprotocol == "b"
                assert json.loads(await ws.get_message()) == {"subprotocol": "b"}
            finally:
                with trio.CancelScope(shield=True):
                    await ws._stream.aclose()


@pytest.mark.parametrize(("offer", "pick"), [("a, b", "c"), (None, "b")],
                         ids=["not-offered", "nothing-offered"])
async def test_a_subprotocol_the_browser_did_not_offer_fails_the_upgrade_with_500(
    system: System, offer: str | None, pick: str,
) -> None:
    """OnPreServer picking a subprotocol the browser did not offer fails the upgrade with
    500 and a readable reason; the gateway serves the next upgrade as usual."""
    headers = [] if offer is None else [("Sec-WebSocket-Protocol", offer)]
    with trio.fail_after(30):
        head, body = await refused(system.port, f"{PATH}?pick={pick}", headers)
        assert head.status == 500, head.raw
        assert "sec-websocket-protocol" not in head.headers
        assert "subprotocol the browser did not offer" in body
        async with upgraded(system.port, f"{PATH}?pick=a",
                            [("Sec-WebSocket-Protocol", "a")]) as (head, _):
            assert head.status == 101, head.raw
