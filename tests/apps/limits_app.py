"""Limits.Subprotocols: a server class whose OnPreServer picks the subprotocol the test
asks for, served with ``--app tests.apps.limits_app:Subprotocols``.

Handshake query ``pick=``: ``first`` (the first one the browser offers), a name (that
one, offered or not), or nothing (none). ``Server()`` first writes
``{"subprotocol": <what OnPreServer chose>}``, then echoes text until the client closes.
"""

from __future__ import annotations

import json

from appserver import ClientClosed, WebSocket

__all__ = ["Subprotocols"]


class Subprotocols(WebSocket):
    """See the module docstring."""

    CLASS_NAME = "Limits.Subprotocols"

    async def OnPreServer(self) -> None:
        """Shared; the subprotocol the query names."""
        self.SharedConnection = 1
        assert self.request is not None
        pick = self.request.get("pick") or ""
        offered = self.request.subprotocols
        self.subprotocol = (offered[0] if offered else "") if pick == "first" else pick

    async def Server(self) -> None:
        """Say what was chosen, then echo."""
        await self.Write(json.dumps({"subprotocol": self.subprotocol}))
        while True:
            try:
                data = await self.Read()
            except ClientClosed:
                return
            await self.Write(data)

