"""The store's schema, as numbered migrations applied once each, in a transaction each.

The tables replace the tutorial's globals:

================================  ==============================================
``^Chat.WebSocketConnections``    ``connections``: one row per open chat socket
``^Chat.Users``                   ``users``: a socket's alias; ``id`` is join order
``^Chat.Messages`` (+ counter)    ``messages``: the raw inbound text; ``id`` 1, 2, ...
``^Chat.Errors``                  ``errors``: what HandleError and bad input record
================================  ==============================================

``AUTOINCREMENT`` makes message ids behave as ``$INCREMENT`` does: never reused, even
after deletes. Migration 2 numbers each room's messages (``seq`` 1, 2, ... per room: the
``Id`` a chat message carries, and what ``?since=`` counts) and gives every message
the id of the client message it came from (``client_id``, unique: the same message
delivered twice after a crash is stored once). Migration 3 versions each room's user
list (``rooms.users_version``), so that a socket never shows an older list after a newer
one, whichever worker sent which. Migration 4 is the framework's own registry: every
open socket with its gateway, class and state (``sockets``), whose OnPostServer is
*claimed* exactly once (``finished``), and the gateways' leases (``gateways``), which
the workers linked to a gateway renew: the sockets of a gateway whose lease lapsed
get their OnPostServer run by whichever worker sweeps first.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

__all__ = ["MIGRATIONS", "Migration", "apply_migrations", "migrate_file", "schema_version"]


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema."""

    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "chat tables", (
        """CREATE TABLE connections (
            wsid TEXT PRIMARY KEY,
            room TEXT NOT NULL DEFAULT 'default',
            mode TEXT NOT NULL DEFAULT 'shared',
            gateway TEXT NOT NULL DEFAULT '',
            opened_at TEXT NOT NULL
        )""",
        "CREATE INDEX connections_room ON connections (room)",
        """CREATE TABLE users (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            wsid TEXT NOT NULL UNIQUE,
            alias TEXT NOT NULL,
            room TEXT NOT NULL DEFAULT 'default'
        )""",
        "CREATE INDEX users_room ON users (room, id)",
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            raw TEXT NOT NULL,
            room TEXT NOT NULL DEFAULT 'default',
            wsid TEXT NOT NULL DEFAULT '',
            author TEXT NOT NULL DEFAULT '',
            sent TEXT NOT NULL
        )""",
        "CREATE INDEX messages_room ON messages (room, id)",
        """CREATE TABLE errors (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            wsid TEXT NOT NULL DEFAULT '',
            kind TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            at TEXT NOT NULL
        )""",
    )),
    Migration(2, "message numbers per room; client message ids", (
        "ALTER TABLE messages ADD COLUMN seq INTEGER",
        "ALTER TABLE messages ADD COLUMN client_id TEXT",
        """UPDATE messages SET seq = (
            SELECT count(*) FROM messages AS earlier
            WHERE earlier.room = messages.room AND earlier.id <= messages.id)""",
        "CREATE UNIQUE INDEX messages_room_seq ON messages (room, seq)",
        "CREATE UNIQUE INDEX messages_client_id ON messages (client_id)",
    )),
    Migration(3, "a version of each room's user list", (
        """CREATE TABLE rooms (
            room TEXT PRIMARY KEY,
            users_version INTEGER NOT NULL DEFAULT 0
        )""",
    )),
    Migration(4, "the socket registry, and gateway leases", (
        """CREATE TABLE sockets (
            wsid TEXT PRIMARY KEY,
            gateway TEXT NOT NULL DEFAULT '',
            class_name TEXT NOT NULL DEFAULT '',
            state TEXT NOT NULL DEFAULT '',
            finished INTEGER NOT NULL DEFAULT 0,
            at REAL NOT NULL
        )""",
        "CREATE INDEX sockets_open ON sockets (finished, gateway)",
        """CREATE TABLE gateways (
            id TEXT PRIMARY KEY,
            expires_at REAL NOT NULL
        )""",
    )),
)


def schema_version(conn: sqlite3.Connection) -> int:
    """The highest migration applied to this database (0 for a new one)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "applied_at TEXT NOT NULL DEFAULT (datetime('now')))"
    )
    row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def apply_migrations(conn: sqlite3.Connection) -> list[int]:
    """Apply every pending migration, each in its own immediate transaction.

    ``BEGIN IMMEDIATE`` takes the write lock before reading the version, so two
    processes migrating the same file at once apply each step exactly once.
    Returns the versions applied now.
    """
    applied: list[int] = []
    for migration in MIGRATIONS:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(conn) >= migration.version:
                conn.execute("COMMIT")
                continue
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                (migration.version, migration.name),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(migration.version)
    return applied


def migrate_file(path: str) -> list[int]:
    """Open the store's file with plain sqlite3 (no sqlite-utils needed), switch it to
    WAL, and apply the pending migrations."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        return apply_migrations(conn)
    finally:
        conn.close()
