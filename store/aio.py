"""The one door from trio code to the synchronous store: a worker thread, one at a time.

SQLite calls block, so async code never makes them on the event loop: it hands them to
``trio.to_thread.run_sync``. A capacity limiter of one keeps the single connection in
one thread at a time (sqlite3 connections are not safe to share concurrently).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

import trio

from store.sqlite import ChatStore

__all__ = ["AsyncStore"]

P = ParamSpec("P")
R = TypeVar("R")


class AsyncStore:
    """Runs :class:`ChatStore` methods off the event loop.

    ``await store.run(ChatStore.add_message, raw, room="x")``
    """

    def __init__(self, store: ChatStore) -> None:
        self.sync = store
        self._limiter = trio.CapacityLimiter(1)

    async def run(
        self, method: Callable[Concatenate[ChatStore, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Call ``method(store, *args, **kwargs)`` in the store's thread."""
        call = functools.partial(method, self.sync, *args, **kwargs)
        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    def close(self) -> None:
        """Close the underlying store."""
        self.sync.close()
