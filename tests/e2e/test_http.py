"""The gateway's HTTP side as a user runs it: real worker PIDs, the command line's flags.

Everything else about the HTTP side (the page, /healthz, /status, 426, methods, 503
before the app server is up, the status allow list) is proved in one process in
``tests/gateway/test_http.py``. What needs the real processes is here.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import StartRun
from tests.support import children_of


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def _state(pid: int) -> str:
    """The one-letter state of a process ("Z" for a zombie)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_status_names_the_real_worker_processes(start_run: StartRun) -> None:
    """/status gives each link's worker PID: a live ``appserver.worker`` process, a child
    of the app server that ``wsgate run`` started."""
    system = start_run(workers=1)
    code, _, body = system.get("/healthz")
    assert code == 200
    assert json.loads(body)["status"] == "ok"
    (link,) = system.status()["links"]
    pid = link["worker_pid"]
    assert pid > 0
    assert Path(f"/proc/{pid}").exists()
    assert _state(pid) != "Z"
    assert "appserver.worker" in _cmdline(pid)
    (appserver,) = (child for child in children_of(system.processes[0].pid)
                    if "appserver" in _cmdline(child))
    assert pid in children_of(appserver)


def test_status_allow_on_the_command_line(start_split: StartRun) -> None:
    """--status-allow reaches the gateway: /status and /metrics answer 403 to a client
    outside it (here loopback), /healthz still 200."""
    system = start_split("--status-allow", "10.0.0.0/8", workers=1)
    for path in ("/status", "/metrics"):
        code, _, body = system.get(path)
        assert code == 403
        assert b"--status-allow" in body
    assert system.get("/healthz")[0] == 200
