"""The store on Redis, shared by every node: ``--store redis://HOST:PORT/DB``.

The same :class:`store.api.Store` as SQLite's, on Redis keys (all under ``wsgate:``).
Everything that must be atomic (a message and its number in the room; a user and the
list's version; a socket's claimed OnPostServer) is one Lua script, so two nodes never
interleave inside it. The client is coredis (anyio, so it runs on trio): measured on
this machine as fast as valkey-glide for sequential commands, and without glide's
background runtime threads in every worker process (docs/scaling.md has the figures).

Keys (``{room}``, ``{wsid}``, ``{gw}`` are names)::

    conn:{wsid}              hash   room, mode, gateway, opened_at
    room:{room}:conns:{mode} set    the room's open sockets in that mode
    rooms                    set    every room with sockets
    gw:{gw}:conns            set    "{wsid}|{room}" of a gateway's sockets
    room:{room}:users        zset   wsid -> join order
    user:{wsid}              hash   alias, room
    room:{room}:users_version        the user list's version
    room:{room}:seq          the room's last message number
    room:{room}:messages     zset   JSON row -> its number
    messages:by_id           hash   id -> JSON row; messages:id the last id
    client:{client_id}       the row stored for a client message (a day)
    socket:{wsid}            hash   the registry: gateway, class, state, finished
    gw:{gw}:sockets          set    a gateway's open registered sockets
    registry:gateways        set    gateways with registered sockets
    lease:{gw}               a gateway's lease (expires 0.7 x --node-ttl after a renewal)
    gateways                 set    gateways that had a lease (the bus's targets)
    bus:{gw}                 stream the frames other nodes send that gateway
    errors                   list   JSON; errors:id the last id

Redis is expected to keep its data across a restart (appendonly, or snapshots): a
Redis that lost it restarts every room's numbering, which a page already past those
numbers would wait for.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from store.api import ChatMessage, Joined, Stored, StoreStats, StoreUnavailable, Userlist

__all__ = ["KEY", "RedisStore", "redis_client"]

log = logging.getLogger(__name__)

#: Every key starts with this.
KEY = "wsgate:"
#: How long a client message's id is remembered (its duplicates come within seconds).
CLIENT_ID_TTL_S = 86400
#: How long a finished socket stays in the registry.
FINISHED_TTL_S = 3600
#: Connecting to Redis, and any one command, may take this long before the store
#: counts as unavailable.
CONNECT_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 5.0

T = TypeVar("T")

_ADD_CONNECTION = """
local old_room = redis.call('HGET', KEYS[1], 'room')
local old_mode = redis.call('HGET', KEYS[1], 'mode')
if old_room then
  redis.call('SREM', ARGV[6] .. 'room:' .. old_room .. ':conns:' .. old_mode, ARGV[1])
end
redis.call('HSET', KEYS[1], 'room', ARGV[2], 'mode', ARGV[3], 'gateway', ARGV[4],
           'opened_at', ARGV[5])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[1] .. '|' .. ARGV[2])
return {tonumber(redis.call('GET', KEYS[5]) or '0'), tonumber(redis.call('GET', KEYS[6]) or '0')}
"""

_REMOVE_CONNECTION = """
local room = redis.call('HGET', KEYS[1], 'room')
if not room then return 0 end
local mode = redis.call('HGET', KEYS[1], 'mode')
local gateway = redis.call('HGET', KEYS[1], 'gateway')
redis.call('SREM', ARGV[2] .. 'room:' .. room .. ':conns:' .. mode, ARGV[1])
redis.call('SREM', ARGV[2] .. 'gw:' .. gateway .. ':conns', ARGV[1] .. '|' .. room)
redis.call('DEL', KEYS[1])
return 1
"""

_SET_MODE = """
local room = redis.call('HGET', KEYS[1], 'room')
if not room then return 0 end
local mode = redis.call('HGET', KEYS[1], 'mode')
redis.call('SREM', ARGV[3] .. 'room:' .. room .. ':conns:' .. mode, ARGV[1])
redis.call('SADD', ARGV[3] .. 'room:' .. room .. ':conns:' .. ARGV[2], ARGV[1])
redis.call('HSET', KEYS[1], 'mode', ARGV[2])
return 1
"""

_SET_ALIAS = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then
  redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[3]), ARGV[1])
end
redis.call('HSET', KEYS[2], 'alias', ARGV[2], 'room', ARGV[3])
return redis.call('INCR', KEYS[4])
"""

_REMOVE_USER = """
local alias = redis.call('HGET', KEYS[1], 'alias')
if not alias then return false end
local room = redis.call('HGET', KEYS[1], 'room')
redis.call('ZREM', ARGV[2] .. 'room:' .. room .. ':users', ARGV[1])
redis.call('DEL', KEYS[1])
redis.call('INCR', ARGV[2] .. 'room:' .. room .. ':users_version')
return alias
"""

_USERLIST = """
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local users = {}
for i, wsid in ipairs(ids) do
  users[i] = redis.call('HGET', ARGV[1] .. 'user:' .. wsid, 'alias') or ''
end
return {tonumber(redis.call('GET', KEYS[2]) or '0'), users}
"""

_STORE_MESSAGE = """
if ARGV[6] == '1' then
  local found = redis.call('GET', KEYS[1])
  if found then return {found, 1} end
end
local seq = redis.call('INCR', KEYS[2])
local id = redis.call('INCR', KEYS[4])
local row = cjson.encode({id = id, raw = ARGV[1], room = ARGV[2], sent = ARGV[5],
                          seq = seq, wsid = ARGV[3], author = ARGV[4]})
redis.call('ZADD', KEYS[3], seq, row)
redis.call('HSET', KEYS[5], id, row)
if ARGV[6] == '1' then redis.call('SET', KEYS[1], row, 'EX', ARGV[7]) end
return {row, 0}
"""

_REGISTER_SOCKET = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'gateway', ARGV[2], 'class', ARGV[3], 'state', ARGV[4],
           'finished', '0', 'at', ARGV[5])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
"""

_RENEW = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
redis.call('SADD', KEYS[2], ARGV[2])
return 1
"""

_CLAIM_SOCKET = """
if redis.call('HGET', KEYS[1], 'finished') == '1' then return 0 end
local gateway = redis.call('HGET', KEYS[1], 'gateway')
if gateway then redis.call('SREM', ARGV[2] .. 'gw:' .. gateway .. ':sockets', ARGV[1]) end
redis.call('HSET', KEYS[1], 'finished', '1', 'at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


def _row(raw: str) -> ChatMessage:
    data = json.loads(raw)
    return ChatMessage(int(data["id"]), str(data["raw"]), str(data["room"]),
                       str(data["sent"]), int(data["seq"]))


#: A gateway's bus stream outlives its last reader or writer by this long (both renew it).
BUS_STREAM_TTL_S = 120


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


@asynccontextmanager
async def redis_client(url: str, *, decode: bool = True) -> AsyncIterator[Any]:
    """A connected coredis client for ``url`` (``redis://HOST:PORT/DB``); with
    ``decode`` false, replies stay bytes."""
    import coredis  # here: only a process that uses Redis pays for the import

    timeouts: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S,
                                "stream_timeout": COMMAND_TIMEOUT_S}
    client: Any = (coredis.Redis.from_url(url, decode_responses=True, **timeouts) if decode
                   else coredis.Redis.from_url(url, decode_responses=False, **timeouts))
    async with client:
        yield client


class RedisStore:
    """See the module docstring. Use ``async with RedisStore.connect(url) as store``."""

    def __init__(self, client: Any, url: str) -> None:
        self._client = client
        self.url = url
        self.stats = StoreStats()
        self._scripts = {name: client.register_script(lua) for name, lua in (
            ("add_connection", _ADD_CONNECTION), ("remove_connection", _REMOVE_CONNECTION),
            ("set_mode", _SET_MODE), ("set_alias", _SET_ALIAS),
            ("remove_user", _REMOVE_USER), ("userlist", _USERLIST),
            ("store_message", _STORE_MESSAGE), ("register_socket", _REGISTER_SOCKET),
            ("claim_socket", _CLAIM_SOCKET), ("renew", _RENEW),
        )}

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: str) -> AsyncIterator[RedisStore]:
        """A store on the Redis at ``url``, for the duration of the block."""
        async with redis_client(url) as client:
            yield cls(client, url)

    async def _call(self, request: Awaitable[T], *, write: bool = False) -> T:
        """Await one Redis command; an unreachable Redis becomes StoreUnavailable."""
        import coredis.exceptions

        started = time.perf_counter()
        try:
            result = await request
        except (coredis.exceptions.ConnectionError, coredis.exceptions.BusyLoadingError,
                TimeoutError, OSError) as exc:
            self.stats.up = False
            raise StoreUnavailable(f"Redis at {self.url} is unreachable: {exc}") from None
        self.stats.up = True
        if write:
            self.stats.commits += 1
            self.stats.writes += 1
            self.stats.commit_seconds += time.perf_counter() - started
        return result

    async def _script(self, name: str, keys: list[str], args: list[Any], *,
                      write: bool = True) -> Any:
        return await self._call(self._scripts[name](keys=keys, args=args), write=write)

    def close(self) -> None:
        """Nothing to do: the connections close with the ``connect`` block."""

    # --- connections (^Chat.WebSocketConnections) -----------------------------------

    async def add_connection(self, wsid: str, room: str = "default", mode: str = "shared",
                             gateway: str = "") -> Joined:
        """See :meth:`store.api.Store.add_connection`."""
        last, version = await self._script("add_connection", [
            f"{KEY}conn:{wsid}", f"{KEY}room:{room}:conns:{mode}", f"{KEY}rooms",
            f"{KEY}gw:{gateway}:conns", f"{KEY}room:{room}:seq",
            f"{KEY}room:{room}:users_version",
        ], [wsid, room, mode, gateway, _now(), KEY])
        return Joined(int(last), int(version))

    async def remove_connection(self, wsid: str) -> bool:
        """See :meth:`store.api.Store.remove_connection`."""
        return bool(await self._script("remove_connection", [f"{KEY}conn:{wsid}"],
                                       [wsid, KEY]))

    async def connections(self, room: str | None = None, mode: str | None = None
                          ) -> list[str]:
        """See :meth:`store.api.Store.connections`."""
        client = self._client
        rooms = [room] if room is not None else sorted(
            await self._call(client.smembers(f"{KEY}rooms")))
        modes = [mode] if mode is not None else ["shared", "private"]
        found: set[str] = set()
        for r in rooms:
            for m in modes:
                key = f"{KEY}room:{r}:conns:{m}"
                found |= set(await self._call(client.smembers(key)))
        return sorted(found)

    async def set_connection_mode(self, wsid: str, mode: str) -> None:
        """See :meth:`store.api.Store.set_connection_mode`."""
        await self._script("set_mode", [f"{KEY}conn:{wsid}"], [wsid, mode, KEY])

    async def gateway_connections(self, gateway: str) -> list[tuple[str, str]]:
        """See :meth:`store.api.Store.gateway_connections`."""
        client = self._client
        members = await self._call(client.smembers(f"{KEY}gw:{gateway}:conns"))
        pairs = [tuple(m.split("|", 1)) for m in members]
        return sorted((w, r) for w, r in pairs)

    # --- users (^Chat.Users) ------------------------------------------------------------

    async def set_alias(self, wsid: str, alias: str, room: str = "default") -> None:
        """See :meth:`store.api.Store.set_alias`."""
        await self._script("set_alias", [
            f"{KEY}room:{room}:users", f"{KEY}user:{wsid}", f"{KEY}users:order",
            f"{KEY}room:{room}:users_version",
        ], [wsid, alias, room])

    async def remove_user(self, wsid: str) -> str | None:
        """See :meth:`store.api.Store.remove_user`."""
        alias = await self._script("remove_user", [f"{KEY}user:{wsid}"], [wsid, KEY])
        return None if alias is None else str(alias)

    async def userlist(self, room: str = "default") -> list[str]:
        """See :meth:`store.api.Store.userlist`."""
        return (await self.versioned_userlist(room)).users

    async def versioned_userlist(self, room: str = "default") -> Userlist:
        """See :meth:`store.api.Store.versioned_userlist`."""
        version, users = await self._script("userlist", [
            f"{KEY}room:{room}:users", f"{KEY}room:{room}:users_version",
        ], [KEY], write=False)
        return Userlist(int(version), [str(u) for u in users])

    # --- messages (^Chat.Messages) ------------------------------------------------------

    async def store_message(self, raw: str, *, wsid: str = "", room: str = "default",
                            author: str = "", client_id: str | None = None) -> Stored:
        """See :meth:`store.api.Store.store_message`."""
        row, duplicate = await self._script("store_message", [
            f"{KEY}client:{client_id or ''}", f"{KEY}room:{room}:seq",
            f"{KEY}room:{room}:messages", f"{KEY}messages:id", f"{KEY}messages:by_id",
        ], [raw, room, wsid, author, _now(), "1" if client_id else "0", CLIENT_ID_TTL_S])
        return Stored(_row(row), bool(duplicate))

    async def message(self, mid: int) -> ChatMessage | None:
        """See :meth:`store.api.Store.message`."""
        client = self._client
        raw = await self._call(client.hget(f"{KEY}messages:by_id", str(mid)))
        return None if raw is None else _row(raw)

    async def messages_after(self, room: str, after_seq: int, limit: int = 1000
                             ) -> list[ChatMessage]:
        """See :meth:`store.api.Store.messages_after`."""
        from coredis.tokens import PureToken

        client = self._client
        rows = await self._call(client.zrange(
            f"{KEY}room:{room}:messages", f"({after_seq}", "+inf", sortby=PureToken.BYSCORE,
            offset=0, count=limit))
        return [_row(r) for r in rows]

    async def last_message_id(self, room: str) -> int:
        """See :meth:`store.api.Store.last_message_id`."""
        client = self._client
        value = await self._call(client.get(f"{KEY}room:{room}:seq"))
        return int(value or 0)

    # --- the socket registry and gateway leases ---------------------------------------

    async def register_socket(self, wsid: str, gateway: str, class_name: str,
                              state: str) -> None:
        """See :meth:`store.api.Store.register_socket`."""
        await self._script("register_socket", [
            f"{KEY}socket:{wsid}", f"{KEY}gw:{gateway}:sockets", f"{KEY}registry:gateways",
        ], [wsid, gateway, class_name, state, time.time()])

    async def claim_socket(self, wsid: str) -> bool:
        """See :meth:`store.api.Store.claim_socket`."""
        return bool(await self._script("claim_socket", [f"{KEY}socket:{wsid}"],
                                       [wsid, KEY, time.time(), FINISHED_TTL_S]))

    async def socket_claimed(self, wsid: str) -> bool:
        """See :meth:`store.api.Store.socket_claimed`."""
        client = self._client
        finished = await self._call(client.hget(f"{KEY}socket:{wsid}", "finished"))
        return bool(finished == "1")

    async def renew_gateways(self, gateways: list[str], ttl_s: float) -> None:
        """See :meth:`store.api.Store.renew_gateways`."""
        for gateway in gateways:  # a lease is extended, never shortened
            await self._script("renew", [f"{KEY}lease:{gateway}", f"{KEY}gateways"],
                               [int(ttl_s * 1000), gateway])

    async def lapsed_sockets(self, limit: int = 1000) -> list[tuple[str, str, str, str]]:
        """See :meth:`store.api.Store.lapsed_sockets`."""
        client = self._client
        found: list[tuple[str, str, str, str]] = []
        for gateway in sorted(await self._call(
                client.smembers(f"{KEY}registry:gateways"))):
            if await self._call(client.exists(
                    [f"{KEY}lease:{gateway}"])):
                continue
            wsids = await self._call(client.smembers(
                f"{KEY}gw:{gateway}:sockets"))
            if not wsids:
                await self._call(client.srem(
                    f"{KEY}registry:gateways", [gateway]))
                continue
            for wsid in sorted(wsids):
                entry = await self._call(client.hgetall(
                    f"{KEY}socket:{wsid}"))
                if entry and entry.get("finished") == "0":
                    found.append((wsid, gateway, entry.get("class", ""),
                                  entry.get("state", "")))
                if len(found) >= limit:
                    return found
        return found

    async def forget_finished(self, older_than_s: float) -> int:
        """See :meth:`store.api.Store.forget_finished` (finished sockets expire)."""
        return 0

    # --- errors (^Chat.Errors) -----------------------------------------------------------

    async def log_error(self, kind: str, detail: str = "", wsid: str = "") -> int:
        """See :meth:`store.api.Store.log_error`."""
        client = self._client
        error_id = int(await self._call(client.incr(f"{KEY}errors:id"), write=True))
        entry = json.dumps({"id": error_id, "wsid": wsid, "kind": kind, "detail": detail,
                            "at": _now()})
        await self._call(client.rpush(f"{KEY}errors", [entry]), write=True)
        return error_id

    async def errors(self) -> list[dict[str, object]]:
        """See :meth:`store.api.Store.errors`."""
        client = self._client
        entries = await self._call(client.lrange(f"{KEY}errors", 0, -1))
        return [dict(json.loads(e)) for e in entries]
