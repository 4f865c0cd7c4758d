"""The tutorial's chat end to end, through real gateway and worker processes.

Started as a user starts it: ``wsgate run``, or ``wsgate appserver`` and ``wsgate
gateway`` apart. The chat's behaviour in detail (both modes, rooms, the fixes of the
tutorial's defects, HandleError) is proved in one process in tests/appserver/test_chat.py.
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import AsyncExitStack

import pytest
import trio

from tests.conftest import StartRun
from tests.support import ChatClient, System, b64

SENT = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


@pytest.fixture(params=["run", "split"])
def chat_system(request: pytest.FixtureRequest) -> System:
    """The chat started with ``wsgate run``, or with appserver and gateway apart."""
    start: StartRun = request.getfixturevalue(
        "start_run" if request.param == "run" else "start_split")
    return start(workers=2)


async def connect_all(stack: AsyncExitStack, url: str, n: int) -> list[ChatClient]:
    clients = [await stack.enter_async_context(ChatClient.connect(url)) for _ in range(n)]
    for client in clients:
        await client.expect("Status")
    return clients


async def test_three_clients_chat(chat_system: System) -> None:
    """Status per socket, userlist on alias, a message to all (sender too), the store's
    raw rows with ids 1..n, and a closed client leaving the list."""
    system = chat_system
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            a, b, c = await connect_all(stack, system.ws_url(), 3)
            wsids = [client.of_type("Status")[0]["WSID"] for client in (a, b, c)]
            assert len(set(wsids)) == 3
            on_gateway = {w for link in system.status()["links"] for w in link["sockets"]}
            assert set(wsids) == on_gateway
            gateway_id = system.status()["gateway"]
            assert all(w.startswith(gateway_id + "-") for w in wsids)

            await a.send({"User": "bob"})
            for client in (a, b, c):
                message = await client.expect("userlist")
                assert message == {"Type": "userlist", "Users": [{"User": "bob"}]}

            await b.say("hello, world", author="alice")
            for client in (a, b, c):
                first = await client.expect("Chat")
                assert list(first) == ["Message", "Author", "Type", "Sent", "Id"]
                assert first["Message"] == b64("hello, world")
                assert first["Author"] == "alice"
                assert SENT.match(first["Sent"])
            await c.say("second", author="carol")
            for client in (a, b, c):
                second = await client.expect("Chat")
                assert second["Message"] == b64("second")
                assert second["Author"] == "carol"

            with sqlite3.connect(system.db) as db:
                rows = db.execute("SELECT id, raw FROM messages ORDER BY id").fetchall()
            assert [r[0] for r in rows] == [1, 2]
            assert rows[0][1] == f'{{"Message": "{b64("hello, world")}", "Author": "alice"}}'

            await a.ws.aclose()
            for client in (b, c):
                message = await client.expect("userlist")
                assert message["Users"] == []
            for client, wsid in zip((a, b, c), wsids, strict=True):
                statuses = client.of_type("Status")
                assert len(statuses) == 1
                assert statuses[0]["WSID"] == wsid

    # Closed sockets leave the connections table (their Server() ends on 7951).
    with trio.fail_after(10):
        while True:
            with sqlite3.connect(system.db) as db:
                if db.execute("SELECT count(*) FROM connections").fetchone()[0] == 0:
                    break
            await trio.sleep(0.05)
