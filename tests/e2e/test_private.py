"""Private mode's worker pool with real worker processes: none leaks, none is a zombie.

IRIS ties a private (SharedConnection = 0) socket to one server process for its whole
life, and idle processes above the minimum exit after the No Activity Timeout. The pool's
behaviour (the queue, the 503, max_workers, the idle timeout) is proved in one process in
``tests/appserver/test_pool.py``; what needs real processes is here: that the ones that
exit are reaped. These tests drive the chat (``wsgate run --mode private``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

from tests.conftest import StartRun
from tests.support import ChatClient, System, children_of


async def wait_status(system: System, ok: Callable[[dict[str, Any]], bool]
                      ) -> dict[str, Any]:
    """Poll /status until ``ok(status)`` holds."""
    while not ok(status := system.status()):  # noqa: ASYNC110
        await trio.sleep(0.05)  # polling another process's HTTP endpoint
    return status


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def process_state(pid: int) -> str:
    """The one-letter state of a process ("Z" for a zombie), or "" if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def supervisor_of(system: System) -> int:
    """The app server (supervisor) process started by ``wsgate run``."""
    found = [pid for pid in children_of(system.processes[0].pid)
             if "appserver" in cmdline(pid)]
    assert len(found) == 1, found
    return found[0]


async def test_no_worker_process_leaks_after_50_private_sockets(start_run: StartRun) -> None:
    """50 private sockets open and close, up to four at a time: afterwards the idle
    workers above --workers have exited, none is a zombie, and no private link is left."""
    system = start_run("--mode", "private", "--max-workers", "4", "--idle-timeout", "1",
                       workers=1)
    supervisor = supervisor_of(system)
    opened = 0
    with trio.fail_after(120):
        while opened < 50:
            batch = min(4, 50 - opened)
            async with AsyncExitStack() as stack:  # `batch` sockets open at once
                for _ in range(batch):
                    client = await stack.enter_async_context(
                        ChatClient.connect(system.ws_url()))
                    await client.expect("Status")
            opened += batch
        status = await wait_status(system, lambda s: not any(
            link["mode"] == "private" for link in s["links"]))
        assert status["sockets"]["total"] == 0
        while len(children_of(supervisor)) > 1:  # noqa: ASYNC110
            await trio.sleep(0.1)  # idle workers exit after --idle-timeout
    workers = children_of(supervisor)
    assert len(workers) == 1
    assert all(process_state(pid) not in ("Z", "") for pid in workers)
