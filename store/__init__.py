"""The store that replaces the tutorial's ``^Chat.*`` globals: SQLite by default."""

from store.aio import AsyncStore
from store.migrations import MIGRATIONS, apply_migrations
from store.sqlite import (
    ChatMessage,
    ChatStore,
    Joined,
    SchemaError,
    Stored,
    Userlist,
    open_database,
)

__all__ = [
    "MIGRATIONS",
    "AsyncStore",
    "ChatMessage",
    "ChatStore",
    "Joined",
    "SchemaError",
    "Stored",
    "Userlist",
    "apply_migrations",
    "open_database",
]
