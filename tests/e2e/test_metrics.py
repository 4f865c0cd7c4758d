"""/metrics on the gateway and the app server, in the Prometheus text format."""

from __future__ import annotations

import re
import urllib.request

import trio

from tests.conftest import StartRun
from tests.support import ChatClient, System


def metric(text: str, name: str) -> float:
    """The value of one sample line (name with its labels) in a Prometheus exposition."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in:\n{text}"
    return float(match[1])


def appserver_metrics(system: System) -> str:
    """Fetch the app server's /metrics, at the URL wsgate run printed."""
    url = next((line.split("metrics at ")[1] for line in system.processes[0].lines
                if "metrics at " in line), "")
    assert url, system.processes[0].lines
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
        return text


async def test_gateway_and_appserver_metrics(start_run: StartRun) -> None:
    """The gateway counts sockets by mode and frames both ways; the app server counts
    busy and idle workers and the store's commits and writes."""
    system = start_run(workers=2)
    with trio.fail_after(60):
        async with ChatClient.connect(system.ws_url()) as a, \
                ChatClient.connect(system.ws_url(query="mode=private")) as b:
            await a.expect("Status")
            await b.expect("Status")
            await a.say("counted", author="a")
            await a.expect("Chat")
            await b.expect("Chat")
            _, headers, body = system.get("/metrics")
            text = body.decode()
            assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert metric(text, 'wsgate_gateway_sockets{mode="shared"}') == 1
            assert metric(text, 'wsgate_gateway_sockets{mode="private"}') == 1
            assert metric(text, "wsgate_gateway_frames_in_total") >= 1
            assert metric(text, "wsgate_gateway_frames_out_total") >= 4
            assert metric(text, "wsgate_gateway_sockets_dropped_total") == 0
            assert "wsgate_gateway_link_queued_bytes{link=" in text
            while True:  # workers report once a second
                app = await trio.to_thread.run_sync(appserver_metrics, system)
                if metric(app, "wsgate_appserver_store_writes_total") >= 3:
                    break
                await trio.sleep(0.2)
            assert metric(app, 'wsgate_appserver_workers{state="busy"}') >= 3
            assert metric(app, "wsgate_appserver_store_commit_seconds_count") >= 1
            # commits that found the write lock free ran on the event loop
            assert metric(app, "wsgate_appserver_store_commits_on_loop_total") >= 1
            assert "wsgate_appserver_store_checkpoint_seconds_count" in app
            assert metric(app, "wsgate_appserver_sockets") == 2
