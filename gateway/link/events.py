"""The link's events: what a gateway and an app-server worker say to each other.

Sans-I/O: this module imports neither trio nor socket (a test proves it).
:mod:`gateway.link.codec` turns these events into bytes and back;
:mod:`gateway.link.connection` adds the state machine, the handshake and the buffering.

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
from dataclasses import dataclass

__all__ = [
    "NONCE_BYTES",
    "PROOF_BYTES",
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
    "FrameType",
    "Group",
    "Handoff",
    "Heartbeat",
    "Hello",
    "Open",
    "Refused",
    "Reject",
    "Resume",
    "SocketState",
    "SocketStatus",
    "Welcome",
    "Write",
    "WriteGroup",
    "WriteMany",
]

NONCE_BYTES = 32
PROOF_BYTES = 32  # HMAC-SHA256


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
    ACK = 0x1F
    RESUME = 0x20
    DONE = 0x21


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

    ``link_id`` is the link's number, chosen by the app server: both ends log it, so
    "link 7" is the same connection in the gateway's log and in the worker's.
    ``classes`` names the server classes the app server serves, as
    ``"<namespace>/<Package.Class>"``; ``appserver_id`` names the app server.
    """

    link_id: int
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
    """Worker -> gateway: ``OnPreServer`` accepted the socket, in this mode.

    ``state`` holds the instance's attributes after OnPreServer (JSON), which the
    gateway keeps: a worker that takes the socket over after a crash restores them.
    ``subprotocol`` is the one of the browser's ``Sec-WebSocket-Protocol`` offers that
    OnPreServer chose ("" for none): the gateway's 101 names it (RFC 6455 4.2.2).
    """

    wsid: str
    shared: bool
    binary: bool = False
    state: bytes = b""
    subprotocol: str = ""


@dataclass(frozen=True, slots=True)
class Reject:
    """Worker -> gateway: refuse the handshake with an HTTP status and a readable body."""

    wsid: str
    status: int
    body: str


@dataclass(frozen=True, slots=True)
class Data:
    """Gateway -> worker: one whole message from the browser.

    ``seq`` counts the socket's messages (1, 2, ...). The gateway keeps each message
    until the worker acknowledges it (:class:`Ack`), and sends what was not
    acknowledged again to the worker that resumes the socket after a crash.
    """

    wsid: str
    binary: bool
    payload: bytes
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Ack:
    """Worker -> gateway: the socket's messages up to ``seq`` have been handled (its
    Server() read on past them, or OnClientMessage returned)."""

    wsid: str
    seq: int


@dataclass(frozen=True, slots=True)
class Write:
    """Worker -> gateway: send one message to the browser socket ``wsid``.

    With ``seq``, the message is number ``seq`` of ``group``'s sequence, sent to this
    socket only (a socket catching up): the gateway delivers it in the group's order,
    and not at all if the socket had it already.
    """

    wsid: str
    binary: bool
    payload: bytes
    group: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Close:
    """Either way: worker -> gateway closes the browser socket; gateway -> worker says
    the browser socket closed (``ended`` is true when a server's ``EndServer`` did it).
    From a worker, ``ended`` says that worker ran the socket's OnPostServer (it is
    stopping): nobody else must."""

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
class Done:
    """Worker -> gateway: this worker ran the socket's OnPostServer. Until then the
    gateway counts that duty as the worker's, and hands it to another worker if this
    one is lost first."""

    wsid: str


@dataclass(frozen=True, slots=True)
class Resume:
    """Gateway -> worker: take over a shared socket whose worker is gone.

    The worker restores ``state`` (what the first worker reported in its Accept) and
    runs ``Server()`` again, not OnPreServer; the messages that were not acknowledged
    follow. With ``ended``, the socket is already closed (or was private): the worker
    only runs its OnPostServer, which nobody else ran.
    """

    wsid: str
    class_name: str
    state: bytes
    binary: bool = False
    ended: bool = False
    close_code: int = 1006


@dataclass(frozen=True, slots=True)
class Group:
    """Worker -> gateway: ``wsid`` joins (or leaves) the named group of sockets.

    ``since`` is the last message of the group's sequence the socket has seen (0: none
    yet): the gateway delivers it sequenced messages from ``since + 1`` on, in order,
    once each. None: the socket starts from whichever sequenced message comes first.
    ``latest``: the group carries a state, not a log: a member gets only versions newer
    than the last it got, and none is held for the ones before it.
    """

    wsid: str
    name: str
    join: bool = True
    since: int | None = None
    latest: bool = False


@dataclass(frozen=True, slots=True)
class WriteGroup:
    """Worker -> gateway: one message to every shared socket of a group on this gateway.

    The fast path of a broadcast: one frame per gateway, not one per socket. With
    ``seq`` (the message's number in the group's sequence, 1, 2, ...), each member gets
    the group's messages in order and once each, whichever worker sent them and
    however often (a message sent again after a crash is dropped).
    """

    name: str
    binary: bool
    payload: bytes
    seq: int = 0


@dataclass(frozen=True, slots=True)
class WriteMany:
    """Worker -> gateway: one message to each of the listed shared sockets."""

    wsids: tuple[str, ...]
    binary: bool
    payload: bytes


Event = (
    Challenge | Hello | Welcome | Refused | Open | Accept | Reject | Data | Write | Close
    | Heartbeat | SocketState | End | Ended | Handoff | Adopt | Group | WriteGroup
    | WriteMany | Ack | Resume | Done
)
