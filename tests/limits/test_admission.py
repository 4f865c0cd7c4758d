"""Who gets in, and how many: --max-sockets (503), --max-connect-rate per client
address (429), --handshake-timeout (slowloris), and bad requests; each refusal costs
the refused connection only, while chatting bystanders go on."""

from __future__ import annotations

import json
import time
from contextlib import AsyncExitStack

import pytest
import trio

from tests.chatting import assert_chatting, bystanders
from tests.conftest import StartRun
from tests.limits.conftest import StartBare
from tests.limits.raw import (
    OP_TEXT,
    RawClient,
    client_frame,
    connect,
    get,
    metric,
    refused,
    upgrade_head,
    upgraded,
)
from tests.support import CHAT_PATH, ChatClient, System, open_ws

ECHO = "/csp/user/Echo.Server.cls"


async def _sockets(system: System) -> int:
    """How many sockets the gateway holds (its /healthz)."""
    head, body = await get(system.port, "/healthz")
    assert head.status == 200, head.raw
    return int(json.loads(body)["sockets"])


async def test_max_sockets_refuses_the_one_over_with_503_until_one_closes(
    start_run: StartRun,
) -> None:
    """With --max-sockets 3 and three sockets open, the next upgrade gets 503 with a
    body naming the limit; once one of the three closes, a new one opens."""
    system = start_run("--max-sockets", "3", workers=1)
    with trio.fail_after(30):
        async with bystanders(system) as (one, two):
            async with open_ws(system.ws_url(ECHO)) as third:
                head, body = await refused(system.port, ECHO)
                assert head.status == 503, head.raw
                assert "--max-sockets 3" in body
                await assert_chatting(one, two, "while full")
                await third.send_message("the third still works")
                assert await third.get_message() == "the third still works"
            while await _sockets(system) > 2:  # noqa: ASYNC110 - another process's state
                await trio.sleep(0.02)
            async with open_ws(system.ws_url(ECHO)) as fourth:
                await fourth.send_message("in")
                assert await fourth.get_message() == "in"
        refusals = await metric(system.port, "wsgate_gateway_sockets_refused_full_total")
    assert refusals == 1
    print("--max-sockets 3: 1 upgrade refused with 503")


async def test_max_connect_rate_answers_a_burst_from_one_address_with_429(
    start_run: StartRun,
) -> None:
    """With --max-connect-rate 2, a burst of upgrades from one address (127.0.0.2) has
    its first two served and later ones answered 429 with Retry-After; another address
    (127.0.0.3) is served meanwhile, and the bystanders chat on."""
    system = start_run("--max-connect-rate", "2", workers=1)
    statuses = []
    with trio.fail_after(60):
        # The fixture's /healthz polls drew on 127.0.0.1's bucket: let it refill (two
        # tokens, at two a second) before the bystanders take two. From then on the
        # test connects from other addresses only.
        await trio.sleep(1.0)
        async with bystanders(system) as (one, two), AsyncExitStack() as served:
            for _ in range(20):
                client: RawClient = await served.enter_async_context(
                    connect(system.port, source="127.0.0.2"))
                await client.send(upgrade_head(system.port, ECHO))
                head = await client.head()
                statuses.append(head.status)
                if head.status == 429:
                    body = (await client.until_eof()).decode()
                    assert int(head.headers["retry-after"]) >= 1, head.raw
                    assert "127.0.0.2" in body
                    assert "at most 2 a second" in body
                else:
                    assert head.status == 101, head.raw
                    await client.send(client_frame(OP_TEXT, b"served"))
                    assert await client.frame() == (True, OP_TEXT, b"served")
            # Another address has a bucket of its own.
            async with upgraded(system.port, ECHO, source="127.0.0.3") as (head, other):
                assert head.status == 101, head.raw
                await other.send(client_frame(OP_TEXT, b"me too"))
                assert await other.frame() == (True, OP_TEXT, b"me too")
            await assert_chatting(one, two, "after the burst")
        limited = await metric(system.port, "wsgate_gateway_connections_rate_limited_total",
                               source="127.0.0.4")
    print(f"--max-connect-rate 2: burst of 20 from 127.0.0.2 -> {statuses.count(101)} "
          f"served, {statuses.count(429)} refused with 429: {statuses}")
    assert statuses[:2] == [101, 101]
    assert 429 in statuses
    assert limited == statuses.count(429)


async def test_a_connect_rate_below_one_a_second_still_admits_a_first_connection(
    start_bare: StartBare,
) -> None:
    """With --max-connect-rate 0.5 (one connection every two seconds) the first
    connection from a fresh address is served."""
    system = start_bare("--max-connect-rate", "0.5")
    with trio.fail_after(30):
        async with upgraded(system.port, ECHO, source="127.0.0.3") as (head, _):
            assert head.status == 101, head.raw


async def _wait_closed(client: RawClient) -> tuple[float, bytes]:
    """How long until the gateway ends the connection, and what it sent."""
    started = time.monotonic()
    got = await client.until_eof()
    return time.monotonic() - started, got


async def test_handshake_timeout_hangs_up_on_slow_requests_while_others_are_served(
    start_run: StartRun,
) -> None:
    """With --handshake-timeout 1: a client that sends half a request, one that sends
    nothing, and one that trickles a header byte at a time are hung up on (with nothing
    sent back), while a normal client is served meanwhile."""
    system = start_run("--handshake-timeout", "1", workers=1)
    half = upgrade_head(system.port, CHAT_PATH).split(b"\r\n\r\n")[0]
    times: dict[str, float] = {}
    with trio.fail_after(30):
        async with bystanders(system) as (one, two), \
                connect(system.port) as halfway, connect(system.port) as silent, \
                connect(system.port) as trickling:
            await halfway.send(half + b"\r\n")

            async def trickle() -> None:
                try:
                    for byte in half * 10:
                        await trickling.send(bytes((byte,)))
                        await trio.sleep(0.1)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the gateway hung up

            async def hung_up(name: str, client: RawClient) -> None:
                times[name], got = await _wait_closed(client)
                assert got == b"", (name, got)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trickle)
                for name, client in (("half", halfway), ("silent", silent),
                                     ("trickling", trickling)):
                    nursery.start_soon(hung_up, name, client)
                # Meanwhile a normal client is served.
                async with ChatClient.connect(system.ws_url()) as normal:
                    await normal.expect("Status")
                    await assert_chatting(one, two, "during the slow requests")
                assert (await get(system.port, "/"))[0].status == 200
    print("--handshake-timeout 1: hung up after " +
          ", ".join(f"{name} {t:.2f} s" for name, t in sorted(times.items())))
    assert set(times) == {"half", "silent", "trickling"}


BAD_REQUESTS = {
    "not-http": (b"NOT HTTP AT ALL\r\n\r\n", 400),
    "no-key": (upgrade_head(0).replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                                       b""), 400),
    "version-8": (upgrade_head(0).replace(b"Version: 13", b"Version: 8"), 400),
    "no-class": (upgrade_head(0, "/csp/user/No.Such.cls"), 404),
    "not-a-path": (upgrade_head(0, "/etc/passwd"), 404),
    "post": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", 405),
    "big-body": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n"
                 + b"x" * 70000, 413),
    # Over one read (64 KiB), so that h11 sees it incomplete and over its 16 KiB limit.
    "huge-head": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 70000 + b"\r\n\r\n", 431),
    "long-header-name": (upgrade_head(0, CHAT_PATH, [("X-" + "n" * 300, "v")]), 431),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
async def test_a_bad_request_is_refused_and_the_others_chat_on(
    start_run: StartRun, name: str,
) -> None:
    """A malformed or unroutable request gets its 4xx with a readable body, three times
    over, and the bystanders chat on after each refusal."""
    request, status = BAD_REQUESTS[name]
    system = start_run(workers=1)
    with trio.fail_after(30):
        async with bystanders(system) as (one, two):
            for attempt in range(3):
                async with connect(system.port) as client:
                    await client.send(request)
                    head = await client.head()
                    body = await client.body(head)
                assert head.status == status, head.raw
                assert head.headers["content-type"].startswith("text/plain"), head.raw
                assert body.decode().strip(), head.raw
                await assert_chatting(one, two, f"after {name} #{attempt}")
            assert await _sockets(system) == 2


async def test_a_request_head_over_16_kib_gets_431_however_it_arrives(
    start_run: StartRun,
) -> None:
    """A request head over 16 KiB gets 431 (docs/architecture.md, "Request heads over
    16 KiB get 431") also when it arrives in one piece."""
    system = start_run(workers=1)
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 20000 + b"\r\n\r\n"
    with trio.fail_after(30):
        async with connect(system.port) as client:
            await client.send(request)
            head = await client.head()
    assert head.status == 431, head.raw
