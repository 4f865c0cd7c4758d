"""The link protocol's state machine: sans-I/O, used by the gateway and the app server.

Theory of operation
-------------------
A *link* is one byte stream (a TCP connection) between a gateway and an app-server
worker process. Many browser sockets share a link in shared mode, so every frame after
the handshake names its socket (see :mod:`gateway.link.events` for the wire format).

:class:`LinkConnection` is a pure state machine in the h11/wsproto style: bytes go in
through :meth:`LinkConnection.receive_data`, events come out of
:meth:`LinkConnection.next_event`, and :meth:`LinkConnection.send` turns an event into
the bytes to write. It does no I/O, keeps no clock and never logs; the callers own the
sockets, the timers and the log lines. Every frame either side writes goes through a
connection, so the state and direction checks below cannot be walked around:
:meth:`~LinkConnection.send_frame` sends a frame encoded once for many links (a
broadcast), :meth:`~LinkConnection.refuse` answers a failed handshake, and
:meth:`~LinkConnection.adopted` starts a connection whose handshake another process
ran (a worker takes over a link its supervisor authenticated).

The handshake is a challenge-response on a shared secret, which never crosses the wire:

1. app server -> ``Challenge(version, server_nonce)``
2. gateway    -> ``Hello(version, gateway_id, gateway_nonce,
                        proof=HMAC(secret, "gateway" | server_nonce | gateway_nonce | id))``
3. app server -> ``Welcome(link_id, worker_pid, appserver_id, classes,
                        proof=HMAC(secret, "appserver" | gateway_nonce | server_nonce | id))``
   or ``Refused(reason)``.

Each side checks the other's proof (so both prove they hold the secret, and a replayed
Hello fails against a fresh challenge). The Welcome names the link (``link_id``), and
both ends log that number. Until the handshake is done only handshake frames are
allowed and frames are capped at :data:`~gateway.link.codec.PREAUTH_MAX_FRAME_BYTES`,
so an unauthenticated peer cannot make us buffer more than that.

Errors follow h11: anything the peer does wrong raises
:class:`~gateway.link.errors.LinkProtocolError` (or its subclass ``LinkAuthError``)
from :meth:`next_event`, after which the connection is ``CLOSED`` (``REFUSING`` for an
app server whose peer failed the challenge: it may still send its ``Refused``). Misuse
by the caller raises :class:`~gateway.link.errors.LinkUsageError`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import struct
from collections.abc import Iterator

from gateway.link.codec import (
    MAX_FRAME_BYTES,
    PREAUTH_MAX_FRAME_BYTES,
    Frame,
    decode_body,
    encode,
)
from gateway.link.errors import LinkAuthError, LinkProtocolError, LinkUsageError
from gateway.link.events import (
    NONCE_BYTES,
    Challenge,
    Event,
    FrameType,
    Hello,
    Refused,
    Welcome,
)

__all__ = ["PROTOCOL_VERSION", "LinkConnection", "LinkState", "Role"]

PROTOCOL_VERSION = 4

_LENGTH = struct.Struct(">I")


class Role(enum.Enum):
    """Which end of the link this connection is."""

    GATEWAY = "gateway"
    APPSERVER = "appserver"


class LinkState(enum.Enum):
    """Where the handshake is. Only ``OPEN`` carries socket traffic."""

    IDLE = "idle"  # app server: before sending the challenge
    AWAIT_CHALLENGE = "await-challenge"  # gateway: nothing received yet
    SEND_HELLO = "send-hello"  # gateway: challenge received, hello not yet sent
    AWAIT_HELLO = "await-hello"  # app server: challenge sent
    SEND_WELCOME = "send-welcome"  # app server: hello verified, welcome not yet sent
    AWAIT_WELCOME = "await-welcome"  # gateway: hello sent
    REFUSING = "refusing"  # app server: the handshake failed; only a Refused may go out
    OPEN = "open"
    CLOSED = "closed"


def _proof(secret: bytes, label: bytes, first: bytes, second: bytes, gateway_id: str) -> bytes:
    message = b"wsgate-link/3 " + label + b"\0" + first + second + gateway_id.encode()
    return hmac.new(secret, message, hashlib.sha256).digest()


# Which frame types may be received in each state, per role. A frame not listed is a
# protocol error (h11's rule: a missing entry in the table is an error).
_HANDSHAKE_IN: dict[tuple[Role, LinkState], frozenset[FrameType]] = {
    (Role.GATEWAY, LinkState.AWAIT_CHALLENGE): frozenset({FrameType.CHALLENGE}),
    (Role.GATEWAY, LinkState.AWAIT_WELCOME): frozenset({FrameType.WELCOME, FrameType.REFUSED}),
    (Role.APPSERVER, LinkState.AWAIT_HELLO): frozenset({FrameType.HELLO}),
}
_OPEN_IN: dict[Role, frozenset[FrameType]] = {
    Role.GATEWAY: frozenset(
        {FrameType.ACCEPT, FrameType.REJECT, FrameType.WRITE, FrameType.CLOSE,
         FrameType.HEARTBEAT, FrameType.END, FrameType.HANDOFF, FrameType.GROUP,
         FrameType.WRITE_GROUP, FrameType.WRITE_MANY, FrameType.ACK, FrameType.DONE}
    ),
    Role.APPSERVER: frozenset(
        {FrameType.OPEN, FrameType.DATA, FrameType.CLOSE, FrameType.HEARTBEAT,
         FrameType.SOCKET_STATE, FrameType.ENDED, FrameType.ADOPT, FrameType.RESUME}
    ),
}
#: What each role sends once the link is open: what the other role receives.
_OPEN_OUT: dict[Role, frozenset[FrameType]] = {
    Role.GATEWAY: _OPEN_IN[Role.APPSERVER],
    Role.APPSERVER: _OPEN_IN[Role.GATEWAY],
}
#: The states in which an app server may still refuse the link.
_MAY_REFUSE = frozenset({LinkState.AWAIT_HELLO, LinkState.SEND_WELCOME, LinkState.REFUSING})


class LinkConnection:
    """One end of a link: bytes in, events out; events in, bytes out."""

    def __init__(
        self, role: Role, *, secret: bytes, max_frame_bytes: int = MAX_FRAME_BYTES
    ) -> None:
        if not secret:
            raise LinkUsageError("a link that is not yet authenticated needs the secret")
        self.role = role
        self.max_frame_bytes = max_frame_bytes
        self._secret = secret
        self._buffer = bytearray()
        self._offset = 0
        self._eof = False
        self._our_nonce = b""
        self._peer_nonce = b""
        #: The gateway's id, learned from (or sent in) the Hello.
        self.gateway_id = ""
        #: The link's number, chosen by the app server and carried in the Welcome.
        self.link_id = 0
        self.state = LinkState.AWAIT_CHALLENGE if role is Role.GATEWAY else LinkState.IDLE

    @classmethod
    def adopted(
        cls, role: Role, *, gateway_id: str, link_id: int,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> LinkConnection:
        """A connection whose handshake another process ran: it starts ``OPEN``.

        A worker adopts the links its supervisor authenticated; it never holds the
        secret, so it could not run a handshake of its own.
        """
        conn = cls.__new__(cls)
        conn.role = role
        conn.max_frame_bytes = max_frame_bytes
        conn._secret = b""
        conn._buffer = bytearray()
        conn._offset = 0
        conn._eof = False
        conn._our_nonce = conn._peer_nonce = b""
        conn.gateway_id = gateway_id
        conn.link_id = link_id
        conn.state = LinkState.OPEN
        return conn

    # --- sending ----------------------------------------------------------------------

    def initiate(self) -> bytes:
        """App server only: start the handshake; return the Challenge frame's bytes."""
        if self.role is not Role.APPSERVER or self.state is not LinkState.IDLE:
            raise LinkUsageError(f"cannot initiate as {self.role.value} in {self.state.value}")
        self._our_nonce = os.urandom(NONCE_BYTES)
        self.state = LinkState.AWAIT_HELLO
        return encode(Challenge(PROTOCOL_VERSION, self._our_nonce)).data

    def refuse(self, reason: str, *, busy: bool = False) -> bytes:
        """App server only: refuse the link (a failed proof, no worker free) and close.

        Allowed until the Welcome is sent, and after the peer failed the challenge.
        """
        if self.role is not Role.APPSERVER or self.state not in _MAY_REFUSE:
            raise LinkUsageError(f"cannot refuse as {self.role.value} in {self.state.value}")
        self.state = LinkState.CLOSED
        return encode(Refused(reason, busy)).data

    def send(self, event: Event) -> bytes:
        """Return the bytes for ``event``; handshake events get their nonce and proof.

        Raises :class:`~gateway.link.errors.FrameTooBig` when the event does not fit in
        a frame, and :class:`~gateway.link.errors.LinkUsageError` when this end may not
        send it now.
        """
        if isinstance(event, Hello):
            return self._send_hello(event)
        if isinstance(event, Welcome):
            return self._send_welcome(event)
        if isinstance(event, Refused):
            return self.refuse(event.reason, busy=event.busy)
        return self.send_frame(encode(event))

    def send_frame(self, frame: Frame) -> bytes:
        """Check that this end may send an already-encoded frame now; return its bytes.

        A broadcast (a Registry update for every link) encodes once and passes the same
        frame to each link's connection.
        """
        if self.state is not LinkState.OPEN:
            raise LinkUsageError(f"cannot send {frame.kind.name} in {self.state.value}")
        if frame.kind not in _OPEN_OUT[self.role]:
            raise LinkUsageError(f"a {self.role.value} does not send {frame.kind.name}")
        return frame.data

    def _send_hello(self, event: Hello) -> bytes:
        if self.role is not Role.GATEWAY or self.state is not LinkState.SEND_HELLO:
            raise LinkUsageError(f"cannot send Hello in {self.state.value}")
        self._our_nonce = os.urandom(NONCE_BYTES)
        self.gateway_id = event.gateway_id
        proof = _proof(self._secret, b"gateway", self._peer_nonce, self._our_nonce,
                       event.gateway_id)
        frame = encode(Hello(PROTOCOL_VERSION, event.gateway_id, self._our_nonce, proof))
        self.state = LinkState.AWAIT_WELCOME
        return frame.data

    def _send_welcome(self, event: Welcome) -> bytes:
        if self.role is not Role.APPSERVER or self.state is not LinkState.SEND_WELCOME:
            raise LinkUsageError(f"cannot send Welcome in {self.state.value}")
        proof = _proof(self._secret, b"appserver", self._peer_nonce, self._our_nonce,
                       self.gateway_id)
        frame = encode(Welcome(event.link_id, event.worker_pid, event.appserver_id,
                               event.classes, proof))
        self.link_id = event.link_id
        self.state = LinkState.OPEN
        return frame.data

    # --- receiving --------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed its side."""
        if self.state is LinkState.CLOSED and data:
            raise LinkUsageError("the link is closed")
        if not data:
            self._eof = True
            return
        if self._offset > 65536 and self._offset * 2 > len(self._buffer):
            del self._buffer[: self._offset]
            self._offset = 0
        self._buffer += data

    @property
    def eof(self) -> bool:
        """True once the peer closed and every complete frame has been consumed."""
        return self._eof and self.buffered == 0

    def take_buffered(self) -> bytes:
        """Remove and return the bytes received but not yet parsed (to hand a link on)."""
        rest = bytes(self._buffer[self._offset :])
        self._buffer.clear()
        self._offset = 0
        return rest

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events."""
        return len(self._buffer) - self._offset

    def next_event(self) -> Event | None:
        """Return the next complete event, or None when more bytes are needed."""
        if self.state in (LinkState.CLOSED, LinkState.REFUSING):
            return None
        try:
            return self._next_event()
        except LinkAuthError:
            refusing = self.role is Role.APPSERVER and self.state in _MAY_REFUSE
            self.state = LinkState.REFUSING if refusing else LinkState.CLOSED
            raise
        except LinkProtocolError:
            self.state = LinkState.CLOSED
            raise

    def events(self) -> Iterator[Event]:
        """Yield every complete event buffered so far."""
        while (event := self.next_event()) is not None:
            yield event

    def _next_event(self) -> Event | None:
        available = len(self._buffer) - self._offset
        if available < 4:
            if self._eof and available:
                raise LinkProtocolError("link closed in the middle of a frame")
            return None
        (length,) = _LENGTH.unpack_from(self._buffer, self._offset)
        limit = self.max_frame_bytes if self.state is LinkState.OPEN else PREAUTH_MAX_FRAME_BYTES
        if length == 0:
            raise LinkProtocolError("empty frame")
        if length > limit:
            raise LinkProtocolError(f"frame of {length} bytes exceeds the limit of {limit}")
        if available < 4 + length:
            if self._eof:
                raise LinkProtocolError("link closed in the middle of a frame")
            return None
        start = self._offset + 4
        type_byte = self._buffer[start]
        body = bytes(self._buffer[start + 1 : start + length])
        self._offset = start + length
        if self._offset == len(self._buffer):
            self._buffer.clear()
            self._offset = 0
        self._check_allowed(type_byte)
        event = decode_body(type_byte, body)
        return self._after_receive(event)

    def _check_allowed(self, type_byte: int) -> None:
        try:
            kind = FrameType(type_byte)
        except ValueError:
            raise LinkProtocolError(f"unknown frame type 0x{type_byte:02x}") from None
        if self.state is LinkState.OPEN:
            allowed = _OPEN_IN[self.role]
        else:
            allowed = _HANDSHAKE_IN.get((self.role, self.state), frozenset())
        if kind not in allowed:
            raise LinkProtocolError(
                f"unexpected {kind.name} frame for a {self.role.value} in {self.state.value}"
            )

    def _after_receive(self, event: Event) -> Event:
        if isinstance(event, Challenge):
            self._check_version(event.version)
            self._peer_nonce = event.nonce
            self.state = LinkState.SEND_HELLO
        elif isinstance(event, Hello):
            self._check_version(event.version)
            expected = _proof(self._secret, b"gateway", self._our_nonce, event.nonce,
                              event.gateway_id)
            if not hmac.compare_digest(expected, event.proof):
                raise LinkAuthError(
                    f"gateway {event.gateway_id!r} failed the challenge (wrong secret)"
                )
            self._peer_nonce = event.nonce
            self.gateway_id = event.gateway_id
            self.state = LinkState.SEND_WELCOME
        elif isinstance(event, Welcome):
            expected = _proof(self._secret, b"appserver", self._our_nonce, self._peer_nonce,
                              self.gateway_id)
            if not hmac.compare_digest(expected, event.proof):
                raise LinkAuthError("app server failed the challenge (wrong secret)")
            self.link_id = event.link_id
            self.state = LinkState.OPEN
        elif isinstance(event, Refused):
            self.state = LinkState.CLOSED
        return event

    def _check_version(self, version: int) -> None:
        if version != PROTOCOL_VERSION:
            raise LinkProtocolError(
                f"link protocol version {version} is not supported (this end speaks "
                f"{PROTOCOL_VERSION})"
            )
