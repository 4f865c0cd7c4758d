"""A browser that breaks RFC 6455 gets a close frame with the right code (1002, 1007)
before its TCP connection ends, and costs nobody else anything; bad chat input is
answered, logged, and the socket chats on."""

from __future__ import annotations

import contextlib
import os
import sqlite3

import pytest
import trio

from tests.chatting import assert_chatting, bystanders
from tests.conftest import StartRun
from tests.limits.raw import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_TEXT,
    RSV1,
    RawClient,
    client_frame,
    close_payload,
    metric,
    upgraded,
)
from tests.support import ChatClient, b64

ECHO = "/csp/user/Echo.Server.cls"

#: What a browser might send, and the close code RFC 6455 says it earns.
VIOLATIONS = {
    # 5.2: RSV1-3 must be 0 unless an extension says otherwise (none is negotiated).
    "rsv1": (client_frame(OP_TEXT, b"hi", rsv=RSV1), 1002),
    # 5.2: opcodes 0x3-0x7 and 0xB-0xF are reserved.
    "opcode-0x3": (client_frame(0x3, b"hi"), 1002),
    "opcode-0xB": (client_frame(0xB, b"hi"), 1002),
    # 8.1: a text message must be valid UTF-8, also when split across frames.
    "bad-utf8": (client_frame(OP_TEXT, b"caf\xc3\x28"), 1007),
    "bad-utf8-fragmented": (client_frame(OP_TEXT, b"ok \xe2\x82", fin=False)
                            + client_frame(OP_CONTINUATION, b"\x28"), 1007),
    # 7.4: codes below 1000, 1005 and 1006 (never sent), and 5000+ are not allowed.
    "close-999": (client_frame(OP_CLOSE, close_payload(999)), 1002),
    "close-1005": (client_frame(OP_CLOSE, close_payload(1005)), 1002),
    "close-1006": (client_frame(OP_CLOSE, close_payload(1006)), 1002),
    "close-5000": (client_frame(OP_CLOSE, close_payload(5000)), 1002),
    "close-one-byte": (client_frame(OP_CLOSE, b"\x03"), 1002),
    "close-reason-bad-utf8": (client_frame(OP_CLOSE, close_payload(1000) + b"\xff"), 1007),
    # 5.5: control frames must not be fragmented, and carry at most 125 bytes.
    "ping-without-fin": (client_frame(OP_PING, b"x", fin=False), 1002),
    "ping-126-bytes": (client_frame(OP_PING, b"p" * 126), 1002),
    # 5.4: a continuation needs a message to continue; a new one must wait for the end.
    "stray-continuation": (client_frame(OP_CONTINUATION, b"x"), 1002),
    "interleaved-message": (client_frame(OP_TEXT, b"one", fin=False)
                            + client_frame(OP_TEXT, b"two"), 1002),
    # 5.1: a client must mask every frame it sends.
    "unmasked": (client_frame(OP_TEXT, b"hi", masked=False), 1002),
}


@pytest.mark.parametrize("name", VIOLATIONS)
async def test_a_protocol_error_gets_its_close_code_before_the_connection_ends(
    start_run: StartRun, name: str,
) -> None:
    """The offending socket reads a close frame with the code RFC 6455 gives its
    violation, then the end of the connection; the bystanders chat on."""
    frames, code = VIOLATIONS[name]
    system = start_run(workers=1)
    with trio.fail_after(30):
        async with bystanders(system) as (one, two):
            async with upgraded(system.port) as (head, offender):
                assert head.status == 101, head.raw
                # The chat's first message: the socket is open and served.
                _, opcode, _ = await offender.frame()
                assert opcode == OP_TEXT
                await offender.send(frames)
                got, reason, _ = await offender.close_frame()
                rest = await offender.until_eof()
            assert (got, rest) == (code, b""), reason
            await assert_chatting(one, two, f"after {name}")
        assert await metric(system.port, "wsgate_gateway_protocol_errors_total") == 1
    print(f"{name}: close {got} ({reason!r})")


async def _send_regardless(client: RawClient, data: bytes) -> None:
    """Send ``data`` unless the gateway hangs up first (as it may, once it is closing)."""
    with contextlib.suppress(trio.BrokenResourceError):
        await client.send(data)


async def test_the_close_frame_survives_a_browser_that_goes_on_sending(
    start_run: StartRun,
) -> None:
    """A browser that commits a violation while a large echo is still on its way to it,
    and goes on sending after, still reads the whole echo and then the 1002 close frame:
    the gateway sends what was queued and reads what arrives before hanging up (closing
    on unread bytes would reset the connection and lose both)."""
    system = start_run(workers=1)
    echo = os.urandom(256 * 1024)
    with trio.fail_after(30):
        async with upgraded(system.port, ECHO, rcvbuf=4096) as (head, offender):
            assert head.status == 101, head.raw
            await offender.send(client_frame(OP_BINARY, echo))
            while not offender.buffer:  # the echo is on its way: the gateway queued it
                await offender.more()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_send_regardless, offender,
                                   client_frame(OP_TEXT, b"hi", rsv=RSV1)
                                   + client_frame(OP_TEXT, b"m" * 60000) * 16)
                fin, opcode, payload = await offender.frame()
                got, reason, opcodes = await offender.close_frame()
                rest = await offender.until_eof()
    assert (fin, opcode, payload == echo) == (True, OP_BINARY, True)
    assert (got, opcodes, rest) == (1002, [], b""), reason


def _bad_input_rows(db: object) -> list[tuple[str, str]]:
    with sqlite3.connect(str(db)) as conn:
        rows: list[tuple[str, str]] = conn.execute(
            "SELECT detail, wsid FROM errors WHERE kind = 'bad input' ORDER BY id").fetchall()
    return rows


async def test_bad_chat_input_is_logged_answered_and_the_socket_chats_on(
    start_run: StartRun,
) -> None:
    """Malformed JSON and a binary frame are not protocol errors: the sender gets a
    {"Type": "Error"} for each, each is logged in the store's errors table with the
    socket's id, and the socket stays open and chats on."""
    system = start_run(workers=1)
    with trio.fail_after(30):
        async with bystanders(system) as (one, two), \
                ChatClient.connect(system.ws_url()) as bad:
            wsid = (await bad.expect("Status"))["WSID"]
            await bad.send("{not json")
            malformed = await bad.expect("Error")
            await bad.send(b"\x00\x01 binary")  # bytes go as a binary frame
            binary = await bad.expect("Error")
            assert "malformed JSON" in malformed["Message"]
            assert "binary frames" in binary["Message"]
            assert _bad_input_rows(system.db) == [(malformed["Message"], wsid),
                                                  (binary["Message"], wsid)]
            await bad.say("still chatting", author="bad")
            for client in (bad, one, two):
                await client.expect("Chat", Message=b64("still chatting"))
            await assert_chatting(one, two, "and the others too")
            await bad.expect("Chat", Message=b64("and the others too"))
        assert await metric(system.port, "wsgate_gateway_protocol_errors_total") == 0
