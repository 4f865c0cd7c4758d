"""The gateway's table of open browser sockets, keyed by WebSocketID, and their groups."""

from __future__ import annotations

from collections.abc import Iterator

import trio

from gateway.browser import BrowserSocket
from gateway.groups import SocketGroup

__all__ = ["ConnectionTable"]


class ConnectionTable:
    """Every browser socket this gateway holds, by WebSocketID, and its groups."""

    def __init__(self) -> None:
        self._sockets: dict[str, BrowserSocket] = {}
        #: Group name -> the group: what a WriteGroup fans out to.
        self.groups: dict[str, SocketGroup] = {}
        self._emptied = trio.Event()

    def add(self, bs: BrowserSocket) -> None:
        """Register a socket; its id must be new."""
        if bs.wsid in self._sockets:
            raise KeyError(f"duplicate WebSocketID {bs.wsid}")
        self._sockets[bs.wsid] = bs

    def remove(self, wsid: str) -> None:
        """Forget a socket and its group memberships (no error if it is already gone)."""
        bs = self._sockets.pop(wsid, None)
        if bs is not None and bs.groups:
            for name in list(bs.groups):
                self.leave(bs, name)
        if not self._sockets:
            self._emptied.set()
            self._emptied = trio.Event()

    async def wait_empty(self) -> None:
        """Return once no socket is left."""
        while self._sockets:
            await self._emptied.wait()

    def join(self, bs: BrowserSocket, name: str, since: int | None = None, *,
             latest: bool = False) -> None:
        """Put a socket in a group, having seen its messages up to ``since``; a new
        group is a ``latest`` one (newest wins) if the first member says so."""
        group = self.groups.get(name)
        if group is None:
            group = self.groups[name] = SocketGroup(name, latest=latest)
        group.join(bs, since)
        if bs.groups is None:
            bs.groups = set()
        bs.groups.add(name)

    def leave(self, bs: BrowserSocket, name: str) -> None:
        """Take a socket out of a group (the group goes when it is empty)."""
        group = self.groups.get(name)
        if group is not None:
            group.leave(bs)
            if not group.members:
                del self.groups[name]
        if bs.groups is not None:
            bs.groups.discard(name)

    def get(self, wsid: str) -> BrowserSocket | None:
        """The socket with this id, or None."""
        return self._sockets.get(wsid)

    def __len__(self) -> int:
        return len(self._sockets)

    def __iter__(self) -> Iterator[BrowserSocket]:
        return iter(list(self._sockets.values()))
