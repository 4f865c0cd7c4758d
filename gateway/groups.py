"""Groups of browser sockets: what one ``WriteGroup`` fans out to, in order, once each.

A group (the chat's room) belongs to the gateway: a worker sends a broadcast once per
gateway and the gateway queues the frame, encoded once, on every member. Broadcasts
may be *sequenced* (``seq`` 1, 2, ... in the group's own sequence, the chat's message
ids): then every member gets them in that order and once each, whichever worker sent
them, however the links raced, and however often a message was sent again after a
crash. Each member has a cursor, the next number it should get:

* a number below the cursor is a duplicate, and is dropped;
* the cursor's own number is delivered, and releases what was held after it;
* a number above it is held until the gap fills, at most :data:`HOLD_S`; then the
  socket gets what it holds, in order, and the gap is given up (counted).

A member that joins says what it has seen already (``since``, 0 in an empty room), so
its first message is never dropped as a duplicate of a later one that overtook it, and
a socket that reconnects and is sent the messages it missed (``Write`` with ``seq``)
gets them in order before any new one.

A group joined as *latest* carries state rather than a log (the chat's user list, whose
``seq`` is a version): a member gets a sequenced message only if it is newer than the
last it got, and nothing is held: an older version that arrives late is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.browser import BrowserSocket

__all__ = ["HOLD_S", "SocketGroup"]

log = logging.getLogger(__name__)

#: How long a member holds a message while waiting for the one before it.
HOLD_S = 2.0


class SocketGroup:
    """One group's members and their cursors; see the module docstring."""

    __slots__ = ("_held", "_held_since", "latest", "members", "name")

    def __init__(self, name: str, *, latest: bool = False) -> None:
        self.name = name
        #: Newest wins (a state), instead of every message in order (a log).
        self.latest = latest
        #: Member -> the next sequence number it should get (0: whatever comes first).
        self.members: dict[BrowserSocket, int] = {}
        self._held: dict[BrowserSocket, dict[int, bytes]] = {}
        self._held_since: dict[BrowserSocket, float] = {}

    def __len__(self) -> int:
        return len(self.members)

    @property
    def holding(self) -> bool:
        """Whether any member holds a message waiting for a gap to fill."""
        return bool(self._held)

    def join(self, bs: BrowserSocket, since: int | None) -> None:
        """Add a member that has seen the group's messages up to ``since`` (0: none yet;
        None: it takes whichever sequenced message comes first)."""
        if bs not in self.members:
            self.members[bs] = 0 if since is None else since + 1

    def leave(self, bs: BrowserSocket) -> None:
        """Remove a member (and what it held)."""
        self.members.pop(bs, None)
        self._held.pop(bs, None)
        self._held_since.pop(bs, None)

    def write(self, frame: bytes, seq: int, now: float, dirty: set[BrowserSocket]) -> int:
        """Queue ``frame`` on every shared member (message ``seq``, or 0: unsequenced);
        add the sockets written to ``dirty``; return how many got it."""
        sent = 0
        members = self.members
        if not seq:
            for bs in members:
                if bs.shared and bs.queue(frame, shared_only=True):
                    bs.last_activity = now
                    dirty.add(bs)
                    sent += 1
            return sent
        if self.latest:
            for bs, wanted in members.items():
                if bs.shared and seq >= wanted:
                    members[bs] = seq + 1
                    if bs.queue(frame, shared_only=True):
                        bs.last_activity = now
                        dirty.add(bs)
                        sent += 1
            return sent
        for bs, wanted in members.items():
            if not bs.shared:
                continue
            if seq == wanted or not wanted:
                # Its turn, delivered or not (a closing socket takes nothing more): the
                # cursor moves on either way, so nothing is held behind it.
                members[bs] = seq + 1
                if bs.queue(frame, shared_only=True):
                    bs.last_activity = now
                    dirty.add(bs)
                    sent += 1
                    if bs in self._held:
                        sent += self._release(bs)
            elif seq > wanted:
                self._hold(bs, seq, frame, now)
            # below the cursor: a duplicate, dropped
        return sent

    def write_run(self, run: list[tuple[int, bytes]], now: float,
                  dirty: set[BrowserSocket]) -> int:
        """Queue several sequenced messages, ``run`` (``(seq, frame)``, any order), as
        :meth:`write` one after another in ``seq`` order would; return how many were
        queued. When they are consecutive, a member whose cursor is at the first one
        gets them all in one piece: one queue per member per run, not per message."""
        run = sorted(dict(run).items())
        first, count = run[0][0], len(run)
        if self.latest or not first or run[-1][0] - first != count - 1:
            return sum(self.write(frame, seq, now, dirty) for seq, frame in run)
        joined = b"".join(frame for _, frame in run)
        size = len(joined)
        sent = 0
        members = self.members
        for bs, wanted in members.items():
            if not bs.shared:
                continue
            out = bs.out
            if (wanted == first or not wanted) and out.pending + size <= out.limit:
                members[bs] = first + count
                if bs.queue(joined, shared_only=True):
                    bs.last_activity = now
                    dirty.add(bs)
                    sent += count
                    if bs in self._held:
                        sent += self._release(bs)
            else:  # catching up, holding, or near its limit: one message at a time
                for seq, frame in run:
                    sent += self._write_member(bs, frame, seq, now, dirty)
        return sent

    def _write_member(self, bs: BrowserSocket, frame: bytes, seq: int, now: float,
                      dirty: set[BrowserSocket]) -> int:
        """:meth:`write`'s sequenced step for one member; how many it queued."""
        wanted = self.members[bs]
        if seq == wanted or not wanted:
            self.members[bs] = seq + 1
            if bs.queue(frame, shared_only=True):
                bs.last_activity = now
                dirty.add(bs)
                return 1 + (self._release(bs) if bs in self._held else 0)
        elif seq > wanted:
            self._hold(bs, seq, frame, now)
        return 0

    def write_one(self, bs: BrowserSocket, frame: bytes, seq: int, now: float) -> bool:
        """Message ``seq`` of the group for one member only (catching up); True if it
        was queued (False: a duplicate, or held until its turn)."""
        wanted = self.members.get(bs)
        if self.latest and wanted is not None:
            if seq < wanted:
                return False
            self.members[bs] = seq + 1
            if not bs.queue(frame, shared_only=True):
                return False
            bs.last_activity = now
            return True
        if wanted is None or seq == wanted or not wanted:
            if wanted is not None:
                self.members[bs] = seq + 1
            if not bs.queue(frame, shared_only=True):
                return False
            if wanted is not None and bs in self._held:
                self._release(bs)
            bs.last_activity = now
            return True
        if seq > wanted:
            self._hold(bs, seq, frame, now)
        return False

    def _hold(self, bs: BrowserSocket, seq: int, frame: bytes, now: float) -> None:
        held = self._held.get(bs)
        if held is None:
            held = self._held[bs] = {}
            self._held_since[bs] = now
        held[seq] = frame

    def _release(self, bs: BrowserSocket) -> int:
        """Queue what ``bs`` holds from its cursor on, while there is no gap."""
        held = self._held[bs]
        wanted = self.members[bs]
        for seq in [s for s in held if s < wanted]:  # came meanwhile, in a run
            del held[seq]
        released = 0
        while wanted in held:
            if bs.queue(held.pop(wanted), shared_only=True):
                released += 1
            wanted += 1
        self.members[bs] = wanted
        if not held:
            del self._held[bs]
            del self._held_since[bs]
        return released

    def expire(self, now: float, dirty: set[BrowserSocket]) -> int:
        """Give up gaps older than :data:`HOLD_S`: queue what is held, in order, and move
        the cursors past it; return how many gaps were given up."""
        given_up = 0
        for bs in [b for b, since in self._held_since.items() if now - since > HOLD_S]:
            held = self._held.pop(bs)
            del self._held_since[bs]
            log.warning("wsid=%s group %s: gave up waiting for message %d (had %s)",
                        bs.wsid, self.name, self.members.get(bs, 0), sorted(held))
            for seq in sorted(held):
                bs.queue(held[seq], shared_only=True)
            self.members[bs] = max(held) + 1
            dirty.add(bs)
            given_up += 1
        return given_up

    def sockets(self) -> Iterable[BrowserSocket]:
        """The members."""
        return self.members.keys()
