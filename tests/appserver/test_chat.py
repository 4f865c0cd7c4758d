"""The tutorial's chat (``Chat.Server``) in one process: a real gateway, supervisor and
worker runtimes (tests/harness.py), in both IRIS modes and mixed.

Shared sockets get messages pushed (a gateway group, or ``--set fanout=per-socket``'s
``OpenServer(id).Write``); private sockets poll the store on each Read timeout, set
here to a tenth of a second (``read-timeout``) instead of the tutorial's second. The
end-to-end versions, through ``wsgate run`` and ``wsgate appserver`` + ``wsgate
gateway``, are in tests/e2e/test_chat_e2e.py and test_chat_modes.py.

Where a check needs the chat to have finished something before counting (an error
logged, a row dropped), the client sends a malformed message next and waits for its
Error: a socket's Server() handles its messages in order, so the earlier one is done.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.harness import Harness
from tests.harness import running as harness_running
from tests.support import ChatClient, b64

SENT = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
MODES = ["shared", "private"]
#: Private sockets poll the store at this interval (the tutorial: one second).
POLL = {"read-timeout": "0.1"}
TIMEOUT_S = 30


@asynccontextmanager
async def running(tmp_path: Path, **options: Any) -> AsyncIterator[Harness]:
    """The harness serving the chat (``options`` passed on)."""
    async with harness_running(tmp_path, **options) as h:
        yield h
        # Private sockets grow the pool in the background, and Supervisor.spawn leaks a
        # control socket when cancelled mid-start (a product bug): let the spawn end.
        await h.wait_for(lambda: h.supervisor.starting == 0)


async def connect(stack: AsyncExitStack, h: Harness, query: str = "") -> ChatClient:
    """A chat client whose Status has arrived."""
    client = await stack.enter_async_context(ChatClient.connect(h.ws_url(query=query)))
    await client.expect("Status")
    return client


def wsid_of(client: ChatClient) -> str:
    """The WSID the client's Status message gave it."""
    return str(client.of_type("Status")[0]["WSID"])


def assigned_wsid(h: Harness, client: ChatClient) -> str:
    """The WebSocketID the gateway gave this client's TCP connection."""
    port = client.ws.local.port
    found = [bs.wsid for bs in h.gateway.table if bs.sock.getpeername()[1] == port]
    assert len(found) == 1, found
    return found[0]


def table(h: Harness, sql: str, *params: object) -> list[tuple[object, ...]]:
    """Rows of the store, read as another process would."""
    with sqlite3.connect(h.db) as db:
        return db.execute(sql, params).fetchall()


async def barrier(client: ChatClient) -> None:
    """Return once ``client``'s earlier messages have been handled (see the module
    docstring); the store then holds their writes."""
    await client.send("not json")
    await client.expect("Error")


# --- Checks 9-13: the chat in either mode ------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_status_carries_the_id_the_gateway_assigned(tmp_path: Path, mode: str) -> None:
    """Check 9: each socket's Status names the WebSocketID the gateway assigned to that
    very connection, and two sockets get different ids."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2, settings={"mode": mode, **POLL}) as h, \
                AsyncExitStack() as stack:
            a, b = [await connect(stack, h) for _ in range(2)]
            for client in (a, b):
                assert wsid_of(client) == assigned_wsid(h, client)
                assert h.status()["socket_modes"][wsid_of(client)] == mode
            assert wsid_of(a) != wsid_of(b)
            assert set(h.status()["socket_modes"]) == {wsid_of(a), wsid_of(b)}


@pytest.mark.parametrize("mode", MODES)
async def test_three_clients_chat_in_each_mode(tmp_path: Path, mode: str) -> None:
    """Checks 9-13 in either mode: one Status each with the socket's own id, the
    userlist on alias, a message to everyone (the sender too) once, raw rows 1..n, a
    closed client leaving the list and the connections table."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2, settings={"mode": mode, **POLL}) as h:
            async with AsyncExitStack() as stack:
                a, b, c = [await connect(stack, h) for _ in range(3)]
                wsids = [wsid_of(client) for client in (a, b, c)]
                assert wsids == [assigned_wsid(h, client) for client in (a, b, c)]
                assert len(set(wsids)) == 3
                status = h.status()
                assert set(wsids) == {w for link in status["links"] for w in link["sockets"]}
                assert all(status["socket_modes"][w] == mode for w in wsids)
                assert all(w.startswith(status["gateway"] + "-") for w in wsids)

                await a.send({"User": "bob"})
                for client in (a, b, c):
                    message = await client.expect("userlist")
                    assert message == {"Type": "userlist", "Users": [{"User": "bob"}]}

                await b.say("hello, world", author="alice")
                firsts = [await client.expect("Chat") for client in (a, b, c)]
                for first in firsts:
                    assert list(first) == ["Message", "Author", "Type", "Sent", "Id"]
                    assert first["Message"] == b64("hello, world")
                    assert first["Author"] == "alice"
                    assert SENT.match(first["Sent"])
                assert len({first["Sent"] for first in firsts}) == 1
                await c.say("second", author="carol")
                for client in (a, b, c):
                    second = await client.expect("Chat")
                    assert (second["Message"], second["Author"]) == (b64("second"), "carol")

                rows = table(h, "SELECT id, raw FROM messages ORDER BY id")
                assert [r[0] for r in rows] == [1, 2]
                assert rows[0][1] == (f'{{"Message": "{b64("hello, world")}", '
                                      '"Author": "alice"}')

                await a.ws.aclose()
                for client in (b, c):
                    assert (await client.expect("userlist"))["Users"] == []
                for client, wsid in zip((a, b, c), wsids, strict=True):
                    assert [s["WSID"] for s in client.of_type("Status")] == [wsid]
                    assert len(client.of_type("Chat")) == 2
            # Closed sockets leave the connections table (their Server() ends on 7951,
            # and the worker forgets a socket only after its Server() returned).
            for wsid in wsids:
                await h.settled(wsid)
            assert table(h, "SELECT wsid FROM connections") == []
            assert table(h, "SELECT wsid FROM users") == []


async def test_sockets_spread_over_two_workers(tmp_path: Path) -> None:
    """With two workers, /status shows sockets on both links, and one message reaches
    the sockets of both."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2) as h, AsyncExitStack() as stack:
            clients = [await connect(stack, h) for _ in range(4)]
            links = h.status()["links"]
            assert len(links) == 2
            assert len({link["worker_pid"] for link in links}) == 2
            assert all(len(link["sockets"]) == 2 for link in links)
            for link in links:
                assert sorted(h.runtime(link["worker_pid"]).ports) == link["sockets"]
            await clients[0].say("to every worker", author="x")
            for client in clients:
                message = await client.expect("Chat")
                assert message["Message"] == b64("to every worker")


@pytest.mark.parametrize("mode", MODES)
async def test_long_messages_are_reassembled(tmp_path: Path, mode: str) -> None:
    """A message longer than Read's 32656-character pieces arrives whole."""
    text = "é" * 70000
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=1, settings={"mode": mode, **POLL}) as h, \
                ChatClient.connect(h.ws_url()) as client:
            await client.expect("Status")
            await client.say(text, author="long")
            message = await client.expect("Chat")
            assert message["Message"] == b64(text)
    assert len(client.of_type("Chat")) == 1


# --- Rooms and mixed modes ----------------------------------------------------------------


async def test_rooms_do_not_cross(tmp_path: Path) -> None:
    """Messages and user lists stay in their room (?room=)."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2) as h, AsyncExitStack() as stack:
            red = [await connect(stack, h, "room=red") for _ in range(2)]
            blue = await connect(stack, h, "room=blue")
            await red[0].send({"User": "rudolf"})
            await blue.send({"User": "bluey"})
            await red[1].say("red only", author="rudolf")
            for client in red:
                assert (await client.expect("userlist"))["Users"] == [{"User": "rudolf"}]
                assert (await client.expect("Chat"))["Message"] == b64("red only")
            assert (await blue.expect("userlist"))["Users"] == [{"User": "bluey"}]
            await blue.say("blue only", author="bluey")
            assert (await blue.expect("Chat"))["Message"] == b64("blue only")
            await red[0].say("red again", author="rudolf")
            for client in red:
                assert (await client.expect("Chat"))["Message"] == b64("red again")
            # Last marks: a room's own messages arrive in order, so anything that
            # crossed over would have arrived before these.
            await blue.say("blue end", author="bluey")
            assert (await blue.expect("Chat"))["Message"] == b64("blue end")
    for client in red:
        assert [m["Message"] for m in client.of_type("Chat")] == [
            b64("red only"), b64("red again")]
        assert all(m["Users"] == [{"User": "rudolf"}] for m in client.of_type("userlist"))
    assert [m["Message"] for m in blue.of_type("Chat")] == [b64("blue only"), b64("blue end")]
    assert all(m["Users"] == [{"User": "bluey"}] for m in blue.of_type("userlist"))


@pytest.mark.parametrize("mode", MODES)
async def test_a_line_sent_again_with_its_cid_is_stored_and_delivered_once(
    tmp_path: Path, mode: str
) -> None:
    """A page sends a line again, with the same Cid, over its first socket and over a
    new one (what it does after a reconnection): one row, one delivery to each socket,
    the Cid in it; the same Cid from another room stores and sends nothing there."""
    cid = secrets.token_hex(16)
    line = {"Message": b64("once"), "Author": "alice", "Cid": cid}
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2, settings={"mode": mode, **POLL}) as h, \
                AsyncExitStack() as stack:
            page, other = [await connect(stack, h) for _ in range(2)]
            elsewhere = await connect(stack, h, "room=elsewhere")
            await page.send(line)
            for client in (page, other):
                assert (await client.expect("Chat"))["Cid"] == cid
            await page.send(line)
            again = await connect(stack, h, "since=1")  # the page, reconnected
            await again.send(line)
            await elsewhere.send(line)
            # Marks: each room's messages arrive in order, so a second "once" would
            # have come before these.
            await again.say("after", author="alice")
            await elsewhere.say("elsewhere", author="eve")
            for client in (page, other, again):
                assert (await client.expect("Chat"))["Message"] == b64("after")
            assert (await elsewhere.expect("Chat"))["Message"] == b64("elsewhere")
    for client in (page, other):
        assert [m["Message"] for m in client.of_type("Chat")] == [b64("once"), b64("after")]
    assert [m["Message"] for m in again.of_type("Chat")] == [b64("after")]
    assert [m["Message"] for m in elsewhere.of_type("Chat")] == [b64("elsewhere")]
    assert "Cid" not in again.of_type("Chat")[0]
    assert [client.of_type("Error") for client in (page, other, again, elsewhere)] == [[]] * 4
    rows = table(h, "SELECT room, client_id FROM messages ORDER BY id")
    assert rows == [("default", f"page:{cid}"), ("default", rows[1][1]),
                    ("elsewhere", rows[2][1])]
    assert rows[1][1] != f"page:{cid}"


async def test_shared_and_private_clients_chat_together(tmp_path: Path) -> None:
    """A shared and a private socket in one room see each other's aliases and
    messages, both ways."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2, settings=POLL) as h, \
                AsyncExitStack() as stack:
            shared = await connect(stack, h, "mode=shared")
            private = await connect(stack, h, "mode=private")
            modes = h.status()["socket_modes"]
            assert modes[wsid_of(shared)] == "shared"
            assert modes[wsid_of(private)] == "private"

            await shared.send({"User": "sam"})
            await shared.expect("userlist", Users=[{"User": "sam"}])
            await private.send({"User": "pat"})
            both = [{"User": "sam"}, {"User": "pat"}]
            for client in (shared, private):
                await client.expect("userlist", Users=both)

            await shared.say("hi pat", author="sam")
            for client in (shared, private):
                message = await client.expect("Chat", Message=b64("hi pat"))
                assert message["Author"] == "sam"
            await private.say("hi sam", author="pat")
            for client in (shared, private):
                message = await client.expect("Chat", Message=b64("hi sam"))
                assert message["Author"] == "pat"
            for client in (shared, private):
                assert [m["Message"] for m in client.of_type("Chat")] == [
                    b64("hi pat"), b64("hi sam")]


async def test_rooms_do_not_cross_in_mixed_modes(tmp_path: Path) -> None:
    """Room red (one shared, one private socket) and room blue (one private socket):
    messages and user lists stay in their room."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2, settings=POLL) as h, \
                AsyncExitStack() as stack:
            red_shared = await connect(stack, h, "room=red&mode=shared")
            red_private = await connect(stack, h, "room=red&mode=private")
            blue = await connect(stack, h, "room=blue&mode=private")
            red = (red_shared, red_private)

            await red_shared.send({"User": "rudolf"})
            await blue.send({"User": "bluey"})
            for client in red:
                await client.expect("userlist", Users=[{"User": "rudolf"}])
            await blue.expect("userlist", Users=[{"User": "bluey"}])

            await red_private.say("red only", author="rudolf")
            await blue.say("blue only", author="bluey")
            for client in red:
                await client.expect("Chat", Message=b64("red only"))
            await blue.expect("Chat", Message=b64("blue only"))
            # Last marks: a room's own messages arrive in order, so anything that
            # crossed over would have arrived before these.
            await red_shared.say("red end", author="rudolf")
            await blue.say("blue end", author="bluey")
            for client in red:
                await client.expect("Chat", Message=b64("red end"))
            await blue.expect("Chat", Message=b64("blue end"))

    for client in red:
        assert [m["Message"] for m in client.of_type("Chat")] == [
            b64("red only"), b64("red end")]
        assert all(m["Users"] == [{"User": "rudolf"}] for m in client.of_type("userlist"))
    assert [m["Message"] for m in blue.of_type("Chat")] == [b64("blue only"), b64("blue end")]
    assert all(m["Users"] == [{"User": "bluey"}] for m in blue.of_type("userlist"))


# --- The port's fixes of the tutorial's defects --------------------------------------------


async def test_chat_message_containing_user_is_a_chat_message(tmp_path: Path) -> None:
    """Fix of check 12: a chat message whose text (and raw JSON) contains "User" is
    broadcast as a chat message, not taken as an alias."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2) as h, AsyncExitStack() as stack:
            a, b = [await connect(stack, h) for _ in range(2)]
            await a.say("User guide: type alias <name>", author="SuperUser")
            for client in (a, b):
                message = await client.expect(
                    "Chat", Message=b64("User guide: type alias <name>"))
                assert message["Author"] == "SuperUser"
            await b.say("done", author="b")
            for client in (a, b):
                await client.expect("Chat", Message=b64("done"))
                assert client.of_type("userlist") == []
            assert table(h, "SELECT alias FROM users") == []
            assert len(table(h, "SELECT id FROM messages")) == 2


async def test_realias_replaces_the_name_in_place(tmp_path: Path) -> None:
    """Fix of check 11: a second alias replaces the first in its place in the list
    ([new, other]), not appended after it ([old, other, new])."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2) as h, AsyncExitStack() as stack:
            a, b = [await connect(stack, h) for _ in range(2)]
            await a.send({"User": "old"})
            await b.expect("userlist", Users=[{"User": "old"}])
            await b.send({"User": "other"})
            await a.expect("userlist", Users=[{"User": "old"}, {"User": "other"}])
            await a.send({"User": "new"})
            for client in (a, b):
                message = await client.expect("userlist",
                                              Users=[{"User": "new"}, {"User": "other"}])
                assert message == {"Type": "userlist",
                                   "Users": [{"User": "new"}, {"User": "other"}]}
            for client in (a, b):
                assert all(len(m["Users"]) <= 2 for m in client.of_type("userlist"))
            assert table(h, "SELECT alias FROM users ORDER BY id") == [("new",), ("other",)]


# --- Check 14: HandleError ------------------------------------------------------------------


@pytest.mark.parametrize("fanout", ["per-socket", "group"])
async def test_check14_open_failure_is_logged_and_the_connection_dropped(
    tmp_path: Path, fanout: str
) -> None:
    """Check 14: a recorded connection whose socket has closed fails OpenServer on the
    next broadcast: "open failed for" is logged and its row deleted."""
    # Group mode sweeps a room at most every 10 s per process (appserver/chat.py's
    # _last_sweep), and every in-process worker shares that: a room of its own.
    room = f"r{secrets.token_hex(4)}"
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2, settings={"fanout": fanout}) as h, \
                AsyncExitStack() as stack:
            gone = await stack.enter_async_context(
                ChatClient.connect(h.ws_url(query=f"room={room}")))
            await gone.expect("Status")
            a = await connect(stack, h, f"room={room}")
            stale = wsid_of(gone)
            await gone.ws.aclose()
            await h.settled(stale)
            assert table(h, "SELECT wsid FROM connections") == [(wsid_of(a),)]
            with sqlite3.connect(h.db) as db:
                db.execute("INSERT INTO connections (wsid, room, mode, gateway, opened_at) "
                           "VALUES (?, ?, 'shared', ?, ?)",
                           (stale, room, h.gateway.id, time.strftime("%Y-%m-%d %H:%M:%S")))
            await a.say("anyone there?", author="a")
            await a.expect("Chat", Message=b64("anyone there?"))
            await barrier(a)
            errors = table(h, "SELECT kind, wsid, detail FROM errors ORDER BY id")
            assert errors[0] == ("open failed for", stale, stale)
            assert [e[0] for e in errors] == ["open failed for", "bad input"]
            assert table(h, "SELECT wsid FROM connections") == [(wsid_of(a),)]


async def test_check14_write_failure_is_logged_and_the_message_still_delivered(
    tmp_path: Path,
) -> None:
    """Check 14: per socket, a shared connection on a gateway this app server has no
    link to opens (unknown ids pass, as in IRIS) but its Write fails: "failed to send
    data to" is logged for it, its row stays, and the real sockets get the message."""
    foreign = "gw.zzzzzz-1"
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2, settings={"fanout": "per-socket"}) as h, \
                AsyncExitStack() as stack:
            a, b = [await connect(stack, h) for _ in range(2)]
            assert not foreign.startswith(h.gateway.id + "-")
            with sqlite3.connect(h.db) as db:
                db.execute("INSERT INTO connections (wsid, room, mode, gateway, opened_at) "
                           "VALUES (?, 'default', 'shared', 'gw.zzzzzz', ?)",
                           (foreign, time.strftime("%Y-%m-%d %H:%M:%S")))
            await a.say("hello?", author="a")
            for client in (a, b):
                await client.expect("Chat", Message=b64("hello?"))
            await barrier(a)
            errors = table(h, "SELECT kind, wsid, detail FROM errors ORDER BY id")
            assert errors[0] == ("failed to send data to", foreign, foreign)
            assert [e[0] for e in errors] == ["failed to send data to", "bad input"]
            connections = table(h, "SELECT wsid FROM connections")
            assert sorted(connections) == sorted([(wsid_of(a),), (wsid_of(b),), (foreign,)])
            for client in (a, b):
                assert [m["Message"] for m in client.of_type("Chat")] == [b64("hello?")]
