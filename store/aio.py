"""The one door from trio code to the synchronous store: the event loop, or one thread.

Reads of a store on a file go to a second connection, on the event loop itself: in WAL
mode a reader never waits for a writer, the chat's reads are bounded and take
microseconds, and a hop to a thread and back costs far more (about 90 us against 6 us
for the user list); they see every write committed before them.

Writes go through :meth:`AsyncStore.write`, which commits in groups: the writes queued
in one round of the scheduler (and those that arrive while a commit runs) share one
transaction, each in its own savepoint, so one failing write fails alone. A caller
resumes only after the COMMIT that holds its write: "stored" means what it meant.

A commit runs on the event loop too when the database's write lock is free: in WAL
mode with ``synchronous=NORMAL`` it is a few page writes and no fsync, tens of
microseconds, less than the two thread hops it saves (a handshake makes two writes, a
socket's end three). When another process holds the lock, the commit goes to the
store's thread, which waits for it (the busy timeout) while the loop runs on. The
expensive part of WAL, the checkpoint that copies pages back into the database and
syncs it, never runs on the loop either: the writing connection's automatic
checkpoint is off, and every :data:`CHECKPOINT_EVERY` commits a checkpoint runs in the
store's thread. A capacity limiter of one keeps the writing connection in one thread
at a time (sqlite3 connections are not safe to share concurrently).
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import trio

from store.api import ChatMessage, Joined, Stored, StoreStats, Userlist
from store.sqlite import BUSY_TIMEOUT_MS, ChatStore

__all__ = ["CHECKPOINT_EVERY", "AsyncStore", "StoreStats"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: Commits between two WAL checkpoints (each in the store's thread). SQLite's own
#: automatic checkpoint comes after 1,000 WAL pages; a chat commit writes a few.
CHECKPOINT_EVERY = 256


class _Pending:
    __slots__ = ("call", "done", "error", "result")

    def __init__(self, call: Callable[[], Any]) -> None:
        self.call = call
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class _Busy(Exception):
    """Another connection holds the write lock: an inline commit gives way."""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY,
                                                      sqlite3.SQLITE_LOCKED)


class AsyncStore:
    """The SQLite store for async code: :class:`ChatStore` methods, never blocking the
    event loop.

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
        self._since_checkpoint = 0
        self._checkpointed = trio.Event()
        conn = store.db.conn
        # The loop's commits must never wait for the lock; the thread's set the busy
        # timeout back for as long as they run. Checkpoints are ours (see above).
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._wal = conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

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
        try:
            # The other tasks of this round of the scheduler queue theirs: one commit.
            await trio.lowlevel.checkpoint()
        except BaseException:
            if entry in self._queue:  # cancelled before any batch took it
                self._queue.remove(entry)
            raise
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
            if self._limiter.borrowed_tokens == 0 and self._commit_inline(batch):
                continue
            self._committing = True
            try:
                await trio.to_thread.run_sync(self._commit_waiting, batch,
                                              limiter=self._limiter)
                self._committed()
            except BaseException:
                # run_sync can be cancelled only before its thread starts (waiting for
                # the limiter): then nothing was written. This caller's write must not
                # land; the others go back to the queue for the next committer.
                if not entry.done:
                    self._queue[:0] = [e for e in batch if e is not entry]
                raise
            finally:
                self._batch_done_now()
        if entry.error is not None:
            raise entry.error
        result: R = entry.result
        return result

    def _batch_done_now(self) -> None:
        self._committing = False
        done, self._batch_done = self._batch_done, trio.Event()
        done.set()

    def _commit_inline(self, batch: list[_Pending]) -> bool:
        """On the event loop: commit ``batch`` if the write lock is free (True), else
        leave the database and the batch as they were (False)."""
        try:
            self._commit(batch, wait=False)
        except _Busy:
            return False
        self.stats.commits_on_loop += 1
        self._committed()
        return True

    def _commit_waiting(self, batch: list[_Pending]) -> None:
        """In the store's thread: commit ``batch``, waiting for the write lock."""
        conn = self.sync.db.conn
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        try:
            self._commit(batch, wait=True)
        finally:
            conn.execute("PRAGMA busy_timeout = 0")

    def _committed(self) -> None:
        """After a commit, on the loop: start a checkpoint when one is due."""
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY and self._wal:
            self._since_checkpoint = 0
            trio.lowlevel.spawn_system_task(self._checkpoint)

    async def _checkpoint(self) -> None:
        """Copy the WAL back into the database, in the store's thread; writes wait."""
        while self._committing:
            await self._batch_done.wait()
        self._committing = True
        try:
            await trio.to_thread.run_sync(self._checkpoint_now, limiter=self._limiter)
        except Exception as exc:  # a system task must not raise: the next one retries
            log.warning("WAL checkpoint failed: %s", exc)
        finally:
            self._batch_done_now()
            done, self._checkpointed = self._checkpointed, trio.Event()
            done.set()

    async def wait_checkpoint(self) -> None:
        """Wait until the next WAL checkpoint has run (or failed)."""
        await self._checkpointed.wait()

    def _checkpoint_now(self) -> None:
        started = time.perf_counter()
        self.sync.db.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self.stats.checkpoints += 1
        self.stats.checkpoint_seconds += time.perf_counter() - started

    def _commit(self, batch: list[_Pending], *, wait: bool) -> None:
        """One transaction, a savepoint per write. ``wait=False`` (the event loop):
        raise :class:`_Busy`, with nothing written and ``batch`` as it was, when
        another connection holds the write lock."""
        started = time.perf_counter()
        conn = self.sync.db.conn
        committed = False
        busy = False
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not wait and _is_busy(exc):
                    busy = True
                    raise _Busy from exc
                raise
            for entry in batch:
                conn.execute("SAVEPOINT one_write")
                try:
                    entry.result = entry.call()
                except sqlite3.OperationalError as exc:
                    if not wait and _is_busy(exc):
                        busy = True
                        raise _Busy from exc
                    conn.execute("ROLLBACK TO one_write")
                    entry.error = exc
                except Exception as exc:
                    conn.execute("ROLLBACK TO one_write")
                    entry.error = exc
                conn.execute("RELEASE one_write")
            conn.execute("COMMIT")
            committed = True
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if busy:
                for entry in batch:
                    entry.result = entry.error = None
                raise
            for entry in batch:
                entry.error = entry.error or exc
            raise
        finally:
            if not busy:
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
