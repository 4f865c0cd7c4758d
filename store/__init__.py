"""The store that replaces the tutorial's ``^Chat.*`` globals: SQLite by default."""

from store.aio import AsyncStore
from store.migrations import MIGRATIONS, apply_migrations
from store.sqlite import ChatStore, SchemaError, open_database

__all__ = [
    "MIGRATIONS",
    "AsyncStore",
    "ChatStore",
    "SchemaError",
    "apply_migrations",
    "open_database",
]
