"""The SQLite store that replaces ^Chat.*: schema, ids, users, rooms, concurrency."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from store import AsyncStore, ChatStore, SchemaError
from store.aio import CHECKPOINT_EVERY
from store.migrations import MIGRATIONS, apply_migrations, schema_version


@pytest.fixture
def store() -> ChatStore:
    return ChatStore.open(None)


def test_migrations_apply_once(tmp_path: Path) -> None:
    """A new file gets every migration; opening it again applies none."""
    path = tmp_path / "s.db"
    ChatStore.open(path).close()
    conn = sqlite3.connect(path)
    assert schema_version(conn) == MIGRATIONS[-1].version
    assert apply_migrations(conn) == []
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"connections", "users", "messages", "errors", "schema_migrations"} <= tables
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unmigrated_store_is_refused(tmp_path: Path) -> None:
    """Opening without migrating a file whose schema is behind says what to do."""
    with pytest.raises(SchemaError, match="run the app server once"):
        ChatStore.open(tmp_path / "new.db", migrate=False)


def test_message_ids_count_like_increment(store: ChatStore) -> None:
    """Message ids are 1, 2, 3, ... and are never reused after a delete."""
    ids = [store.add_message(f'{{"Message":"{i}"}}') for i in range(3)]
    assert ids == [1, 2, 3]
    store.db.execute("DELETE FROM messages WHERE id = 3")
    assert store.add_message("x") == 4
    second = store.message(2)
    assert second is not None
    assert second.raw == '{"Message":"1"}'
    assert store.message(3) is None


def test_rename_keeps_join_order_and_removal_is_by_socket(store: ChatStore) -> None:
    """A rename replaces the name in place; removal takes that socket's entry only."""
    store.set_alias("g-1", "ann")
    store.set_alias("g-2", "bob")
    store.set_alias("g-3", "ann")
    store.set_alias("g-1", "anna")
    assert store.userlist() == ["anna", "bob", "ann"]
    assert store.remove_user("g-3") == "ann"
    assert store.userlist() == ["anna", "bob"]
    assert store.remove_user("g-3") is None


def test_rooms_scope_connections_users_and_messages(store: ChatStore) -> None:
    """Each room sees only its own connections, users and messages."""
    store.add_connection("g-1", "red")
    store.add_connection("g-2", "blue")
    store.add_connection("g-10", "red")
    store.set_alias("g-1", "ann", "red")
    store.set_alias("g-2", "bob", "blue")
    store.add_message("r1", room="red")
    store.add_message("b1", room="blue")
    assert store.connections("red") == ["g-1", "g-10"]
    store.set_connection_mode("g-10", "private")
    assert store.connections("red", mode="shared") == ["g-1"]
    assert store.userlist("blue") == ["bob"]
    assert [(m.id, m.raw) for m in store.messages_after("red", 0)] == [(1, "r1")]
    assert store.connections("blue") == ["g-2"]
    assert store.remove_connection("g-2")
    assert not store.remove_connection("g-2")


def _writer(path: str, count: int) -> None:
    s = ChatStore.open(path, migrate=False)
    for i in range(count):
        s.add_message(f"m{i}")
    s.close()


def test_processes_share_one_file_without_losing_writes(tmp_path: Path) -> None:
    """Four processes writing at once: every message stored once, ids dense 1..n."""
    path = tmp_path / "shared.db"
    ChatStore.open(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), 200)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    s = ChatStore.open(path)
    ids = [r[0] for r in s.db.execute("SELECT id FROM messages ORDER BY id")]
    assert ids == list(range(1, 801))


async def test_async_store_runs_off_the_event_loop() -> None:
    """AsyncStore calls run in a worker thread, one at a time, and return results."""
    store = AsyncStore(ChatStore.open(None))
    results: list[int] = []

    async def add(i: int) -> None:
        results.append(await store.run(ChatStore.add_message, f"m{i}", room="r"))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(add, i)
    assert sorted(results) == list(range(1, 21))
    assert len(await store.run(ChatStore.messages_after, "r", 0)) == 20


async def test_group_commit_batches_writes_and_isolates_failures() -> None:
    """Writes arriving during a commit share the next one; a failing write fails alone;
    every caller resumes with its row committed."""
    store = AsyncStore(ChatStore.open(None))
    ids: list[int] = []
    failures: list[Exception] = []

    async def add(i: int) -> None:
        ids.append(await store.write(ChatStore.add_message, f"m{i}", room="r"))

    async def fail() -> None:
        try:
            await store.write(ChatStore.log_error, None)  # type: ignore[arg-type]
        except Exception as exc:
            failures.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(add, i)
                if i == 25:
                    nursery.start_soon(fail)
    assert sorted(ids) == list(range(1, 51))
    assert len(failures) == 1
    assert store.stats.writes == 50  # the failed one is not counted as stored
    assert store.stats.commits < 50  # they were grouped
    rows = await store.run(ChatStore.messages_after, "r", 0)
    assert sorted(r.raw for r in rows) == sorted(f"m{i}" for i in range(50))
    assert await store.run(ChatStore.errors) == []


async def _cancel_a_committer_waiting_for_the_thread() -> None:
    store = AsyncStore(ChatStore.open(None))
    gate = threading.Event()
    done: list[str] = []

    async def write(text: str, scope: trio.CancelScope) -> None:
        with scope:
            await store.write(ChatStore.add_message, text)
            done.append(text)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.run, lambda _store: gate.wait(10))  # holds the thread
            await wait_all_tasks_blocked()
            first = trio.CancelScope()
            nursery.start_soon(write, "first", first)  # commits, waits for the thread
            await wait_all_tasks_blocked()
            scopes = {name: trio.CancelScope() for name in ("a", "b")}
            for name, scope in scopes.items():
                nursery.start_soon(write, name, scope)
            await wait_all_tasks_blocked()
            first.cancel()  # a or b now takes both writes and waits for the thread
            await wait_all_tasks_blocked()
            scopes["a"].cancel()  # perhaps the committer of [a, b]
            await wait_all_tasks_blocked()
            gate.set()
    stored = [m.raw for m in await store.run(ChatStore.messages_after, "default", 0)]
    assert "b" in done
    assert "first" not in stored
    assert stored.count("b") == 1


async def test_a_committer_cancelled_before_its_thread_strands_nothing() -> None:
    """A committing task cancelled while it waits for the store's thread (a read holds
    it) puts the rest of its batch back: the other writers still commit, none hangs."""
    for _ in range(10):  # trio shuffles wake-ups: repeat to meet each interleaving
        await _cancel_a_committer_waiting_for_the_thread()


def _file_store(path: Path) -> AsyncStore:
    ChatStore.open(path).close()  # migrated, as the app server does before its workers
    return AsyncStore(ChatStore.open(path, migrate=False),
                      reader=ChatStore.open(path, migrate=False))


async def test_a_write_commits_on_the_event_loop_when_the_lock_is_free(
        tmp_path: Path) -> None:
    """No other connection holds the write lock: the commit runs in the loop's own
    thread (no hop), and is stored."""
    store = _file_store(tmp_path / "s.db")
    loop_thread = threading.get_ident()

    def add(s: ChatStore) -> int:
        s.add_message("m", room="r")
        return threading.get_ident()

    assert await store.write(add) == loop_thread
    assert store.stats.commits_on_loop == store.stats.commits == 1
    assert [m.raw for m in await store.run(ChatStore.messages_after, "r", 0)] == ["m"]
    store.close()


async def test_a_write_waits_for_another_connections_lock_in_the_thread(
        tmp_path: Path) -> None:
    """Another process's connection holds the write lock: the write waits for it in the
    store's thread, and the event loop runs on meanwhile (reads are answered)."""
    path = tmp_path / "s.db"
    store = _file_store(path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO errors (kind, detail, wsid, at) VALUES ('x', '', '', '')")
    threads: list[int] = []
    events: list[str] = []

    def add(s: ChatStore) -> None:
        s.add_message("waited", room="r")
        threads.append(threading.get_ident())

    async def write() -> None:
        await store.write(add)
        events.append("write committed")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            await wait_all_tasks_blocked()  # the write waits in the thread
            assert await store.run(ChatStore.messages_after, "r", 0) == []
            events.append("read while locked")
            other.execute("COMMIT")
    assert events == ["read while locked", "write committed"]
    assert threads
    assert threads[0] != threading.get_ident()
    assert store.stats.commits == 1
    assert store.stats.commits_on_loop == 0
    assert [m.raw for m in await store.run(ChatStore.messages_after, "r", 0)] == ["waited"]
    other.close()
    store.close()


async def test_checkpoints_copy_the_wal_back_in_the_thread(tmp_path: Path) -> None:
    """The writing connection never checkpoints by itself (that would be on the loop);
    every CHECKPOINT_EVERY commits a checkpoint in the thread copies the WAL into the
    database file, which then holds every row without the WAL."""
    path = tmp_path / "s.db"
    store = _file_store(path)
    assert store.sync.db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    for i in range(CHECKPOINT_EVERY):
        await store.write(ChatStore.add_message, f"m{i}", room="r")
    with trio.fail_after(10):
        while store.stats.checkpoints == 0:
            await store.wait_checkpoint()
    # immutable: the database file alone, as if the WAL were gone
    alone = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    assert alone.execute("SELECT count(*) FROM messages").fetchone()[0] == CHECKPOINT_EVERY
    alone.close()
    store.close()
