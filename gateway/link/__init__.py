"""The link: the protocol between gateways and app-server workers, which both build on.

This package's core is sans-I/O and imports neither trio nor socket (a test proves it):
:mod:`~gateway.link.events` (what the two ends say), :mod:`~gateway.link.codec`
(events to bytes and back), :mod:`~gateway.link.connection` (the state machine and the
handshake) and :mod:`~gateway.link.errors` (every error, in one tree). They are
re-exported here.

The I/O parts are imported by their own names: :mod:`~gateway.link.net` (non-blocking
sockets), :mod:`~gateway.link.driver` (the one driver both ends use: read, write,
heartbeat, handshake), :mod:`~gateway.link.httpserver` (the plain HTTP loop both serve
their pages with) and :mod:`~gateway.link.process` (what every command shares at start).
"""

from gateway.link.codec import (
    MAX_FRAME_BYTES,
    MAX_PAYLOAD_BYTES,
    PREAUTH_MAX_FRAME_BYTES,
    Frame,
    decode_body,
    encode,
    encode_frame,
)
from gateway.link.connection import PROTOCOL_VERSION, LinkConnection, LinkState, Role
from gateway.link.errors import (
    FrameTooBig,
    LinkAuthError,
    LinkError,
    LinkProtocolError,
    LinkRefused,
    LinkUsageError,
)
from gateway.link.events import (
    NONCE_BYTES,
    PROOF_BYTES,
    Accept,
    Ack,
    Adopt,
    Challenge,
    Close,
    Data,
    Done,
    End,
    Ended,
    Event,
    FrameType,
    Group,
    Handoff,
    Heartbeat,
    Hello,
    Open,
    Refused,
    Reject,
    Resume,
    SocketState,
    SocketStatus,
    Welcome,
    Write,
    WriteGroup,
    WriteMany,
)

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_PAYLOAD_BYTES",
    "NONCE_BYTES",
    "PREAUTH_MAX_FRAME_BYTES",
    "PROOF_BYTES",
    "PROTOCOL_VERSION",
    "Accept",
    "Ack",
    "Adopt",
    "Challenge",
    "Close",
    "Data",
    "Done",
    "End",
    "Ended",
    "Event",
    "Frame",
    "FrameTooBig",
    "FrameType",
    "Group",
    "Handoff",
    "Heartbeat",
    "Hello",
    "LinkAuthError",
    "LinkConnection",
    "LinkError",
    "LinkProtocolError",
    "LinkRefused",
    "LinkState",
    "LinkUsageError",
    "Open",
    "Refused",
    "Reject",
    "Resume",
    "Role",
    "SocketState",
    "SocketStatus",
    "Welcome",
    "Write",
    "WriteGroup",
    "WriteMany",
    "decode_body",
    "encode",
    "encode_frame",
]
