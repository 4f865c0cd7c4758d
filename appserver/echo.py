"""``Echo.Server``: writes back every message it reads, text as text, binary as binary.

Served at ``/csp/user/Echo.Server.cls`` by every app server, for the benchmark's
round-trip scenario and as the smallest example of a server class.
"""

from __future__ import annotations

from appserver.csp import WebSocket
from appserver.errors import ReadTimeout

__all__ = ["EchoServer"]


class EchoServer(WebSocket):
    """Echo in shared mode (``?mode=private`` for a private socket)."""

    CLASS_NAME = "Echo.Server"

    async def OnPreServer(self) -> None:
        """Shared unless the handshake asks for private."""
        mode = self.request.get("mode") if self.request is not None else None
        self.SharedConnection = 0 if mode == "private" else 1

    async def Server(self) -> None:
        """Read whole messages and write them back until the client closes (Read raises
        ClientClosed)."""
        while True:
            self.BinaryData = 0  # so that Read returns text frames as text
            try:
                pieces = [await self.Read()]
                while not self.AtEnd:  # longer than Read's size: the rest follows at once
                    pieces.append(await self.Read())
            except ReadTimeout:
                continue
            if isinstance(pieces[0], bytes):
                data: str | bytes = b"".join(p for p in pieces if isinstance(p, bytes))
                self.BinaryData = 1
            else:
                data = "".join(p for p in pieces if isinstance(p, str))
            await self.Write(data)
