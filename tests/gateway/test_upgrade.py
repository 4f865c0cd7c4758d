"""The upgrade request's checks and the 101, against RFC 6455 and against wsproto's own
handshake (which the gateway used to run, and which parsed every request twice)."""

from __future__ import annotations

import base64

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from gateway.handshake import Upgrade, check_upgrade, switching_protocols

GOOD = [(b"Host", b"example.com"), (b"Upgrade", b"websocket"),
        (b"Connection", b"keep-alive, Upgrade"), (b"Sec-WebSocket-Version", b"13"),
        (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ==")]


def _request(headers: list[tuple[bytes, bytes]], method: bytes = b"GET") -> h11.Request:
    """The request as the gateway gets it: parsed by an h11 server connection."""
    conn = h11.Connection(h11.SERVER)
    head = b"".join(k + b": " + v + b"\r\n" for k, v in headers)
    conn.receive_data(method + b" /csp/user/Chat.Server.cls HTTP/1.1\r\n" + head + b"\r\n")
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    return event


def _wsproto(request: h11.Request, subprotocol: str | None = None) -> bytes | str:
    """What wsproto's server handshake says of the same request."""
    handshake = H11Handshake(ConnectionType.SERVER)
    try:
        handshake.initiate_upgrade_connection(list(request.headers), request.target)
    except RemoteProtocolError as exc:
        return str(exc)
    upgrade = next(handshake.events())
    assert isinstance(upgrade, Request)
    return handshake.send(AcceptConnection(subprotocol=subprotocol, extensions=[]))


def _head(response: bytes) -> tuple[int, dict[bytes, bytes]]:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[
        ("Host", "x"), ("Upgrade", "websocket"), ("Connection", "Upgrade")]))
    client.receive_data(response)
    event = client.next_event()
    assert isinstance(event, h11.InformationalResponse)
    return event.status_code, dict(event.headers)


def test_the_rfc_example_key_gets_the_rfc_accept() -> None:
    """RFC 6455 section 1.3's example: that key's Sec-WebSocket-Accept."""
    upgrade = check_upgrade(_request(GOOD))
    assert upgrade == Upgrade(b"dGhlIHNhbXBsZSBub25jZQ==", ())
    status, headers = _head(switching_protocols(upgrade.key, None))
    assert status == 101
    assert headers[b"sec-websocket-accept"] == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert headers[b"upgrade"] == b"websocket"
    assert headers[b"connection"] == b"Upgrade"
    assert b"sec-websocket-protocol" not in headers
    assert b"sec-websocket-extensions" not in headers


@given(key=st.binary(min_size=16, max_size=16),
       offered=st.lists(st.sampled_from(["chat", "v2.chat", "x-y"]), unique=True,
                        max_size=3),
       choose=st.booleans())
def test_the_101_says_what_wsprotos_would(key: bytes, offered: list[str],
                                          choose: bool) -> None:
    """Any key, any offered subprotocols, one chosen or none: the same status and
    headers as wsproto's handshake writes."""
    headers = [*GOOD[:-1], (b"Sec-WebSocket-Key", base64.b64encode(key))]
    if offered:
        headers.append((b"Sec-WebSocket-Protocol", ", ".join(offered).encode()))
    request = _request(headers)
    upgrade = check_upgrade(request)
    assert isinstance(upgrade, Upgrade)
    assert upgrade.subprotocols == tuple(offered)
    chosen = offered[-1] if choose and offered else None
    theirs = _wsproto(request, chosen)
    assert isinstance(theirs, bytes)
    assert _head(switching_protocols(upgrade.key, chosen)) == _head(theirs)


@pytest.mark.parametrize("change", [
    {"Connection": b"keep-alive"},
    {"Sec-WebSocket-Version": b"8"},
    {"Sec-WebSocket-Version": None},
    {"Sec-WebSocket-Key": None},
    {"Upgrade": b"h2c"},
    {"Upgrade": None},
    {"Connection": None},
])
def test_a_bad_upgrade_is_refused_with_wsprotos_reason(
        change: dict[str, bytes | None]) -> None:
    """Each header RFC 6455 requires, missing or wrong: refused, for the same reason
    wsproto gives."""
    headers = [(k, v) for k, v in GOOD if k.decode() not in change]
    headers += [(k.encode(), v) for k, v in change.items() if v is not None]
    request = _request(headers)
    why = check_upgrade(request)
    assert isinstance(why, str)
    assert why == _wsproto(request)


def test_only_get_upgrades() -> None:
    """RFC 6455 section 4.1: the handshake is a GET."""
    why = check_upgrade(_request([*GOOD, (b"Content-Length", b"0")], method=b"POST"))
    assert why == "Request method must be GET"
