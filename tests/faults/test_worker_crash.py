"""kill -9 of a worker process while clients chat: nobody notices."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from collections import Counter

import trio

from tests.conftest import StartRun
from tests.e2e.test_metrics import metric
from tests.faults.chatload import Room, room
from tests.support import ChatClient, System, unb64

CLIENTS = 50
LINES = 10


def stored_lines(system: System) -> Counter[str]:
    """How many times each chat line is in the store."""
    with sqlite3.connect(system.db) as db:
        rows = db.execute("SELECT raw FROM messages").fetchall()
    return Counter(unb64(json.loads(raw)["Message"]) for (raw,) in rows)


async def chat(r: Room, lines: int, kill_after: int, victim: int) -> None:
    """Every chatter sends ``lines`` lines; the victim dies after ``kill_after`` in all."""
    sent = 0
    killed = trio.Event()

    async def talk(index: int) -> None:
        nonlocal sent
        chatter = r.chatters[index]
        for n in range(lines):
            await chatter.say(f"{chatter.name}-{n}")
            sent += 1
            if sent == kill_after:
                os.kill(victim, signal.SIGKILL)
                killed.set()
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        for index in range(len(r.chatters)):
            nursery.start_soon(talk, index)
    assert killed.is_set()


async def test_kill_9_a_worker_while_50_clients_chat(start_run: StartRun) -> None:
    """SIGKILL the worker serving most sockets mid-chat: no socket closes, every line
    reaches every client exactly once and in Id order, each is stored once, nobody gets
    a second Status, and the user list is unchanged."""
    system = start_run(workers=2)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery, \
                room(system.ws_url(), CLIENTS, nursery) as r:
            links = system.status()["links"]
            busiest = max(links, key=lambda link: len(link["sockets"]))
            victim, on_victim = busiest["worker_pid"], len(busiest["sockets"])
            assert on_victim > 0
            before = r.chatters[0].userlists[-1]
            await chat(r, LINES, kill_after=CLIENTS * LINES // 3, victim=victim)
            with trio.move_on_after(30):  # what is still missing then is reported below
                await r.all_received()
            assert r.problems() == {}
            assert r.userlist_problems() == {}
            names = r.chatters[0].userlists[-1]
            assert names == before  # nobody left or joined the list
            _, _, body = system.get("/metrics")
            text = body.decode()
            assert metric(text, 'wsgate_gateway_sockets{mode="shared"}') == CLIENTS
            assert metric(text, "wsgate_gateway_sockets_closed_total") == 0
            assert metric(text, "wsgate_gateway_sockets_resumed_total") >= on_victim
            async with ChatClient.connect(system.ws_url()) as late:
                await late.expect("Status")
                userlist = await late.expect("userlist")
                assert [u["User"] for u in userlist["Users"]] == names
            nursery.cancel_scope.cancel()
    everything = stored_lines(system)
    assert everything == Counter(line for c in r.chatters for line in c.sent)
    assert f"worker pid {victim} exited with code -9" in system.logs()
    expected = sum(len(c.sent) for c in r.chatters) * CLIENTS
    delivered = sum(len(c.chats) for c in r.chatters)
    print(f"\nkill -9 of worker pid {victim} ({on_victim} of {CLIENTS} sockets) after "
          f"{CLIENTS * LINES // 3} of {CLIENTS * LINES} lines: "
          f"{sum(1 for c in r.chatters if c.closed)} sockets closed, "
          f"{expected - delivered} deliveries missing, "
          f"{sum(everything.values()) - len(everything)} lines stored twice; "
          f"{expected} deliveries checked one by one")
