"""Server-to-client WebSocket frames, encoded once and shared by every socket.

RFC 6455 section 5.1: a server must not mask the frames it sends, so a server frame's
bytes do not depend on the socket. No extension is ever negotiated (the gateway accepts
upgrades with ``extensions=[]``), so a broadcast's frame is encoded here once and the
same ``bytes`` object is queued on every socket. wsproto still parses what browsers
send and does the closing handshake; a test checks that these bytes equal wsproto's.
"""

from __future__ import annotations

import struct

__all__ = ["OPCODE_BINARY", "OPCODE_TEXT", "encode_message"]

OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
_FIN = 0x80
_SHORT = struct.Struct(">BBH")
_LONG = struct.Struct(">BBQ")


def encode_message(payload: bytes, *, binary: bool) -> bytes:
    """Return one unfragmented, unmasked frame (RFC 6455 section 5.2) carrying ``payload``."""
    first = _FIN | (OPCODE_BINARY if binary else OPCODE_TEXT)
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return _SHORT.pack(first, 126, n) + payload
    return _LONG.pack(first, 127, n) + payload
