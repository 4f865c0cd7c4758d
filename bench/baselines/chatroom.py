"""The tutorial's chat as a sans-I/O room, in memory: what both baselines serve.

The wire shapes are the wsgate chat's (``appserver/chat.py``), byte for byte where the
benchmark looks: compact JSON, keys in the tutorial's order.

* on connect, to that socket: ``{"Type":"Status","Message":<base64 text>,"WSID":<id>}``;
* ``{"Message": b64, "Author": a}`` -> ``{"Message","Author","Type":"Chat","Sent"}`` to
  every socket, the sender included;
* ``{"User": alias}`` -> ``{"Type":"userlist","Users":[{"User": ...}, ...]}`` to every
  socket, in join order (a rename keeps its place); a closed socket leaves the list;
* anything else -> ``{"Type":"Error","Message": why}`` to the sender.

Unlike wsgate, which writes every connection, user and message to SQLite, the room keeps
its state in this process's memory and stores nothing; that difference is part of what
the benchmark compares. There is one room (wsgate's ``?room=`` is not modelled).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import itertools
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["CHAT_PATH", "ECHO_PATH", "ChatRoom", "Outgoing", "baseline_main", "stop_future"]

CHAT_PATH = "/csp/user/Chat.Server.cls"
ECHO_PATH = "/csp/user/Echo.Server.cls"
MAX_ALIAS_CHARS = 64
STATUS_TEXT = "status update, this shouldn't be processed as message"


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A text message to send: to every socket of the room, or back to the sender."""

    text: str
    everyone: bool


class ChatRoom:
    """Who is connected, under which alias; what to send for each event."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._ids = itertools.count(1)
        #: Aliases by socket id, in join order (a dict keeps insertion order).
        self._users: dict[str, str] = {}

    def join(self) -> tuple[str, str]:
        """A new socket: its id, and the status message to send it."""
        wsid = f"{self._prefix}-{next(self._ids)}"
        status = {"Type": "Status",
                  "Message": base64.b64encode(STATUS_TEXT.encode()).decode(), "WSID": wsid}
        return wsid, _json(status)

    def receive(self, wsid: str, text: str) -> Outgoing:
        """What to send for one message from socket ``wsid``."""
        try:
            message = json.loads(text)
        except ValueError as exc:
            return self._error(f"malformed JSON: {exc}")
        if not isinstance(message, dict):
            return self._error("expected a JSON object")
        if "User" in message:
            alias = message["User"]
            if not isinstance(alias, str) or not alias.strip():
                return self._error("User must be a non-empty name")
            if len(alias) > MAX_ALIAS_CHARS:
                return self._error(f"User must be at most {MAX_ALIAS_CHARS} characters")
            self._users[wsid] = alias.strip()
            return self._userlist()
        body, author = message.get("Message"), message.get("Author", "unknown")
        if not isinstance(body, str):
            return self._error('expected {"Message": base64 text, "Author": name} or '
                               '{"User": name}')
        try:
            base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return self._error("Message is not valid base64")
        if not isinstance(author, str) or len(author) > MAX_ALIAS_CHARS:
            return self._error(f"Author must be a name of at most {MAX_ALIAS_CHARS} characters")
        chat = {"Message": body, "Author": author, "Type": "Chat",
                "Sent": time.strftime("%Y-%m-%d %H:%M:%S")}
        return Outgoing(_json(chat), everyone=True)

    def leave(self, wsid: str) -> Outgoing | None:
        """A socket closed: the new user list for everyone, if it had a name."""
        if self._users.pop(wsid, None) is None:
            return None
        return self._userlist()

    def _userlist(self) -> Outgoing:
        users = [{"User": alias} for alias in self._users.values()]
        return Outgoing(_json({"Type": "userlist", "Users": users}), everyone=True)

    @staticmethod
    def _error(why: str) -> Outgoing:
        return Outgoing(_json({"Type": "Error", "Message": why}), everyone=False)


def baseline_main(name: str, doc: str, serve: Callable[[str, int], object],
                  argv: list[str] | None = None) -> int:
    """A baseline's command line (``--host``, ``--port``, ``--log-level``): run
    ``serve(host, port)`` until a signal stops it; 1 if it could not listen (it raised
    OSError, or returned False), else 0."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=0, help="port (0 picks a free one)")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
    try:
        served = serve(args.host, args.port)
    except (OSError, ExceptionGroup) as exc:
        # trio wraps the OSError of a busy port in an exception group
        found = exc if isinstance(exc, OSError) else exc.subgroup(OSError)
        if found is None:
            raise
        while isinstance(found, ExceptionGroup):
            found = found.exceptions[0]
        print(f"{name}: cannot serve on {args.host}:{args.port}: {found}", file=sys.stderr)
        return 1
    if served is False:
        print(f"{name}: cannot serve on {args.host}:{args.port}", file=sys.stderr)
        return 1
    return 0


def stop_future() -> asyncio.Future[None]:
    """An asyncio baseline's stop: a future SIGTERM or SIGINT completes."""
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def on_signal() -> None:
        if not stop.done():
            stop.set_result(None)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    return stop
