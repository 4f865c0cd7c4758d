"""``baseline-socketify``: the chat and the echo in one process, on socketify (uWebSockets).

What a Python user after the fastest server would write with socketify, the CPython
binding of uWebSockets (C++): ``app.ws`` routes whose open, message and close callbacks
call into Python, and the chat's fan-out done the uWebSockets way, natively: every chat
socket subscribes to one topic and a message is published to it once
(``app.publish``, which reaches the sender too); uWebSockets then frames it into each
subscriber's buffer and writes them at the end of its loop turn. State is kept in memory
(:class:`~bench.baselines.chatroom.ChatRoom`); nothing is stored, whereas the wsgate
chat writes every message to SQLite.

One process, one thread (socketify's ``App.run``; no workers): an asyncio loop that
polls the uWebSockets (libuv) loop without blocking, on every turn while there is
traffic (so it keeps a core busy then), and once idle every 1 ms, later every 10 ms
(which a first message after a quiet spell may wait for). Settings differ from
uWebSockets' defaults where those would make it do less than the other baselines: no
message is dropped for backpressure (uWebSockets drops, by default, what a socket with
64 KiB unsent would get), no idle timeout, messages up to 1 MiB (as ``websockets``'
default), no compression.

    python -m bench.baselines.socketify_server --host 127.0.0.1 --port 0

prints ``ready http://HOST:PORT/`` once it listens, and serves the chat at
``/csp/user/Chat.Server.cls`` and the echo (text back as text, bytes as bytes) at
``/csp/user/Echo.Server.cls`` until SIGTERM or SIGINT; then it stops listening and
exits, and the open sockets close with the process (no close frame).
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any, Protocol

from socketify import App, AppListenOptions, OpCode

from bench.baselines.chatroom import CHAT_PATH, ECHO_PATH, ChatRoom, baseline_main

__all__ = ["ChatEchoServer", "main"]

log = logging.getLogger(__name__)

#: The largest message taken, as ``websockets``' default ``max_size`` (socketify's
#: default is 16 KiB); a bigger one closes its socket.
MAX_MESSAGE_BYTES = 1024 * 1024
#: The topic every chat socket subscribes to: the room.
ROOM_TOPIC = "chat"
_NOT_FOUND = "no such WebSocket class\n"


# socketify ships no type information; these are the parts of its API used here.
class _WebSocket(Protocol):
    def send(self, message: str | bytes, opcode: OpCode = ..., compress: bool = ...,
             fin: bool = ...) -> object: ...

    def subscribe(self, topic: str) -> bool: ...

    def get_user_data(self) -> Any: ...


class _Request(Protocol):
    def get_header(self, lower_case_header: str) -> str | None: ...


class _Response(Protocol):
    def upgrade(self, sec_web_socket_key: str | None, sec_web_socket_protocol: str | None,
                sec_web_socket_extensions: str | None, socket_context: object,
                user_data: object = ...) -> bool: ...

    def write_status(self, status: int) -> _Response: ...

    def end(self, message: str | bytes, end_connection: bool = ...) -> object: ...


class _Member:
    """A chat socket's own data (socketify's per-socket user data): its id in the room."""

    __slots__ = ("wsid",)

    def __init__(self) -> None:
        self.wsid = ""


def _text(message: str | bytes) -> str:
    # uWebSockets has checked that a text message is UTF-8; socketify decoded it.
    return message if isinstance(message, str) else message.decode(errors="replace")


class ChatEchoServer:
    """The routes' callbacks and the chat room they share."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.room = ChatRoom("socketify")

    def publish(self, text: str) -> None:
        """Send ``text`` to every chat socket: one publish, fanned out natively."""
        self.app.publish(ROOM_TOPIC, text, OpCode.TEXT)

    @staticmethod
    def chat_upgrade(res: _Response, req: _Request, socket_context: object) -> None:
        """Accept a chat upgrade with a :class:`_Member` as the socket's user data."""
        res.upgrade(req.get_header("sec-websocket-key"),
                    req.get_header("sec-websocket-protocol"),
                    req.get_header("sec-websocket-extensions"), socket_context, _Member())

    def chat_open(self, ws: _WebSocket) -> None:
        """Join the room: the status to this socket first, then the room's messages."""
        member: _Member = ws.get_user_data()
        member.wsid, status = self.room.join()
        ws.send(status, OpCode.TEXT)
        ws.subscribe(ROOM_TOPIC)

    def chat_message(self, ws: _WebSocket, message: str | bytes, opcode: OpCode) -> None:
        """Answer one message, to everyone or to the sender."""
        member: _Member = ws.get_user_data()
        outgoing = self.room.receive(member.wsid, _text(message))
        if outgoing.everyone:
            self.publish(outgoing.text)
        else:
            ws.send(outgoing.text, OpCode.TEXT)

    def chat_close(self, ws: _WebSocket, code: int, message: bytes | None) -> None:
        """Leave the room (uWebSockets has already unsubscribed the socket)."""
        member: _Member | None = ws.get_user_data()
        if member is not None and member.wsid:
            gone = self.room.leave(member.wsid)
            if gone is not None:
                self.publish(gone.text)

    @staticmethod
    def echo_message(ws: _WebSocket, message: str | bytes, opcode: OpCode) -> None:
        """Send the message back with its own opcode: text as text, bytes as bytes."""
        ws.send(message, opcode)

    @staticmethod
    def not_found(res: _Response, req: _Request) -> None:
        """Any other path (an upgrade or not): 404."""
        res.write_status(404).end(_NOT_FOUND)


def _behavior(**handlers: object) -> dict[str, object]:
    return {"compression": 0,  # CompressOptions.DISABLED: wsgate offers no deflate
            "max_payload_length": MAX_MESSAGE_BYTES,
            "idle_timeout": 0,  # none: the other baselines close no idle socket
            # 0: no limit. uWebSockets' own default drops messages to a socket with
            # more than 64 KiB unsent; the other baselines queue them all instead.
            "max_backpressure": 0,
            **handlers}


def serve_until_signal(host: str, port: int) -> bool:
    """Listen, print the ready line, and serve until SIGTERM or SIGINT; False if it
    could not listen."""
    app = App()
    server = ChatEchoServer(app)
    app.ws(CHAT_PATH, _behavior(upgrade=server.chat_upgrade, open=server.chat_open,
                                message=server.chat_message, close=server.chat_close))
    app.ws(ECHO_PATH, _behavior(message=server.echo_message))
    app.any("/*", server.not_found)
    bound: list[int] = []

    def on_listen(config: AppListenOptions) -> None:
        bound.append(config.port)
        print(f"ready http://{host}:{config.port}/", flush=True)

    # Called only once it listens (socketify logs a failure and returns).
    app.listen(AppListenOptions(port=port, host=host), on_listen)
    if not bound:
        return False

    def on_signal() -> None:
        log.info("stopping")
        app.close()  # stops listening and stops the loop: App.run returns

    def install_signal_handlers() -> None:
        # From inside the running loop: App.run sets its own SIGINT handler (which
        # exits from within the loop) just before, and sets none for SIGTERM.
        for signum in (signal.SIGTERM, signal.SIGINT):
            app.loop.loop.add_signal_handler(signum, on_signal)

    app.loop.loop.call_soon(install_signal_handlers)
    app.run()
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the baseline server; return its exit status."""
    return baseline_main("baseline-socketify", __doc__ or "", serve_until_signal, argv)


if __name__ == "__main__":
    sys.exit(main())
