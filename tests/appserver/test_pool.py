"""Private mode's worker pool: one worker per socket, a queue when all are taken, no leaks.

IRIS ties a private (SharedConnection = 0) socket to one server process for its whole
life; beyond Maximum Server Connections a new request waits in the gateway's queue for
the Queued Request Timeout, then fails; idle processes above the minimum exit after the
No Activity Timeout. These tests drive the chat in private mode, in one process
(:mod:`tests.harness`); the real processes' side (no zombies) is in
``tests/e2e/test_private.py``.

The timeouts are short real ones, not a mock clock: private chat sockets poll the store
every second, and store calls run in threads, which a mock clock would jump past.
"""

from __future__ import annotations

import json
import logging
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from appserver.supervisor import Supervisor
from gateway.browser import Phase
from gateway.config import GatewayConfig, new_gateway_id
from gateway.gateway import Gateway
from tests.chatting import open_raw
from tests.harness import SECRET, Harness, running
from tests.support import ChatClient, b64

PRIVATE = {"mode": "private"}


def _private_links(h: Harness) -> list[dict[str, object]]:
    return [link for link in h.status()["links"] if link["mode"] == "private"]


def _running_workers(supervisor: Supervisor) -> int:
    return sum(1 for worker in supervisor.workers.values() if worker.alive)


async def _answer_to_upgrade(port: int, answers: list[tuple[int, bytes]]) -> None:
    answers.append(await open_raw(port))


async def test_full_pool_queues_then_refuses_with_503(tmp_path: Path) -> None:
    """With max_workers 3, three private sockets hold the three workers; a fourth
    waits the queue timeout and gets 503 with a readable reason; once one socket closes
    a new one is admitted."""
    with trio.fail_after(30):
        async with running(tmp_path, workers=2, max_workers=3, settings=PRIVATE,
                           queue_timeout_s=1.0) as h, AsyncExitStack() as stack:
            clients = []
            for _ in range(3):
                client = await stack.enter_async_context(ChatClient.connect(h.ws_url()))
                await client.expect("Status")
                clients.append(client)
                # Let the pool settle before the next socket, so that each socket
                # takes its own worker in turn.
                await h.wait_for(lambda: len(h.status()["links"]) == 3)
            status = h.status()
            assert len({link["worker_pid"] for link in status["links"]}) == 3
            assert all(link["mode"] == "private" for link in status["links"])
            assert h.supervisor.worker_count == 3

            answers: list[tuple[int, bytes]] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_answer_to_upgrade, h.port, answers)
                await h.wait_for(lambda: any(  # it waits in the queue, then
                    bs.phase is Phase.QUEUED for bs in h.gateway.table))
            ((code, body),) = answers
            assert code == 503
            assert "busy" in body.decode()
            assert "Try again later" in body.decode()
            assert h.gateway.stats["sockets_refused_busy"] == 1
            assert h.supervisor.worker_count == 3

            first_wsid = clients[0].of_type("Status")[0]["WSID"]
            await clients[0].ws.aclose()
            await h.settled(first_wsid)
            await h.wait_for(lambda: bool(h.gateway.links.pool_links))  # its worker, free
            code, first = await open_raw(h.port)
            assert code == 101, first
            assert json.loads(first)["Type"] == "Status"
            assert h.gateway.stats["sockets_refused_busy"] == 1
            await clients[1].say("still here", author="x")
            for client in clients[1:]:  # the others chat on (private: by polling)
                await client.expect("Chat", Message=b64("still here"))
            assert h.supervisor.worker_count == 3


async def test_no_worker_leaks_after_50_private_sockets(tmp_path: Path) -> None:
    """50 private sockets open and close, up to four at a time: afterwards the idle
    workers above `workers` have exited gracefully, and no socket or private link is
    left anywhere."""
    with trio.fail_after(60):
        async with running(tmp_path, workers=1, max_workers=4, settings=PRIVATE,
                           idle_timeout_s=0.2) as h:
            opened, wsids = 0, []
            most = 0
            while opened < 50:
                batch = min(4, 50 - opened)
                async with AsyncExitStack() as stack:  # `batch` sockets open at once
                    for _ in range(batch):
                        client = await stack.enter_async_context(
                            ChatClient.connect(h.ws_url()))
                        wsids.append((await client.expect("Status"))["WSID"])
                        most = max(most, h.supervisor.worker_count)
                opened += batch
            assert len(set(wsids)) == 50
            await h.wait_for(lambda: all(h.gone(wsid) for wsid in wsids))
            await h.settled(wsids[-1])
            await h.wait_for(lambda: not _private_links(h))
            assert h.status()["sockets"]["total"] == 0
            # Idle workers above `workers` exit after the idle timeout.
            await h.wait_for(lambda: len(h.supervisor.workers) == 1)
            assert h.supervisor.worker_count == 1
            assert _running_workers(h.supervisor) == 1
            (survivor,) = h.supervisor.workers
            ended = [w for pid, w in h.workers.items() if pid != survivor]
            assert ended  # the pool did grow past `workers`, and shrank back
            assert all(w.returncode == 0 for w in ended)  # stopped, not killed
            assert h.workers[survivor].returncode is None
            assert all(not runtime.ports for runtime in h.runtimes)
            assert h.supervisor.restarts == 0
            assert most <= 4


async def test_handshake_while_every_link_is_taken_waits_in_the_queue(
    tmp_path: Path,
) -> None:
    """A handshake that arrives while no pool link is up (the only worker serves a
    private socket) waits in the queue for a link instead of being refused, and is
    admitted once that socket's worker is free."""
    with trio.fail_after(30):
        async with running(tmp_path, workers=1, max_workers=1, settings=PRIVATE) as h:
            for _ in range(3):
                answers: list[tuple[int, bytes]] = []
                # On leaving, the holder closes first: its worker goes back to the pool,
                # and the queued handshake gets it.
                async with trio.open_nursery() as nursery, \
                        ChatClient.connect(h.ws_url()) as holder:
                    await holder.expect("Status")
                    assert not h.gateway.links.pool_links  # the only worker is taken
                    assert [link["mode"] for link in h.status()["links"]] == ["private"]
                    nursery.start_soon(_answer_to_upgrade, h.port, answers)
                    await h.wait_for(lambda: any(
                        bs.phase is Phase.QUEUED for bs in h.gateway.table))
                    assert not answers
                ((code, first),) = answers
                assert code == 101, first
                assert json.loads(first)["Type"] == "Status"
            assert h.gateway.stats["sockets_refused_busy"] == 0
            assert len(h.workers) == 1


async def test_max_workers_holds_when_links_arrive_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """max_workers bounds the workers even when a second gateway asks for six links
    at the same moment: it gets what is left, and the rest are refused as busy."""
    caplog.set_level(logging.INFO, logger="appserver.supervisor")
    with trio.fail_after(30):
        async with running(tmp_path, workers=1, max_workers=3) as h, \
                trio.open_nursery() as nursery:
            greedy = Gateway(GatewayConfig(appserver=h.gateway.config.appserver,
                                           secret=SECRET, port=0, pool=6,
                                           gateway_id=new_gateway_id("greedy")))
            await nursery.start(greedy.serve)
            refusal = f"link from gateway {greedy.id} "

            def greedy_refused() -> bool:
                return any(record.getMessage().startswith(refusal)
                           and "refused: busy: all 3 workers" in record.getMessage()
                           for record in caplog.records)

            await h.wait_for(lambda: len(greedy.links.pool_links) == 2 and greedy_refused())
            # No worker of this run exits (the idle timeout is a minute away), so every
            # worker ever started is still counted: the most there ever were.
            assert len(h.workers) == 3
            assert h.supervisor.worker_count == 3
            assert len(h.gateway.links.pool_links) == 1
            assert h.supervisor.restarts == 0
            nursery.cancel_scope.cancel()
