"""The store that replaces the tutorial's ``^Chat.*`` globals: SQLite by default."""

from store.aio import AsyncStore
from store.migrations import MIGRATIONS, apply_migrations
from store.sqlite import ChatMessage, ChatStore, SchemaError, Stored, open_database

__all__ = [
    "MIGRATIONS",
    "AsyncStore",
    "ChatMessage",
    "ChatStore",
    "SchemaError",
    "Stored",
    "apply_migrations",
    "open_database",
]
