"""Real processes: stopping the gateway is graceful, and workers never see the secret.

Hostile or broken browsers (431, odd cookies, slow readers) are proved in one process in
``tests/gateway/test_limits.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.chatting import read_until_closed
from tests.conftest import StartRun
from tests.support import open_ws


async def test_gateway_sigterm_closes_browsers_with_1001(start_run: StartRun) -> None:
    """Stopping wsgate run sends every browser a 1001 close, not a dropped connection."""
    system = start_run(workers=1)
    with trio.fail_after(30):
        async with open_ws(system.ws_url()) as ws:
            await ws.get_message()
            await trio.to_thread.run_sync(system.stop)
            with pytest.raises(ConnectionClosed) as excinfo:
                await read_until_closed(ws)
            assert excinfo.value.reason is not None
            assert excinfo.value.reason.code == 1001


def test_workers_do_not_hold_the_secret(start_run: StartRun) -> None:
    """The worker processes' environment has no WSGATE_SECRET (the supervisor
    authenticates links; the launcher and app server do hold it)."""
    system = start_run(workers=2)
    pids = [link["worker_pid"] for link in system.status()["links"]]
    assert len(pids) == 2
    for pid in pids:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert not any(entry.startswith(b"WSGATE_SECRET=") for entry in environ)
