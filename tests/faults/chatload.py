"""A room of chat clients that send numbered lines and check every message they get.

Each :class:`Chatter` sends its lines one after another; every line it sent must come
back to every chatter exactly once, and each chatter must see the room's messages with
increasing ``Id``. What a chatter received is kept, so a test can assert on all of it
after faults were injected.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from tests.support import b64, open_ws, unb64

#: How long a room may take to show every chatter on every user list.
SETTLE_S = 20.0


@dataclass
class Chatter:
    """One chat client: its socket, what it sent and everything it received."""

    name: str
    ws: WebSocketConnection
    wsid: str = ""
    sent: list[str] = field(default_factory=list)
    chats: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    userlists: list[list[str]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    closed: ConnectionClosed | None = None
    _arrived: trio.Event = field(default_factory=trio.Event)

    async def receive_forever(self) -> None:
        """Keep every message until the socket closes (which a test counts as a failure)."""
        try:
            while True:
                message = json.loads(await self.ws.get_message())
                kind = message.get("Type")
                if kind == "Chat":
                    self.chats.append(message)
                elif kind == "Status":
                    self.statuses.append(message)
                    self.wsid = message["WSID"]
                elif kind == "userlist":
                    self.userlists.append([u["User"] for u in message["Users"]])
                elif kind == "Error":
                    self.errors.append(message)
                self._arrived.set()
                self._arrived = trio.Event()
        except ConnectionClosed as exc:
            self.closed = exc

    async def wait_for(self, condition: Callable[[Chatter], bool]) -> None:
        """Wait until ``condition(self)`` holds."""
        while not condition(self):
            await self._arrived.wait()

    def texts(self) -> list[str]:
        """The lines of the chat messages received, in arrival order."""
        return [unb64(m["Message"]) for m in self.chats]

    async def say(self, text: str) -> None:
        """Send one chat line."""
        self.sent.append(text)
        await self.ws.send_message(json.dumps({"Message": b64(text), "Author": self.name}))


@dataclass
class Room:
    """Chatters in one room."""

    chatters: list[Chatter]

    def every_line(self) -> list[str]:
        """Every line any chatter sent."""
        return [text for c in self.chatters for text in c.sent]

    def problems(self) -> dict[str, Any]:
        """What went wrong, per chatter (empty when every chatter got every line sent,
        exactly once, with increasing Ids, and no socket closed)."""
        expected = Counter(self.every_line())
        found: dict[str, Any] = {}
        for chatter in self.chatters:
            got = Counter(chatter.texts())
            lost = sorted((expected - got).elements())
            doubled = sorted((got - expected).elements())
            ids = [m["Id"] for m in chatter.chats]
            disordered = sum(1 for a, b in itertools.pairwise(ids) if b <= a)
            issue = {k: v for k, v in {
                "lost": lost[:10], "lost_count": len(lost), "doubled": doubled[:10],
                "doubled_count": len(doubled), "out_of_order": disordered,
                "statuses": len(chatter.statuses) if len(chatter.statuses) != 1 else 0,
                "closed": repr(chatter.closed) if chatter.closed else None,
            }.items() if v}
            if issue:
                found[chatter.name] = issue
        return found

    def userlist_problems(self) -> dict[str, Any]:
        """Chatters whose last user list is not everyone's, each once, in the order every
        other chatter shows too (the order the store keeps: when each alias was set)."""
        names = sorted(c.name for c in self.chatters)
        lists = {c.name: c.userlists[-1] if c.userlists else [] for c in self.chatters}
        agreed = Counter(tuple(users) for users in lists.values()).most_common(1)[0][0]
        return {name: users for name, users in lists.items()
                if sorted(users) != names or tuple(users) != agreed}

    async def all_received(self) -> None:
        """Wait until every chatter has every line sent so far."""
        total = len(self.every_line())
        for chatter in self.chatters:
            await chatter.wait_for(lambda c: len(c.chats) >= total or c.closed is not None)


@asynccontextmanager
async def room(url: str | Sequence[str], count: int, nursery: trio.Nursery, *,
               prefix: str = "c") -> AsyncIterator[Room]:
    """``count`` chatters on ``url`` (or on each of several in turn: many nodes), each
    named and on the user list, receiving."""
    urls = [url] if isinstance(url, str) else list(url)
    async with AsyncExitStack() as stack:
        chatters = []
        for i in range(count):
            ws = await stack.enter_async_context(open_ws(urls[i % len(urls)]))
            chatter = Chatter(f"{prefix}{i}", ws)
            nursery.start_soon(chatter.receive_forever)
            await chatter.wait_for(lambda c: bool(c.statuses))
            await ws.send_message(json.dumps({"User": chatter.name}))
            chatters.append(chatter)
        names = sorted(c.name for c in chatters)
        r = Room(chatters)
        with trio.move_on_after(SETTLE_S):
            for chatter in chatters:
                await chatter.wait_for(lambda c: bool(c.userlists)
                                       and sorted(c.userlists[-1]) == names)
        assert r.userlist_problems() == {}
        yield r
