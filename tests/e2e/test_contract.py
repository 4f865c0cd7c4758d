"""The faithfulness checks whose point is separate OS processes, against ``wsgate run``.

Every check of ``iris-websockets.md`` ("Faithfulness checks") is proved in one process
in tests/appserver/test_contract.py. The ones here are those where the worker being a
process of its own is the point: a private socket's Server() and OnPostServer run in
its handshake worker's real process, which serves nothing else and is then given back;
OpenServer + Write and EndServer reach a socket from another worker process; each
private socket has a process of its own. The server class is ``tests/apps/probe.py``,
which records its lifecycle events with the PID that ran them in ``events.log``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.apps.probe import ProbeClient, events, probe
from tests.conftest import StartRun
from tests.support import System, children_of

StartProbe = Callable[..., System]


@pytest.fixture
def start_probe(start_run: StartRun, tmp_path: Path) -> StartProbe:
    """``wsgate run`` serving the probes (extra flags and ``workers`` passed on)."""

    def start(*extra: str, workers: int = 2) -> System:
        return start_run("--app", "tests.apps.probe:Probe",
                         "--app", "tests.apps.probe:ProbeOCM",
                         "--set", f"probe-dir={tmp_path}", *extra, workers=workers)

    return start


async def wait_events(directory: Path, event: str, wsid: str, count: int = 1
                      ) -> list[list[str]]:
    """Poll events.log until ``event`` for ``wsid`` is there ``count`` times."""
    while len(found := events(directory, event, wsid)) < count:  # noqa: ASYNC110
        await trio.sleep(0.05)  # another process appends to the file
    return found


async def wait_status(system: System, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll /status until ``ok`` holds; return that status."""
    while not ok(status := system.status()):  # noqa: ASYNC110
        await trio.sleep(0.05)  # polling another process's HTTP endpoint
    return status


def link_of(status: dict[str, Any], wsid: str) -> dict[str, Any]:
    """The /status link that holds ``wsid``."""
    holding = [link for link in status["links"] if wsid in link["sockets"]]
    assert len(holding) == 1, status
    return holding[0]


def worker_processes(system: System) -> set[int]:
    """The PIDs of the system's worker processes: the children of its app server, a
    child of ``wsgate run`` (the gateway, its other child, has none)."""
    return {worker for child in children_of(system.processes[0].pid)
            for worker in children_of(child)}


def assert_own_processes(system: System, *clients: ProbeClient) -> None:
    """Each client's Server() ran in a live worker process of ``system``, not here."""
    workers = worker_processes(system)
    for client in clients:
        assert client.pid in workers, (client.pid, workers)
        assert client.pid != os.getpid()


# --- Check 2: private sockets run on the handshake worker, and free it -----------------

async def test_check2_private_runs_on_the_handshake_worker_until_server_returns(
    start_probe: StartProbe, tmp_path: Path
) -> None:
    """Check 2: private Server() and OnPostServer run in the handshake worker's
    process, which serves only that socket; Server()'s return closes the socket (1000)
    and gives the process back."""
    system = start_probe("--max-workers", "2", workers=1)
    with trio.fail_after(60):
        async with probe(system, "private") as first:
            assert first.hello["pre_pid"] == first.pid
            assert_own_processes(system, first)
            link = link_of(system.status(), first.wsid)
            assert link["mode"] == "private"
            assert link["sockets"] == [first.wsid]
            assert link["worker_pid"] == first.pid
            await first.cmd("return")
            assert await first.close_code() == 1000
        posts = await wait_events(tmp_path, "post", first.wsid)
        assert posts[0][2] == str(first.pid)
        # The private link goes; the pool link that replaced it is up.
        await wait_status(system, lambda s: [x["mode"] for x in s["links"]] == ["shared"])
        # --max-workers 2: two more private sockets at once fit only if the first
        # socket's process was given back.
        async with probe(system, "private") as second, probe(system, "private") as third:
            assert second.pid != third.pid
            assert first.pid in {second.pid, third.pid}
            assert_own_processes(system, second, third)
            for client in (second, third):
                assert client.hello["pre_pid"] == client.pid
                assert link_of(system.status(), client.wsid)["mode"] == "private"
    assert len(events(tmp_path, "post", first.wsid)) == 1


# --- Check 3: OpenServer + Write from another worker process ---------------------------

async def test_check3_socket_stays_open_after_server_returns(
    start_probe: StartProbe, tmp_path: Path
) -> None:
    """Check 3: a shared Server() that returns without EndServer leaves the socket
    open, and OpenServer + Write from another worker process reaches the browser."""
    system = start_probe(workers=2)
    with trio.fail_after(30):
        async with probe(system, "shared") as a, probe(system, "shared") as b:
            assert a.pid != b.pid
            assert_own_processes(system, a, b)
            await a.cmd("return")
            await wait_events(tmp_path, "return", a.wsid)
            assert system.status()["socket_modes"][a.wsid] == "shared"
            answer = await b.ask("write_to", id=a.wsid, text="from the other worker")
            assert answer["ok"] is True
            assert answer["pid"] == b.pid
            assert await a.ws.get_message() == "from the other worker"
            assert events(tmp_path, "post", a.wsid) == []
            await a.ws.aclose()
        # No OnClientMessage: the client's close still ends the socket, with one post.
        posts = await wait_events(tmp_path, "post", a.wsid)
        assert posts[0][2] == str(a.pid)
        await wait_status(system, lambda s: a.wsid not in s["socket_modes"])
    assert len(events(tmp_path, "post", a.wsid)) == 1


# --- Check 5: EndServer from another worker process -------------------------------------

async def test_check5_end_server_from_another_worker_process(
    start_probe: StartProbe, tmp_path: Path
) -> None:
    """Check 5: EndServer on an OpenServer instance in another worker process closes
    the target and runs its OnPostServer once, in the caller's process (IRIS:
    EndServer calls OnPostServer)."""
    system = start_probe(workers=2)
    with trio.fail_after(30):
        async with probe(system, "shared") as target, probe(system, "shared") as caller:
            assert target.pid != caller.pid
            assert_own_processes(system, target, caller)
            answer = await caller.ask("end_other", id=target.wsid)
            assert answer["ok"] is True
            assert answer["pid"] == caller.pid
            assert await target.close_code() == 1000
            posts = await wait_events(tmp_path, "post", target.wsid)
            assert posts[0][2] == str(caller.pid)
            # The target's own Server() sees the close; it must not run OnPostServer too.
            await wait_events(tmp_path, "closed", target.wsid)
            await wait_status(system, lambda s: target.wsid not in s["socket_modes"])
            answer = await caller.ask("end_other", id=target.wsid)
            assert answer["type"] in ("OpenServerError", "SocketGone"), answer
        await wait_events(tmp_path, "post", caller.wsid)
    assert len(events(tmp_path, "post", target.wsid)) == 1
    assert len(events(tmp_path, "post", caller.wsid)) == 1


# --- Check 17: one worker process per private socket ------------------------------------


async def test_check17_one_worker_process_per_private_socket(start_probe: StartProbe) -> None:
    """Check 17: three private sockets run in three distinct worker processes, each on
    a private link holding that socket only."""
    system = start_probe(workers=1)
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(probe(system, "private"))
                       for _ in range(3)]
            assert_own_processes(system, *clients)
            status = system.status()
            for client in clients:
                link = link_of(status, client.wsid)
                assert link["mode"] == "private"
                assert link["sockets"] == [client.wsid]
                assert link["worker_pid"] == client.pid
            assert len({c.pid for c in clients}) == 3
