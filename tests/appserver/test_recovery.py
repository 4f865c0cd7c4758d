"""Crash recovery in one process: a real gateway, supervisor and workers (tests/harness.py).

A worker's crash, as far as its link goes, is simulated by cutting that link: the
worker's end of the socket is shut down both ways (:func:`break_link`), after what the
worker had already queued has reached the kernel, as it would have before a real
crash. The gateway sees a dead link; the worker sees its link lost, and detaches its
sockets without running their OnPostServer. An app server that cannot be reached
(:func:`unreachable`: the gateway's pool dials a port nobody listens on) keeps the
gateway from linking again, so that a socket stays detached, or resumes on the one
other worker that is still linked, for as long as a test needs.

The servers are the chat (its store tells what was stored, and how often), the probe
(tests/apps/probe.py, whose events.log counts OnPostServer across workers), and
:class:`HeldChat`, a chat whose Server() stops with a message it has read but not
finished, so that the message is deterministically unacknowledged when the link dies.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from appserver.chat import ChatServer
from appserver.config import AppServerConfig
from appserver.context import current_runtime
from appserver.supervisor import Supervisor
from gateway.browser import Phase
from gateway.config import GatewayConfig, new_gateway_id
from gateway.gateway import Gateway
from tests import harness
from tests.apps.probe import events, probe
from tests.harness import SECRET, Harness
from tests.harness import running as harness_running
from tests.support import ChatClient, b64

TIMEOUT_S = 30
PROBES = ("tests.apps.probe:Probe",)
HELD = ("tests.appserver.test_recovery:HeldChat",)
HELD_PATH = "/csp/user/HeldChat.Server.cls"
#: The Author that makes HeldChat stop with the message (see HeldChat).
HOLDER = "holder"
#: node_ttl_s for the tests of gateways that vanish (the app server's default is 15 s).
NODE_TTL_S = 0.7


class HeldChat(ChatServer):
    """The chat, except that a message from :data:`HOLDER` stops Server() for good, on
    the socket's first worker: before the message is stored and broadcast (``?hold=
    before``) or after (``?hold=after``). Server() never reads on, so the message is
    never acknowledged; a worker that resumes the socket handles it normally.

    Workers run in this process, so the class records what happened in class lists.
    """

    CLASS_NAME = "HeldChat.Server"
    #: Sockets whose Server() stopped with a message from HOLDER.
    blocked: ClassVar[list[str]] = []
    #: Every message dispatched: (wsid, message_id, worker pid, resumed).
    dispatched: ClassVar[list[tuple[str, str, int, bool]]] = []

    async def OnPreServer(self) -> None:
        """The chat's, and where to stop (kept in the state a resuming worker gets)."""
        await super().OnPreServer()
        self.hold_at = (self.request.get("hold") if self.request else None) or ""

    async def Dispatch(self, data: str | bytes) -> None:
        """The chat's, stopping before or after it with a message from HOLDER."""
        HeldChat.dispatched.append((self.WebSocketID, self.message_id,
                                    current_runtime().pid, self.resumed))
        held = not self.resumed and isinstance(data, str) and f'"{HOLDER}"' in data
        if held and self.hold_at == "before":
            await self._stop_here()
        await super().Dispatch(data)
        if held and self.hold_at == "after":
            await self._stop_here()

    async def _stop_here(self) -> None:
        HeldChat.blocked.append(self.WebSocketID)
        await trio.sleep_forever()  # until the link dies: the port's scope cancels it


# --- helpers ---------------------------------------------------------------------------


@asynccontextmanager
async def running(tmp_path: Path, **options: Any) -> AsyncIterator[Harness]:
    """The harness (``options`` passed on), left only once no worker is starting."""
    async with harness_running(tmp_path, **options) as h:
        yield h
        # Supervisor.spawn leaks a control socket when cancelled while a worker starts
        # (a product bug known to tests/appserver/test_contract.py); links that come back
        # and private sockets may make the pool grow in the background.
        await h.wait_for(lambda: h.supervisor.starting == 0)


def link_of(h: Harness, wsid: str) -> dict[str, Any]:
    """The gateway's /status link that is home to ``wsid``."""
    holding = [link for link in h.status()["links"] if wsid in link["sockets"]]
    assert len(holding) == 1, h.status()
    return holding[0]


def worker_of(h: Harness, wsid: str) -> int:
    """The pid of the worker whose link is home to ``wsid``."""
    return int(link_of(h, wsid)["worker_pid"])


async def break_link(h: Harness, pid: int, gateway: Gateway | None = None) -> None:
    """Cut worker ``pid``'s link to ``gateway`` (the harness's by default) as its crash
    would, and return once both ends have given the link up."""
    gateway = gateway or h.gateway
    runtime = h.runtime(pid)
    (link,) = [link for link in runtime.links.values() if link.gateway_id == gateway.id]
    # What the worker had sent is in the kernel before it "crashes" (a crash loses only
    # what the process still held).
    await h.wait_for(lambda: not link.out.pending)
    link.sock.shutdown(socket.SHUT_RDWR)
    await h.wait_for(lambda: link.id not in runtime.links
                     and all(other.id != link.id for other in gateway.links.links))


@contextmanager
def unreachable(gateway: Gateway) -> Iterator[None]:
    """Inside, the gateway's pool cannot link to its app server (a port with nobody
    listening); links that are up stay up. On exit it links again (within its retry
    backoff)."""
    with socket.socket() as nobody:
        nobody.bind(("127.0.0.1", 0))
        address = gateway.links.address
        gateway.links.address = nobody.getsockname()[:2]
        try:
            yield
        finally:
            gateway.links.address = address


@asynccontextmanager
async def second_gateway(h: Harness) -> AsyncIterator[Harness]:
    """Another gateway (one pool link) linked to the harness's app server, served until
    the block ends; a Harness view of it (its ws_url, status)."""
    other = Gateway(GatewayConfig(appserver=h.gateway.config.appserver, secret=SECRET,
                                  port=0, pool=1, gateway_id=new_gateway_id("other")))
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(other.serve)
        view = Harness(other, h.supervisor, f"http://{host}:{port}/", h.db, h.workers)
        await h.wait_for(lambda: len(other.links.pool_links) == 1)
        yield view
        nursery.cancel_scope.cancel()


async def connect(stack: AsyncExitStack, h: Harness, path: str = "/csp/user/Chat.Server.cls",
                  query: str = "") -> ChatClient:
    """A chat client whose Status has arrived."""
    client = await stack.enter_async_context(ChatClient.connect(h.ws_url(path, query)))
    await client.expect("Status")
    return client


def wsid_of(client: ChatClient) -> str:
    """The WSID the client's Status gave it."""
    return str(client.of_type("Status")[0]["WSID"])


def table(h: Harness, sql: str, *params: object) -> list[tuple[object, ...]]:
    """Rows of the store, read as another process would."""
    with sqlite3.connect(h.db) as db:
        return db.execute(sql, params).fetchall()


def chats(client: ChatClient) -> list[tuple[int, str]]:
    """The chat messages a client received: (Id, Message)."""
    return [(m["Id"], m["Message"]) for m in client.of_type("Chat")]


def registry_finished(h: Harness, wsid: str) -> int | None:
    """The socket's row in the store's registry: 1 finished (its OnPostServer claimed),
    0 open, None not there."""
    with sqlite3.connect(h.db) as db:
        row = db.execute("SELECT finished FROM sockets WHERE wsid = ?", (wsid,)).fetchone()
    return None if row is None else int(row[0])


async def settle() -> None:
    """Every task is idle: whatever was going to run has run."""
    await trio.testing.wait_all_tasks_blocked(cushion=0.05)


@pytest.fixture
def node_ttl(monkeypatch: pytest.MonkeyPatch) -> float:
    """The harness's workers count a gateway gone after NODE_TTL_S without a lease
    renewed (``running`` has no parameter for the app server's node_ttl_s)."""

    def supervisor(config: AppServerConfig, *args: Any, **kwargs: Any) -> Supervisor:
        return Supervisor(replace(config, node_ttl_s=NODE_TTL_S), *args, **kwargs)

    monkeypatch.setattr(harness, "Supervisor", supervisor)
    return NODE_TTL_S


# --- shared sockets: detached, then resumed ---------------------------------------------


async def test_shared_chat_socket_survives_the_loss_of_its_worker(tmp_path: Path) -> None:
    """A shared chat socket whose worker's link breaks stays open; the gateway counts it
    detached then resumed; its Server() runs again, resumed, on the other worker (no
    second Status); the user list is unchanged and the socket chats on."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2) as h, AsyncExitStack() as stack:
            x, y = await connect(stack, h), await connect(stack, h)
            first, other = worker_of(h, wsid_of(x)), worker_of(h, wsid_of(y))
            assert first != other
            await x.send({"User": "xavier"})
            await y.expect("userlist", Users=[{"User": "xavier"}])
            await y.send({"User": "yvonne"})
            both = [{"User": "xavier"}, {"User": "yvonne"}]
            for client in (x, y):
                await client.expect("userlist", Users=both)
            lists_before = [len(client.of_type("userlist")) for client in (x, y)]
            bs = h.gateway.table.get(wsid_of(x))
            assert bs is not None

            with unreachable(h.gateway):
                await break_link(h, first)
                await h.wait_for(lambda: h.gateway.stats["sockets_resumed"] == 1)
                assert h.gateway.stats["sockets_detached"] == 1
                assert bs.phase is Phase.OPEN
                assert h.gateway.table.get(wsid_of(x)) is bs
                assert worker_of(h, wsid_of(x)) == other
                await h.wait_for(lambda: wsid_of(x) in h.runtime(other).ports)
                port = h.runtime(other).ports[wsid_of(x)]
                assert port.instance.resumed is True
                assert wsid_of(x) not in h.runtime(first).ports

                await x.say("after the crash", author="xavier")
                for client in (x, y):
                    await client.expect("Chat", Message=b64("after the crash"))
            for client, before in zip((x, y), lists_before, strict=True):
                assert len(client.of_type("Status")) == 1, client.received
                assert len(client.of_type("userlist")) == before, client.received
                assert [m for _, m in chats(client)] == [b64("after the crash")]
            assert table(h, "SELECT alias FROM users ORDER BY id") == [("xavier",),
                                                                      ("yvonne",)]
            late = await connect(stack, h)
            assert (await late.expect("userlist"))["Users"] == both


@pytest.mark.parametrize("hold_at", ["before", "after"])
async def test_unacknowledged_message_is_redelivered_and_stored_once(
    tmp_path: Path, hold_at: str
) -> None:
    """A message the first worker read but never acknowledged (it stopped before, or
    after, storing and broadcasting it) is delivered again to the worker that resumes
    the socket, under the same message id; it is stored once and every socket of the
    room gets it once, in order."""
    HeldChat.blocked.clear()
    HeldChat.dispatched.clear()
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2, apps=HELD) as h, AsyncExitStack() as stack:
            assert h.runtimes[0].classes["user/HeldChat.Server"] is HeldChat
            x = await connect(stack, h, HELD_PATH, f"hold={hold_at}")
            y = await connect(stack, h, HELD_PATH)
            first, other = worker_of(h, wsid_of(x)), worker_of(h, wsid_of(y))
            assert first != other
            await x.say("one", author="x")
            for client in (x, y):
                await client.expect("Chat", Message=b64("one"))
            await x.say("held", author=HOLDER)
            await h.wait_for(lambda: wsid_of(x) in HeldChat.blocked)
            if hold_at == "after":  # stored and broadcast before the worker was lost
                for client in (x, y):
                    await client.expect("Chat", Message=b64("held"))

            with unreachable(h.gateway):
                await break_link(h, first)
                await h.wait_for(lambda: h.gateway.stats["sockets_resumed"] == 1)
                await x.say("three", author="x")
                for client in (x, y):
                    await client.expect("Chat", Message=b64("three"))

            assert h.gateway.stats["messages_redelivered"] == 1
            mine = [d for d in HeldChat.dispatched if d[0] == wsid_of(x)]
            assert mine == [
                (wsid_of(x), f"{wsid_of(x)}:1", first, False),
                (wsid_of(x), f"{wsid_of(x)}:2", first, False),
                (wsid_of(x), f"{wsid_of(x)}:2", other, True),
                (wsid_of(x), f"{wsid_of(x)}:3", other, True),
            ]
            expected = [(1, b64("one")), (2, b64("held")), (3, b64("three"))]
            for client in (x, y):
                assert chats(client) == expected
            rows = table(h, "SELECT seq, raw, client_id FROM messages ORDER BY id")
            assert [(seq, json.loads(str(raw))["Message"]) for seq, raw, _ in rows] == expected
            assert [row[2] for row in rows] == [f"{wsid_of(x)}:{n}" for n in (1, 2, 3)]


async def test_handled_messages_are_acknowledged_and_not_sent_again(tmp_path: Path) -> None:
    """Messages the worker handled (its Server() read on past them) are forgotten by the
    gateway: after the worker is lost, only the one it had not finished is delivered
    again."""
    HeldChat.blocked.clear()
    HeldChat.dispatched.clear()
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2, apps=HELD) as h, AsyncExitStack() as stack:
            x = await connect(stack, h, HELD_PATH, "hold=before")
            first = worker_of(h, wsid_of(x))
            for text in ("one", "two"):
                await x.say(text, author="x")
                await x.expect("Chat", Message=b64(text))
            await x.say("held", author=HOLDER)
            await h.wait_for(lambda: wsid_of(x) in HeldChat.blocked)
            with unreachable(h.gateway):
                await break_link(h, first)
                await x.expect("Chat", Message=b64("held"))
            assert h.gateway.stats["sockets_resumed"] == 1
            assert h.gateway.stats["messages_redelivered"] == 1
            resumed = [d[1] for d in HeldChat.dispatched if d[0] == wsid_of(x) and d[3]]
            assert resumed == [f"{wsid_of(x)}:3"]
            assert chats(x) == [(1, b64("one")), (2, b64("two")), (3, b64("held"))]
            assert len(table(h, "SELECT id FROM messages")) == 3


async def test_message_sent_while_detached_is_delivered_once_a_worker_resumes(
    tmp_path: Path,
) -> None:
    """While no link is up the socket stays open (detached) and keeps what the browser
    sends; once the app server is back, a worker resumes the socket and handles it: the
    message is stored once and broadcast; no second Status."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=1) as h, AsyncExitStack() as stack:
            x = await connect(stack, h)
            wsid = wsid_of(x)
            with unreachable(h.gateway):
                await break_link(h, worker_of(h, wsid))
                assert h.gateway.links.pool_links == []
                assert h.gateway.recovery.detached == 1
                received = h.gateway.stats["frames_in"]
                await x.say("while detached", author="x")
                await h.wait_for(lambda: h.gateway.stats["frames_in"] == received + 1)
                bs = h.gateway.table.get(wsid)
                assert bs is not None
                assert bs.phase is Phase.DETACHED
                assert h.gateway.stats["sockets_resumed"] == 0
            message = await x.expect("Chat", Message=b64("while detached"))
            assert message["Id"] == 1
            assert h.gateway.stats["sockets_resumed"] == 1
            assert h.gateway.stats["messages_redelivered"] == 1
            assert bs.phase is Phase.OPEN
            await x.say("and after", author="x")
            await x.expect("Chat", Message=b64("and after"))
            assert chats(x) == [(1, b64("while detached")), (2, b64("and after"))]
            assert len(x.of_type("Status")) == 1
            assert len(table(h, "SELECT id FROM messages")) == 2


async def test_detached_socket_closes_with_1013_over_hold_bytes(tmp_path: Path) -> None:
    """A detached socket keeps the browser's messages up to hold_bytes; the message that
    goes over it closes the socket with 1013 (the bound is never below one message)."""
    text = "x" * 1000  # each message is a little over 1300 bytes of JSON
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=1, hold_bytes=3000, max_message_bytes=2000) as h, \
                AsyncExitStack() as stack:
            x = await connect(stack, h)
            for n in range(3):  # acknowledged messages do not count against the bound
                await x.say(f"{n}{text}", author="x")
                await x.expect("Chat")
            with unreachable(h.gateway):
                await break_link(h, worker_of(h, wsid_of(x)))
                bs = h.gateway.table.get(wsid_of(x))
                assert bs is not None
                received = h.gateway.stats["frames_in"]
                for n in range(2):
                    await x.say(f"{n}{text}", author="x")
                await h.wait_for(lambda: h.gateway.stats["frames_in"] == received + 2)
                assert bs.phase is Phase.DETACHED
                assert h.gateway.stats["sockets_over_hold"] == 0
                await x.say(f"2{text}", author="x")
                with pytest.raises(ConnectionClosed) as closed:
                    await x.recv()
                assert closed.value.reason.code == 1013
                assert h.gateway.stats["sockets_over_hold"] == 1


# --- OnPostServer duties of lost workers -----------------------------------------------


async def test_private_socket_of_a_lost_worker_closes_1011_and_finishes_once(
    tmp_path: Path,
) -> None:
    """A private socket whose worker's link breaks is closed with 1011 (the rest of the
    app server is up), and its OnPostServer runs exactly once, on another worker."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2, apps=PROBES,
                           settings={"probe-dir": str(tmp_path)}) as h:
            async with probe(h, "private") as client:
                lost = client.pid
                assert link_of(h, client.wsid)["mode"] == "private"
                await break_link(h, lost)
                assert await client.close_code() == 1011
            await h.wait_for(lambda: bool(events(tmp_path, "post", client.wsid)))
            await h.settled(client.wsid)
            posts = events(tmp_path, "post", client.wsid)
            assert len(posts) == 1
            assert int(posts[0][2]) != lost
            assert int(posts[0][2]) in h.workers
            assert events(tmp_path, "closed", client.wsid) == []  # Server() was cancelled
            assert h.gateway.stats["post_server_handed_over"] == 1


async def test_private_socket_closes_1012_when_no_other_link_is_up(tmp_path: Path) -> None:
    """A private socket whose worker's link breaks while no pool link is up (the app
    server is restarting) is closed with 1012; its OnPostServer runs once a worker links
    again."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=1, apps=PROBES,
                           settings={"probe-dir": str(tmp_path)}) as h:
            async with probe(h, "private") as client:
                # The pool link that replaced the one the socket took.
                await h.wait_for(lambda: len(h.gateway.links.pool_links) == 1)
                (pool_link,) = h.gateway.links.pool_links
                with unreachable(h.gateway):
                    await break_link(h, pool_link.worker_pid)
                    await break_link(h, client.pid)
                    assert await client.close_code() == 1012
                    await h.wait_for(lambda: h.gateway.table.get(client.wsid) is None)
                    assert events(tmp_path, "post", client.wsid) == []
            await h.wait_for(lambda: bool(events(tmp_path, "post", client.wsid)))
            await h.settled(client.wsid)
            assert len(events(tmp_path, "post", client.wsid)) == 1


async def test_shared_socket_closed_while_detached_finishes_once(tmp_path: Path) -> None:
    """A shared socket that closes while no worker has it is an orphan: once a worker
    links again, it runs the socket's OnPostServer, exactly once."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=1, apps=PROBES,
                           settings={"probe-dir": str(tmp_path)}) as h:
            with unreachable(h.gateway):
                async with probe(h, "shared") as client:
                    await break_link(h, client.pid)
                    assert h.gateway.recovery.detached == 1
                await h.wait_for(lambda: h.gateway.table.get(client.wsid) is None)
                assert events(tmp_path, "post", client.wsid) == []
                assert client.wsid in h.gateway.recovery.orphans
            await h.wait_for(lambda: bool(events(tmp_path, "post", client.wsid)))
            await h.settled(client.wsid)
            await settle()
            assert len(events(tmp_path, "post", client.wsid)) == 1
            assert registry_finished(h, client.wsid) == 1
            assert h.gateway.stats["post_server_handed_over"] == 1
            assert h.gateway.recovery.orphans == {}


# --- the worker's side, and gateways that never come back -------------------------------


async def test_worker_detaches_the_sockets_of_a_lost_link(tmp_path: Path) -> None:
    """A worker whose link is lost stops the Server() of its open sockets without their
    OnPostServer and forgets their ports; the store's registry keeps them open (their
    gateway, alive, resumes them itself)."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2, apps=PROBES,
                           settings={"probe-dir": str(tmp_path)}) as h, \
                probe(h, "shared") as bystander, probe(h, "shared") as client:
            first, other = client.pid, bystander.pid
            assert first != other
            with unreachable(h.gateway):
                await break_link(h, first)
                assert client.wsid not in h.runtime(first).ports
                await h.wait_for(lambda: h.gateway.stats["sockets_resumed"] == 1)
                await settle()
                assert events(tmp_path, "post", client.wsid) == []
                assert events(tmp_path, "closed", client.wsid) == []
                servers = events(tmp_path, "server", client.wsid)
                assert [int(e[2]) for e in servers] == [first, other]
                assert registry_finished(h, client.wsid) == 0
            await h.wait_for(lambda: len(h.gateway.links.pool_links) == 2)
            hello = await client.answer()  # the probe's Server() ran again, there
            assert (hello["event"], hello["server_pid"]) == ("hello", other)
            assert (await client.ask("read", timeout=0.01))["error"] == 7950
        await h.settled(client.wsid)
        assert [int(e[2]) for e in events(tmp_path, "post", client.wsid)] == [other]


async def test_sockets_of_a_gateway_gone_for_node_ttl_get_their_on_post_server(
    tmp_path: Path, node_ttl: float,
) -> None:
    """A gateway that never links again has its socket's OnPostServer run by a live
    worker after node_ttl_s (its lease lapsed), exactly once; a gateway that lost a
    link at the same time but is still linked through another resumes its socket
    itself, and no sweep touches it, then or after it links again."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=3, pool=2, apps=PROBES,
                           settings={"probe-dir": str(tmp_path)}) as h:
            assert all(r.node_ttl_s == node_ttl for r in h.runtimes)
            async with second_gateway(h) as gone, probe(h, "shared") as bystander, \
                    probe(h, "shared") as kept, probe(gone, "shared") as lost:
                assert len({bystander.pid, kept.pid, lost.pid}) == 3
                with unreachable(gone.gateway):  # it never links again
                    with unreachable(h.gateway):
                        await break_link(h, kept.pid)
                        await h.wait_for(lambda: h.gateway.stats["sockets_resumed"] == 1)
                        await break_link(h, lost.pid, gone.gateway)
                        await h.wait_for(lambda: bool(events(tmp_path, "post", lost.wsid)))
                        await settle()
                        posts = events(tmp_path, "post", lost.wsid)
                        assert len(posts) == 1
                        assert int(posts[0][2]) in h.workers
                        assert gone.gateway.recovery.detached == 1  # it never learns
                        assert registry_finished(h, lost.wsid) == 1
                        # Past node_ttl_s, the linked gateway's socket is still open.
                        assert registry_finished(h, kept.wsid) == 0
                        assert events(tmp_path, "post", kept.wsid) == []
                        hello = await kept.answer()  # its Server() ran again, elsewhere
                        assert (hello["event"], hello["server_pid"]) == ("hello",
                                                                         bystander.pid)
                    await h.wait_for(lambda: len(h.gateway.links.pool_links) == 2)
                    assert (await kept.ask("read", timeout=0.01))["error"] == 7950
                    await kept.ws.aclose()
                    await h.settled(kept.wsid)
                    assert len(events(tmp_path, "post", kept.wsid)) == 1
                    assert len(events(tmp_path, "post", lost.wsid)) == 1


async def test_gateway_back_after_node_ttl_does_not_run_on_post_server_twice(
    tmp_path: Path, node_ttl: float,
) -> None:
    """A gateway that was unlinked longer than node_ttl_s (hung, partitioned) and then
    links again: each of its sockets' OnPostServer runs once in all (docs/guarantees.md:
    no fault runs an OnPostServer twice), and a socket whose session ended meanwhile
    is closed with 1001 when the gateway tries to resume it."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=1, apps=PROBES,
                           settings={"probe-dir": str(tmp_path)}) as h:
            assert all(r.node_ttl_s == node_ttl for r in h.runtimes)
            async with probe(h, "shared") as client:
                with unreachable(h.gateway):
                    await break_link(h, client.pid)
                    await h.wait_for(lambda: bool(events(tmp_path, "post", client.wsid)))
                # The socket was open all along at the gateway, which resumes it.
                await h.wait_for(lambda: h.gateway.stats["sockets_resumed"] == 1)
                assert await client.close_code() == 1001
            await h.settled(client.wsid)
            assert len(events(tmp_path, "post", client.wsid)) == 1


async def test_gateway_gone_with_two_links_gets_on_post_server_for_every_socket(
    tmp_path: Path, node_ttl: float,
) -> None:
    """A gateway that loses both of its links (one to each worker) and never links again
    has the OnPostServer of the sockets of both links run after node_ttl_s, once each."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2, apps=PROBES,
                           settings={"probe-dir": str(tmp_path)}) as h:
            assert all(r.node_ttl_s == node_ttl for r in h.runtimes)
            async with probe(h, "shared") as older, probe(h, "shared") as newer:
                assert older.pid != newer.pid
                with unreachable(h.gateway):
                    await break_link(h, older.pid)
                    await break_link(h, newer.pid)
                    await h.wait_for(lambda: bool(events(tmp_path, "post", newer.wsid)))
                    await settle()
                    assert len(events(tmp_path, "post", newer.wsid)) == 1
                    assert len(events(tmp_path, "post", older.wsid)) == 1


async def test_private_socket_finished_by_the_gateway_is_not_finished_again(
    tmp_path: Path, node_ttl: float,
) -> None:
    """A private socket whose worker was lost has its OnPostServer run once, handed over
    by the gateway; when that gateway later vanishes for node_ttl_s, the sweep does not
    run it a second time (it runs only the OnPostServer still due)."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=1, apps=PROBES,
                           settings={"probe-dir": str(tmp_path)}) as h:
            assert all(r.node_ttl_s == node_ttl for r in h.runtimes)
            async with probe(h, "shared") as shared:
                async with probe(h, "private") as private:
                    # Handed off to a dedicated link: the gateway's newest.
                    assert private.hello["pre_pid"] == shared.pid != private.pid
                    await break_link(h, private.pid)
                    assert await private.close_code() == 1011
                await h.wait_for(lambda: bool(events(tmp_path, "post", private.wsid)))
                await h.settled(private.wsid)
                assert len(events(tmp_path, "post", private.wsid)) == 1
                with unreachable(h.gateway):
                    await break_link(h, shared.pid)
                    await h.wait_for(lambda: bool(events(tmp_path, "post", shared.wsid)))
                    await settle()
                    assert len(events(tmp_path, "post", shared.wsid)) == 1
                    assert len(events(tmp_path, "post", private.wsid)) == 1
