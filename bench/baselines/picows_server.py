"""``baseline-picows``: the chat and the echo in one asyncio process, on picows.

What a Python user after the fastest asyncio WebSocket server would write with picows
(a Cython frame parser and writer, on aiofastnet's transports when that is installed,
as picows does by default): no coroutine per socket, but a :class:`picows.WSListener`
whose callbacks get each frame as it is parsed. The chat's fan-out encodes the JSON
once, into one ``bytearray`` with room for a frame header in front, and hands that same
buffer to :meth:`picows.WSTransport.send_reuse_external_bytearray` for every socket:
picows writes the (unmasked, server-side) header into the room in place and tries the
``send()`` system call at once, copying only what the kernel did not take. There is no
backpressure: what a slow socket cannot take is queued in its transport, without limit,
as ``websockets``' broadcast does. State is kept in memory
(:class:`~bench.baselines.chatroom.ChatRoom`); nothing is stored, whereas the wsgate chat
writes every message to SQLite.

    python -m bench.baselines.picows_server --host 127.0.0.1 --port 0

prints ``ready http://HOST:PORT/`` once it listens, and serves the chat at
``/csp/user/Chat.Server.cls`` and the echo (text back as text, bytes as bytes) at
``/csp/user/Echo.Server.cls`` until SIGTERM or SIGINT, when it closes open sockets
with 1001 (going away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from http import HTTPStatus

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSProtocolError,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from bench.baselines.chatroom import CHAT_PATH, ECHO_PATH, ChatRoom, baseline_main, stop_future

__all__ = ["ChatEchoServer", "main"]

log = logging.getLogger(__name__)

#: The largest message taken, as ``websockets``' default ``max_size``; a bigger one
#: closes its socket with 1009.
MAX_MESSAGE_BYTES = 1024 * 1024
#: Bytes kept free in front of a broadcast frame's payload for picows to write the
#: header into (it asks for at least 14: 2 + 8 length bytes + a client's 4-byte mask).
HEADER_ROOM = 14
#: How long the stop may take to see open sockets' close frames out.
STOP_TIMEOUT_S = 1.0
_CHAT = CHAT_PATH.encode()
_ECHO = ECHO_PATH.encode()
_NOT_FOUND = b"no such WebSocket class\n"
_DATA = (WSMsgType.TEXT, WSMsgType.BINARY)


def _invalid_text() -> WSProtocolError:
    """What to raise for a text message that is not UTF-8: picows then closes with 1007."""
    return WSProtocolError(WSCloseCode.INVALID_TEXT, "invalid UTF-8 in a text message")


def _text(msg_type: WSMsgType, payload: bytes) -> str:
    """A reassembled chat message's text (binary messages are decoded too, as elsewhere)."""
    if msg_type != WSMsgType.TEXT:
        return payload.decode(errors="replace")
    try:
        return payload.decode()
    except UnicodeDecodeError:
        raise _invalid_text() from None


class _Listener(WSListener):
    """What both endpoints share: the close handshake, and the socket set for the stop."""

    def __init__(self, server: ChatEchoServer) -> None:
        self.server = server

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.server.transports.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.server.transports.discard(transport)

    @staticmethod
    def close_back(transport: WSTransport, frame: WSFrame) -> None:
        """Answer a peer's close frame (picows leaves that to us) and hang up."""
        transport.send_close(frame.get_close_code(), frame.get_close_message())
        transport.disconnect()


class _EchoListener(_Listener):
    """Sends every data frame back as it came: text as text, bytes as bytes."""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type in _DATA or msg_type == WSMsgType.CONTINUATION:
            # Frame by frame: a fragmented message goes back fragmented the same way.
            transport.send(msg_type, frame.get_payload_as_memoryview(), frame.fin)
        elif msg_type == WSMsgType.CLOSE:
            self.close_back(transport, frame)


class _ChatListener(_Listener):
    """One chat socket: its id in the room, and the fragments of a message under way."""

    def __init__(self, server: ChatEchoServer) -> None:
        super().__init__(server)
        self.wsid = ""
        self.first_type = WSMsgType.TEXT
        self.fragments: list[bytes] | None = None
        self.fragment_bytes = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        super().on_ws_connected(transport)
        self.wsid, status = self.server.room.join()
        transport.send(WSMsgType.TEXT, status.encode())
        self.server.chat.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        super().on_ws_disconnected(transport)
        self.server.chat.discard(transport)
        if self.wsid:
            gone = self.server.room.leave(self.wsid)
            if gone is not None:
                self.server.broadcast(gone.text)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type == WSMsgType.TEXT and frame.fin:  # the usual case: a whole message
            try:
                text = frame.get_payload_as_utf8_text()
            except UnicodeDecodeError:
                raise _invalid_text() from None
            self.received(transport, text)
        elif msg_type in _DATA:
            if frame.fin:
                self.received(transport, _text(msg_type, frame.get_payload_as_bytes()))
            else:
                self.first_type = msg_type
                self.fragments = [frame.get_payload_as_bytes()]
                self.fragment_bytes = frame.payload_size
        elif msg_type == WSMsgType.CONTINUATION:
            self.continued(transport, frame)
        elif msg_type == WSMsgType.CLOSE:
            self.close_back(transport, frame)

    def continued(self, transport: WSTransport, frame: WSFrame) -> None:
        """picows hands over frames, not messages: put a fragmented one together."""
        if self.fragments is None:
            raise WSProtocolError(WSCloseCode.PROTOCOL_ERROR, "continuation of nothing")
        self.fragment_bytes += frame.payload_size
        if self.fragment_bytes > MAX_MESSAGE_BYTES:
            raise WSProtocolError(WSCloseCode.MESSAGE_TOO_BIG, "message too big")
        self.fragments.append(frame.get_payload_as_bytes())
        if frame.fin:
            payload, self.fragments = b"".join(self.fragments), None
            self.received(transport, _text(self.first_type, payload))

    def received(self, transport: WSTransport, text: str) -> None:
        """One whole message: answer it, to everyone or to the sender."""
        outgoing = self.server.room.receive(self.wsid, text)
        if outgoing.everyone:
            self.server.broadcast(outgoing.text)
        else:
            transport.send(WSMsgType.TEXT, outgoing.text.encode())


class ChatEchoServer:
    """The listener factory, the chat room, and the open sockets."""

    def __init__(self) -> None:
        self.room = ChatRoom("picows")
        #: The chat's sockets, which a broadcast goes to.
        self.chat: set[WSTransport] = set()
        #: Every open socket (chat and echo), to close on the stop.
        self.transports: set[WSTransport] = set()

    def listener_for(self, request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener:
        """Route an upgrade by its path; 404 for paths other than the chat and the echo."""
        path = request.path.partition(b"?")[0]
        if path == _CHAT:
            return _ChatListener(self)
        if path == _ECHO:
            return _EchoListener(self)
        response = WSUpgradeResponse.create_error_response(HTTPStatus.NOT_FOUND, _NOT_FOUND)
        return WSUpgradeResponseWithListener(response, None)

    def broadcast(self, text: str) -> None:
        """Send ``text`` to every chat socket: one encoding, one buffer, no copy each."""
        frame = bytearray(HEADER_ROOM)
        frame += text.encode()
        # A socket that closes meanwhile is only taken out of the set later (asyncio
        # calls connection_lost soon, not now), and picows skips sends to it.
        for transport in self.chat:
            transport.send_reuse_external_bytearray(WSMsgType.TEXT, frame, HEADER_ROOM)

    async def close_all(self) -> None:
        """Close every open socket with 1001, and wait (a little) until they are gone."""
        transports = list(self.transports)
        for transport in transports:
            transport.send_close(WSCloseCode.GOING_AWAY)
            transport.disconnect()
        if transports:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await asyncio.gather(*(t.wait_disconnected() for t in transports),
                                         return_exceptions=True)


async def serve_until_signal(host: str, port: int) -> None:
    """Listen, print the ready line, and serve until SIGTERM or SIGINT."""
    server = ChatEchoServer()
    stop = stop_future()
    # Auto-pong on (picows' default); no pings of our own, as the other baselines
    # keep no idle timeout either. No permessage-deflate: picows does not offer it.
    listening = await ws_create_server(server.listener_for, host, port,
                                       max_frame_size=MAX_MESSAGE_BYTES)
    try:
        bound = listening.sockets[0].getsockname()
        print(f"ready http://{bound[0]}:{bound[1]}/", flush=True)
        await stop
        log.info("stopping")
    finally:
        listening.close()
        await server.close_all()


def main(argv: list[str] | None = None) -> int:
    """Run the baseline server; return its exit status."""
    def serve(host: str, port: int) -> None:
        asyncio.run(serve_until_signal(host, port))

    return baseline_main("baseline-picows", __doc__ or "", serve, argv)


if __name__ == "__main__":
    sys.exit(main())
