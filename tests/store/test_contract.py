"""One contract for both stores: SQLite (the default) and Redis (many nodes) answer
every operation the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from store.api import Store, StoreUnavailable
from store.engine import open_store
from store.migrations import migrate_file
from tests.redis_server import RedisServer, free_port, redis_server

ENGINES = ["sqlite", "redis"]


@pytest.fixture(params=ENGINES)
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """What open_store is given: a migrated SQLite file, or a Redis of the test's own."""
    if request.param == "sqlite":
        path = tmp_path / "contract.db"
        migrate_file(str(path))
        yield str(path)
    else:
        with redis_server(tmp_path / "redis") as server:
            yield server.url


@asynccontextmanager
async def store_of(spec: str) -> AsyncIterator[Store]:
    async with open_store(spec) as store:
        yield store


async def test_connections_by_room_mode_and_gateway(spec: str) -> None:
    """Connections are kept per room, mode and gateway, listed in id order, and a mode
    change moves one; removing twice says it was there once."""
    with trio.fail_after(30):
        async with store_of(spec) as store:
            joined = await store.add_connection("g-2", "red", "shared", "g")
            assert (joined.last_message, joined.users_version) == (0, 0)
            await store.add_connection("g-1", "red", "shared", "g")
            await store.add_connection("h-1", "blue", "private", "h")
            assert await store.connections("red") == ["g-1", "g-2"]
            assert await store.connections(None, "private") == ["h-1"]
            assert await store.connections() == ["g-1", "g-2", "h-1"]
            await store.set_connection_mode("g-2", "private")
            assert await store.connections("red", "shared") == ["g-1"]
            assert await store.connections("red", "private") == ["g-2"]
            assert await store.gateway_connections("g") == [("g-1", "red"), ("g-2", "red")]
            assert await store.remove_connection("g-1") is True
            assert await store.remove_connection("g-1") is False
            assert await store.gateway_connections("g") == [("g-2", "red")]


async def test_users_keep_their_join_order_and_the_list_its_version(spec: str) -> None:
    """Aliases are listed in join order, a rename keeps its place, removal is by socket,
    and every change bumps the room's list version (which a join reports)."""
    with trio.fail_after(30):
        async with store_of(spec) as store:
            await store.set_alias("g-1", "ann", "red")
            await store.set_alias("g-2", "bob", "red")
            await store.set_alias("g-3", "cy", "blue")
            first = await store.versioned_userlist("red")
            assert first.users == ["ann", "bob"]
            await store.set_alias("g-1", "anna", "red")
            renamed = await store.versioned_userlist("red")
            assert renamed.users == ["anna", "bob"]
            assert renamed.version > first.version
            assert await store.remove_user("g-1") == "anna"
            assert await store.remove_user("g-1") is None
            after = await store.versioned_userlist("red")
            assert after.users == ["bob"]
            assert after.version > renamed.version
            assert await store.userlist("blue") == ["cy"]
            joined = await store.add_connection("g-9", "red", "shared", "g")
            assert joined.users_version == after.version


async def test_messages_are_numbered_per_room_and_stored_once(spec: str) -> None:
    """Each room numbers its messages 1, 2, ...; ids grow across rooms; a client
    message id stored already gives back the first row and stores nothing."""
    with trio.fail_after(30):
        async with store_of(spec) as store:
            a = await store.store_message("r1", room="red", wsid="g-1", author="ann",
                                          client_id="g-1:1")
            b = await store.store_message("b1", room="blue", client_id="g-2:1")
            c = await store.store_message("r2", room="red", client_id="g-1:2")
            assert (a.row.seq, b.row.seq, c.row.seq) == (1, 1, 2)
            assert a.row.id < b.row.id < c.row.id
            assert [a.duplicate, b.duplicate, c.duplicate] == [False, False, False]
            again = await store.store_message("r1 again", room="red", client_id="g-1:1")
            assert again.duplicate
            assert again.row == a.row
            plain = await store.store_message("no client id", room="red")
            assert plain.row.seq == 3
            assert [m.raw for m in await store.messages_after("red", 0)] == [
                "r1", "r2", "no client id"]
            assert [m.seq for m in await store.messages_after("red", 1, limit=1)] == [2]
            assert await store.last_message_id("red") == 3
            assert await store.last_message_id("green") == 0
            assert await store.message(c.row.id) == c.row
            assert await store.message(10_000) is None
            joined = await store.add_connection("g-5", "red", "shared", "g")
            assert joined.last_message == 3


async def test_a_socket_on_post_server_is_claimed_once(spec: str) -> None:
    """A registered socket's OnPostServer is claimed exactly once; so is one that was
    never registered; a claimed socket stays claimed if registered late."""
    with trio.fail_after(30):
        async with store_of(spec) as store:
            await store.register_socket("g-1", "g", "user/Chat.Server", '{"room": "x"}')
            assert await store.socket_claimed("g-1") is False
            assert await store.claim_socket("g-1") is True
            assert await store.claim_socket("g-1") is False
            assert await store.socket_claimed("g-1") is True
            assert await store.claim_socket("g-2") is True  # never registered
            assert await store.claim_socket("g-2") is False
            await store.register_socket("g-2", "g", "user/Chat.Server", "{}")
            assert await store.socket_claimed("g-2") is True


async def test_the_sockets_of_a_gateway_whose_lease_lapsed_are_listed(spec: str) -> None:
    """A gateway renewed within its ttl has no lapsed sockets; once its lease runs out,
    its open (not claimed) sockets are listed with their class and state."""
    with trio.fail_after(30):
        async with store_of(spec) as store:
            await store.renew_gateways(["alive", "gone"], 60)
            await store.renew_gateways(["gone"], 0.2)  # never shortens a lease
            await store.register_socket("alive-1", "alive", "user/Chat.Server", "{}")
            await store.register_socket("gone-1", "gone", "user/Chat.Server", '{"a": 1}')
            await store.register_socket("gone-2", "gone", "user/Echo.Server", "{}")
            assert await store.claim_socket("gone-2")
            assert await store.lapsed_sockets() == []
            short = "short"
            await store.renew_gateways([short], 0.2)
            await store.register_socket("short-1", short, "user/Chat.Server", '{"a": 1}')
            while not (lapsed := await store.lapsed_sockets()):  # noqa: ASYNC110
                await trio.sleep(0.05)  # the lease runs out on the engine's clock
            assert lapsed == [("short-1", short, "user/Chat.Server", '{"a": 1}')]
            assert await store.claim_socket("short-1")
            assert await store.lapsed_sockets() == []


async def test_a_socket_whose_gateway_never_had_a_lease_counts_as_lapsed(
    spec: str,
) -> None:
    """Both engines: no lease at all is a lapsed lease (a worker registers a socket
    only after renewing its gateway's lease, so such a gateway is gone)."""
    with trio.fail_after(30):
        async with store_of(spec) as store:
            await store.register_socket("never-1", "never", "user/Chat.Server", "{}")
            assert await store.lapsed_sockets() == [
                ("never-1", "never", "user/Chat.Server", "{}")]


async def test_errors_are_numbered_and_kept_in_order(spec: str) -> None:
    """Recorded errors get increasing ids and come back oldest first."""
    with trio.fail_after(30):
        async with store_of(spec) as store:
            first = await store.log_error("bad input", "malformed JSON", "g-1")
            second = await store.log_error("open failed for", "g-2", "g-2")
            assert second > first
            errors = await store.errors()
            assert [(e["kind"], e["detail"], e["wsid"]) for e in errors] == [
                ("bad input", "malformed JSON", "g-1"), ("open failed for", "g-2", "g-2")]


async def test_an_unreachable_redis_raises_store_unavailable(tmp_path: Path) -> None:
    """A Redis nobody answers at gives StoreUnavailable (not a hang, not a crash), and
    the same store works once Redis is up."""
    server = RedisServer(tmp_path / "redis", port=free_port())
    with trio.fail_after(60):
        async with open_store(server.url) as store:
            with pytest.raises(StoreUnavailable, match="unreachable"):
                await store.add_connection("g-1", "red", "shared", "g")
            with pytest.raises(StoreUnavailable):
                await store.store_message("x", room="red")
            server.start()
            try:
                joined = await store.add_connection("g-1", "red", "shared", "g")
                assert joined.last_message == 0
            finally:
                server.stop()
