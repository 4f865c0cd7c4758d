"""The app server stops (SIGTERM or kill -9) and starts again: shared sockets live on."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from tests.conftest import StartRun
from tests.e2e.test_metrics import appserver_metrics, metric
from tests.faults.chatload import room
from tests.faults.test_worker_crash import stored_lines
from tests.support import WSGATE, Process, System, children_of, open_ws, pids_alive

SHARED = 10


def appserver_port(system: System) -> int:
    """The port the app server listens on (from the gateway's /status)."""
    return int(system.status()["appserver"].rsplit(":", 1)[1])


def stop_appserver(system: System, how: int) -> None:
    """SIGTERM the app server (it stops its workers), or SIGKILL it and every worker."""
    appserver = system.processes[0]
    workers = children_of(appserver.pid)
    assert workers, "the app server has no workers"
    if how == signal.SIGKILL:
        for pid in [appserver.pid, *workers]:
            os.kill(pid, signal.SIGKILL)
    assert appserver.stop(how) in (0, -signal.SIGKILL)
    deadline = time.monotonic() + 15
    while pids_alive(workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pids_alive(workers) == []


def restart_appserver(system: System, tmp_path: Path, secret_file: Path, port: int,
                      *extra: str) -> None:
    """Start the app server again on the same port, store and secret."""
    env = {k: v for k, v in os.environ.items() if k != "WSGATE_SECRET"}
    again = Process([WSGATE, "appserver", "--listen", f"127.0.0.1:{port}", "--workers", "2",
                     "--db", str(system.db), "--secret-file", str(secret_file), *extra],
                    log_path=tmp_path / "appserver-again.log", env=env)
    again.wait_for_line(r"listening on ")
    system.processes[0] = again


async def close_code(ws: WebSocketConnection) -> int:
    """Read until the server closes the socket; its close code."""
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed as closed:
        return int(closed.reason.code)


def healthz(system: System) -> tuple[int, dict[str, object]]:
    code, _, body = system.get("/healthz")
    return code, json.loads(body)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "kill-9"])
async def test_appserver_restart_keeps_shared_sockets_and_delivers_what_was_held(
    start_split: StartRun, tmp_path: Path, secret_file: Path, how: int
) -> None:
    """While the app server is down the gateway keeps shared sockets open (/healthz 503)
    and holds what they send; once it is back, the held lines are stored once and reach
    every client once, in order; a private socket is closed with 1012."""
    system = start_split(workers=2)
    port = appserver_port(system)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery, \
                room(system.ws_url(), SHARED, nursery) as r, \
                open_ws(system.ws_url(query="mode=private")) as private:
            for chatter in r.chatters:
                await chatter.say(f"{chatter.name} before")
            await r.all_received()
            await trio.to_thread.run_sync(stop_appserver, system, how)
            code, body = healthz(system)
            assert (code, body["links"]) == (503, 0)
            for chatter in r.chatters:
                await chatter.say(f"{chatter.name} while down")
            assert await close_code(private) == 1012
            await trio.to_thread.run_sync(restart_appserver, system, tmp_path, secret_file,
                                          port)
            await trio.to_thread.run_sync(system.wait_healthy, 2)
            for chatter in r.chatters:
                await chatter.say(f"{chatter.name} after")
            with trio.move_on_after(30):
                await r.all_received()
            assert r.problems() == {}
            assert r.userlist_problems() == {}
            nursery.cancel_scope.cancel()
    assert stored_lines(system) == {line: 1 for c in r.chatters for line in c.sent}
    gateway_log = system.processes[1].log()
    assert "linked again" in gateway_log


async def test_appserver_away_longer_than_node_ttl_keeps_every_session(
    start_split: StartRun, tmp_path: Path, secret_file: Path,
) -> None:
    """kill -9 of the whole app server for longer than --node-ttl (2 s here): nobody
    renewed the gateway's lease meanwhile, yet the gateway was alive all along, so the
    new app server's sweeps (counted in /metrics) end no session: every socket stays
    open, nobody leaves the user list, and the room chats on, once each and in order."""
    ttl = ("--node-ttl", "2")
    system = start_split(workers=2, appserver_extra=ttl)
    port = appserver_port(system)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery, \
                room(system.ws_url(), SHARED, nursery) as r:
            await trio.to_thread.run_sync(stop_appserver, system, signal.SIGKILL)
            await trio.sleep(3.0)  # the fault: an outage longer than the ttl
            await trio.to_thread.run_sync(restart_appserver, system, tmp_path, secret_file,
                                          port, *ttl)
            await trio.to_thread.run_sync(system.wait_healthy, 2)
            # Wait for sweeps that ran after the workers' first ttl: each would have
            # ended the sessions if it took the lapsed lease for a dead gateway.
            sweeps = "wsgate_appserver_lease_sweeps_total"
            while metric(appserver_metrics(system), sweeps) < 4:  # noqa: ASYNC110
                await trio.sleep(0.2)  # another process's counter
            for chatter in r.chatters:
                await chatter.say(f"{chatter.name} after")
            await r.all_received()
            assert r.problems() == {}  # no socket closed, every line once, in order
            assert r.userlist_problems() == {}
            assert all(len(c.userlists[-1]) == SHARED for c in r.chatters)
            nursery.cancel_scope.cancel()
