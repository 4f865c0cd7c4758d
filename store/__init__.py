"""The store that replaces the tutorial's ``^Chat.*`` globals: SQLite by default, Redis
for many nodes (see :mod:`store.api`)."""

from store.aio import AsyncStore
from store.api import (
    ChatMessage,
    Joined,
    Store,
    Stored,
    StoreStats,
    StoreUnavailable,
    Userlist,
)
from store.migrations import MIGRATIONS, apply_migrations
from store.sqlite import ChatStore, SchemaError, open_database

__all__ = [
    "MIGRATIONS",
    "AsyncStore",
    "ChatMessage",
    "ChatStore",
    "Joined",
    "SchemaError",
    "Store",
    "StoreStats",
    "StoreUnavailable",
    "Stored",
    "Userlist",
    "apply_migrations",
    "open_database",
]
