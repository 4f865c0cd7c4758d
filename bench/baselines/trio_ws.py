"""``baseline-trio-websocket``: the chat and the echo in one trio process, on trio-websocket.

What a Python user would write with trio-websocket's ``serve_websocket`` instead of
wsgate: one handler task per socket, and the chat's fan-out as a loop that awaits
``send_message`` on each socket in turn (trio-websocket has no broadcast helper).
State is kept in memory (:class:`~bench.baselines.chatroom.ChatRoom`); nothing is
stored, whereas the wsgate chat writes every message to SQLite.

    python -m bench.baselines.trio_ws --host 127.0.0.1 --port 0

prints ``ready http://HOST:PORT/`` once it listens, and serves the chat at
``/csp/user/Chat.Server.cls`` and the echo (text back as text, bytes as bytes) at
``/csp/user/Echo.Server.cls`` until SIGTERM or SIGINT.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import sys
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from bench.baselines.chatroom import CHAT_PATH, ECHO_PATH, ChatRoom, baseline_main

__all__ = ["ChatEchoServer", "main"]

log = logging.getLogger(__name__)

#: How long the goodbye user list may take to go out from a closing socket's handler.
LEAVE_TIMEOUT_S = 1.0


class ChatEchoServer:
    """The request handler and the chat room it shares among sockets."""

    def __init__(self) -> None:
        self.room = ChatRoom("trio-websocket")
        self.sockets: set[Any] = set()

    async def handler(self, request: WebSocketRequest) -> None:
        """Accept the chat or the echo (404 for any other path); serve until closed."""
        path = request.path.partition("?")[0]
        if path not in (CHAT_PATH, ECHO_PATH):
            await request.reject(404, body=b"no such WebSocket class\n")
            return
        ws = await request.accept()
        try:
            if path == ECHO_PATH:
                while True:
                    await ws.send_message(await ws.get_message())
            else:
                await self._chat(ws)
        except ConnectionClosed:
            pass

    async def _chat(self, ws: Any) -> None:
        wsid, status = self.room.join()
        await ws.send_message(status)
        self.sockets.add(ws)
        try:
            while True:
                message = await ws.get_message()
                if isinstance(message, bytes):
                    message = message.decode(errors="replace")
                outgoing = self.room.receive(wsid, message)
                if outgoing.everyone:
                    await self.broadcast(outgoing.text)
                else:
                    await ws.send_message(outgoing.text)
        finally:
            self.sockets.discard(ws)
            gone = self.room.leave(wsid)
            if gone is not None:
                # Shielded: the handler may be ending because it was cancelled.
                with trio.move_on_after(LEAVE_TIMEOUT_S) as scope:
                    scope.shield = True
                    await self.broadcast(gone.text)

    async def broadcast(self, text: str) -> None:
        """Send ``text`` to every chat socket, one after the other."""
        for ws in list(self.sockets):
            # A closed socket is skipped; its own handler takes it out of the set.
            with contextlib.suppress(ConnectionClosed):
                await ws.send_message(text)


async def serve_until_signal(host: str, port: int) -> None:
    """Listen, print the ready line, and serve until SIGTERM or SIGINT."""
    server = ChatEchoServer()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            listening = await nursery.start(
                functools.partial(serve_websocket, server.handler, host, port, None))
            print(f"ready http://{host}:{listening.port}/", flush=True)
            async for _ in signals:
                log.info("stopping")
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    """Run the baseline server; return its exit status."""
    def serve(host: str, port: int) -> None:
        trio.run(serve_until_signal, host, port)

    return baseline_main("baseline-trio-websocket", __doc__ or "", serve, argv)


if __name__ == "__main__":
    sys.exit(main())
