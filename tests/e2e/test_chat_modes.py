"""The tutorial's chat with shared and private sockets together, across real processes.

Shared sockets get messages pushed (a gateway group); private sockets cannot be opened
from elsewhere, so their Server() (in a worker process of its own) polls the store on
each one-second Read timeout: the messages cross from process to process through the
SQLite file. Private deliveries may therefore take about a second. Both modes, rooms
and the port's fixes of the tutorial's defects are proved in one process in
tests/appserver/test_chat.py.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import trio

from tests.conftest import StartRun
from tests.support import ChatClient, System, b64

#: Generous for private sockets, which see new messages on their next poll (~1 s).
DELIVERY_S = 10.0


async def connect(stack: AsyncExitStack, system: System, query: str = "") -> ChatClient:
    """A chat client whose Status has arrived."""
    client = await stack.enter_async_context(ChatClient.connect(system.ws_url(query=query)))
    await client.expect("Status", DELIVERY_S)
    return client


def wsid_of(client: ChatClient) -> str:
    """The WSID the client's Status message gave it."""
    return str(client.of_type("Status")[0]["WSID"])


def link_of(status: dict[str, Any], wsid: str) -> dict[str, Any]:
    """The /status link that holds ``wsid``."""
    holding = [link for link in status["links"] if wsid in link["sockets"]]
    assert len(holding) == 1, status
    return holding[0]


async def test_shared_and_private_clients_chat_together(start_run: StartRun) -> None:
    """A shared and a private socket in one room, served by two worker processes, see
    each other's aliases and messages, both ways."""
    system = start_run(workers=2)
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            shared = await connect(stack, system, "mode=shared")
            private = await connect(stack, system, "mode=private")
            status = system.status()
            modes = status["socket_modes"]
            assert modes[wsid_of(shared)] == "shared"
            assert modes[wsid_of(private)] == "private"
            private_link = link_of(status, wsid_of(private))
            assert (private_link["mode"], private_link["sockets"]) == (
                "private", [wsid_of(private)])
            assert private_link["worker_pid"] != link_of(status, wsid_of(shared))["worker_pid"]

            await shared.send({"User": "sam"})
            await shared.expect("userlist", DELIVERY_S, Users=[{"User": "sam"}])
            await private.send({"User": "pat"})
            both = [{"User": "sam"}, {"User": "pat"}]
            for client in (shared, private):
                await client.expect("userlist", DELIVERY_S, Users=both)

            await shared.say("hi pat", author="sam")
            for client in (shared, private):
                message = await client.expect("Chat", DELIVERY_S, Message=b64("hi pat"))
                assert message["Author"] == "sam"
            await private.say("hi sam", author="pat")
            for client in (shared, private):
                message = await client.expect("Chat", DELIVERY_S, Message=b64("hi sam"))
                assert message["Author"] == "pat"
            for client in (shared, private):
                assert [m["Message"] for m in client.of_type("Chat")] == [
                    b64("hi pat"), b64("hi sam")]
