"""Heartbeats find the dead and the hung: a silent browser, a stopped worker, a stopped
gateway; and SIGTERM on the gateway drains its sockets with 1001."""

from __future__ import annotations

import os
import signal
import time
from contextlib import AsyncExitStack

import trio

from tests.conftest import StartRun
from tests.faults.chatload import room
from tests.limits.raw import OP_CLOSE, OP_PING, client_frame, close_payload, upgraded
from tests.support import open_ws

FAST = ("--link-heartbeat", "0.2")
ECHO_PATH = "/csp/user/Echo.Server.cls"


async def test_a_browser_that_never_answers_pings_is_closed_with_1001(
    start_split: StartRun,
) -> None:
    """A silent browser is pinged after --ping-interval and closed with 1001 after
    --ping-timeout more; one that answers pings stays open."""
    system = start_split("--ping-interval", "0.3", "--ping-timeout", "0.3", workers=1)
    with trio.fail_after(30):
        async with open_ws(system.ws_url(ECHO_PATH)) as answering, \
                upgraded(system.port, ECHO_PATH) as (head, silent):
            assert head.status == 101, head.raw
            started = time.monotonic()
            code, reason, opcodes = await silent.close_frame()  # it never pongs
            closed_after = time.monotonic() - started
            assert OP_PING in opcodes  # pinged first
            assert code == 1001
            assert "ping" in reason
            # The answering client (trio-websocket pongs by itself) lived through it.
            await answering.send_message("still here")
            assert await answering.get_message() == "still here"
    print(f"silent browser closed after {closed_after:.2f} s (interval + timeout 0.6 s)")


async def test_a_stopped_worker_is_found_by_heartbeat_and_its_sockets_move_on(
    start_split: StartRun,
) -> None:
    """SIGSTOP a worker: the gateway finds its link silent within the heartbeat bound
    and another worker resumes its sockets; every line still arrives once."""
    system = start_split(*FAST, workers=2, appserver_extra=FAST)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, room(system.ws_url(), 6, nursery) as r:
            links = system.status()["links"]
            victim = max(links, key=lambda link: len(link["sockets"]))["worker_pid"]
            os.kill(victim, signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                # Polling another process's /status.
                while victim in {link["worker_pid"] for link in system.status()["links"]}:  # noqa: ASYNC110
                    await trio.sleep(0.02)
                detected = time.monotonic() - stopped
                for chatter in r.chatters:
                    await chatter.say(f"{chatter.name} while it is stopped")
                with trio.move_on_after(30):
                    await r.all_received()
            finally:
                os.kill(victim, signal.SIGCONT)
            assert r.problems() == {}
            assert r.userlist_problems() == {}
            nursery.cancel_scope.cancel()
    assert "silent for" in system.processes[1].log()
    print(f"stopped worker found after {detected:.2f} s (heartbeat 0.2 s)")


async def test_a_stopped_gateway_is_found_by_the_workers_and_recovers(
    start_split: StartRun,
) -> None:
    """SIGSTOP the gateway past the heartbeat bound: the workers drop its links (their
    sockets detach, no OnPostServer); SIGCONT: the gateway links again, resumes every
    socket, and the chat goes on with the user list unchanged."""
    system = start_split(*FAST, workers=2, appserver_extra=(*FAST, "--node-ttl", "60"))
    gateway = system.processes[1]
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, room(system.ws_url(), 6, nursery) as r:
            before = r.chatters[0].userlists[-1]
            os.kill(gateway.pid, signal.SIGSTOP)
            try:
                deadline = time.monotonic() + 20
                while "silent for" not in system.processes[0].log():
                    assert time.monotonic() < deadline, "the workers never noticed"
                    await trio.sleep(0.05)  # polling the app server's log file
            finally:
                os.kill(gateway.pid, signal.SIGCONT)
            for chatter in r.chatters:
                await chatter.say(f"{chatter.name} after the pause")
            with trio.move_on_after(30):
                await r.all_received()
            assert r.problems() == {}
            assert r.userlist_problems() == {}
            assert r.chatters[0].userlists[-1] == before
            nursery.cancel_scope.cancel()


async def test_sigterm_drains_the_gateway_with_1001_and_exit_0(start_split: StartRun) -> None:
    """SIGTERM on the gateway: every browser gets a 1001 close (in batches), new
    connections are refused, and the gateway exits 0 within --drain-timeout."""
    system = start_split("--drain-timeout", "10", workers=1)
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            browsers = []
            for _ in range(200):
                head, browser = await stack.enter_async_context(
                    upgraded(system.port, ECHO_PATH))
                assert head.status == 101, head.raw
                browsers.append(browser)
            gateway = system.processes[1]
            os.kill(gateway.pid, signal.SIGTERM)
            started = time.monotonic()
            codes = []
            for n, browser in enumerate(browsers):
                code, _, _ = await browser.close_frame()
                codes.append(code)
                await browser.send(client_frame(OP_CLOSE, close_payload(code)))
                if n == 0:  # the drain has begun: no new connection is taken
                    try:
                        refused = await trio.open_tcp_stream("127.0.0.1", system.port)
                    except OSError:
                        refused = None
                    assert refused is None, "the draining gateway took a new connection"
            exit_code = await trio.to_thread.run_sync(gateway.popen.wait, 15)
            drained = time.monotonic() - started
    assert codes == [1001] * 200
    assert exit_code == 0
    print(f"200 sockets drained, gateway exited 0 after {drained:.2f} s")
