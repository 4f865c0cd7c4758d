"""The one door from trio code to the synchronous store: a worker thread, one at a time.

SQLite writes block (a commit, a checkpoint), so async code never makes them on the
event loop: it hands them to ``trio.to_thread.run_sync``. A capacity limiter of one
keeps the writing connection in one thread at a time (sqlite3 connections are not safe
to share concurrently). Reads of a store on a file go to a second connection, on the
event loop itself: in WAL mode a reader never waits for a writer, the chat's reads are
bounded and take microseconds, and a hop to a thread and back costs far more (about
90 us against 6 us for the user list); they see every write committed before them.

Writes go through :meth:`AsyncStore.write`, which commits in groups: the writes that
arrive while a commit is running wait, and the next commit takes them all in one
transaction (each in its own savepoint, so one failing write fails alone). A caller
resumes only after the COMMIT that holds its write: "stored" means what it meant.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import trio

from store.api import ChatMessage, Joined, Stored, StoreStats, Userlist
from store.sqlite import ChatStore

__all__ = ["AsyncStore", "StoreStats"]

P = ParamSpec("P")
R = TypeVar("R")


class _Pending:
    __slots__ = ("call", "done", "error", "result")

    def __init__(self, call: Callable[[], Any]) -> None:
        self.call = call
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class AsyncStore:
    """The SQLite store for async code: :class:`ChatStore` methods off the event loop.

    It implements :class:`store.api.Store`; underneath, ``await store.run(method,
    ...)`` reads and ``await store.write(method, ...)`` writes (group commit).
    """

    def __init__(self, store: ChatStore, reader: ChatStore | None = None) -> None:
        self.sync = store
        #: The reading connection (None: reads go to the store's thread too).
        self.reader = reader
        self.stats = StoreStats()
        self._limiter = trio.CapacityLimiter(1)
        self._queue: list[_Pending] = []
        self._committing = False
        self._batch_done = trio.Event()

    async def run(
        self, method: Callable[Concatenate[ChatStore, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Call ``method(store, *args, **kwargs)``, a read: on the reading connection,
        or in the store's thread when there is none."""
        if self.reader is not None:
            await trio.lowlevel.checkpoint()
            return method(self.reader, *args, **kwargs)
        call = functools.partial(method, self.sync, *args, **kwargs)
        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def write(
        self, method: Callable[Concatenate[ChatStore, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Like :meth:`run`, for a write: committed (with others) before it returns."""
        entry = _Pending(functools.partial(method, self.sync, *args, **kwargs))
        self._queue.append(entry)
        while not entry.done:
            if self._committing:
                try:
                    await self._batch_done.wait()
                except BaseException:
                    # Cancelled before its batch began: the write must not land later.
                    # (Cancelled while its own commit runs, it lands: like any call
                    # that has reached the database.)
                    if entry in self._queue:
                        self._queue.remove(entry)
                    raise
                continue
            # Nobody is committing: this task commits everything queued, its own too.
            batch, self._queue = self._queue, []
            self._committing = True
            try:
                await trio.to_thread.run_sync(self._commit, batch, limiter=self._limiter)
            except BaseException:
                # run_sync can be cancelled only before its thread starts (waiting for
                # the limiter): then nothing was written. This caller's write must not
                # land; the others go back to the queue for the next committer.
                if not entry.done:
                    self._queue[:0] = [e for e in batch if e is not entry]
                raise
            finally:
                self._committing = False
                done, self._batch_done = self._batch_done, trio.Event()
                done.set()
        if entry.error is not None:
            raise entry.error
        result: R = entry.result
        return result

    def _commit(self, batch: list[_Pending]) -> None:
        """In the store's thread: one transaction, a savepoint per write."""
        started = time.perf_counter()
        conn = self.sync.db.conn
        committed = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            for entry in batch:
                conn.execute("SAVEPOINT one_write")
                try:
                    entry.result = entry.call()
                except Exception as exc:
                    conn.execute("ROLLBACK TO one_write")
                    entry.error = exc
                conn.execute("RELEASE one_write")
            conn.execute("COMMIT")
            committed = True
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for entry in batch:
                entry.error = entry.error or exc
            raise
        finally:
            for entry in batch:
                entry.done = True
            if committed:  # the metrics count what is stored
                self.stats.commits += 1
                self.stats.writes += sum(1 for entry in batch if entry.error is None)
            self.stats.commit_seconds += time.perf_counter() - started

    def close(self) -> None:
        """Close the underlying store (and its reading connection)."""
        if self.reader is not None:
            self.reader.close()
        self.sync.close()

    # --- store.api.Store ------------------------------------------------------------------

    async def add_connection(self, wsid: str, room: str = "default", mode: str = "shared",
                             gateway: str = "") -> Joined:
        """See :meth:`store.api.Store.add_connection`."""
        return await self.write(ChatStore.add_connection, wsid, room, mode, gateway)

    async def remove_connection(self, wsid: str) -> bool:
        """See :meth:`store.api.Store.remove_connection`."""
        return await self.write(ChatStore.remove_connection, wsid)

    async def connections(self, room: str | None = None, mode: str | None = None
                          ) -> list[str]:
        """See :meth:`store.api.Store.connections`."""
        return await self.run(ChatStore.connections, room, mode)

    async def set_connection_mode(self, wsid: str, mode: str) -> None:
        """See :meth:`store.api.Store.set_connection_mode`."""
        await self.write(ChatStore.set_connection_mode, wsid, mode)

    async def gateway_connections(self, gateway: str) -> list[tuple[str, str]]:
        """See :meth:`store.api.Store.gateway_connections`."""
        return await self.run(ChatStore.gateway_connections, gateway)

    async def set_alias(self, wsid: str, alias: str, room: str = "default") -> None:
        """See :meth:`store.api.Store.set_alias`."""
        await self.write(ChatStore.set_alias, wsid, alias, room)

    async def remove_user(self, wsid: str) -> str | None:
        """See :meth:`store.api.Store.remove_user`."""
        return await self.write(ChatStore.remove_user, wsid)

    async def userlist(self, room: str = "default") -> list[str]:
        """See :meth:`store.api.Store.userlist`."""
        return await self.run(ChatStore.userlist, room)

    async def versioned_userlist(self, room: str = "default") -> Userlist:
        """See :meth:`store.api.Store.versioned_userlist`."""
        return await self.run(ChatStore.versioned_userlist, room)

    async def store_message(self, raw: str, *, wsid: str = "", room: str = "default",
                            author: str = "", client_id: str | None = None) -> Stored:
        """See :meth:`store.api.Store.store_message`."""
        return await self.write(ChatStore.store_message, raw, wsid=wsid, room=room,
                                author=author, client_id=client_id)

    async def message(self, mid: int) -> ChatMessage | None:
        """See :meth:`store.api.Store.message`."""
        return await self.run(ChatStore.message, mid)

    async def messages_after(self, room: str, after_seq: int, limit: int = 1000
                             ) -> list[ChatMessage]:
        """See :meth:`store.api.Store.messages_after`."""
        return await self.run(ChatStore.messages_after, room, after_seq, limit)

    async def last_message_id(self, room: str) -> int:
        """See :meth:`store.api.Store.last_message_id`."""
        return await self.run(ChatStore.last_message_id, room)

    async def register_socket(self, wsid: str, gateway: str, class_name: str,
                              state: str) -> None:
        """See :meth:`store.api.Store.register_socket`."""
        await self.write(ChatStore.register_socket, wsid, gateway, class_name, state)

    async def claim_socket(self, wsid: str) -> bool:
        """See :meth:`store.api.Store.claim_socket`."""
        return await self.write(ChatStore.claim_socket, wsid)

    async def socket_claimed(self, wsid: str) -> bool:
        """See :meth:`store.api.Store.socket_claimed`."""
        return await self.run(ChatStore.socket_claimed, wsid)

    async def renew_gateways(self, gateways: list[str], ttl_s: float) -> None:
        """See :meth:`store.api.Store.renew_gateways`."""
        await self.write(ChatStore.renew_gateways, gateways, ttl_s)

    async def lapsed_sockets(self, limit: int = 1000) -> list[tuple[str, str, str, str]]:
        """See :meth:`store.api.Store.lapsed_sockets`."""
        return await self.run(ChatStore.lapsed_sockets, limit)

    async def forget_finished(self, older_than_s: float) -> int:
        """See :meth:`store.api.Store.forget_finished`."""
        return await self.write(ChatStore.forget_finished, older_than_s)

    async def log_error(self, kind: str, detail: str = "", wsid: str = "") -> int:
        """See :meth:`store.api.Store.log_error`."""
        return await self.write(ChatStore.log_error, kind, detail, wsid)

    async def errors(self) -> list[dict[str, object]]:
        """See :meth:`store.api.Store.errors`."""
        return await self.run(ChatStore.errors)
