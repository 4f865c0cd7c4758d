"""Link frames: the events of the gateway <-> app-server protocol and their wire codec.

Sans-I/O: this module imports neither trio nor socket (a test proves it). It turns
events into bytes and bytes into events; :mod:`gateway.protocol` adds the state
machine, the handshake and the buffering on top.

Wire format (all integers big-endian)::

    frame   = length:u32  type:u8  body          (length counts type + body)
    str8    = n:u8  n bytes of UTF-8             (ids, names)
    str16   = n:u16 n bytes of UTF-8             (paths, headers, reasons)
    blob    = the rest of the frame body         (payloads; always the last field)

A body must be consumed exactly: a short body or trailing bytes inside a frame are
protocol errors, as is an unknown frame type. The IRIS gateway-to-class framing
(``WSClassProtocolVersion`` 2: a length, a type byte, the payload) is the model; the
socket id travels in every frame because links are shared by many sockets.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

__all__ = [
    "NONCE_BYTES",
    "PROOF_BYTES",
    "Accept",
    "Adopt",
    "Challenge",
    "Close",
    "Data",
    "End",
    "Ended",
    "Event",
    "FrameType",
    "Group",
    "Handoff",
    "Heartbeat",
    "Hello",
    "LinkProtocolError",
    "Open",
    "Refused",
    "Reject",
    "SocketState",
    "SocketStatus",
    "Welcome",
    "Write",
    "WriteGroup",
    "WriteMany",
    "decode_body",
    "encode_frame",
]

NONCE_BYTES = 32
PROOF_BYTES = 32  # HMAC-SHA256

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_HEADER = struct.Struct(">IB")  # length, type


class LinkProtocolError(Exception):
    """The peer sent something the link protocol does not allow.

    ``reason`` is a short, loggable sentence; it never contains secrets or payloads.
    The link that raised it must be closed; other links are unaffected.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FrameType(enum.IntEnum):
    """The type byte of each frame."""

    CHALLENGE = 0x01
    HELLO = 0x02
    WELCOME = 0x03
    REFUSED = 0x04
    OPEN = 0x10
    ACCEPT = 0x11
    REJECT = 0x12
    DATA = 0x13
    WRITE = 0x14
    CLOSE = 0x15
    HEARTBEAT = 0x16
    SOCKET_STATE = 0x17
    END = 0x18
    ENDED = 0x19
    HANDOFF = 0x1A
    ADOPT = 0x1B
    GROUP = 0x1C
    WRITE_GROUP = 0x1D
    WRITE_MANY = 0x1E


class SocketStatus(enum.IntEnum):
    """A socket's state as the gateway announces it to every link (the Registry)."""

    CONNECTING = 0
    SHARED = 1
    PRIVATE = 2
    CLOSED = 3


# --- events -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """App server -> gateway, first frame: protocol version and the server's nonce."""

    version: int
    nonce: bytes


@dataclass(frozen=True, slots=True)
class Hello:
    """Gateway -> app server: who the gateway is, its nonce and its proof of the secret."""

    version: int
    gateway_id: str
    nonce: bytes = b""
    proof: bytes = b""


@dataclass(frozen=True, slots=True)
class Welcome:
    """App server -> gateway: the link is up, served by ``worker_pid``.

    ``classes`` names the server classes the app server serves, as
    ``"<namespace>/<Package.Class>"``; ``appserver_id`` names the app server.
    """

    worker_pid: int
    appserver_id: str
    classes: tuple[str, ...] = ()
    proof: bytes = b""


@dataclass(frozen=True, slots=True)
class Refused:
    """App server -> gateway: the link is refused (bad proof, busy, version)."""

    reason: str
    busy: bool = False


@dataclass(frozen=True, slots=True)
class Open:
    """Gateway -> worker: a browser asks to open a WebSocket (the handshake request).

    ``shared_allowed`` false means the gateway's Registry is disabled (IRIS:
    ``REGISTRY_METHODS=Disabled``): the socket runs private whatever OnPreServer says.
    """

    wsid: str
    class_name: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    client_address: str
    shared_allowed: bool = True


@dataclass(frozen=True, slots=True)
class Accept:
    """Worker -> gateway: ``OnPreServer`` accepted the socket, in this mode."""

    wsid: str
    shared: bool
    binary: bool = False


@dataclass(frozen=True, slots=True)
class Reject:
    """Worker -> gateway: refuse the handshake with an HTTP status and a readable body."""

    wsid: str
    status: int
    body: str


@dataclass(frozen=True, slots=True)
class Data:
    """Gateway -> worker: one whole message from the browser."""

    wsid: str
    binary: bool
    payload: bytes


@dataclass(frozen=True, slots=True)
class Write:
    """Worker -> gateway: send one message to the browser socket ``wsid``."""

    wsid: str
    binary: bool
    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """Either way: worker -> gateway closes the browser socket; gateway -> worker says
    the browser socket closed (``ended`` is true when a server's ``EndServer`` did it)."""

    wsid: str
    code: int = 1000
    reason: str = ""
    ended: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Either way: liveness. A heartbeat with ``reply`` false asks for one with it true."""

    seq: int
    reply: bool = False


@dataclass(frozen=True, slots=True)
class SocketState:
    """Gateway -> every link: the Registry entry of ``wsid`` changed.

    ``session`` is the socket's CSP session id, which ``OpenServer`` restores.
    """

    wsid: str
    status: SocketStatus
    session: str = ""


@dataclass(frozen=True, slots=True)
class End:
    """Worker -> gateway: ``EndServer`` asks to close ``wsid``; answered by :class:`Ended`."""

    request_id: int
    wsid: str
    code: int = 1000
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Ended:
    """Gateway -> worker: the answer to :class:`End`. ``first`` is true when this request
    closed the socket (so its caller runs ``OnPostServer``), false when it was gone."""

    request_id: int
    first: bool


@dataclass(frozen=True, slots=True)
class Handoff:
    """Worker -> gateway: OnPreServer chose private mode on a worker that serves other
    sockets, so the socket must move to a dedicated worker, with ``state`` (the
    instance's attributes, as JSON) so that OnPreServer is not run twice."""

    wsid: str
    state: bytes


@dataclass(frozen=True, slots=True)
class Adopt:
    """Gateway -> a dedicated worker: take over a handed-off private socket."""

    open: Open
    state: bytes


@dataclass(frozen=True, slots=True)
class Group:
    """Worker -> gateway: ``wsid`` joins (or leaves) the named group of sockets."""

    wsid: str
    name: str
    join: bool = True


@dataclass(frozen=True, slots=True)
class WriteGroup:
    """Worker -> gateway: one message to every shared socket of a group on this gateway.

    The fast path of a broadcast: one frame per gateway, not one per socket.
    """

    name: str
    binary: bool
    payload: bytes


@dataclass(frozen=True, slots=True)
class WriteMany:
    """Worker -> gateway: one message to each of the listed shared sockets."""

    wsids: tuple[str, ...]
    binary: bool
    payload: bytes


Event = (
    Challenge | Hello | Welcome | Refused | Open | Accept | Reject | Data | Write | Close
    | Heartbeat | SocketState | End | Ended | Handoff | Adopt | Group | WriteGroup
    | WriteMany
)


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
