"""``Echo.Server``: writes back every message it reads, text as text, binary as binary.

Served at ``/csp/user/Echo.Server.cls`` by every app server, for the benchmark's
round-trip scenario and as the smallest example of a server class.
"""

from __future__ import annotations

from appserver.errors import ReadTimeout
from appserver.websocket import WebSocket

__all__ = ["EchoServer"]


class EchoServer(WebSocket):
    """Echo in shared mode (``?mode=private`` for a private socket)."""

    CLASS_NAME = "Echo.Server"

    async def OnPreServer(self) -> None:
        """Shared unless the handshake asks for private."""
        mode = self.request.get("mode") if self.request is not None else None
        self.SharedConnection = 0 if mode == "private" else 1

    async def Server(self) -> None:
        """Read and write back until the client closes (Read raises ClientClosed)."""
        while True:
            try:
                data = await self.Read()
            except ReadTimeout:
                continue
            self.BinaryData = 1 if isinstance(data, bytes) else 0
            await self.Write(data)
