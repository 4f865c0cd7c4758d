"""A browser that does not read costs the gateway a bounded queue, then its socket (1008);
the room chats on at full speed, and the largest message allowed always fits."""

from __future__ import annotations

import json
import os
import time

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from gateway.link.codec import MAX_PAYLOAD_BYTES
from tests.conftest import StartRun
from tests.limits.raw import OP_CLOSE, OP_TEXT, client_frame, close_payload, metric, upgraded
from tests.limits.raw import vm_rss_kib as rss_kib
from tests.support import b64, open_ws, unb64

#: --max-queued-bytes for the slow client test (above --max-message-bytes + 14, so it
#: is the bound).
QUEUED_BYTES = 256 * 1024
MESSAGE_BYTES = 128 * 1024
#: Chat messages pushed through the room, each about 64 KiB on the wire to each socket.
MESSAGES = 600
#: Messages the sender may be ahead of what it has received back: well below
#: --max-held-bytes (4 MiB), which would close it with 1013.
WINDOW = 8
#: The gateway's RSS may grow by this much while (MESSAGES - 16) × 64 KiB, about 37 MiB,
#: are addressed to the slow client. What the gateway may keep for that client is
#: QUEUED_BYTES (256 KiB; the kernel's socket buffers are not in its RSS). The rest of
#: the allowance is for what any traffic costs: the allocator keeping freed 64 KiB
#: blocks of the WINDOW frames in flight (each held once as a link frame and once as
#: the browser frame every socket shares) and the links' buffers, a few MiB at worst
#: (this test measures well under 1 MiB). A gateway that kept everything for the slow
#: client would grow by the whole 37 MiB, nine times the bound.
RSS_GROWTH_BOUND_KIB = 4 * 1024


def _text(i: int) -> str:
    return f"{i:06d} " + "x" * (48 * 1024)


async def _next_chat(ws: WebSocketConnection) -> int:
    """The number of the next chat message (other message types are skipped)."""
    while True:
        message = json.loads(await ws.get_message())
        if message["Type"] == "Chat":
            return int(unb64(message["Message"])[:6])


async def _push_traffic(one: WebSocketConnection, two: WebSocketConnection,
                        numbers: range) -> None:
    """``one`` says each numbered line; both must get every one, in order."""
    async def receive(i: int) -> None:
        for ws in (one, two):
            assert await _next_chat(ws) == i

    for i in numbers:
        await one.send_message(json.dumps({"Message": b64(_text(i)), "Author": "one"}))
        if i - WINDOW >= numbers.start:
            await receive(i - WINDOW)
    for i in range(max(numbers.start, numbers.stop - WINDOW), numbers.stop):
        await receive(i)


async def test_a_client_that_never_reads_is_closed_with_1008_and_memory_stays_bounded(
    start_split: StartRun,
) -> None:
    """A chat socket that never reads gets, after what was queued for it, a close frame
    1008 'slow client' (counted in /metrics); the other clients get every message; the
    gateway's RSS grows far less than the traffic addressed to the slow client."""
    system = start_split("--max-queued-bytes", str(QUEUED_BYTES),
                         "--max-message-bytes", str(MESSAGE_BYTES), workers=1)
    gateway_pid = system.processes[1].pid
    started = time.monotonic()
    with trio.fail_after(120):
        async with open_ws(system.ws_url()) as one, open_ws(system.ws_url()) as two, \
                upgraded(system.port, rcvbuf=4096) as (head, slow):
            assert head.status == 101, head.raw
            await _push_traffic(one, two, range(WINDOW * 2))  # warm the allocator up
            assert await metric(system.port, "wsgate_gateway_sockets_dropped_total") == 0
            before = rss_kib(gateway_pid)
            outcome: dict[str, object] = {}
            read_all = trio.Event()

            async def read_slow_once_dropped() -> None:
                # Polling another process's /metrics: the drop is a positive event.
                while await metric(system.port, "wsgate_gateway_sockets_dropped_total") < 1:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                # The gateway gives it CLOSE_TIMEOUT_S (5 s) to read what is queued.
                code, reason, opcodes = await slow.close_frame()
                await slow.send(client_frame(OP_CLOSE, close_payload(code)))
                outcome.update(code=code, reason=reason, frames=len(opcodes),
                               kinds=set(opcodes), after=await slow.until_eof())
                read_all.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_slow_once_dropped)
                await _push_traffic(one, two, range(WINDOW * 2, MESSAGES))
                # Measured now, so that a gateway that never drops the client fails on
                # its memory rather than by a timeout.
                after = rss_kib(gateway_pid)
                with trio.move_on_after(15):
                    await read_all.wait()
                nursery.cancel_scope.cancel()
            dropped = await metric(system.port, "wsgate_gateway_sockets_dropped_total")
    frame_bytes = len(json.dumps({"Message": b64(_text(0))}))
    traffic_kib = (MESSAGES - WINDOW * 2) * frame_bytes // 1024
    print(f"gateway RSS {before} KiB before, {after} KiB after {traffic_kib} KiB addressed "
          f"to the slow client (grew {after - before} KiB, bound {RSS_GROWTH_BOUND_KIB} "
          f"KiB, queue bound {QUEUED_BYTES // 1024} KiB); the slow client read "
          f"{outcome.get('frames')} frames before the close; "
          f"{time.monotonic() - started:.1f} s")
    assert traffic_kib > 8 * RSS_GROWTH_BOUND_KIB
    assert after - before < RSS_GROWTH_BOUND_KIB
    assert dropped == 1
    assert outcome, "the slow client was never sent its close frame"
    assert (outcome["code"], outcome["reason"]) == (1008, "slow client")
    assert outcome["kinds"] == {OP_TEXT}
    assert outcome["after"] == b""  # the close frame was the last thing sent


async def test_the_largest_allowed_message_echoes_back_whole(start_split: StartRun) -> None:
    """With --max-message-bytes at its highest and --max-queued-bytes (1 MiB) and
    --max-held-bytes (4 MiB by default) below it, an 8 MiB echo comes back whole and the
    socket stays open: neither bound is ever below one message."""
    system = start_split("--max-message-bytes", str(MAX_PAYLOAD_BYTES),
                         "--max-queued-bytes", str(1024 * 1024), workers=1)
    payload = os.urandom(8 * 1024 * 1024)
    with trio.fail_after(60):
        async with open_websocket_url(system.ws_url("/csp/user/Echo.Server.cls"),
                                      max_message_size=MAX_PAYLOAD_BYTES) as ws:
            try:
                started = time.monotonic()
                await ws.send_message(payload)
                echoed = await ws.get_message()
                took = time.monotonic() - started
                await ws.send_message("still open")
                assert await ws.get_message() == "still open"
            finally:
                with trio.CancelScope(shield=True):
                    await ws._stream.aclose()
        assert await metric(system.port, "wsgate_gateway_sockets_dropped_total") == 0
    print(f"8 MiB echo came back in {took:.2f} s")
    assert echoed == payload
