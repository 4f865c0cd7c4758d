"""A socket's worker-side end: the queue ``Read`` takes from, and the phases of its life.

IRIS queues a shared socket's incoming frames in ``^CacheTemp.cspWebSockets("DATA",
wsid, n)`` and wakes the process waiting in ``Read``. Here the frames arrive over the
socket's home link into the port's inbox, and a waiting ``Read`` is woken by an event.
Every instance bound to the socket on this worker (the one running ``Server()`` and any
made by ``OpenServer``) shares the port, so a piece that ``Read`` leaves over is
continued by the next ``Read``, whoever calls it.

A port has one :class:`PortPhase`, moved only by :meth:`SocketPort._move` through
:data:`TRANSITIONS`. The table is where "OnPostServer runs exactly once" is enforced:
the only way into ``POST_SERVER`` is the socket closing after ``Server()`` returned (or
``Server()`` returning after it closed), and :meth:`SocketPort.finish` leaves it at once
for ``FINISHING`` (then ``DONE`` once OnPostServer returned). ``EndServer`` moves the
port to ``*_ENDED``/``DONE`` instead, because its caller runs OnPostServer itself
(IRIS); across workers the gateway decides which ``EndServer`` was first, and tells
the home worker with ``Close(ended=True)``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from appserver.errors import ClientClosed, ReadTimeout
from gateway.link.events import Ack

if TYPE_CHECKING:
    from appserver.csp import WebSocket
    from gateway.link.driver import Link

__all__ = ["MAX_INBOX_BYTES", "TRANSITIONS", "PortPhase", "PortStep", "SocketPort"]

log = logging.getLogger(__name__)

#: Unread bytes one socket may have waiting on its worker before it is closed (1008).
MAX_INBOX_BYTES = 16 * 1024 * 1024


class PortPhase(enum.Enum):
    """Where a socket's server object is in its life on this worker."""

    PREPARING = "preparing"  # OnPreServer runs (or a resumed socket's state is restored)
    SERVING = "serving"  # Server() runs; the socket is open
    SERVING_CLOSED = "serving-closed"  # Server() runs; the socket closed (Read: 7951)
    SERVING_ENDED = "serving-ended"  # Server() runs; EndServer's caller ran OnPostServer
    WAITING = "waiting"  # Server() returned; the (shared) socket stays open
    POST_SERVER = "post-server"  # closed and Server() done: OnPostServer is due, once
    FINISHING = "finishing"  # OnPostServer runs
    DETACHED = "detached"  # the link is gone while the socket was open: nothing runs here
    DONE = "done"  # nothing is left to run; the port is forgotten


class PortStep(enum.Enum):
    """What moves a port."""

    ACCEPTED = "accepted"  # OnPreServer accepted; Server() starts
    DROPPED = "dropped"  # refused or moved to another worker: it never served here
    CLOSED = "closed"  # the browser socket closed (client, crash, gateway)
    ENDED = "ended"  # EndServer ran: its caller runs OnPostServer
    RETURNED = "returned"  # Server() returned (or raised, or was cancelled)
    FINISHING = "finishing"  # OnPostServer starts
    FINISHED = "finished"  # OnPostServer ran
    DETACH = "detach"  # the link to the socket's gateway is gone


#: Every move a port makes; a (phase, step) pair not listed is ignored (a late
#: notification) or, for the steps the port itself takes, a bug.
TRANSITIONS: dict[tuple[PortPhase, PortStep], PortPhase] = {
    (PortPhase.PREPARING, PortStep.ACCEPTED): PortPhase.SERVING,
    (PortPhase.PREPARING, PortStep.DROPPED): PortPhase.DONE,
    (PortPhase.PREPARING, PortStep.CLOSED): PortPhase.DONE,  # the gateway gave up
    (PortPhase.PREPARING, PortStep.ENDED): PortPhase.DONE,
    (PortPhase.SERVING, PortStep.CLOSED): PortPhase.SERVING_CLOSED,
    (PortPhase.SERVING, PortStep.ENDED): PortPhase.SERVING_ENDED,
    (PortPhase.SERVING, PortStep.RETURNED): PortPhase.WAITING,
    (PortPhase.SERVING_CLOSED, PortStep.RETURNED): PortPhase.POST_SERVER,
    (PortPhase.SERVING_ENDED, PortStep.RETURNED): PortPhase.DONE,
    (PortPhase.WAITING, PortStep.CLOSED): PortPhase.POST_SERVER,
    (PortPhase.WAITING, PortStep.ENDED): PortPhase.DONE,
    (PortPhase.POST_SERVER, PortStep.FINISHING): PortPhase.FINISHING,
    (PortPhase.FINISHING, PortStep.FINISHED): PortPhase.DONE,
    (PortPhase.PREPARING, PortStep.DETACH): PortPhase.DETACHED,
    (PortPhase.SERVING, PortStep.DETACH): PortPhase.DETACHED,
    (PortPhase.WAITING, PortStep.DETACH): PortPhase.DONE,
    (PortPhase.DETACHED, PortStep.RETURNED): PortPhase.DONE,
    (PortPhase.DETACHED, PortStep.DROPPED): PortPhase.DONE,
}
#: Phases in which the browser socket is open.
_OPEN = frozenset({PortPhase.PREPARING, PortPhase.SERVING, PortPhase.WAITING})

PostServer = Callable[["WebSocket"], Awaitable[object]]


class SocketPort:
    """The worker-side state of one socket whose home link ends on this worker."""

    __slots__ = (
        "_acked", "_pumping", "_taken", "_waiter", "close_code", "inbox", "inbox_bytes",
        "instance", "link", "phase", "scope", "shared", "wsid",
    )

    def __init__(self, wsid: str, link: Link, instance: WebSocket) -> None:
        self.wsid = wsid
        self.link = link
        self.instance = instance
        self.phase = PortPhase.PREPARING
        #: The mode OnPreServer chose (meaningful once the port is past PREPARING).
        self.shared = True
        # A list, not a deque: an empty deque costs 600 bytes per idle socket, and a
        # socket rarely has more than one message waiting. Items: (number, message).
        self.inbox: list[tuple[int, str | bytes]] = []
        self.inbox_bytes = 0
        self.close_code = 1006
        #: The number of the message Read took last, and of the last one acknowledged.
        self._taken = 0
        self._acked = 0
        #: Cancels Server() when the port detaches.
        self.scope = trio.CancelScope()
        self._waiter: trio.Event | None = None
        #: True while a task hands queued messages to OnClientMessage (a task guard).
        self._pumping = False

    def _move(self, step: PortStep, *, strict: bool = True) -> bool:
        """Make one move of :data:`TRANSITIONS`; False if the table has none."""
        following = TRANSITIONS.get((self.phase, step))
        if following is None:
            if strict:
                raise RuntimeError(f"wsid={self.wsid}: no move {step.value} from "
                                   f"{self.phase.value}")
            return False
        self.phase = following
        return True

    # --- what the phases say ------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """The browser socket is gone (closed by the client, by EndServer or a crash)."""
        return self.phase not in _OPEN

    @property
    def private(self) -> bool:
        """OnPreServer chose private mode (so OpenServer must refuse the socket)."""
        return self.phase is not PortPhase.PREPARING and not self.shared

    @property
    def serving(self) -> bool:
        """Server() is running (or has not returned yet)."""
        return self.phase in (PortPhase.SERVING, PortPhase.SERVING_CLOSED,
                              PortPhase.SERVING_ENDED)

    @property
    def done(self) -> bool:
        """Nothing is left to run for this socket here."""
        return self.phase is PortPhase.DONE

    @property
    def detached(self) -> bool:
        """The link went while the socket was open: its OnPostServer is not ours."""
        return self.phase is PortPhase.DETACHED

    @property
    def message_id(self) -> str:
        """``<WebSocketID>:<n>``: the id of the message Read returned last (unique per
        socket and message, the same when a message is delivered again after a crash)."""
        return f"{self.wsid}:{self._taken}"

    # --- the moves ------------------------------------------------------------------------

    def accepted(self, shared: bool) -> None:
        """OnPreServer accepted the socket in this mode; Server() starts."""
        self.shared = shared
        self._move(PortStep.ACCEPTED)

    def dropped(self) -> None:
        """The socket will not be served here (refused, moved on, or never opened)."""
        self._move(PortStep.DROPPED, strict=False)

    def mark_closed(self, code: int, *, ended: bool = False) -> None:
        """The browser socket closed (``ended``: by EndServer, whose caller runs
        OnPostServer); pending reads end with 7951 once the inbox is empty."""
        if self._move(PortStep.ENDED if ended else PortStep.CLOSED, strict=False):
            self.close_code = code
        self._wake()

    def server_returned(self) -> None:
        """Server() is over (returned, raised or cancelled). Nothing is acknowledged
        here: a Server() cut off in the middle of a message must leave it to be sent
        again (the caller acknowledges after a normal return)."""
        self._move(PortStep.RETURNED)

    def detach(self) -> bool:
        """The link is gone: stop Server() without OnPostServer; False if the socket had
        closed already (then its OnPostServer is still due here)."""
        if not self._move(PortStep.DETACH, strict=False):
            return False
        self.scope.cancel()
        self._wake()
        return True

    def acknowledge(self) -> None:
        """Tell the gateway that the messages read so far are handled."""
        taken = self._taken
        if taken > self._acked and not (self.inbox and self.inbox[0][0] == taken):
            self._acked = taken
            self.link.send(Ack(self.wsid, taken))

    async def finish(self, post_server: PostServer) -> None:
        """Run OnPostServer if it is due: the one place that runs it for a port."""
        if self.phase is PortPhase.POST_SERVER:
            self._move(PortStep.FINISHING)  # before the await: nobody else can enter
            try:
                await post_server(self.instance)
            finally:
                # DONE only now: a private worker is lent out again once its socket's
                # ports are all done, so not while OnPostServer still runs.
                self._move(PortStep.FINISHED)

    # --- the inbox ------------------------------------------------------------------------

    def deliver(self, seq: int, item: str | bytes) -> bool:
        """Queue message ``seq`` from the browser; False if the socket has too much unread.

        A message that was taken already (a resend after a crash reached a worker that
        had it) is dropped.
        """
        if self.closed or (seq and seq <= self._taken):
            return True
        self.inbox_bytes += len(item)
        if self.inbox_bytes > MAX_INBOX_BYTES:
            log.warning("wsid=%s has %d unread bytes: closing it", self.wsid, self.inbox_bytes)
            return False
        self.inbox.append((seq, item))
        self._wake()
        return True

    def pop(self) -> str | bytes:
        """Take the oldest queued message (there must be one)."""
        seq, item = self.inbox.pop(0)
        self.inbox_bytes -= len(item)
        self._taken = seq
        return item

    def push_back(self, rest: str | bytes) -> None:
        """Put the unread rest of a message back at the head of the queue."""
        self.inbox.insert(0, (self._taken, rest))
        self.inbox_bytes += len(rest)

    def _wake(self) -> None:
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None

    async def take(self, timeout_s: float) -> str | bytes:
        """The next queued message; raise ReadTimeout (7950) or ClientClosed (7951).

        Reading on means the message read before is handled: it is acknowledged.
        """
        self.acknowledge()
        if not self.inbox and not self.closed:
            with trio.move_on_after(timeout_s):
                while not self.inbox and not self.closed:
                    if self._waiter is None:
                        self._waiter = trio.Event()
                    await self._waiter.wait()
        else:
            await trio.lowlevel.checkpoint()
        if self.inbox:
            return self.pop()
        if self.closed:
            raise ClientClosed(f"socket {self.wsid} closed by the client",
                               wsid=self.wsid, close_code=self.close_code)
        raise ReadTimeout(f"no data from {self.wsid} within {timeout_s:g} s", wsid=self.wsid)

    # --- after Server() returned: OnClientMessage, then OnPostServer ----------------------

    def wants_pump(self) -> bool:
        """Whether something is waiting for the pump: a message for OnClientMessage, or
        a close to finish (and the pump is not running already)."""
        if self._pumping or self.serving:
            return False
        if self.phase is PortPhase.POST_SERVER:
            return True
        has_handler = hasattr(self.instance, "OnClientMessage")
        return self.phase is PortPhase.WAITING and bool(self.inbox) and has_handler

    async def pump(self, post_server: PostServer) -> None:
        """Hand queued messages to OnClientMessage in order, then the close (close = 1),
        then OnPostServer: one pump at a time keeps them in order."""
        self._pumping = True
        handler = getattr(self.instance, "OnClientMessage", None)
        try:
            while handler is not None and self.inbox:
                item = self.pop()
                try:
                    await handler(item, 0)
                except Exception:
                    log.exception("wsid=%s OnClientMessage() failed", self.wsid)
                self.acknowledge()
            if self.phase is PortPhase.POST_SERVER:
                if handler is not None and self.shared:
                    try:
                        await handler("", 1)
                    except Exception:
                        log.exception("wsid=%s OnClientMessage() failed", self.wsid)
                await self.finish(post_server)
        finally:
            self._pumping = False
