"""The chat's store on SQLite, through sqlite-utils: synchronous and trio-free.

One file is shared by every worker process of an app server. WAL lets readers run
beside the one writer, and a busy timeout makes writers queue instead of failing.
``synchronous=NORMAL`` in WAL mode keeps every committed row across a process crash
(a power cut may lose the last commits, never corrupt the file).
"""

from __future__ import annotations

import sqlite3
import sys
import time
import types
from pathlib import Path
from typing import TYPE_CHECKING

from store.api import ChatMessage, Joined, Stored, Userlist
from store.migrations import MIGRATIONS, apply_migrations, schema_version

if TYPE_CHECKING:
    import sqlite_utils

__all__ = ["BUSY_TIMEOUT_MS", "ChatStore", "SchemaError", "open_database"]

BUSY_TIMEOUT_MS = 10_000


_MESSAGE_COLUMNS = "id, raw, room, sent, seq"


class SchemaError(Exception):
    """The database's schema is older or newer than this code's."""


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _import_sqlite_utils() -> types.ModuleType:
    """Import sqlite-utils without letting it import numpy.

    sqlite-utils imports numpy at import time when numpy is installed (the benchmark's
    matplotlib brings it), only to accept numpy values in inserts, which this store
    never makes: that is about 16 MB per worker process. numpy stays importable for
    server classes afterwards.
    """
    if "sqlite_utils" in sys.modules:
        return sys.modules["sqlite_utils"]
    hidden = "numpy" not in sys.modules
    if hidden:
        sys.modules["numpy"] = None  # type: ignore[assignment]  # makes `import numpy` fail
    try:
        import sqlite_utils
    finally:
        if hidden:
            del sys.modules["numpy"]
    return sqlite_utils


def open_database(path: str | Path | None, *, migrate: bool = True) -> sqlite_utils.Database:
    """Open (and by default migrate) the store; ``None`` means an in-memory database.

    The connection may be used from one thread other than its creator's
    (``check_same_thread=False``); :class:`store.aio.AsyncStore` makes sure it is only
    ever used by one thread at a time.
    """
    target = ":memory:" if path is None else str(path)
    conn = sqlite3.connect(target, check_same_thread=False, isolation_level=None,
                           timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if path is not None:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    module = _import_sqlite_utils()  # here: a supervisor imports this module too

    if migrate:
        apply_migrations(conn)
    else:
        version = schema_version(conn)
        latest = MIGRATIONS[-1].version
        if version != latest:
            raise SchemaError(f"the store at {target} has schema {version}, this code "
                              f"needs {latest}: run the app server once to migrate it")
    db: sqlite_utils.Database = module.Database(conn)
    return db


class ChatStore:
    """The tables that replace ``^Chat.*``. Each method is one statement; run alone it
    is its own transaction, and AsyncStore.write groups several into one."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    @classmethod
    def open(cls, path: str | Path | None, *, migrate: bool = True) -> ChatStore:
        """Open the store at ``path`` (None: in memory)."""
        return cls(open_database(path, migrate=migrate))

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def _write(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, params)

    # ^Chat.WebSocketConnections
    def add_connection(self, wsid: str, room: str = "default", mode: str = "shared",
                       gateway: str = "") -> Joined:
        """``set ^Chat.WebSocketConnections(wsid)=""``; return what the socket has
        "seen" of the room (read in the same transaction)."""
        self._write(
            "INSERT OR REPLACE INTO connections (wsid, room, mode, gateway, opened_at) "
            "VALUES (?, ?, ?, ?, ?)", (wsid, room, mode, gateway, _now()),
        )
        return Joined(self.last_message_id(room), self._users_version(room))

    def remove_connection(self, wsid: str) -> bool:
        """``kill ^Chat.WebSocketConnections(wsid)``; True if it was there."""
        return self._write("DELETE FROM connections WHERE wsid = ?", (wsid,)).rowcount > 0

    def connections(self, room: str | None = None, mode: str | None = None) -> list[str]:
        """Connection ids in ``$ORDER`` (string) order: all, or of a room and/or a mode."""
        where, params = [], []
        for column, value in (("room", room), ("mode", mode)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self.db.execute(f"SELECT wsid FROM connections{clause} ORDER BY wsid", params)
        return [row[0] for row in rows.fetchall()]

    def set_connection_mode(self, wsid: str, mode: str) -> None:
        """Record the mode a connection finally runs in."""
        self._write("UPDATE connections SET mode = ? WHERE wsid = ?", (mode, wsid))

    def gateway_connections(self, gateway: str) -> list[tuple[str, str]]:
        """The (wsid, room) of every connection held by ``gateway``."""
        rows = self.db.execute("SELECT wsid, room FROM connections WHERE gateway = ? "
                               "ORDER BY wsid", (gateway,))
        return [(str(w), str(r)) for w, r in rows.fetchall()]

    # ^Chat.Users
    def set_alias(self, wsid: str, alias: str, room: str = "default") -> None:
        """Name a socket's user. A rename replaces the name and keeps the join position."""
        self._write(
            "INSERT INTO users (wsid, alias, room) VALUES (?, ?, ?) "
            "ON CONFLICT (wsid) DO UPDATE SET alias = excluded.alias",
            (wsid, alias, room),
        )
        self._bump_users_version(room)

    def remove_user(self, wsid: str) -> str | None:
        """Remove a socket's user; return the alias it had, or None."""
        row = self.db.execute("DELETE FROM users WHERE wsid = ? RETURNING alias, room",
                              (wsid,)).fetchone()
        if row is None:
            return None
        self._bump_users_version(str(row[1]))
        return str(row[0])

    def _bump_users_version(self, room: str) -> None:
        self._write("INSERT INTO rooms (room, users_version) VALUES (?, 1) ON CONFLICT (room) "
                    "DO UPDATE SET users_version = users_version + 1", (room,))

    def _users_version(self, room: str) -> int:
        row = self.db.execute("SELECT users_version FROM rooms WHERE room = ?",
                              (room,)).fetchone()
        return 0 if row is None else int(row[0])

    def userlist(self, room: str = "default") -> list[str]:
        """Aliases of a room's users, in join order."""
        rows = self.db.execute("SELECT alias FROM users WHERE room = ? ORDER BY id", (room,))
        return [row[0] for row in rows.fetchall()]

    def versioned_userlist(self, room: str = "default") -> Userlist:
        """The room's user list with its version, read in one transaction."""
        conn = self.db.conn
        own = not conn.in_transaction
        if own:
            conn.execute("BEGIN")
        try:
            return Userlist(self._users_version(room), self.userlist(room))
        finally:
            if own:
                conn.execute("COMMIT")

    # ^Chat.Messages
    def add_message(self, raw: str, *, wsid: str = "", room: str = "default",
                    author: str = "", client_id: str | None = None) -> int:
        """``set mid=$INCREMENT(^Chat.Messages), ^Chat.Messages(mid)=raw``; return mid.

        The message gets the room's next number (``seq``); a ``client_id`` stored
        already raises ``sqlite3.IntegrityError``.
        """
        cursor = self._write(
            "INSERT INTO messages (raw, room, wsid, author, sent, seq, client_id) "
            "VALUES (?, ?, ?, ?, ?, "
            "(SELECT coalesce(max(seq), 0) + 1 FROM messages WHERE room = ?), ?)",
            (raw, room, wsid, author, _now(), room, client_id),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def store_message(self, raw: str, *, wsid: str = "", room: str = "default",
                      author: str = "", client_id: str | None = None) -> Stored:
        """Store a client message once: a ``client_id`` stored already gives back the
        row stored then (``duplicate``), and stores nothing."""
        if client_id is not None:
            row = self.db.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages "
                                  "WHERE client_id = ?", (client_id,)).fetchone()
            if row is not None:
                return Stored(ChatMessage(*row), duplicate=True)
        mid = self.add_message(raw, wsid=wsid, room=room, author=author, client_id=client_id)
        stored = self.message(mid)
        assert stored is not None
        return Stored(stored, duplicate=False)

    def message(self, mid: int) -> ChatMessage | None:
        """``$GET(^Chat.Messages(mid))``, with its room and the time it was stored."""
        row = self.db.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?",
                              (mid,)).fetchone()
        return None if row is None else ChatMessage(*row)

    def messages_after(self, room: str, after_seq: int, limit: int = 1000
                       ) -> list[ChatMessage]:
        """A room's messages numbered above ``after_seq``, in order."""
        rows = self.db.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE room = ? AND seq > ? "
            "ORDER BY seq LIMIT ?", (room, after_seq, limit),
        )
        return [ChatMessage(*row) for row in rows.fetchall()]

    def last_message_id(self, room: str | None = None) -> int:
        """The number of a room's last message (0 when there is none); without a room,
        the highest message id overall."""
        if room is None:
            row = self.db.execute("SELECT max(id) FROM messages").fetchone()
        else:
            row = self.db.execute("SELECT max(seq) FROM messages WHERE room = ?",
                                  (room,)).fetchone()
        return int(row[0] or 0)

    # The socket registry (the framework's; IRIS: ^CacheTemp.cspWebSockets("SERVER"))
    def register_socket(self, wsid: str, gateway: str, class_name: str, state: str) -> None:
        """Record an open socket (a socket claimed already stays finished)."""
        self._write("INSERT OR IGNORE INTO sockets (wsid, gateway, class_name, state, at) "
                    "VALUES (?, ?, ?, ?, ?)", (wsid, gateway, class_name, state, time.time()))

    def claim_socket(self, wsid: str) -> bool:
        """Claim a socket's OnPostServer: True exactly once per socket (registered or
        not), False ever after."""
        cursor = self._write(
            "INSERT INTO sockets (wsid, finished, at) VALUES (?, 1, ?) ON CONFLICT (wsid) "
            "DO UPDATE SET finished = 1, at = excluded.at WHERE finished = 0",
            (wsid, time.time()))
        return cursor.rowcount == 1

    def socket_claimed(self, wsid: str) -> bool:
        """Whether a socket's OnPostServer was claimed (it ended, or was swept)."""
        row = self.db.execute("SELECT finished FROM sockets WHERE wsid = ?",
                              (wsid,)).fetchone()
        return bool(row and row[0])

    def renew_gateways(self, gateways: list[str], ttl_s: float) -> None:
        """The gateways are alive (a worker is linked to each): extend their leases."""
        expires = time.time() + ttl_s
        for gateway in gateways:
            self._write("INSERT INTO gateways (id, expires_at) VALUES (?, ?) ON CONFLICT (id) "
                        "DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)",
                        (gateway, expires))

    def lapsed_sockets(self, limit: int = 1000) -> list[tuple[str, str, str, str]]:
        """Open sockets whose gateway's lease lapsed, or that never had one (as in
        Redis: a missing lease is a lapsed one): (wsid, gateway, class, state)."""
        rows = self.db.execute(
            "SELECT s.wsid, s.gateway, s.class_name, s.state FROM sockets AS s "
            "LEFT JOIN gateways AS g ON g.id = s.gateway "
            "WHERE s.finished = 0 AND (g.expires_at IS NULL OR g.expires_at < ?) LIMIT ?",
            (time.time(), limit))
        return [(str(w), str(g), str(c), str(st)) for w, g, c, st in rows.fetchall()]

    def forget_finished(self, older_than_s: float) -> int:
        """Delete the registry's finished sockets older than ``older_than_s``."""
        return self._write("DELETE FROM sockets WHERE finished = 1 AND at < ?",
                           (time.time() - older_than_s,)).rowcount

    # ^Chat.Errors
    def log_error(self, kind: str, detail: str = "", wsid: str = "") -> int:
        """``set ^Chat.Errors($INCREMENT(^Chat.Errors), ...)``; return the error's id."""
        cursor = self._write(
            "INSERT INTO errors (wsid, kind, detail, at) VALUES (?, ?, ?, ?)",
            (wsid, kind, detail, _now()),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def errors(self) -> list[dict[str, object]]:
        """Every recorded error, oldest first."""
        return list(self.db["errors"].rows_where(order_by="id"))
