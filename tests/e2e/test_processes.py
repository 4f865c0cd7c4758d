"""Process life: wsgate run stops everything it started; a dead worker is replaced."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import trio

from tests.conftest import StartRun
from tests.support import WSGATE, ChatClient, Process, b64, children_of, pids_alive


def all_descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = children_of(todo.pop())
        found += kids
        todo += kids
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_stops_every_process_and_exits_0(tmp_path: Path, sig: int) -> None:
    """Ctrl-C (SIGINT) or SIGTERM to wsgate run stops the gateway, the app server and
    every worker, and exits 0."""
    process = Process([WSGATE, "run", "--port", "0", "--workers", "2", "--db",
                       str(tmp_path / "r.db")], log_path=tmp_path / "run.log")
    process.wait_for_line("chat ready at")
    descendants = all_descendants(process.pid)
    assert len(descendants) >= 4  # app server, gateway, two workers
    assert process.stop(sig) == 0
    deadline = time.monotonic() + 10
    while pids_alive(descendants) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pids_alive(descendants) == []


def test_children_exit_when_run_is_killed(tmp_path: Path) -> None:
    """Even SIGKILL to wsgate run leaves nothing behind: the children notice and exit."""
    process = Process([WSGATE, "run", "--port", "0", "--workers", "1", "--db",
                       str(tmp_path / "k.db")], log_path=tmp_path / "run.log")
    process.wait_for_line("chat ready at")
    descendants = all_descendants(process.pid)
    process.stop(signal.SIGKILL)
    deadline = time.monotonic() + 15
    while pids_alive(descendants) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pids_alive(descendants) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["gateway", "--appserver", "127.0.0.1:1"], "no link secret"),
        (["gateway", "--appserver", "nonsense"], "expected HOST:PORT"),
        (["gateway", "--appserver", "127.0.0.1:1", "--max-message-bytes", "99999999"],
         "what one link frame carries"),
        (["appserver", "--workers", "0"], "--workers must be at least 1"),
        (["appserver", "--app", "no_such_module:X"], "cannot import no_such_module"),
        (["appserver", "--app", "json:dumps"], "not a subclass of appserver.WebSocket"),
        (["appserver", "--set", "novalue"], "expected NAME=VALUE"),
    ],
)
def test_bad_arguments_are_explained(tmp_path: Path, args: list[str], message: str) -> None:
    """Bad flags exit 2 with a sentence saying what is wrong."""
    env = {k: v for k, v in os.environ.items() if k != "WSGATE_SECRET"}
    if args[0] == "appserver":
        env["WSGATE_SECRET"] = "x" * 32
        args = [*args, "--db", str(tmp_path / "x.db")]
    result = subprocess.run([WSGATE, *args], capture_output=True, text=True, env=env,
                            timeout=60, check=False)
    assert result.returncode == 2
    assert message in result.stdout


async def test_a_dead_worker_is_replaced(start_run: StartRun) -> None:
    """SIGKILL a worker: the supervisor starts another, the gateway links to it, and
    new sockets chat again."""
    system = start_run(workers=2)
    before = {link["worker_pid"] for link in system.status()["links"]}
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    with trio.fail_after(30):
        while True:
            pids = {link["worker_pid"] for link in system.status()["links"]}
            if len(pids) == 2 and victim not in pids:
                break
            await trio.sleep(0.1)
        async with ChatClient.connect(system.ws_url()) as a, \
                ChatClient.connect(system.ws_url()) as b:
            await a.expect("Status")
            await b.expect("Status")
            await a.say("after the crash", author="a")
            for client in (a, b):
                await client.expect("Chat", Message=b64("after the crash"))
    assert "exited with code -9" in system.logs()
