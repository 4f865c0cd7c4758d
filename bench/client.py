"""A lean RFC 6455 client connection for the load generator: bytes in, counters out.

The load generator must cost the machine far less than the servers it measures, so this
is not a general WebSocket client. It does the least work that still keeps the
benchmark exact:

* the upgrade request is written by hand and the answer is checked for status 101 and
  the right ``Sec-WebSocket-Accept`` (RFC 6455 section 4.1), once per socket;
* every frame the client sends is masked (section 5.3) with one XOR of two Python ints
  over the whole payload, not a loop over bytes;
* received frames are split by reading only their two-to-ten-byte headers (section
  5.2); a server's frames are never masked (section 5.1), so a set mask bit is an error.
  A text frame is classified by its first bytes (``bytes.startswith`` at an offset,
  no copy). Every chat message is checked: its ``Message`` field is cut out and
  base64-decoded (``b:<sender>:<seq>:<ns>``), and each sender's numbers must arrive in
  order, without a gap or a repeat, on every socket (:meth:`ClientSocket.check`);
  where latency is sampled the send time is read too. Nothing else is parsed.

A socket is driven by :mod:`bench.loadgen`'s selector loop, which calls :meth:`feed`
with what ``recv`` returned and the time it returned it.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import os
import socket
from array import array
from binascii import a2b_base64

__all__ = [
    "ClientSocket",
    "Phase",
    "ProtocolError",
    "encode_frame",
    "upgrade_request",
]

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_FIN_TEXT = 0x80 | OP_TEXT
#: RFC 6455 section 1.3: the GUID appended to the key before hashing.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: The chat's broadcast message and its status message, as the servers write them
#: (compact JSON, keys in the tutorial's order).
_CHAT_PREFIX = b'{"Message":"'
_STATUS_PREFIX = b'{"Type":"Status"'
_CHAT_FIELD_OFFSET = len(_CHAT_PREFIX)
#: Largest HTTP answer to an upgrade that we wait for before calling it broken.
MAX_RESPONSE_HEAD_BYTES = 16 * 1024


class ProtocolError(Exception):
    """The server broke RFC 6455 (or answered the upgrade with something unreadable)."""


class Phase(enum.Enum):
    """Where a client socket is in its life."""

    CONNECTING = "connecting"  # TCP connect in progress
    UPGRADING = "upgrading"  # upgrade request sent, waiting for the 101
    OPEN = "open"
    CLOSED = "closed"


def upgrade_request(host: str, port: int, path: str) -> tuple[bytes, bytes]:
    """The HTTP/1.1 upgrade request for ``path``, and the accept value it expects back."""
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    return request, accept


def encode_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final, masked frame (RFC 6455 section 5.2) carrying ``payload``."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    mask = os.urandom(4)
    # Section 5.3: byte i is XORed with mask[i % 4]; one big-int XOR does them all.
    key = (mask * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")
    return head + mask + masked


class ClientSocket:
    """One client WebSocket: its TCP socket, what is owed to it, and what it received.

    ``latencies`` is the process's shared sample array (nanoseconds); a socket appends
    to it only when :attr:`timed` is set, so the load generator can choose how many
    sockets pay for latency extraction.
    """

    __slots__ = (
        "accept", "buf", "chat", "echo_expect", "echo_sent_ns", "echoes", "fd",
        "fragments", "index", "last_ns", "latencies", "mismatches", "missing", "other",
        "out", "out_of_order", "own_id", "own_received", "phase", "reject_status",
        "repeats", "seen", "settled", "sock", "started_ns", "status", "timed",
    )

    def __init__(self, index: int, sock: socket.socket, latencies: array[int]) -> None:
        self.index = index
        self.sock = sock
        self.fd = sock.fileno()
        self.phase = Phase.CONNECTING
        self.buf = b""
        self.out = b""
        self.accept = b""
        self.latencies = latencies
        self.timed = False
        #: Chat broadcasts received, status messages received, other text frames (the
        #: chat's Error answers, for instance: reported, so that they are noticed).
        self.chat = 0
        self.status = 0
        self.other = 0
        self.last_ns = 0
        #: A sender's id in the chat text, and how many of its own messages came back.
        self.own_id = b""
        self.own_received = 0
        #: Per sender: the highest number seen, and the numbers skipped so far (a gap:
        #: lost unless they come late, out of order); repeats and late arrivals.
        self.seen: dict[bytes, int] = {}
        self.missing: dict[bytes, set[int]] = {}
        self.repeats = 0
        self.out_of_order = 0
        #: The echo scenario: the payload we wait to see again, and when we sent it.
        self.echo_expect: bytes | None = None
        self.echo_sent_ns = 0
        self.echoes = 0
        self.mismatches = 0
        self.fragments: list[bytes] = []
        self.reject_status = 0
        #: True once the connect attempt is over, opened or not (the loop counts it once).
        self.settled = False
        #: When the connect began (a handshake's latency runs from here to open).
        self.started_ns = 0

    def feed_upgrade(self, data: bytes, now_ns: int) -> bool:
        """Take bytes of the upgrade answer; True once the socket is open.

        A refusal (any status but 101) sets :attr:`reject_status` and closes the phase.
        """
        buf = self.buf + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_RESPONSE_HEAD_BYTES:
                raise ProtocolError("upgrade answer head too long")
            self.buf = buf
            return False
        head, rest = buf[:end], buf[end + 4:]
        self.buf = b""
        try:
            status = int(head[9:12])
        except ValueError:
            raise ProtocolError(f"unreadable status line {head[:40]!r}") from None
        if status != 101:
            self.reject_status = status
            self.phase = Phase.CLOSED
            return False
        # Section 4.1: the client MUST fail the connection on a wrong accept value.
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-accept":
                if value.strip() != self.accept:
                    raise ProtocolError("wrong Sec-WebSocket-Accept")
                break
        else:
            raise ProtocolError("101 without Sec-WebSocket-Accept")
        self.phase = Phase.OPEN
        if rest:  # the server's first frames may come in the same read as its 101
            self.feed(rest, now_ns)
        return True

    def feed(self, data: bytes, now_ns: int) -> None:
        """Split received bytes into frames and count them; keep a partial frame."""
        buf = self.buf + data if self.buf else data
        size = len(buf)
        pos = 0
        while size - pos >= 2:
            length = buf[pos + 1]
            if length < 126:
                start = pos + 2
            elif length == 126:
                if size - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                start = pos + 10
            else:  # section 5.1: a client MUST close on a masked frame from the server
                raise ProtocolError("masked frame from the server")
            end = start + length
            if end > size:
                break
            head = buf[pos]
            pos = end
            if head == _FIN_TEXT:  # the hot path: a whole text message
                self._on_text(buf, start, end, now_ns)
            else:
                self._on_frame(head, buf[start:end], now_ns)
        self.buf = buf[pos:] if pos < size else b""

    def _on_text(self, buf: bytes, start: int, end: int, now_ns: int) -> None:
        if buf.startswith(_CHAT_PREFIX, start):
            self.chat += 1
            self.last_ns = now_ns
            # The chat text is "b:<sender>:<seq>:<monotonic ns at send>".
            field_start = start + _CHAT_FIELD_OFFSET
            text = a2b_base64(buf[field_start:buf.index(b'"', field_start, end)])
            _, sender, seq, sent_ns = text.split(b":", 3)
            self.check(sender, int(seq))
            if self.timed:
                self.latencies.append(now_ns - int(sent_ns))
                if sender == self.own_id:
                    self.own_received += 1
        elif self.echo_expect is not None:
            if buf[start:end] == self.echo_expect:
                self.echoes += 1
                self.latencies.append(now_ns - self.echo_sent_ns)
            else:
                self.mismatches += 1
            self.echo_expect = None
            self.last_ns = now_ns
        elif buf.startswith(_STATUS_PREFIX, start):
            self.status += 1
        else:
            self.other += 1

    def check(self, sender: bytes, seq: int) -> None:
        """Message ``seq`` of ``sender`` arrived: count a repeat, a late arrival (it
        fills a gap) or a gap (numbers skipped, missing until they come)."""
        last = self.seen.get(sender, -1)
        if seq == last + 1:
            self.seen[sender] = seq
        elif seq > last:
            self.missing.setdefault(sender, set()).update(range(last + 1, seq))
            self.seen[sender] = seq
        else:
            gap = self.missing.get(sender)
            if gap is not None and seq in gap:
                gap.discard(seq)
                self.out_of_order += 1
            else:
                self.repeats += 1

    def lost(self, sent: dict[bytes, int]) -> int:
        """Messages of ``sent`` (sender -> how many it sent) this socket never got."""
        lost = 0
        for sender, count in sent.items():
            last = self.seen.get(sender, -1)
            lost += max(0, count - 1 - last) + len(self.missing.get(sender, ()))
        return lost

    def reset_checks(self) -> None:
        """Forget what was checked (a new scenario begins)."""
        self.seen = {}
        self.missing = {}
        self.repeats = self.out_of_order = 0

    def _on_frame(self, head: int, payload: bytes, now_ns: int) -> None:
        """Everything but a whole text message: fragments, control frames, binary."""
        opcode = head & 0x0F
        if opcode == OP_PING:
            self.out += encode_frame(payload, OP_PONG)
        elif opcode == OP_CLOSE:
            if self.phase is Phase.OPEN:
                self.out += encode_frame(payload[:2], OP_CLOSE)  # echo the code back
            self.phase = Phase.CLOSED
        elif opcode in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
            self.fragments.append(payload)
            if head & 0x80:
                whole = b"".join(self.fragments)
                self.fragments = []
                self._on_text(whole, 0, len(whole), now_ns)
        elif opcode != OP_PONG:
            raise ProtocolError(f"unknown opcode {opcode:#x}")
