"""One browser WebSocket held by the gateway: its life, its inbound and outbound halves.

A :class:`BrowserSocket` has one :class:`Phase`, changed only through
:meth:`BrowserSocket._enter`, which looks every move up in :data:`TRANSITIONS` (h11's
rule: a move missing from the table is a bug, and raises). Its methods own the moves:

* ``QUEUED``: the upgrade arrived; it waits for a free link (IRIS: the request queue).
* ``CONNECTING``: the worker was sent ``Open`` and runs ``OnPreServer``; every worker
  was told the socket exists (the Registry), so it must hear of its end.
* ``OPEN``: the gateway answered 101; :meth:`run` reads the browser's frames and
  forwards whole messages to the socket's worker (its *home* link). Each message is
  kept until that worker acknowledges it. A silent socket has no reader task: it is
  *parked* (gateway/parking.py) until the browser sends again.
* ``DETACHED``: open to the browser, but its worker is gone (a crash, an app-server
  restart). What the browser sends is held, within :attr:`SocketOwner.hold_bytes`
  (over it the socket closes with 1013); writes from other workers still reach it.
  Another worker resumes it (:meth:`attach`) and gets what was never acknowledged.
* ``CLOSING``: nothing more goes out. The gateway sent its close frame (RFC 6455
  section 7.1.2) and waits, at most :data:`CLOSE_TIMEOUT_S`, for the browser's, then
  hangs up.
* ``CLOSED``: forgotten everywhere; the TCP socket is closed.

Outbound frames are encoded once by the caller (:mod:`gateway.wsframe`) and queued with
:meth:`queue`; :meth:`flush` sends what the kernel takes at once and starts a drain task
only when it takes less, so a broadcast costs one ``send`` per socket. Inbound, wsproto
parses the browser's frames and does the closing handshake.

The socket reports to its :class:`SocketOwner` (the gateway): what to forward, and
when the Registry must hear that it opened or closed. It never imports the gateway.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from gateway.link.events import Accept, Handoff, Reject
from gateway.link.net import READS_PER_YIELD, SendBuffer, SendOverflow, receive_some

if TYPE_CHECKING:
    from gateway.pool import GatewayLink

__all__ = ["CLOSE_TIMEOUT_S", "TRANSITIONS", "BrowserSocket", "Phase", "SocketOwner", "Step"]

log = logging.getLogger(__name__)

#: How long a closing socket waits for the browser's close frame before hanging up.
CLOSE_TIMEOUT_S = 5.0
#: After a protocol error, how long the gateway reads what the browser still sends.
LINGER_S = 1.0


class Phase(enum.Enum):
    """Where a browser socket is in its life (see the module docstring)."""

    QUEUED = "queued"
    CONNECTING = "connecting"
    OPEN = "open"
    DETACHED = "detached"
    CLOSING = "closing"
    CLOSED = "closed"


class Step(enum.Enum):
    """What moves a socket from one phase to the next."""

    OPEN_SENT = "open-sent"  # a worker was sent Open (or Adopt)
    ACCEPTED = "accepted"  # the worker accepted; the 101 is queued
    FAILED = "failed"  # the handshake failed: refused, timed out, worker lost
    DETACH = "detach"  # its worker is gone
    ATTACH = "attach"  # another worker resumes it
    CLOSE = "close"  # the gateway sent its close frame
    BROWSER_CLOSED = "browser-closed"  # the browser's close frame, or its TCP end
    ABORT = "abort"  # hung up on: no answer to our close frame in time


#: Every move a socket can make. A (phase, step) pair not listed is a bug.
TRANSITIONS: dict[tuple[Phase, Step], Phase] = {
    (Phase.QUEUED, Step.OPEN_SENT): Phase.CONNECTING,
    (Phase.QUEUED, Step.FAILED): Phase.CLOSED,
    (Phase.CONNECTING, Step.OPEN_SENT): Phase.CONNECTING,  # moved to a dedicated worker
    (Phase.CONNECTING, Step.ACCEPTED): Phase.OPEN,
    (Phase.CONNECTING, Step.FAILED): Phase.CLOSED,
    (Phase.OPEN, Step.CLOSE): Phase.CLOSING,
    (Phase.OPEN, Step.BROWSER_CLOSED): Phase.CLOSED,
    (Phase.OPEN, Step.DETACH): Phase.DETACHED,
    (Phase.DETACHED, Step.ATTACH): Phase.OPEN,
    (Phase.DETACHED, Step.CLOSE): Phase.CLOSING,
    (Phase.DETACHED, Step.BROWSER_CLOSED): Phase.CLOSED,
    (Phase.CLOSING, Step.BROWSER_CLOSED): Phase.CLOSED,
    (Phase.CLOSING, Step.ABORT): Phase.CLOSED,
}
#: Phases in which every worker knows the socket exists (so must hear that it closed).
_ANNOUNCED = frozenset({Phase.CONNECTING, Phase.OPEN, Phase.DETACHED})
#: Phases in which the browser is connected and frames go out to it.
_LIVE = frozenset({Phase.OPEN, Phase.DETACHED})


class SocketOwner(Protocol):
    """What a browser socket reports to: the gateway."""

    @property
    def stats(self) -> Counter[str]:
        """The gateway's counters (a socket counts drops and oversized messages)."""

    @property
    def max_message_bytes(self) -> int:
        """Largest message a browser may send; larger ones close with 1009."""

    @property
    def hold_bytes(self) -> int:
        """Bytes of a socket's messages kept until its worker acknowledges them; over
        it (a worker gone too long, or too slow) the socket closes with 1013."""

    def socket_opened(self, bs: BrowserSocket) -> None:
        """The socket is open: the Registry hears its mode."""

    def socket_closing(self, bs: BrowserSocket) -> None:
        """The socket is closing or closed: the Registry hears it now, once."""

    def socket_finished(self, bs: BrowserSocket) -> None:
        """The socket is gone for good: forget it."""

    def forward(self, bs: BrowserSocket, seq: int, binary: bool, payload: bytes) -> None:
        """Message ``seq`` from the browser, for the socket's worker (if it has one)."""

    def spawn(self, task: Callable[[], object]) -> None:
        """Run a task that outlives the caller (a drain)."""

    def park(self, bs: BrowserSocket) -> None:
        """Watch the silent socket without a task; :meth:`BrowserSocket.wake` when it
        has something to read."""

    def unpark(self, bs: BrowserSocket) -> bool:
        """Stop watching it (False if it was not parked)."""

    def reading(self, bs: BrowserSocket) -> None:
        """The socket starts with a reader task, to be parked once silent."""


#: A close frame's reason has at most 123 bytes (RFC 6455 section 5.5).
_REASON_BYTES = 120


def _short_reason(reason: str) -> str:
    """``reason`` cut to what a close frame carries, on a UTF-8 character boundary."""
    return reason.encode()[:_REASON_BYTES].decode(errors="ignore")


class _Handshake:
    """What a socket needs only until it opens (dropped then: memory per idle socket)."""

    __slots__ = ("early", "pending_close", "reply", "reply_ready")

    def __init__(self) -> None:
        self.reply: Accept | Reject | Handoff | None = None
        self.reply_ready = trio.Event()
        #: Frames written before the 101, sent right after it; the flag marks frames only
        #: a shared socket may get (from other links, or groups).
        self.early: list[tuple[bytes, bool]] = []
        #: A close asked for during the handshake, carried out right after the 101.
        self.pending_close: tuple[int, str] | None = None


class BrowserSocket:
    """One browser WebSocket held by the gateway; see the module docstring."""

    __slots__ = (
        "_drain_running", "_handshake", "_input_read", "_linger", "_parkable", "_parked",
        "_parking", "_reader_scope", "_received", "_unacked",
        "_unacked_bytes", "binary", "class_name", "client_address", "close_code",
        "close_reason", "groups", "home", "last_activity", "last_heard", "out", "owner", "phase",
        "session", "shared", "sock", "state", "ws", "wsid",
    )

    def __init__(
        self, owner: SocketOwner, wsid: str, sock: socket.socket, client_address: str,
        class_name: str, *, buffer_limit: int,
    ) -> None:
        self.owner = owner
        self.wsid = wsid
        self.sock = sock
        self.client_address = client_address
        self.class_name = class_name
        self.out = SendBuffer(sock, limit=buffer_limit)
        self.phase = Phase.QUEUED
        #: The link of the worker serving the socket, while that worker must hear of its
        #: end; None once it knows (it asked for the close, refused, or is gone).
        self.home: GatewayLink | None = None
        self.shared = True
        self.binary = False
        self.ws: Connection | None = None
        #: The CSP session id (CSPSESSIONID cookie), announced with the socket.
        self.session = ""
        #: When a message last went either way (the session timeout counts from it).
        self.last_activity = trio.current_time()
        #: When the browser last sent anything (a pong too): the heartbeat counts from it.
        self.last_heard = self.last_activity
        #: The groups the socket belongs to (None until it joins one: most never do).
        self.groups: set[str] | None = None
        self.close_code = 1006
        self.close_reason = ""
        #: The instance's attributes after OnPreServer (JSON, from the Accept): what a
        #: worker that resumes the socket restores.
        self.state = b""
        #: Messages received from the browser (the last one's number).
        self._received = 0
        #: Messages the worker has not acknowledged yet: (number, binary, payload).
        self._unacked: list[tuple[int, bool, bytes]] = []
        self._unacked_bytes = 0
        self._handshake: _Handshake | None = _Handshake()
        self._reader_scope: trio.CancelScope | None = None
        self._drain_running = False
        #: After a protocol error: read and drop what the browser still sends, briefly,
        #: so that closing does not reset the connection under our close frame.
        self._linger = False
        #: Plain TCP (TLS may hold decrypted bytes no epoll event announces).
        self._parkable = not isinstance(sock, ssl.SSLSocket)
        #: Frames came with the request: wsproto holds them, the reader must start.
        self._input_read = False
        #: No reader task: the socket waits in the gateway's parking (gateway/parking.py).
        self._parked = False
        #: The reader was cancelled to park the socket.
        self._parking = False

    @property
    def mode(self) -> str:
        """``shared`` or ``private`` (IRIS: SharedConnection 1 or 0)."""
        return "shared" if self.shared else "private"

    def _enter(self, step: Step) -> Phase:
        """Make one move of :data:`TRANSITIONS`; return the phase it left."""
        before = self.phase
        try:
            self.phase = TRANSITIONS[(before, step)]
        except KeyError:
            raise RuntimeError(f"wsid={self.wsid}: no move {step.value} from "
                               f"{before.value}") from None
        return before

    # --- the handshake -----------------------------------------------------------------

    def opening(self, link: GatewayLink) -> None:
        """``Open`` (or ``Adopt``) goes to ``link``'s worker, which becomes its home."""
        self._enter(Step.OPEN_SENT)
        self.home = link
        link.sockets.add(self.wsid)
        assert self._handshake is not None
        self._handshake.reply = None
        self._handshake.reply_ready = trio.Event()

    def leave_home(self) -> None:
        """The home worker is gone or knows the socket's end: tell it nothing more."""
        if self.home is not None:
            self.home.sockets.discard(self.wsid)
            self.home = None

    def answered(self, reply: Accept | Reject | Handoff | None) -> None:
        """The worker's answer to ``Open`` (None: no answer will come, the worker is gone)."""
        if self._handshake is not None:
            self._handshake.reply = reply
            self._handshake.reply_ready.set()

    async def wait_answer(self, timeout_s: float) -> Accept | Reject | Handoff | None:
        """The worker's answer, or None when it did not come within ``timeout_s``."""
        assert self._handshake is not None
        with trio.move_on_after(timeout_s):
            await self._handshake.reply_ready.wait()
        return self._handshake.reply

    def accept(self, response: bytes, ws: Connection, reply: Accept, trailing: bytes) -> None:
        """The worker accepted: queue the 101 and what was written meanwhile; open."""
        handshake = self._handshake
        assert handshake is not None
        self._enter(Step.ACCEPTED)
        self._handshake = None
        self.shared, self.binary, self.ws = reply.shared, reply.binary, ws
        self.state = reply.state
        self._reader_scope = trio.CancelScope()
        self.out.push_unchecked(response)
        for frame, shared_only in handshake.early:
            if self.shared or not shared_only:  # others may not write to a private socket
                self.out.push_unchecked(frame)
        self.owner.socket_opened(self)
        if handshake.pending_close is not None:
            self.close(*handshake.pending_close)
        self.flush()
        ws.receive_data(trailing)
        self._input_read = bool(trailing)

    def fail(self) -> None:
        """The handshake failed (refused, timed out, cancelled): forget the socket."""
        if self.phase in (Phase.QUEUED, Phase.CONNECTING):
            self._finish(Step.FAILED)

    # --- a worker's crash ----------------------------------------------------------------

    def detach(self) -> None:
        """The home worker is gone: hold the browser's messages until another takes over."""
        self.leave_home()
        self._enter(Step.DETACH)

    def attach(self, link: GatewayLink) -> list[tuple[int, bool, bytes]]:
        """``link``'s worker resumes the socket; return the messages to send it again
        (those never acknowledged), in order."""
        self._enter(Step.ATTACH)
        self.home = link
        link.sockets.add(self.wsid)
        return list(self._unacked)

    def acknowledged(self, seq: int) -> None:
        """The worker handled the browser's messages up to ``seq``: forget them."""
        unacked = self._unacked
        while unacked and unacked[0][0] <= seq:
            self._unacked_bytes -= len(unacked.pop(0)[2])

    def _received_message(self, binary: bool, payload: bytes) -> None:
        self._received += 1
        self._unacked.append((self._received, binary, payload))
        self._unacked_bytes += len(payload)
        limit = self.owner.hold_bytes
        if self._unacked_bytes > limit:
            log.warning("wsid=%s closed: %d bytes sent by the browser not acknowledged "
                        "(limit %d)", self.wsid, self._unacked_bytes, limit)
            self.owner.stats["sockets_over_hold"] += 1
            self.close(1013, "the app server is not taking messages; try again later")
            return
        self.owner.forward(self, self._received, binary, payload)

    # --- outbound ----------------------------------------------------------------------

    def queue(self, frame: bytes, *, shared_only: bool = False) -> bool:
        """Queue an encoded frame; False (and the socket aborted) if the peer is too slow.

        ``shared_only`` frames (writes from other links, group writes) reach a socket
        still in its handshake only if it turns out shared.
        """
        if self.phase in _LIVE:
            try:
                self.out.push(frame)
            except SendOverflow as exc:
                # It gets no more data: its close frame goes after what is queued (the
                # bound is never below one message), and the reader gives it
                # CLOSE_TIMEOUT_S to read on; then it is hung up on.
                log.warning("wsid=%s closed: slow client (%s)", self.wsid, exc)
                self.owner.stats["sockets_dropped"] += 1
                self.close(1008, "slow client")
                return False
            return True
        if self._handshake is not None:
            self._handshake.early.append((frame, shared_only))
            return True
        return False

    def flush(self) -> None:
        """Send what the kernel takes now; hand the rest to a drain task."""
        if self._drain_running or self.out.try_send():
            return
        self._drain_running = True
        self.owner.spawn(self._drain)

    async def _drain(self) -> None:
        try:
            await self.out.drain()
        except (trio.ClosedResourceError, OSError):
            pass
        finally:
            self._drain_running = False

    # --- closing -----------------------------------------------------------------------

    def close(self, code: int, reason: str) -> bool:
        """Close from the server side (RFC 6455 section 7.1.2); False if already closing.

        Before the 101 the close is carried out right after it. The Registry hears of
        it now, not when the browser has answered, so that OpenServer elsewhere fails at
        once instead of writing into the void.
        """
        if self._handshake is not None:
            if self._handshake.pending_close is not None:
                return False
            self._handshake.pending_close = (code, reason)
            return True
        if self.phase not in _LIVE or self.ws is None:
            return False
        self.close_code, self.close_reason = code, reason
        if self.ws.state is ConnectionState.OPEN:
            self.out.push_unchecked(self.ws.send(CloseConnection(code=code, reason=reason)))
        self._enter(Step.CLOSE)
        self.owner.socket_closing(self)
        self._cancel_reader(CLOSE_TIMEOUT_S)
        self.flush()
        return True

    def _cancel_reader(self, after_s: float) -> None:
        deadline = trio.current_time() + after_s
        if self._parked:  # the closing handshake needs a reader
            self.wake(deadline)
        elif self._reader_scope is not None:
            self._reader_scope.deadline = min(self._reader_scope.deadline, deadline)

    def _finish(self, step: Step) -> None:
        """Move to CLOSED and forget the socket everywhere, exactly once."""
        if self.phase is Phase.CLOSED:
            return
        if self._enter(step) in _ANNOUNCED:  # CLOSING has announced it already
            self.owner.socket_closing(self)
        self.owner.socket_finished(self)
        self.out.try_send()  # a last close frame, if the kernel takes it
        if not self._linger:  # else the close frame may still be on its way
            self.out.closed = True

    # --- inbound -----------------------------------------------------------------------

    def start_reading(self) -> None:
        """Right after the 101: park the socket until the browser speaks, or start its
        reader when frames came with the request, or it is closing already, or it can
        never be parked (TLS)."""
        if self._parkable and not self._input_read and self.phase in _LIVE:
            self.owner.park(self)
            self._parked = True
            return
        if self._parkable:
            self.owner.reading(self)  # parked once it is silent
        self.owner.spawn(self.run)

    @property
    def parked(self) -> bool:
        """No reader task: the socket waits in the gateway's parking."""
        return self._parked

    def park_reader(self) -> bool:
        """A silent open socket: end its reader, to park it (True if it will be)."""
        if (self._parked or self._parking or not self._parkable or self.phase not in _LIVE
                or self._reader_scope is None or self._reader_scope.cancel_called):
            return False
        self._parking = True
        self._reader_scope.cancel()
        return True

    def wake(self, deadline: float = math.inf) -> None:
        """The parked socket has something to read (or must close): start its reader,
        which gives up at ``deadline``."""
        if self._parked and self.owner.unpark(self):
            self._parked = False
            self._reader_scope = trio.CancelScope(deadline=deadline)
            self.owner.spawn(self.run)

    def hang_up_parked(self) -> None:
        """The gateway stops with the socket parked: forget it and close its TCP socket,
        as its reader would have."""
        if self._parked and self.owner.unpark(self):
            self._parked = False
            if self.phase in _LIVE:
                self._finish(Step.BROWSER_CLOSED)
            self.sock.close()

    async def run(self) -> None:
        """Read the open socket until it closes, then forget it and close its TCP
        socket; or until it is parked (:meth:`park_reader`), with nothing more to do."""
        try:
            while True:
                scope = self._reader_scope
                assert scope is not None
                with scope:
                    await self._read_loop()
                if not self._parking:
                    break
                self._parking = False
                if self.phase in _LIVE:
                    self.owner.park(self)  # if it raises, the socket ends below
                    self._parked = True
                    return
                if self.phase is not Phase.CLOSING:
                    break
                # Closed by us while it was being parked: read on for the browser's
                # close frame, within the closing deadline.
                self._reader_scope = trio.CancelScope(deadline=scope.deadline)
        except (trio.ClosedResourceError, OSError):
            pass
        except Exception:
            log.exception("wsid=%s internal error", self.wsid)
        finally:
            if not self._parked:
                await self._end()

    async def _end(self) -> None:
        if self.phase is Phase.CLOSING:  # no answer to our close, or we hung up
            self._finish(Step.ABORT)
        elif self.phase in _LIVE:
            self._finish(Step.BROWSER_CLOSED)
        if self._linger:
            with trio.CancelScope(shield=True):
                await self._drain_and_hang_up()
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()

    async def _drain_and_hang_up(self) -> None:
        """Send what is queued (our close frame), half-close, and read what the browser
        still sends until it hangs up (at most LINGER_S): closing with unread input
        would make the kernel reset the connection, and the browser lose the frame."""
        with trio.move_on_after(LINGER_S):
            with contextlib.suppress(OSError):
                await self.out.drain()
                self.sock.shutdown(socket.SHUT_WR)
                while await receive_some(self.sock):
                    pass
        self.out.closed = True

    async def _read_loop(self) -> None:
        ws = self.ws
        assert ws is not None
        owner = self.owner
        stats = owner.stats
        limit = owner.max_message_bytes
        parts: list[bytes] = []
        size = 0
        reads = 0
        while True:
            for event in ws.events():
                if isinstance(event, TextMessage | BytesMessage):
                    if self.phase not in _LIVE:
                        continue  # data after our close frame is discarded (RFC 6455 7.1.2)
                    chunk = event.data.encode() if isinstance(event, TextMessage) else event.data
                    size += len(chunk)
                    if size > limit:
                        parts, size = [], 0
                        stats["messages_too_big"] += 1
                        log.info("wsid=%s closed: message over %d bytes", self.wsid, limit)
                        self.close(1009, f"message too big (limit {limit} bytes)")
                        continue
                    parts.append(bytes(chunk))
                    self.last_activity = trio.current_time()
                    if event.message_finished:
                        payload = parts[0] if len(parts) == 1 else b"".join(parts)
                        parts, size = [], 0
                        self._received_message(isinstance(event, BytesMessage), payload)
                elif isinstance(event, Ping):
                    self.out.push_unchecked(ws.send(event.response()))
                    self.flush()
                elif isinstance(event, CloseConnection):
                    self._browser_closed(ws, event)
                    return
            if ws.state is ConnectionState.CLOSED:
                self._finish(Step.BROWSER_CLOSED)
                return
            reads += 1
            if reads % READS_PER_YIELD == 0:
                await trio.lowlevel.checkpoint()
            data = await receive_some(self.sock, checkpoint=False)
            self.last_heard = trio.current_time()
            stats["bytes_in"] += len(data)
            ws.receive_data(data or None)

    def _browser_closed(self, ws: Connection, event: CloseConnection) -> None:
        if ws.state is ConnectionState.REMOTE_CLOSING:  # its close frame: answer it
            self.out.push_unchecked(ws.send(event.response()))
        elif ws.state is ConnectionState.OPEN:
            # wsproto found a protocol error (a bad frame, invalid UTF-8, a bad close
            # code...): say why in a close frame before the TCP connection ends
            # (RFC 6455 sections 7.1.7 and 8.1), rather than just hanging up.
            reason = _short_reason(event.reason or "")
            log.info("wsid=%s protocol error (%d): %s", self.wsid, event.code, reason)
            self.owner.stats["protocol_errors"] += 1
            self.out.push_unchecked(ws.send(CloseConnection(code=event.code, reason=reason)))
            self._linger = True
        if self.phase in _LIVE:  # the browser closed first
            self.close_code, self.close_reason = event.code, event.reason or ""
        self._finish(Step.BROWSER_CLOSED)
