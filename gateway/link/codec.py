"""The link frames' wire codec: events to bytes and bytes to events.

Sans-I/O, like :mod:`gateway.link.events` (whose docstring gives the wire format): no
trio, no socket. :func:`encode` builds a whole frame and raises
:class:`~gateway.link.errors.FrameTooBig` for an event that does not fit (naming the
field), so no other module needs to know a wire limit; :func:`decode_body` decodes one
body and raises :class:`~gateway.link.errors.LinkProtocolError` for anything
malformed: a short body, trailing bytes, unknown flags or types, bad UTF-8.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from gateway.link.errors import FrameTooBig, LinkProtocolError, LinkUsageError
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
    "PREAUTH_MAX_FRAME_BYTES",
    "Frame",
    "decode_body",
    "encode",
    "encode_frame",
]

#: Largest frame (type byte and body) accepted once the link is authenticated.
MAX_FRAME_BYTES = 16 * 1024 * 1024
#: Largest frame accepted before authentication: the handshake frames are far smaller.
PREAUTH_MAX_FRAME_BYTES = 4096
#: Largest message payload that one Data or Write frame carries, whatever its socket id
#: (the rest of the frame is the header and an id of at most 255 bytes).
MAX_PAYLOAD_BYTES = MAX_FRAME_BYTES - 1024


class Frame(NamedTuple):
    """One encoded frame: its type (what a connection checks) and its bytes."""

    kind: FrameType
    data: bytes


_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_HEADER = struct.Struct(">IB")  # length, type
_DATA = struct.Struct(">BIB")  # flags, seq, id length


# --- encoding ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Writer:
    parts: list[bytes] = field(default_factory=list)

    def u8(self, value: int) -> None:
        self.parts.append(_U8.pack(value))

    def u16(self, value: int) -> None:
        self.parts.append(_U16.pack(value))

    def u32(self, value: int) -> None:
        self.parts.append(_U32.pack(value))

    def str8(self, value: str, what: str) -> None:
        raw = value.encode()
        if len(raw) > 0xFF:
            raise FrameTooBig(f"{what} is too long for the link ({len(raw)} > 255 bytes)")
        self.parts.append(_U8.pack(len(raw)) + raw)

    def str16(self, value: str, what: str) -> None:
        raw = value.encode()
        if len(raw) > 0xFFFF:
            raise FrameTooBig(f"{what} is too long for the link ({len(raw)} > 65535 bytes)")
        self.parts.append(_U16.pack(len(raw)) + raw)

    def count16(self, value: int, what: str) -> None:
        if value > 0xFFFF:
            raise FrameTooBig(f"too many {what} for the link ({value} > 65535)")
        self.u16(value)

    def raw(self, value: bytes) -> None:
        self.parts.append(value)


def _flags(*bits: bool) -> int:
    return sum(1 << i for i, bit in enumerate(bits) if bit)


def _encode_body(event: Event) -> tuple[FrameType, bytes]:
    w = _Writer()
    match event:
        case Data(wsid, binary, payload, seq):
            # The hot paths (Data and Write) build the body directly.
            raw = _socket_id(wsid)
            return FrameType.DATA, _DATA.pack(1 if binary else 0, seq, len(raw)) + raw + payload
        case Write(wsid, binary, payload, group, seq):
            raw = _socket_id(wsid)
            if not seq:
                return FrameType.WRITE, bytes((1 if binary else 0, len(raw))) + raw + payload
            w.u8(_flags(binary, True))
            w.str8(wsid, "the socket id")
            w.u32(seq)
            w.str8(group, "the group name")
            w.raw(payload)
            return FrameType.WRITE, b"".join(w.parts)
        case Done(wsid):
            w.str8(wsid, "the socket id")
            return FrameType.DONE, b"".join(w.parts)
        case Ack(wsid, seq):
            w.str8(wsid, "the socket id")
            w.u32(seq)
            return FrameType.ACK, b"".join(w.parts)
        case Resume(wsid, class_name, state, binary, ended, close_code):
            w.str8(wsid, "the socket id")
            w.str8(class_name, "the server class name")
            w.u8(_flags(binary, ended))
            w.u16(close_code)
            w.raw(state)
            return FrameType.RESUME, b"".join(w.parts)
        case Challenge(version, nonce):
            w.raw(b"WSGL")
            w.u8(version)
            w.raw(_fixed(nonce, NONCE_BYTES, "nonce"))
            return FrameType.CHALLENGE, b"".join(w.parts)
        case Hello(version, gateway_id, nonce, proof):
            w.raw(b"WSGL")
            w.u8(version)
            w.str8(gateway_id, "the gateway id")
            w.raw(_fixed(nonce, NONCE_BYTES, "nonce"))
            w.raw(_fixed(proof, PROOF_BYTES, "proof"))
            return FrameType.HELLO, b"".join(w.parts)
        case Welcome(link_id, worker_pid, appserver_id, classes, proof):
            w.u32(link_id)
            w.u32(worker_pid)
            w.str8(appserver_id, "the app server id")
            w.count16(len(classes), "server classes")
            for name in classes:
                w.str8(name, "a server class name")
            w.raw(_fixed(proof, PROOF_BYTES, "proof"))
            return FrameType.WELCOME, b"".join(w.parts)
        case Refused(reason, busy):
            w.u8(_flags(busy))
            w.str16(reason, "the reason")
            return FrameType.REFUSED, b"".join(w.parts)
        case Open():
            _write_open(w, event)
            return FrameType.OPEN, b"".join(w.parts)
        case Adopt(request, state):
            _write_open(w, request)
            w.raw(state)
            return FrameType.ADOPT, b"".join(w.parts)
        case Handoff(wsid, state):
            w.str8(wsid, "the socket id")
            w.raw(state)
            return FrameType.HANDOFF, b"".join(w.parts)
        case Group(wsid, name, join, since, latest):
            w.str8(wsid, "the socket id")
            w.str8(name, "the group name")
            w.u8(_flags(join, since is not None, latest))
            w.u32(since or 0)
            return FrameType.GROUP, b"".join(w.parts)
        case WriteGroup(name, binary, payload, seq):
            w.str8(name, "the group name")
            w.u8(_flags(binary))
            w.u32(seq)
            w.raw(payload)
            return FrameType.WRITE_GROUP, b"".join(w.parts)
        case WriteMany(wsids, binary, payload):
            w.u32(len(wsids))
            for wsid in wsids:
                w.str8(wsid, "a socket id")
            w.u8(_flags(binary))
            w.raw(payload)
            return FrameType.WRITE_MANY, b"".join(w.parts)
        case Accept(wsid, shared, binary, state, subprotocol):
            w.str8(wsid, "the socket id")
            w.u8(_flags(shared, binary))
            w.str8(subprotocol, "the subprotocol")
            w.raw(state)
            return FrameType.ACCEPT, b"".join(w.parts)
        case Reject(wsid, status, body):
            w.str8(wsid, "the socket id")
            w.u16(status)
            w.str16(body, "the refusal's body")
            return FrameType.REJECT, b"".join(w.parts)
        case Close(wsid, code, reason, ended):
            w.str8(wsid, "the socket id")
            w.u16(code)
            w.u8(_flags(ended))
            w.str16(reason, "the close reason")
            return FrameType.CLOSE, b"".join(w.parts)
        case Heartbeat(seq, reply):
            w.u32(seq)
            w.u8(_flags(reply))
            return FrameType.HEARTBEAT, b"".join(w.parts)
        case SocketState(wsid, status, session):
            w.str8(wsid, "the socket id")
            w.u8(int(status))
            w.str8(session, "the session id")
            return FrameType.SOCKET_STATE, b"".join(w.parts)
        case End(request_id, wsid, code, reason):
            w.u32(request_id)
            w.str8(wsid, "the socket id")
            w.u16(code)
            w.str16(reason, "the close reason")
            return FrameType.END, b"".join(w.parts)
        case Ended(request_id, first):
            w.u32(request_id)
            w.u8(_flags(first))
            return FrameType.ENDED, b"".join(w.parts)
    raise LinkUsageError(f"not a link event: {type(event).__name__}")


def _socket_id(wsid: str) -> bytes:
    raw = wsid.encode()
    if len(raw) > 0xFF:
        raise FrameTooBig("the socket id is too long for the link")
    return raw


def _write_open(w: _Writer, event: Open) -> None:
    w.str8(event.wsid, "the socket id")
    w.str8(event.class_name, "the server class name")
    w.str16(event.path, "the request path")
    w.str16(event.query, "the query string")
    w.str8(event.client_address, "the client address")
    w.u8(_flags(event.shared_allowed))
    w.count16(len(event.headers), "request headers")
    for name, value in event.headers:
        w.str8(name, f"request header {name[:40]!r}...")
        w.str16(value, f"request header {name[:40]!r}...")


def _read_open(r: _Reader) -> Open:
    wsid, class_name, path, query, addr = r.str8(), r.str8(), r.str16(), r.str16(), r.str8()
    (shared_allowed,) = r.flags(1)
    headers = tuple((r.str8(), r.str16()) for _ in range(r.u16()))
    return Open(wsid, class_name, path, query, headers, addr, shared_allowed)


def _fixed(value: bytes, size: int, what: str) -> bytes:
    if len(value) != size:
        raise LinkUsageError(f"{what} must be {size} bytes, not {len(value)}")
    return value


def encode(event: Event) -> Frame:
    """Encode ``event`` as one whole frame (length, type and body).

    Raises :class:`FrameTooBig` when it does not fit: a field is longer than its
    length prefix allows, or the frame is over :data:`MAX_FRAME_BYTES`.
    """
    kind, body = _encode_body(event)
    if len(body) >= MAX_FRAME_BYTES:
        raise FrameTooBig(f"a {kind.name} frame of {len(body) + 1} bytes is over the "
                          f"link's limit of {MAX_FRAME_BYTES}")
    return Frame(kind, _HEADER.pack(len(body) + 1, kind) + body)


def encode_frame(event: Event) -> bytes:
    """The bytes of :func:`encode` (for tests and tools: a connection checks states and
    directions, so the gateway and the app server send through one)."""
    return encode(event).data


# --- decoding ---------------------------------------------------------------------------


class _Reader:
    """Bounds-checked reads from one frame body; every short read is a protocol error."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def _take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise LinkProtocolError(f"truncated {self._what} frame")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        value: int = _U16.unpack(self._take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def text(self, n: int) -> str:
        try:
            return self._take(n).decode()
        except UnicodeDecodeError:
            raise LinkProtocolError(f"invalid UTF-8 in {self._what} frame") from None

    def str8(self) -> str:
        return self.text(self.u8())

    def str16(self) -> str:
        return self.text(self.u16())

    def fixed(self, n: int) -> bytes:
        return self._take(n)

    def magic(self) -> int:
        if self._take(4) != b"WSGL":
            raise LinkProtocolError(f"bad magic in {self._what} frame: not a wsgate link")
        return self.u8()

    def flags(self, count: int) -> tuple[bool, ...]:
        value = self.u8()
        if value >> count:
            raise LinkProtocolError(f"unknown flag bits in {self._what} frame")
        return tuple(bool(value >> i & 1) for i in range(count))

    def rest(self) -> bytes:
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk

    def done(self) -> None:
        if self._pos != len(self._data):
            raise LinkProtocolError(f"trailing bytes in {self._what} frame")


def _decode_data(body: bytes) -> Data:
    if len(body) < 6:
        raise LinkProtocolError("truncated DATA frame")
    flags, seq, n = _DATA.unpack_from(body)
    if flags > 1:
        raise LinkProtocolError("unknown flag bits in DATA frame")
    if len(body) < 6 + n:
        raise LinkProtocolError("truncated DATA frame")
    try:
        wsid = body[6 : 6 + n].decode()
    except UnicodeDecodeError:
        raise LinkProtocolError("invalid UTF-8 in DATA frame") from None
    return Data(wsid, flags == 1, body[6 + n :], seq)


def _decode_write(body: bytes) -> Write:
    if len(body) < 2:
        raise LinkProtocolError("truncated WRITE frame")
    flags, n = body[0], body[1]
    if flags > 3:
        raise LinkProtocolError("unknown flag bits in WRITE frame")
    if flags & 2:  # sequenced: the group and the number follow the id
        r = _Reader(body, "WRITE")
        r.u8()
        wsid, seq, group = r.str8(), r.u32(), r.str8()
        return Write(wsid, bool(flags & 1), r.rest(), group, seq)
    if len(body) < 2 + n:
        raise LinkProtocolError("truncated WRITE frame")
    try:
        wsid = body[2 : 2 + n].decode()
    except UnicodeDecodeError:
        raise LinkProtocolError("invalid UTF-8 in WRITE frame") from None
    return Write(wsid, flags == 1, body[2 + n :])


def decode_body(type_byte: int, body: bytes) -> Event:
    """Decode one frame body; raise :class:`LinkProtocolError` for anything malformed."""
    try:
        kind = FrameType(type_byte)
    except ValueError:
        raise LinkProtocolError(f"unknown frame type 0x{type_byte:02x}") from None
    if kind is FrameType.DATA:
        return _decode_data(body)
    if kind is FrameType.WRITE:
        return _decode_write(body)
    r = _Reader(body, kind.name)
    event: Event
    match kind:
        case FrameType.CHALLENGE:
            event = Challenge(r.magic(), r.fixed(NONCE_BYTES))
        case FrameType.HELLO:
            event = Hello(r.magic(), r.str8(), r.fixed(NONCE_BYTES), r.fixed(PROOF_BYTES))
        case FrameType.WELCOME:
            link_id, pid, appserver_id = r.u32(), r.u32(), r.str8()
            classes = tuple(r.str8() for _ in range(r.u16()))
            event = Welcome(link_id, pid, appserver_id, classes, r.fixed(PROOF_BYTES))
        case FrameType.REFUSED:
            (busy,) = r.flags(1)
            event = Refused(r.str16(), busy)
        case FrameType.OPEN:
            event = _read_open(r)
        case FrameType.ADOPT:
            event = Adopt(_read_open(r), r.rest())
        case FrameType.HANDOFF:
            event = Handoff(r.str8(), r.rest())
        case FrameType.GROUP:
            wsid, name = r.str8(), r.str8()
            join, sequenced, latest = r.flags(3)
            since = r.u32()
            event = Group(wsid, name, join, since if sequenced else None, latest)
        case FrameType.WRITE_GROUP:
            name = r.str8()
            (binary,) = r.flags(1)
            seq = r.u32()
            event = WriteGroup(name, binary, r.rest(), seq)
        case FrameType.WRITE_MANY:
            count = r.u32()
            if count > len(body):  # each id takes at least one byte
                raise LinkProtocolError("WRITE_MANY lists more ids than the frame holds")
            wsids = tuple(r.str8() for _ in range(count))
            (binary,) = r.flags(1)
            event = WriteMany(wsids, binary, r.rest())
        case FrameType.ACCEPT:
            wsid = r.str8()
            shared, binary = r.flags(2)
            subprotocol = r.str8()
            event = Accept(wsid, shared, binary, r.rest(), subprotocol)
        case FrameType.ACK:
            event = Ack(r.str8(), r.u32())
        case FrameType.DONE:
            event = Done(r.str8())
        case FrameType.RESUME:
            wsid, class_name = r.str8(), r.str8()
            binary, ended = r.flags(2)
            code = r.u16()
            event = Resume(wsid, class_name, r.rest(), binary, ended, code)
        case FrameType.REJECT:
            event = Reject(r.str8(), r.u16(), r.str16())
        case FrameType.CLOSE:
            wsid, code = r.str8(), r.u16()
            (ended,) = r.flags(1)
            event = Close(wsid, code, r.str16(), ended)
        case FrameType.HEARTBEAT:
            seq = r.u32()
            (reply,) = r.flags(1)
            event = Heartbeat(seq, reply)
        case FrameType.SOCKET_STATE:
            wsid, raw_status = r.str8(), r.u8()
            try:
                status = SocketStatus(raw_status)
            except ValueError:
                raise LinkProtocolError(f"unknown socket status {raw_status}") from None
            event = SocketState(wsid, status, r.str8())
        case FrameType.END:
            event = End(r.u32(), r.str8(), r.u16(), r.str16())
        case FrameType.ENDED:
            request_id = r.u32()
            (first,) = r.flags(1)
            event = Ended(request_id, first)
    r.done()
    return event
