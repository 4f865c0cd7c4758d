"""The gateway's table of open browser sockets, keyed by WebSocketID, and their groups."""

from __future__ import annotations

from collections.abc import Iterator

import trio

from gateway.browser import BrowserSocket

__all__ = ["ConnectionTable"]


class ConnectionTable:
    """Every browser socket this gateway holds, by WebSocketID, and its groups."""

    def __init__(self) -> None:
        self._sockets: dict[str, BrowserSocket] = {}
        #: Group name -> member sockets: what a WriteGroup fans out to.
        self.groups: dict[str, set[BrowserSocket]] = {}
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

    def join(self, bs: BrowserSocket, name: str) -> None:
        """Put a socket in a group."""
        self.groups.setdefault(name, set()).add(bs)
        if bs.groups is None:
            bs.groups = set()
        bs.groups.add(name)

    def leave(self, bs: BrowserSocket, name: str) -> None:
        """Take a socket out of a group (the group goes when it is empty)."""
        members = self.groups.get(name)
        if members is not None:
            members.discard(bs)
            if not members:
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
