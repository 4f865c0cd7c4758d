"""The gateway: holds the browsers' sockets and multiplexes them over links to workers.

IRIS's Web Gateway in one trio process. :class:`Gateway` accepts browser connections
(served by :mod:`gateway.routes`, and :mod:`gateway.handshake` on upgrade), keeps the
:class:`~gateway.table.ConnectionTable` and the :class:`~gateway.pool.LinkPool`, tells
every worker when a socket opens or closes (the Registry), and handles what the
workers send: handshake answers, writes by WebSocketID, group writes, closes and
``EndServer`` requests.
"""

from __future__ import annotations

import itertools
import logging
import socket
from collections import Counter
from collections.abc import Callable
from typing import cast

import trio

from gateway.admission import ConnectRate
from gateway.browser import BrowserSocket, Phase
from gateway.bus import BusReader
from gateway.config import GatewayConfig
from gateway.groups import HOLD_S, SocketGroup
from gateway.link.codec import encode
from gateway.link.driver import Link
from gateway.link.events import (
    Accept,
    Ack,
    Close,
    Data,
    Done,
    End,
    Ended,
    Event,
    Group,
    Handoff,
    Reject,
    SocketState,
    SocketStatus,
    Write,
    WriteGroup,
    WriteMany,
)
from gateway.link.net import listen_tcp
from gateway.parking import Parking
from gateway.pool import GatewayLink, LinkPool
from gateway.recovery import Recovery
from gateway.routes import serve_connection
from gateway.status import metrics_registry
from gateway.table import ConnectionTable
from gateway.wsframe import encode_message

__all__ = ["Gateway", "serve_gateway"]

log = logging.getLogger(__name__)

#: How long accepting pauses after it failed (EMFILE and friends).
ACCEPT_BACKOFF_S = 0.1
#: A server's ping frame (RFC 6455 section 5.5.2), the same bytes for every socket.
PING_FRAME = b"\x89\x00"
#: Draining closes this many sockets at a time (so they do not all reconnect at once).
DRAIN_BATCH = 500


#: Under load (a broadcast within COALESCE_BUSY_S of the last), a batch that wrote to
#: at least COALESCE_MIN_SOCKETS sockets is flushed COALESCE_S later, with whatever
#: else arrives meanwhile (Gateway.link_batch_done).
COALESCE_MIN_SOCKETS = 64
COALESCE_S = 0.002
COALESCE_BUSY_S = 0.02

class Gateway:
    """One gateway process's state; see the module docstring."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.id = config.gateway_id
        self.table = ConnectionTable()
        self.links = LinkPool(
            self, config.appserver, size=config.pool, secret=config.secret,
            gateway_id=config.gateway_id, heartbeat_s=config.link_heartbeat_s,
        )
        self.stats: Counter[str] = Counter()
        #: Detached sockets and orphaned OnPostServer duties (a worker crashed).
        self.recovery = Recovery(self)
        #: New connections per second per client address (429 over it).
        self.connect_rate = ConnectRate(config.max_connect_rate)
        #: TLS for https and wss on the browsers' port (None: plain HTTP).
        self.tls = config.tls_context()
        #: What other nodes' workers write here (many nodes on a Redis), or None.
        self.bus = BusReader(self, config.bus_url) if config.bus_url else None
        #: This process's Prometheus registry, read at scrape time.
        self.metrics = metrics_registry(self)
        self._ids = itertools.count(1)
        self._dirty: set[BrowserSocket] = set()
        #: Sequenced group writes of the batch being read, per group (_fan_out_runs).
        self._runs: dict[SocketGroup, list[tuple[int, bytes]]] = {}
        self._run_bytes: dict[SocketGroup, int] = {}
        #: A coalesced flush is due, and when the last broadcast was (link_batch_done).
        self._flush_pending = False
        self._last_broadcast_flush = -1.0
        self._nursery: trio.Nursery | None = None
        self._classes: frozenset[str] = frozenset()
        self._first_link = trio.Event()
        self._accepting = trio.CancelScope()
        self._listener: socket.socket | None = None
        #: Silent sockets, without reader tasks.
        self.parking = Parking()

    @property
    def nursery(self) -> trio.Nursery:
        """The nursery that outlives every socket (drain tasks run here)."""
        assert self._nursery is not None, "the gateway is not serving"
        return self._nursery

    @property
    def classes(self) -> frozenset[str]:
        """Server classes the app server registered, as ``namespace/Package.Class``.

        Remembered from the last link that came up, so that a moment with no link up
        (a private socket's link closing before its replacement opens) queues new
        sockets instead of refusing them.
        """
        return self._classes

    @property
    def max_message_bytes(self) -> int:
        """Largest message a browser may send (larger ones close with 1009)."""
        return self.config.max_message_bytes

    @property
    def hold_bytes(self) -> int:
        """Bytes of a socket's unacknowledged messages kept (over it: 1013); never
        below one message, so a message the size limit admits is always kept."""
        return max(self.config.hold_bytes, self.config.max_message_bytes)

    @property
    def queue_bytes(self) -> int:
        """Bytes queued for one browser (over it: 1008, slow client); never below one
        message and its frame header, so a message it may send can always come back."""
        return max(self.config.socket_buffer_bytes, self.config.max_message_bytes + 14)

    async def wait_linked(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the first link ever; True once there is one."""
        with trio.move_on_after(timeout_s):
            while not self._classes:
                await self._first_link.wait()
        return bool(self._classes)

    def new_socket(self, sock: socket.socket, client_address: str,
                   class_name: str) -> BrowserSocket:
        """A socket for an upgrade request, with a WebSocketID unique across gateways:
        ``<gateway id>-<n>``."""
        return BrowserSocket(self, f"{self.id}-{next(self._ids)}", sock, client_address,
                             class_name, buffer_limit=self.queue_bytes)

    # --- the Registry, and a socket's life (SocketOwner) -------------------------------

    def _announce(self, bs: BrowserSocket, status: SocketStatus, *,
                  skip: GatewayLink | None = None) -> None:
        frame = None
        for link in self.links.all_links():
            if link is not skip:
                if frame is None:  # encoded once, for every link
                    frame = encode(SocketState(bs.wsid, status, bs.session))
                link.send_frame(frame)

    def socket_connecting(self, bs: BrowserSocket) -> None:
        """Every worker hears of a new socket before its handshake worker does."""
        self._announce(bs, SocketStatus.CONNECTING)

    def socket_opened(self, bs: BrowserSocket) -> None:
        """The socket is open, in its mode (its worker knows: it accepted it)."""
        self._announce(bs, SocketStatus.SHARED if bs.shared else SocketStatus.PRIVATE,
                       skip=bs.home)
        self.stats["sockets_opened"] += 1

    def socket_closing(self, bs: BrowserSocket) -> None:
        """The socket closes: OpenServer of it fails everywhere from now on."""
        self._announce(bs, SocketStatus.CLOSED)

    def socket_finished(self, bs: BrowserSocket) -> None:
        """Forget the socket; its worker hears of the end unless it knows already."""
        self.table.remove(bs.wsid)
        self.parking.forget(bs)
        home = bs.home
        if home is not None:
            bs.leave_home()
            if bs.ws is not None:  # it opened: its OnPostServer is the worker's to run
                home.owed[bs.wsid] = bs
            home.send(Close(bs.wsid, bs.close_code, bs.close_reason))
        for link in self.links.all_links():
            if link.private_wsid == bs.wsid:
                # IRIS ends the private process with its socket; we end the link, and
                # the worker goes back to its supervisor's idle pool.
                link.close()
        if bs.ws is not None:
            self.stats["sockets_closed"] += 1

    def forward(self, bs: BrowserSocket, seq: int, binary: bool, payload: bytes) -> None:
        """A message from the browser goes to the socket's worker (when detached, it
        waits for the worker that resumes the socket)."""
        self.stats["frames_in"] += 1
        home = bs.home
        if home is not None:
            home.send(Data(bs.wsid, binary, payload, seq))

    def spawn(self, task: Callable[[], object]) -> None:
        """Run ``task`` in the gateway's nursery (a socket's reader, or its drain)."""
        self.nursery.start_soon(task)  # type: ignore[arg-type]

    def park(self, bs: BrowserSocket) -> None:
        """Watch a silent socket without a task (gateway/parking.py)."""
        self.parking.park(bs)

    def unpark(self, bs: BrowserSocket) -> bool:
        """A parked socket gets its reader back."""
        return self.parking.unpark(bs)

    def reading(self, bs: BrowserSocket) -> None:
        """A socket that starts with its reader, to be parked once silent."""
        self.parking.reading(bs)

    # --- serving ----------------------------------------------------------------------

    async def serve(
        self, *, task_status: trio.TaskStatus[tuple[str, int]],
        listener: socket.socket | None = None,
    ) -> None:
        """Listen (on ``listener`` when the caller bound it), keep the links up and serve
        until cancelled; report the bound address."""
        if listener is None:
            listener = listen_tcp(self.config.host, self.config.port)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self.links.run)
                nursery.start_soon(self.recovery.run)
                if self.bus is not None:
                    nursery.start_soon(self.bus.run)
                nursery.start_soon(self._expire_gaps)
                nursery.start_soon(self.parking.run)
                if self.config.park_after_s > 0:
                    nursery.start_soon(self._park_silent_sockets)
                if self.config.ping_interval_s > 0:
                    nursery.start_soon(self._heartbeat_browsers)
                if self.config.session_timeout_s > 0:
                    nursery.start_soon(self._expire_idle_sockets)
                host, port = listener.getsockname()[:2]
                task_status.started((host, port))
                await self._accept(listener, nursery)
        finally:
            listener.close()

    async def _accept(self, listener: socket.socket, nursery: trio.Nursery) -> None:
        self._listener = listener
        with self._accepting:
            try:
                await self._accept_loop(listener, nursery)
            except trio.ClosedResourceError:
                pass  # drain() closed the listener under the loop
            finally:
                self._stop_listening()
        await trio.sleep_forever()

    def _stop_listening(self) -> None:
        """Close the listening socket: connections not accepted yet are refused."""
        listener, self._listener = self._listener, None
        if listener is not None:
            trio.lowlevel.notify_closing(listener)
            listener.close()

    async def _accept_loop(self, listener: socket.socket, nursery: trio.Nursery) -> None:
        # socket.accept() reads the listener's family and type, each through an enum
        # conversion, for every connection: a sixth of the accept's cost in a storm.
        family, kind, proto = listener.family, listener.type, listener.proto
        while True:
            await trio.lowlevel.wait_readable(listener)
            # Take every pending connection per wake: connect storms stay cheap.
            while True:
                try:
                    fd, address = listener._accept()  # type: ignore[attr-defined]
                    sock = socket.socket(family, kind, proto, fileno=fd)
                except BlockingIOError:
                    break
                except OSError as exc:  # EMFILE and friends: log, back off
                    log.error("accept failed: %s", exc)
                    await trio.sleep(ACCEPT_BACKOFF_S)
                    break
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.tls is not None:  # the handshake runs in the connection's task
                    sock = self.tls.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
                nursery.start_soon(serve_connection, self, sock, address[0])

    async def drain(self, timeout_s: float) -> bool:
        """Shut down gracefully: take no new connection, close every browser socket with
        1001 in batches (what was queued for it leaves first), and wait up to
        ``timeout_s`` for the closing handshakes; True if every socket finished."""
        self._stop_listening()  # now, before any close frame goes out
        self._accepting.cancel()
        sockets = list(self.table)
        log.info("draining %d sockets (at most %.0f s)", len(sockets), timeout_s)
        with trio.move_on_after(timeout_s):
            pause = min(0.05, timeout_s / 4 / max(1, len(sockets) / DRAIN_BATCH))
            for start in range(0, len(sockets), DRAIN_BATCH):
                for bs in sockets[start:start + DRAIN_BATCH]:
                    bs.close(1001, "the gateway is shutting down")
                await trio.sleep(pause)
            await self.table.wait_empty()
            return True
        log.warning("drain: %d sockets still open after %.0f s", len(self.table), timeout_s)
        return False

    async def _heartbeat_browsers(self) -> None:
        """Ping browsers that have been silent for --ping-interval; close (1001) those
        silent for --ping-timeout more (a dead peer, or a network that lost it)."""
        interval, timeout = self.config.ping_interval_s, self.config.ping_timeout_s
        while True:
            await trio.sleep(max(0.05, min(interval, timeout) / 4))
            now = trio.current_time()
            for bs in self.table:
                if bs.phase not in (Phase.OPEN, Phase.DETACHED):
                    continue
                silent = now - bs.last_heard
                if silent > interval + timeout:
                    log.info("wsid=%s closed: no answer to ping for %.1f s", bs.wsid,
                             silent - interval)
                    self.stats["sockets_ping_timeout"] += 1
                    bs.close(1001, "no answer to ping")
                elif silent > interval and bs.queue(PING_FRAME):
                    bs.flush()

    async def _park_silent_sockets(self) -> None:
        """End the reader task of each socket silent for --park-after (it is parked
        until the browser sends again)."""
        after = self.config.park_after_s
        while True:
            await trio.sleep(after)
            now = trio.current_time()
            for bs in list(self.parking.awake):  # the parked ones cost this loop nothing
                if now - bs.last_heard > after:
                    bs.park_reader()

    async def _expire_gaps(self) -> None:
        """Give up on sequenced messages that never came (see gateway.groups)."""
        while True:
            await trio.sleep(HOLD_S / 4)
            now = trio.current_time()
            for group in list(self.table.groups.values()):
                if group.holding:
                    self.stats["sequence_gaps_given_up"] += group.expire(now, self._dirty)
            self.link_batch_done(None)

    async def _expire_idle_sockets(self) -> None:
        timeout = self.config.session_timeout_s
        while True:
            await trio.sleep(min(timeout / 4, 5.0))
            now = trio.current_time()
            for bs in self.table:
                if bs.phase is Phase.OPEN and now - bs.last_activity > timeout:
                    log.info("wsid=%s closed: no activity for %.0f s (session timeout)",
                             bs.wsid, now - bs.last_activity)
                    self.stats["sockets_timed_out"] += 1
                    bs.close(1001, "session timed out")

    # --- the links (PoolHandler) -------------------------------------------------------

    def link_up(self, link: GatewayLink) -> None:
        """Send a new link the Registry snapshot before anything else."""
        self._classes = link.classes
        self._first_link.set()
        for bs in self.table:
            if bs.phase is Phase.CONNECTING:
                status = SocketStatus.CONNECTING
            elif bs.phase in (Phase.OPEN, Phase.DETACHED):
                status = SocketStatus.SHARED if bs.shared else SocketStatus.PRIVATE
            else:
                continue
            link.send(SocketState(bs.wsid, status, bs.session))
        self.recovery.wake()

    def link_event(self, link: Link, event: Event) -> None:
        """Dispatch one event from a worker."""
        glink = cast(GatewayLink, link)
        if self._runs and not isinstance(event, WriteGroup | Ack):
            self._fan_out_runs()  # what was written before this goes before it
        if isinstance(event, Write):
            self._handle_write(glink, event)
        elif isinstance(event, WriteGroup):
            self._handle_write_group(event)
        elif isinstance(event, WriteMany):
            self._handle_write_many(event)
        elif isinstance(event, Group):
            self._handle_group(event)
        elif isinstance(event, Accept | Reject | Handoff):
            self._handle_reply(glink, event)
        elif isinstance(event, Close):
            self._handle_close(glink, event)
        elif isinstance(event, End):
            self._handle_end(glink, event)
        elif isinstance(event, Ack):
            bs = self.table.get(event.wsid)
            if bs is not None:
                bs.acknowledged(event.seq)
        elif isinstance(event, Done):
            glink.owed.pop(event.wsid, None)
        else:  # the connection's table admits nothing else from a worker
            log.error("link %d: unexpected %s", link.id, type(event).__name__)

    def bus_event(self, event: Event) -> None:
        """A frame another node's worker sent this gateway over the bus."""
        if self._runs and not isinstance(event, WriteGroup):
            self._fan_out_runs()
        if isinstance(event, Write):
            self._handle_write(None, event)
        elif isinstance(event, WriteGroup):
            self._handle_write_group(event)
        elif isinstance(event, WriteMany):
            self._handle_write_many(event)
        else:
            log.error("bus: unexpected %s", type(event).__name__)

    def link_batch_done(self, link: Link | None) -> None:
        """Flush every socket the batch wrote to: one send per socket per batch.

        Under load, a batch that wrote to many sockets (a broadcast, less than
        COALESCE_BUSY_S after the last one) is flushed COALESCE_S later instead: what
        the links bring meanwhile joins it, so each socket gets several messages per
        send, as a corked socket would. The first broadcast after a quiet spell, and
        a batch for a few sockets (an echo, a Status), go at once."""
        if self._runs:
            self._fan_out_runs()
        if self._flush_pending:
            return
        if len(self._dirty) >= COALESCE_MIN_SOCKETS:
            now = trio.current_time()
            busy = now - self._last_broadcast_flush < COALESCE_BUSY_S
            self._last_broadcast_flush = now
            if busy:
                self._flush_pending = True
                self.nursery.start_soon(self._flush_soon)
                return
        self._flush_now()

    def _flush_now(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for bs in dirty:
            bs.flush()

    async def _flush_soon(self) -> None:
        try:
            await trio.sleep(COALESCE_S)
        finally:
            self._flush_pending = False
            self._flush_now()

    def link_lost(self, link: Link) -> None:
        """The worker behind ``link`` is gone: its sockets wait for another."""
        self.recovery.worker_lost(cast(GatewayLink, link))

    def _handle_reply(self, link: GatewayLink, event: Accept | Reject | Handoff) -> None:
        bs = self.table.get(event.wsid)
        if bs is None or bs.phase is not Phase.CONNECTING or bs.home is not link:
            log.warning("link %d: answer for unknown handshake wsid=%s", link.id, event.wsid)
            return
        if isinstance(event, Accept) and not event.shared:
            # Now, not when the handshake task resumes: pick() must not lend this link
            # to another socket in between.
            link.dedicate(event.wsid)
        bs.answered(event)

    def _handle_write(self, link: GatewayLink | None, event: Write) -> None:
        """A write for one socket, from a link (or, None, from the bus)."""
        bs = self.table.get(event.wsid)
        if bs is None:
            self.stats["writes_dropped"] += 1
            log.debug("wsid=%s write dropped: no such socket", event.wsid)
            return
        own = link is not None and (link is bs.home or link.private_wsid == bs.wsid)
        if not bs.shared and not own:
            self.stats["writes_dropped"] += 1
            log.warning("wsid=%s write from %s refused: the socket is private", event.wsid,
                        f"link {link.id}" if link is not None else "the bus")
            return
        frame = encode_message(event.payload, binary=event.binary)
        now = trio.current_time()
        group = self.table.groups.get(event.group) if event.seq else None
        if group is not None and bs.groups and event.group in bs.groups:
            queued = group.write_one(bs, frame, event.seq, now)
        else:
            queued = bs.queue(frame, shared_only=not own)
            bs.last_activity = now
        if queued:
            self.stats["frames_out"] += 1
            self.stats["bytes_out"] += len(event.payload)
            self._dirty.add(bs)

    def _handle_write_group(self, event: WriteGroup) -> None:
        group = self.table.groups.get(event.name)
        if group:
            frame = encode_message(event.payload, binary=event.binary)
            if event.seq and not group.latest:
                # Kept until the batch ends (or another kind of event comes): the run
                # goes out in order, one piece per member (SocketGroup.write_run).
                self._runs.setdefault(group, []).append((event.seq, frame))
                self._run_bytes[group] = self._run_bytes.get(group, 0) + len(event.payload)
                return
            sent = group.write(frame, event.seq, trio.current_time(), self._dirty)
            self.stats["frames_out"] += sent
            self.stats["bytes_out"] += sent * len(event.payload)

    def _fan_out_runs(self) -> None:
        runs, self._runs = self._runs, {}
        sizes, self._run_bytes = self._run_bytes, {}
        now = trio.current_time()
        for group, run in runs.items():
            sent = group.write_run(run, now, self._dirty)
            self.stats["frames_out"] += sent
            self.stats["bytes_out"] += sent * sizes[group] // len(run)  # mean payload

    def _handle_write_many(self, event: WriteMany) -> None:
        table = self.table
        found = [bs for bs in map(table.get, event.wsids) if bs is not None]
        self.stats["writes_dropped"] += len(event.wsids) - len(found)
        frame = encode_message(event.payload, binary=event.binary)
        now = trio.current_time()
        dirty = self._dirty
        sent = 0
        for bs in found:
            if bs.shared and bs.queue(frame, shared_only=True):
                bs.last_activity = now
                dirty.add(bs)
                sent += 1
        self.stats["frames_out"] += sent
        self.stats["bytes_out"] += sent * len(event.payload)

    def _handle_group(self, event: Group) -> None:
        bs = self.table.get(event.wsid)
        if bs is None or bs.phase in (Phase.CLOSING, Phase.CLOSED):
            return
        if event.join:
            self.table.join(bs, event.name, event.since, latest=event.latest)
        else:
            self.table.leave(bs, event.name)

    def _handle_close(self, link: GatewayLink, event: Close) -> None:
        bs = self.table.get(event.wsid)
        if bs is None:
            return
        if link is bs.home:
            bs.leave_home()  # the worker asked: it knows, and runs OnPostServer
            if bs.ws is not None:
                link.owed[bs.wsid] = bs
        bs.close(event.code, event.reason)

    def _handle_end(self, link: GatewayLink, event: End) -> None:
        """EndServer: the first End of a socket closes it, and its caller runs
        OnPostServer (IRIS); a home worker elsewhere is told it need not."""
        bs = self.table.get(event.wsid)
        first = False
        if bs is not None and bs.phase in (Phase.OPEN, Phase.DETACHED) and (
                bs.home is not None or bs.phase is Phase.DETACHED):
            home = bs.home
            first = bs.close(event.code, event.reason)
            if first:
                bs.leave_home()
                self.recovery.orphans.pop(bs.wsid, None)  # a detached one: the caller's now
                if home is not None and home is not link:
                    home.send(Close(bs.wsid, event.code, event.reason, ended=True))
                link.owed[bs.wsid] = bs
        link.send(Ended(event.request_id, first))


async def serve_gateway(
    config: GatewayConfig,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a gateway until cancelled (``await nursery.start(serve_gateway, config)``)."""
    await Gateway(config).serve(task_status=task_status)
