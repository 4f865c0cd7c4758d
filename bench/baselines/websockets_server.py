"""``baseline-websockets``: the chat and the echo in one asyncio process, on ``websockets``.

What a Python user would write with the ``websockets`` library instead of wsgate: one
handler per socket, the chat's fan-out done by :func:`websockets.asyncio.server.broadcast`
(which queues the message on every connection without awaiting any of them). State is
kept in memory (:class:`~bench.baselines.chatroom.ChatRoom`); nothing is stored, whereas
the wsgate chat writes every message to SQLite.

    python -m bench.baselines.websockets_server --host 127.0.0.1 --port 0

prints ``ready http://HOST:PORT/`` once it listens, and serves the chat at
``/csp/user/Chat.Server.cls`` and the echo (text back as text, bytes as bytes) at
``/csp/user/Echo.Server.cls`` until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from bench.baselines.chatroom import CHAT_PATH, ECHO_PATH, ChatRoom, baseline_main, stop_future

__all__ = ["ChatEchoServer", "main"]

log = logging.getLogger(__name__)


def _path(request: Request | None) -> str:
    return "" if request is None else request.path.partition("?")[0]


class ChatEchoServer:
    """The connection handler and the chat room it shares among sockets."""

    def __init__(self) -> None:
        self.room = ChatRoom("websockets")
        self.sockets: set[ServerConnection] = set()

    @staticmethod
    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        """Refuse, with 404, upgrades to paths other than the chat and the echo."""
        if _path(request) in (CHAT_PATH, ECHO_PATH):
            return None
        return connection.respond(HTTPStatus.NOT_FOUND, "no such WebSocket class\n")

    async def handler(self, ws: ServerConnection) -> None:
        """Serve one socket until it closes."""
        if _path(ws.request) == ECHO_PATH:
            async for message in ws:
                await ws.send(message)
            return
        wsid, status = self.room.join()
        await ws.send(status)
        self.sockets.add(ws)
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    message = message.decode(errors="replace")
                outgoing = self.room.receive(wsid, message)
                if outgoing.everyone:
                    broadcast(self.sockets, outgoing.text)
                else:
                    await ws.send(outgoing.text)
        except ConnectionClosed:
            pass
        finally:
            self.sockets.discard(ws)
            gone = self.room.leave(wsid)
            if gone is not None:
                broadcast(self.sockets, gone.text)


async def serve_until_signal(host: str, port: int) -> None:
    """Listen, print the ready line, and serve until SIGTERM or SIGINT."""
    server = ChatEchoServer()
    stop = stop_future()
    # compression=None: wsgate does not offer permessage-deflate either.
    async with serve(server.handler, host, port, process_request=server.process_request,
                     compression=None) as listening:
        bound = next(iter(listening.sockets)).getsockname()
        print(f"ready http://{bound[0]}:{bound[1]}/", flush=True)
        await stop
        log.info("stopping")


def main(argv: list[str] | None = None) -> int:
    """Run the baseline server; return its exit status."""
    def serve(host: str, port: int) -> None:
        asyncio.run(serve_until_signal(host, port))

    return baseline_main("baseline-websockets", __doc__ or "", serve, argv)


if __name__ == "__main__":
    sys.exit(main())
