"""Two nodes on one Redis, in one process: the bus between them (appserver/bus.py and
gateway/bus.py), the shared store, and what a Redis restart does.

Each node is a real gateway with a real supervisor and workers (tests/harness.py); the
nodes share nothing but the Redis, as two hosts would. Clients alternate between the
nodes' gateways. Every test checks what the clients see: every line once on every
socket, in Id order, no socket closed, the user lists the same everywhere; and that the
lines really crossed (the gateways' bus counters), so a test cannot pass on one node.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from gateway.config import GatewayConfig, new_gateway_id
from gateway.gateway import Gateway
from tests.chatting import http_get
from tests.faults.chatload import Room, room
from tests.harness import SECRET, Harness, running
from tests.redis_server import RedisServer

TIMEOUT_S = 60
LINES = 5


def bus_ready(nodes: list[Harness], gateways: list[Gateway]) -> bool:
    """Every gateway reads its stream, and every worker has a bus."""
    return (all(runtime.bus is not None for node in nodes for runtime in node.runtimes)
            and all(gw.bus is not None and gw.bus.up for gw in gateways))


@asynccontextmanager
async def two_nodes(tmp_path: Path, redis: RedisServer, **kwargs: object,
                    ) -> AsyncIterator[tuple[Harness, Harness]]:
    """Node a and node b, two workers each, on ``redis`` (store and bus)."""
    async with running(tmp_path, workers=2, store_url=redis.url, node="a",
                       **kwargs) as a, \
            running(tmp_path, workers=2, store_url=redis.url, node="b", **kwargs) as b:
        await a.wait_for(lambda: bus_ready([a, b], [a.gateway, b.gateway]))
        yield a, b


async def talk(r: Room, lines: int, tag: str) -> None:
    """Every chatter says ``lines`` lines, all at once; wait until all arrived."""
    async with trio.open_nursery() as nursery:
        for chatter in r.chatters:
            async def say(chatter: object = chatter) -> None:
                for n in range(lines):
                    await chatter.say(f"{chatter.name}-{tag}{n}")  # type: ignore[attr-defined]
            nursery.start_soon(say)
    await r.all_received()


def crossed(*gateways: Gateway) -> list[int]:
    """How many frames each gateway took from the bus."""
    return [gw.bus.frames if gw.bus is not None else 0 for gw in gateways]


async def test_a_room_spread_over_two_nodes_chats_as_one(
    tmp_path: Path, redis: RedisServer,
) -> None:
    """Six clients, three on each node: every line reaches all six once, in Id order
    (one sequence per room across the nodes), and both nodes show the same user list."""
    with trio.fail_after(TIMEOUT_S):
        async with two_nodes(tmp_path, redis) as (a, b), trio.open_nursery() as nursery, \
                room([a.ws_url(), b.ws_url()], 6, nursery) as r:
            assert r.userlist_problems() == {}
            await talk(r, LINES, "x")
            assert r.problems() == {}
            assert all(len(c.chats) == 6 * LINES for c in r.chatters)
            # a's lines reached b's sockets over b's stream, and b's reached a's
            assert min(crossed(a.gateway, b.gateway)) > 0
            nursery.cancel_scope.cancel()


async def test_the_tutorials_openserver_loop_crosses_nodes(
    tmp_path: Path, redis: RedisServer,
) -> None:
    """``--set fanout=per-socket``: SendData writes to each socket with
    OpenServer(id).Write, as the tutorial does; a socket of the other node's gateway is
    reached all the same (one Write each, over the bus)."""
    with trio.fail_after(TIMEOUT_S):
        async with two_nodes(tmp_path, redis, settings={"fanout": "per-socket"}) as (a, b), \
                trio.open_nursery() as nursery, \
                room([a.ws_url(), b.ws_url()], 4, nursery) as r:
            before = crossed(a.gateway, b.gateway)
            await talk(r, LINES, "p")
            assert r.problems() == {}
            after = crossed(a.gateway, b.gateway)
            # per socket: each line crossed once per socket of the other node at least
            assert all(n - m >= 2 * 2 * LINES for n, m in zip(after, before, strict=True))
            nursery.cancel_scope.cancel()


async def test_two_gateways_on_one_app_server(tmp_path: Path, redis: RedisServer) -> None:
    """The IRIS case of two Web Gateways in front of one instance: a second gateway
    linked to node a's app server; a worker holds a link to one gateway only, so the
    other is reached over the bus, and the room is one."""
    with trio.fail_after(TIMEOUT_S):
        async with running(tmp_path, workers=2, store_url=redis.url, node="a", pool=1) as a, \
                trio.open_nursery() as nursery:
            second = Gateway(GatewayConfig(appserver=a.gateway.config.appserver,
                                           secret=SECRET, port=0, pool=1,
                                           gateway_id=new_gateway_id("second"),
                                           bus_url=redis.url))
            host, port = await nursery.start(second.serve)
            await a.wait_for(lambda: len(second.links.pool_links) == 1
                             and bus_ready([a], [a.gateway, second]))
            urls = [a.ws_url(), f"ws://{host}:{port}/csp/user/Chat.Server.cls"]
            async with room(urls, 4, nursery) as r:
                await talk(r, LINES, "g")
                assert r.problems() == {}
                assert min(crossed(a.gateway, second)) > 0
            nursery.cancel_scope.cancel()


async def health(port: int) -> dict[str, object]:
    reply = await http_get(port, "/healthz")
    assert reply.status == 200, reply
    body: dict[str, object] = json.loads(reply.body)
    return body


async def wait_health(node: Harness, status: str) -> None:
    while (await health(node.port))["status"] != status:  # noqa: ASYNC110 - HTTP polling
        await trio.sleep(0.05)


async def test_redis_restarts_during_a_chat(tmp_path: Path, redis: RedisServer) -> None:
    """Redis stops mid-chat: no socket closes; both gateways say degraded; a line sent
    meanwhile is refused to its sender with an Error (and reaches nobody). Redis starts
    again (its append-only file kept the room): both nodes come back by themselves,
    the lines sent after reach everyone once, in Id order, after the earlier ones."""
    with trio.fail_after(TIMEOUT_S):
        async with two_nodes(tmp_path, redis) as (a, b), trio.open_nursery() as nursery, \
                room([a.ws_url(), b.ws_url()], 4, nursery) as r:
            await talk(r, 2, "before")
            assert r.problems() == {}
            await trio.to_thread.run_sync(redis.stop)
            await wait_health(a, "degraded")
            await wait_health(b, "degraded")

            sender = r.chatters[1]  # on node b
            await sender.ws.send_message(json.dumps(
                {"Message": "ZHVyaW5n", "Author": sender.name}))  # "during"
            await sender.wait_for(lambda c: bool(c.errors))
            (error,) = sender.errors
            assert error["Type"] == "Error"
            assert "unreachable" in error["Message"]

            await trio.to_thread.run_sync(redis.start)
            await wait_health(a, "ok")
            await wait_health(b, "ok")
            await a.wait_for(lambda: bus_ready([a, b], [a.gateway, b.gateway]))
            await talk(r, 2, "after")
            assert r.problems() == {}  # "during" was never delivered, nobody closed
            assert all(len(c.chats) == 4 * 4 for c in r.chatters)
            assert r.userlist_problems() == {}
            nursery.cancel_scope.cancel()
