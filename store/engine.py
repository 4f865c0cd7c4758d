"""Which engine a store spec names, and opening it: a SQLite path, or a Redis URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from store.aio import AsyncStore
from store.api import Store
from store.sqlite import ChatStore

__all__ = ["is_redis", "open_store"]


def is_redis(spec: str) -> bool:
    """Whether ``spec`` names a Redis store (``redis://HOST:PORT/DB``)."""
    return spec.startswith(("redis://", "rediss://", "unix://"))


@asynccontextmanager
async def open_store(spec: str) -> AsyncIterator[Store]:
    """The store ``spec`` names, open for the duration of the block (a SQLite file
    must have been migrated: the app server does it before its workers start)."""
    if is_redis(spec):
        from store.redis import RedisStore  # only a Redis user imports the client

        async with RedisStore.connect(spec) as redis:
            yield redis
        return
    sqlite = AsyncStore(ChatStore.open(spec, migrate=False),
                        reader=ChatStore.open(spec, migrate=False))
    try:
        yield sqlite
    finally:
        sqlite.close()
