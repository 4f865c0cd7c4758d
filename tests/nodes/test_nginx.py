"""Many nodes as users run them: redis-server, two nodes (each a ``wsgate appserver``
and a ``wsgate gateway``, separate processes), and nginx in front with
examples/nginx/wsgate.conf, all on loopback.

Clients connect through nginx only, as pages would; a client's WebSocketID names the
gateway that holds it, so a test knows which node each landed on. A client that loses
its socket does what the page (client/chat.js) does: it reconnects through nginx with
``?since=`` its last message's Id and names itself again. Every message a client gets
is kept, repeats included, so a line twice is seen as such.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from tests.nginx_server import Nginx, nginx_server
from tests.redis_server import RedisServer
from tests.support import WSGATE, Process, b64, children_of, open_ws, unb64

TIMEOUT_S = 120
#: The nodes' --node-ttl: how soon a dead node's users leave the lists.
NODE_TTL_S = 3.0


@dataclass
class Node:
    """One node: an app server (with its workers) and a gateway."""

    name: str
    appserver: Process
    gateway: Process
    port: int

    def pids(self) -> list[int]:
        """Every process of the node: gateway, app server, workers."""
        return [self.gateway.pid, self.appserver.pid, *children_of(self.appserver.pid)]

    def kill(self) -> list[int]:
        """kill -9 every process of the node, by PID; return the PIDs."""
        pids = self.pids()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        self.gateway.popen.wait(10)
        self.appserver.popen.wait(10)
        return pids


@dataclass
class Cluster:
    """Redis, the nodes and nginx."""

    redis: RedisServer
    nodes: list[Node]
    nginx: Nginx


def start_node(tmp_path: Path, name: str, redis: RedisServer, secret: Path) -> Node:
    """``wsgate appserver`` and ``wsgate gateway`` of one node, on ``redis``."""
    env = {k: v for k, v in os.environ.items() if k != "WSGATE_SECRET"}
    appserver = Process(
        [WSGATE, "appserver", "--listen", "127.0.0.1:0", "--workers", "2",
         "--store", redis.url, "--node-ttl", str(NODE_TTL_S), "--secret-file", str(secret)],
        log_path=tmp_path / f"{name}-appserver.log", env=env)
    address = appserver.wait_for_line(r"listening on (\S+) ")[1]
    gateway = Process(
        [WSGATE, "gateway", "--port", "0", "--appserver", address, "--pool", "2",
         "--name", name, "--bus", redis.url, "--secret-file", str(secret)],
        log_path=tmp_path / f"{name}-gateway.log", env=env)
    url = gateway.wait_for_line(r"serving (http://\S+) ")[1]
    return Node(name, appserver, gateway, int(url.rstrip("/").rsplit(":", 1)[1]))


@pytest.fixture
def cluster(tmp_path: Path, redis: RedisServer, secret_file: Path) -> Iterator[Cluster]:
    """Two nodes on one Redis behind nginx; everything stopped afterwards, by PID."""
    nodes: list[Node] = []
    try:
        for name in ("nodea", "nodeb"):
            nodes.append(start_node(tmp_path, name, redis, secret_file))
        with nginx_server(tmp_path / "nginx", [n.port for n in nodes]) as nginx:
            yield Cluster(redis, nodes, nginx)
    finally:
        for node in nodes:
            node.gateway.stop()
            node.appserver.stop()


@dataclass
class Roamer:
    """A chat client that, like the page, reconnects with ``?since=`` when its socket
    goes; it keeps everything it got, in order, across its sockets."""

    name: str
    url: str
    chats: list[dict[str, Any]] = field(default_factory=list)
    userlists: list[list[str]] = field(default_factory=list)
    wsids: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    closes: int = 0
    sent: list[str] = field(default_factory=list)
    ws: Any = None
    _arrived: trio.Event = field(default_factory=trio.Event)

    @property
    def node(self) -> str:
        """The node of its current socket (WebSocketIDs begin with the gateway's name)."""
        return self.wsids[-1].split(".", 1)[0] if self.wsids else ""

    async def run(self) -> None:
        """Connect, and reconnect each time the socket goes, forever."""
        while True:
            last = self.chats[-1]["Id"] if self.chats else 0
            url = f"{self.url}?since={last}" if last else self.url
            try:
                async with open_ws(url) as ws:
                    await self._serve(ws)
            except (ConnectionClosed, HandshakeError, OSError):
                pass
            self.ws = None
            self.closes += 1
            self._changed()
            await trio.sleep(0.2)  # the page waits 1 s and more; the test need not

    async def _serve(self, ws: Any) -> None:
        while True:
            message = json.loads(await ws.get_message())
            kind = message.get("Type")
            if kind == "Status":
                self.wsids.append(message["WSID"])
                await ws.send_message(json.dumps({"User": self.name}))
                self.ws = ws
            elif kind == "Chat":
                self.chats.append(message)
            elif kind == "userlist":
                self.userlists.append([u["User"] for u in message["Users"]])
            elif kind == "Error":
                self.errors.append(message)
            self._changed()

    def _changed(self) -> None:
        self._arrived.set()
        self._arrived = trio.Event()

    async def wait_for(self, condition: Callable[[Roamer], bool]) -> None:
        """Wait until ``condition(self)`` holds."""
        while not condition(self):
            await self._arrived.wait()

    async def say(self, text: str) -> None:
        """Send one line on the current socket."""
        assert self.ws is not None, f"{self.name} has no socket"
        self.sent.append(text)
        await self.ws.send_message(json.dumps({"Message": b64(text), "Author": self.name}))


def problems(roamers: list[Roamer]) -> dict[str, Any]:
    """Per client: lines lost or repeated, Ids not increasing, errors (empty if none)."""
    expected = Counter(text for r in roamers for text in r.sent)
    found = {}
    for r in roamers:
        got = Counter(unb64(m["Message"]) for m in r.chats)
        ids = [m["Id"] for m in r.chats]
        issue = {k: v for k, v in {
            "lost": sorted((expected - got).elements())[:10],
            "repeated": sorted((got - expected).elements())[:10],
            "out_of_order": sum(1 for a, b in itertools.pairwise(ids) if b <= a),
            "errors": r.errors,
        }.items() if v}
        if issue:
            found[r.name] = issue
    return found


def lists_right(roamers: list[Roamer]) -> bool:
    """Every client's last user list is every client once, the same list everywhere."""
    names = sorted(r.name for r in roamers)
    lasts = {tuple(r.userlists[-1]) if r.userlists else () for r in roamers}
    return len(lasts) == 1 and sorted(next(iter(lasts))) == names


#: How long one wait for the clients may take before the test fails, showing them.
WAIT_S = 30.0


def summary(roamers: list[Roamer]) -> list[dict[str, Any]]:
    """What each client has, for a failure's message."""
    return [{"name": r.name, "node": r.node, "open": r.ws is not None, "closes": r.closes,
             "sent": len(r.sent), "chats": len(r.chats),
             "users": r.userlists[-1] if r.userlists else None, "errors": r.errors}
            for r in roamers]


async def wait_until(roamers: list[Roamer], condition: Callable[[Roamer], bool]) -> None:
    """Wait until ``condition`` holds for every client (failing, with what each has,
    after WAIT_S)."""
    with trio.move_on_after(WAIT_S) as scope:
        # polled: a condition may read other clients than the one it is asked of
        while not all(condition(r) for r in roamers):  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert not scope.cancelled_caught, json.dumps(summary(roamers))


async def join(cluster: Cluster, count: int, nursery: trio.Nursery) -> list[Roamer]:
    """``count`` clients through nginx, each connected and named, and every user list
    showing all of them; the clients must have landed on both nodes."""
    roamers = [Roamer(f"r{i}", cluster.nginx.ws_url()) for i in range(count)]
    for roamer in roamers:
        nursery.start_soon(roamer.run)
        await roamer.wait_for(lambda r: r.ws is not None)
    await wait_until(roamers, lambda r: lists_right(roamers))
    assert {r.node for r in roamers} == {"nodea", "nodeb"}, [r.wsids for r in roamers]
    return roamers


async def talk(roamers: list[Roamer], lines: int, tag: str, gap_s: float = 0.0) -> None:
    """Each of ``roamers`` sends ``lines`` lines (``gap_s`` apart), all at once."""
    async with trio.open_nursery() as nursery:
        for roamer in roamers:
            async def say(r: Roamer = roamer) -> None:
                for n in range(lines):
                    await r.say(f"{r.name}-{tag}{n}")
                    await trio.sleep(gap_s)
            nursery.start_soon(say)


async def all_arrived(roamers: list[Roamer], everyone: list[Roamer]) -> None:
    total = sum(len(r.sent) for r in everyone)
    await wait_until(roamers, lambda r: len(r.chats) >= total)


async def test_two_nodes_behind_nginx_chat_as_one_room(cluster: Cluster) -> None:
    """Eight clients through nginx, on both nodes: every line reaches every client once,
    in Id order, whichever node its sender is on; the user lists agree everywhere."""
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            roamers = await join(cluster, 8, nursery)
            await talk(roamers, 10, "x")
            await all_arrived(roamers, roamers)
            assert problems(roamers) == {}
            assert all(len(r.chats) == 80 for r in roamers)
            assert all(r.closes == 0 for r in roamers)
            assert lists_right(roamers)
            nursery.cancel_scope.cancel()


async def test_kill_9_a_node_its_clients_resume_on_the_other(cluster: Cluster) -> None:
    """kill -9 every process of node b while node a's clients chat: b's clients
    reconnect through nginx to node a and resume with ?since= (no line lost, none
    twice, Ids in order); b's sockets leave the user lists within --node-ttl; node a
    never stops serving its own."""
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            roamers = await join(cluster, 8, nursery)
            survivors = [r for r in roamers if r.node == "nodea"]
            moved = [r for r in roamers if r.node == "nodeb"]
            killed_at = 0.0

            async def kill_b_midway() -> None:
                nonlocal killed_at
                await survivors[0].wait_for(lambda r: len(r.chats) >= 30)
                pids = cluster.nodes[1].kill()
                killed_at = time.monotonic()
                print(f"killed node b (pids {pids}) after {len(survivors[0].chats)} lines")

            async with trio.open_nursery() as chat:
                chat.start_soon(kill_b_midway)
                await talk(survivors, 40, "during", gap_s=0.02)
            # b's clients are back, on a, each with its socket of node a
            await wait_until(moved, lambda r: r.ws is not None and r.node == "nodea")
            await all_arrived(roamers, roamers)
            assert problems(roamers) == {}
            assert all(r.closes == 0 for r in survivors)
            assert all(r.closes >= 1 for r in moved)
            # the dead node's sockets left every list (their users are back, once each)
            await wait_until(roamers, lambda r: lists_right(roamers))
            left_after_s = time.monotonic() - killed_at
            print(f"node b's sockets left the user lists {left_after_s:.1f} s after the "
                  f"kill (--node-ttl {NODE_TTL_S})")
            # and the room goes on, the moved clients included
            await talk(roamers, 5, "after")
            await all_arrived(roamers, roamers)
            assert problems(roamers) == {}
            nursery.cancel_scope.cancel()


def health(node: Node) -> str:
    """The status in a node's gateway's /healthz."""
    with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/healthz", timeout=10) as reply:
        status: str = json.loads(reply.read())["status"]
    return status


async def wait_health(nodes: list[Node], status: str) -> None:
    with trio.move_on_after(WAIT_S) as scope:
        while {await trio.to_thread.run_sync(health, n) for n in nodes} != {status}:  # noqa: ASYNC110 - other processes
            await trio.sleep(0.1)
    assert not scope.cancelled_caught, [health(n) for n in nodes]


async def test_redis_restarts_under_two_nodes(cluster: Cluster) -> None:
    """Redis stops during a chat: both gateways stay up (degraded), no client's socket
    closes, a line sent meanwhile is refused to its sender with an Error; Redis starts
    again: both nodes recover by themselves and the room chats on, once and in order."""
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            roamers = await join(cluster, 6, nursery)
            await talk(roamers, 3, "before")
            await all_arrived(roamers, roamers)
            await trio.to_thread.run_sync(cluster.redis.stop)
            await wait_health(cluster.nodes, "degraded")
            sender = roamers[0]
            await sender.ws.send_message(json.dumps({"Message": b64("lost"),
                                                     "Author": sender.name}))
            await sender.wait_for(lambda r: bool(r.errors))
            assert "unreachable" in sender.errors[0]["Message"]
            sender.errors.clear()  # it was told; nothing else may go wrong
            await trio.to_thread.run_sync(cluster.redis.start)
            await wait_health(cluster.nodes, "ok")
            await talk(roamers, 3, "after")
            await all_arrived(roamers, roamers)
            assert problems(roamers) == {}  # "lost" reached nobody
            assert all(r.closes == 0 for r in roamers)
            assert lists_right(roamers)
            nursery.cancel_scope.cancel()
