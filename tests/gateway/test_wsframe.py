"""The gateway's shared outbound frames are exactly what wsproto would send."""

from __future__ import annotations

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage

from gateway.wsframe import encode_message


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("binary", [False, True])
def test_encode_message_matches_wsproto(size: int, binary: bool) -> None:
    """For every length encoding (7, 16 and 64 bits) the bytes equal wsproto's frame."""
    server = Connection(ConnectionType.SERVER)
    if binary:
        payload = bytes(i % 251 for i in range(size))
        expected = server.send(BytesMessage(data=payload))
    else:
        text = ("ä" * size)[:size]
        payload = text.encode()
        expected = server.send(TextMessage(data=text))
    assert encode_message(payload, binary=binary) == expected


def test_a_client_parses_the_frames() -> None:
    """A wsproto client decodes a run of shared frames into the original messages."""
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(encode_message("Grüße".encode(), binary=False)
                        + encode_message(b"\x00\x01", binary=True))
    events = list(client.events())
    assert [type(e) for e in events] == [TextMessage, BytesMessage]
    assert events[0].data == "Grüße"
    assert events[1].data == b"\x00\x01"
