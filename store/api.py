"""What the chat and the app server keep, whichever engine keeps it: the store's API.

Two engines implement :class:`Store`: SQLite (the default, one file shared by one app
server's workers: :class:`store.aio.AsyncStore` over :class:`store.sqlite.ChatStore`)
and Redis (shared by every node: :class:`store.redis.RedisStore`). One contract test
suite (tests/store/test_contract.py) runs against both. Every method is a coroutine;
writes are committed before they return. An engine that cannot be reached raises
:class:`StoreUnavailable`, which callers turn into a clear error rather than a silent
loss.

The tables (SQLite) or keys (Redis) replace the tutorial's ``^Chat.*`` globals: the
chat's connections with their owning gateway (``^Chat.WebSocketConnections``), users
per room (``^Chat.Users``), messages with increasing ids and one sequence per room
(``^Chat.Messages``), and errors (``^Chat.Errors``). Beside them, the framework's own
socket registry (IRIS: ``^CacheTemp.cspWebSockets("SERVER")``): every open socket with
its gateway, class and state, whose OnPostServer is claimed exactly once, and gateway
leases, so that the sockets of a gateway that vanished get their OnPostServer.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

__all__ = [
    "ChatMessage",
    "Joined",
    "Store",
    "StoreStats",
    "StoreUnavailable",
    "Stored",
    "Userlist",
]


class StoreUnavailable(Exception):
    """The store cannot be reached now (a Redis outage); nothing was written."""


class ChatMessage(NamedTuple):
    """One stored message: the raw inbound text and when it was stored.

    ``id`` counts every message (``$INCREMENT``); ``seq`` counts the room's (1, 2, ...).
    """

    id: int
    raw: str
    room: str
    sent: str
    seq: int


class Joined(NamedTuple):
    """What a socket has seen of its room when it joins: the room's last message and
    the version of its user list."""

    last_message: int
    users_version: int


class Userlist(NamedTuple):
    """A room's user list (aliases in join order) and its version."""

    version: int
    users: list[str]


class Stored(NamedTuple):
    """What :meth:`Store.store_message` did: the row, and whether it was there
    already (the same client message, delivered again after a crash)."""

    row: ChatMessage
    duplicate: bool


class StoreStats:
    """What a store did: commits (those made on the event loop among them), the writes
    they held, and their latency; its WAL checkpoints; and whether its last call reached
    it (``up``: false from a StoreUnavailable to the next success)."""

    __slots__ = ("checkpoint_seconds", "checkpoints", "commit_seconds", "commits",
                 "commits_on_loop", "up", "writes")

    def __init__(self) -> None:
        self.commits = 0
        self.commits_on_loop = 0
        self.writes = 0
        self.commit_seconds = 0.0
        self.checkpoints = 0
        self.checkpoint_seconds = 0.0
        self.up = True


class Store(Protocol):
    """The store's operations (see the module docstring)."""

    @property
    def stats(self) -> StoreStats:
        """Counters for /metrics."""

    async def add_connection(self, wsid: str, room: str = "default", mode: str = "shared",
                             gateway: str = "") -> Joined:
        """Record an open socket of a room, and say what it has seen of the room."""

    async def remove_connection(self, wsid: str) -> bool:
        """Forget a socket; True if it was recorded."""

    async def connections(self, room: str | None = None, mode: str | None = None
                          ) -> list[str]:
        """Open sockets (of a room, of a mode), in id order."""

    async def set_connection_mode(self, wsid: str, mode: str) -> None:
        """Record the mode a socket finally runs in."""

    async def gateway_connections(self, gateway: str) -> list[tuple[str, str]]:
        """The (wsid, room) of every open socket held by ``gateway``."""

    async def set_alias(self, wsid: str, alias: str, room: str = "default") -> None:
        """Name a socket's user; a rename keeps the join position."""

    async def remove_user(self, wsid: str) -> str | None:
        """Take a socket's user off its room's list; its alias, or None."""

    async def userlist(self, room: str = "default") -> list[str]:
        """A room's aliases, in join order."""

    async def versioned_userlist(self, room: str = "default") -> Userlist:
        """A room's aliases with the list's version, read together."""

    async def store_message(self, raw: str, *, wsid: str = "", room: str = "default",
                            author: str = "", client_id: str | None = None) -> Stored:
        """Store a client message once (a ``client_id`` stored already: the row then)."""

    async def message(self, mid: int) -> ChatMessage | None:
        """A message by its id."""

    async def messages_after(self, room: str, after_seq: int, limit: int = 1000
                             ) -> list[ChatMessage]:
        """A room's messages numbered above ``after_seq``, in order."""

    async def last_message_id(self, room: str) -> int:
        """The number of a room's last message (0: none)."""

    async def register_socket(self, wsid: str, gateway: str, class_name: str,
                              state: str) -> None:
        """Record an open socket in the registry, with its class and state (JSON)."""

    async def claim_socket(self, wsid: str) -> bool:
        """Claim a socket's OnPostServer: True exactly once per socket."""

    async def socket_claimed(self, wsid: str) -> bool:
        """Whether a socket's OnPostServer was claimed already."""

    async def renew_gateways(self, gateways: list[str], ttl_s: float) -> None:
        """Extend the leases of gateways a worker is linked to."""

    async def lapsed_sockets(self, limit: int = 1000) -> list[tuple[str, str, str, str]]:
        """Open sockets whose gateway's lease lapsed: (wsid, gateway, class, state)."""

    async def forget_finished(self, older_than_s: float) -> int:
        """Delete finished sockets of the registry older than ``older_than_s``."""

    async def log_error(self, kind: str, detail: str = "", wsid: str = "") -> int:
        """Record an error; its id."""

    async def errors(self) -> list[dict[str, object]]:
        """Every recorded error, oldest first."""

    def close(self) -> None:
        """Release the store's connections."""
