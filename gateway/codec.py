"""The link frames' wire codec: events to bytes and bytes to events.

Sans-I/O, like :mod:`gateway.frames` (whose docstring gives the wire format): no
trio, no socket. :func:`encode_frame` builds a whole frame; :func:`decode_body`
decodes one body and raises :class:`~gateway.frames.LinkProtocolError` for anything
malformed: a short body, trailing bytes, unknown flags or types, bad UTF-8.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from gateway.frames import (
    NONCE_BYTES,
    PROOF_BYTES,
    Accept,
    Adopt,
    Challenge,
    Close,
    Data,
    End,
    Ended,
    Event,
    FrameType,
    Group,
    Handoff,
    Heartbeat,
    Hello,
    LinkProtocolError,
    Open,
    Refused,
    Reject,
    SocketState,
    SocketStatus,
    Welcome,
    Write,
    WriteGroup,
    WriteMany,
)

__all__ = ["decode_body", "encode_frame"]

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_HEADER = struct.Struct(">IB")  # length, type


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

    def str8(self, value: str) -> None:
        raw = value.encode()
        if len(raw) > 0xFF:
            raise ValueError(f"string too long for the link ({len(raw)} > 255 bytes)")
        self.parts.append(_U8.pack(len(raw)) + raw)

    def str16(self, value: str) -> None:
        raw = value.encode()
        if len(raw) > 0xFFFF:
            raise ValueError(f"string too long for the link ({len(raw)} > 65535 bytes)")
        self.parts.append(_U16.pack(len(raw)) + raw)

    def raw(self, value: bytes) -> None:
        self.parts.append(value)


def _flags(*bits: bool) -> int:
    return sum(1 << i for i, bit in enumerate(bits) if bit)


def _encode_body(event: Event) -> tuple[FrameType, bytes]:
    w = _Writer()
    match event:
        case Data(wsid, binary, payload) | Write(wsid, binary, payload):
            # The hot path: build the body directly.
            raw = wsid.encode()
            if len(raw) > 0xFF:
                raise ValueError("socket id too long for the link")
            kind = FrameType.DATA if isinstance(event, Data) else FrameType.WRITE
            return kind, bytes((1 if binary else 0, len(raw))) + raw + payload
        case Challenge(version, nonce):
            w.raw(b"WSGL")
            w.u8(version)
            w.raw(_fixed(nonce, NONCE_BYTES, "nonce"))
            return FrameType.CHALLENGE, b"".join(w.parts)
        case Hello(version, gateway_id, nonce, proof):
            w.raw(b"WSGL")
            w.u8(version)
            w.str8(gateway_id)
            w.raw(_fixed(nonce, NONCE_BYTES, "nonce"))
            w.raw(_fixed(proof, PROOF_BYTES, "proof"))
            return FrameType.HELLO, b"".join(w.parts)
        case Welcome(worker_pid, appserver_id, classes, proof):
            w.u32(worker_pid)
            w.str8(appserver_id)
            w.u16(len(classes))
            for name in classes:
                w.str8(name)
            w.raw(_fixed(proof, PROOF_BYTES, "proof"))
            return FrameType.WELCOME, b"".join(w.parts)
        case Refused(reason, busy):
            w.u8(_flags(busy))
            w.str16(reason)
            return FrameType.REFUSED, b"".join(w.parts)
        case Open():
            _write_open(w, event)
            return FrameType.OPEN, b"".join(w.parts)
        case Adopt(request, state):
            _write_open(w, request)
            w.raw(state)
            return FrameType.ADOPT, b"".join(w.parts)
        case Handoff(wsid, state):
            w.str8(wsid)
            w.raw(state)
            return FrameType.HANDOFF, b"".join(w.parts)
        case Group(wsid, name, join):
            w.str8(wsid)
            w.str8(name)
            w.u8(_flags(join))
            return FrameType.GROUP, b"".join(w.parts)
        case WriteGroup(name, binary, payload):
            w.str8(name)
            w.u8(_flags(binary))
            w.raw(payload)
            return FrameType.WRITE_GROUP, b"".join(w.parts)
        case WriteMany(wsids, binary, payload):
            w.u32(len(wsids))
            for wsid in wsids:
                w.str8(wsid)
            w.u8(_flags(binary))
            w.raw(payload)
            return FrameType.WRITE_MANY, b"".join(w.parts)
        case Accept(wsid, shared, binary):
            w.str8(wsid)
            w.u8(_flags(shared, binary))
            return FrameType.ACCEPT, b"".join(w.parts)
        case Reject(wsid, status, body):
            w.str8(wsid)
            w.u16(status)
            w.str16(body)
            return FrameType.REJECT, b"".join(w.parts)
        case Close(wsid, code, reason, ended):
            w.str8(wsid)
            w.u16(code)
            w.u8(_flags(ended))
            w.str16(reason)
            return FrameType.CLOSE, b"".join(w.parts)
        case Heartbeat(seq, reply):
            w.u32(seq)
            w.u8(_flags(reply))
            return FrameType.HEARTBEAT, b"".join(w.parts)
        case SocketState(wsid, status, session):
            w.str8(wsid)
            w.u8(int(status))
            w.str8(session)
            return FrameType.SOCKET_STATE, b"".join(w.parts)
        case End(request_id, wsid, code, reason):
            w.u32(request_id)
            w.str8(wsid)
            w.u16(code)
            w.str16(reason)
            return FrameType.END, b"".join(w.parts)
        case Ended(request_id, first):
            w.u32(request_id)
            w.u8(_flags(first))
            return FrameType.ENDED, b"".join(w.parts)
    raise TypeError(f"not a link event: {event!r}")


def _write_open(w: _Writer, event: Open) -> None:
    w.str8(event.wsid)
    w.str8(event.class_name)
    w.str16(event.path)
    w.str16(event.query)
    w.str8(event.client_address)
    w.u8(_flags(event.shared_allowed))
    w.u16(len(event.headers))
    for name, value in event.headers:
        w.str8(name)
        w.str16(value)


def _read_open(r: _Reader) -> Open:
    wsid, class_name, path, query, addr = r.str8(), r.str8(), r.str16(), r.str16(), r.str8()
    (shared_allowed,) = r.flags(1)
    headers = tuple((r.str8(), r.str16()) for _ in range(r.u16()))
    return Open(wsid, class_name, path, query, headers, addr, shared_allowed)


def _fixed(value: bytes, size: int, what: str) -> bytes:
    if len(value) != size:
        raise ValueError(f"{what} must be {size} bytes, not {len(value)}")
    return value


def encode_frame(event: Event) -> bytes:
    """Return the whole frame (length, type and body) for ``event``."""
    kind, body = _encode_body(event)
    return _HEADER.pack(len(body) + 1, kind) + body


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


def _decode_data(kind: FrameType, body: bytes) -> Data | Write:
    if len(body) < 2:
        raise LinkProtocolError(f"truncated {kind.name} frame")
    flags, n = body[0], body[1]
    if flags > 1:
        raise LinkProtocolError(f"unknown flag bits in {kind.name} frame")
    if len(body) < 2 + n:
        raise LinkProtocolError(f"truncated {kind.name} frame")
    try:
        wsid = body[2 : 2 + n].decode()
    except UnicodeDecodeError:
        raise LinkProtocolError(f"invalid UTF-8 in {kind.name} frame") from None
    cls = Data if kind is FrameType.DATA else Write
    return cls(wsid, flags == 1, body[2 + n :])


def decode_body(type_byte: int, body: bytes) -> Event:
    """Decode one frame body; raise :class:`LinkProtocolError` for anything malformed."""
    try:
        kind = FrameType(type_byte)
    except ValueError:
        raise LinkProtocolError(f"unknown frame type 0x{type_byte:02x}") from None
    if kind in (FrameType.DATA, FrameType.WRITE):
        return _decode_data(kind, body)
    r = _Reader(body, kind.name)
    event: Event
    match kind:
        case FrameType.CHALLENGE:
            event = Challenge(r.magic(), r.fixed(NONCE_BYTES))
        case FrameType.HELLO:
            event = Hello(r.magic(), r.str8(), r.fixed(NONCE_BYTES), r.fixed(PROOF_BYTES))
        case FrameType.WELCOME:
            pid, appserver_id = r.u32(), r.str8()
            classes = tuple(r.str8() for _ in range(r.u16()))
            event = Welcome(pid, appserver_id, classes, r.fixed(PROOF_BYTES))
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
            (join,) = r.flags(1)
            event = Group(wsid, name, join)
        case FrameType.WRITE_GROUP:
            name = r.str8()
            (binary,) = r.flags(1)
            event = WriteGroup(name, binary, r.rest())
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
            event = Accept(wsid, shared, binary)
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
