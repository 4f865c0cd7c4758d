"""Command-line flags declared once, for the command that takes them and for ``wsgate
run``, which takes them too and passes on those it was given.

:data:`APPSERVER_FLAGS` and :data:`GATEWAY_FLAGS` are the flags ``wsgate run`` passes on
to each. They live here, beside the CLI helpers of :mod:`gateway.link.process`, because
all three commands import them: the app server may import only the link of the gateway,
and the launcher nothing that imports trio. The commands' other flags are their own
(``--listen``, ``--appserver``, ``--pool``, ``--bus``, ``--secret-file``, ...), or flags
``wsgate run`` declares for itself because it uses them too (``--host``, ``--port``,
``--workers``, ``--db``, ``--store``, ``--drain-timeout``, ``--link-heartbeat``).

A :class:`Flag` is what ``argparse.add_argument`` needs. :func:`add_flags` adds a table
of them to a parser: with their defaults for the command itself, or, for a launcher,
with ``None`` for "not given" (a repeatable flag: an empty list), so that only what the
user gave is passed on and the other command's own defaults stay the only ones.
:func:`passed_on` turns what was given back into command-line words.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["APPSERVER_FLAGS", "GATEWAY_FLAGS", "Flag", "add_flags", "passed_on"]


@dataclass(frozen=True, slots=True)
class Flag:
    """One ``--name VALUE`` flag."""

    name: str
    help: str
    default: Any = None
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    #: May be given many times; the value is the list of them.
    repeat: bool = False
    dest: str | None = None

    @property
    def attr(self) -> str:
        """The attribute of the parsed namespace that holds the value."""
        return self.dest or self.name.removeprefix("--").replace("-", "_")


class ArgumentAdder(Protocol):
    """An ``argparse`` parser or argument group."""

    def add_argument(self, *names: str, **options: Any) -> argparse.Action:
        """Add one flag."""


def add_flags(parser: ArgumentAdder, flags: Iterable[Flag], *,
              for_launcher: bool = False) -> None:
    """Add ``flags`` to ``parser``; ``for_launcher``: ``None`` (or ``[]``) when not
    given, whatever the flag's default."""
    for flag in flags:
        options: dict[str, Any] = {"help": flag.help, "dest": flag.attr}
        if flag.repeat:
            options.update(action="append", default=[])
        else:
            options["default"] = None if for_launcher else flag.default
        if flag.type is not None:
            options["type"] = flag.type
        if flag.metavar is not None:
            options["metavar"] = flag.metavar
        if flag.choices is not None:
            options["choices"] = list(flag.choices)
        parser.add_argument(flag.name, **options)


def passed_on(args: argparse.Namespace, flags: Iterable[Flag]) -> list[str]:
    """The words that give another command the ``flags`` that were given here."""
    words: list[str] = []
    for flag in flags:
        value = getattr(args, flag.attr)
        if flag.repeat:
            for item in value:
                words += [flag.name, str(item)]
        elif value is not None:
            words += [flag.name, str(value)]
    return words


#: The app server's flags that ``wsgate run`` passes on.
APPSERVER_FLAGS: tuple[Flag, ...] = (
    Flag("--max-workers", "most worker processes (IRIS: Maximum Server Connections; "
         "default max(8, --workers))", None, int, "N"),
    Flag("--idle-timeout", "seconds before an idle worker above --workers exits "
         "(IRIS: No Activity Timeout; default 60)", 60.0, float, "S"),
    Flag("--node-ttl", "a gateway no worker is linked to counts as gone, and its "
         "sockets' OnPostServer runs, within S seconds (default 15)", 15.0, float, "S"),
    Flag("--mode", "the chat's mode when the handshake has no ?mode= (default shared)",
         "shared", choices=("shared", "private")),
    Flag("--app", "serve a WebSocket server class (repeatable); the chat and Echo.Server "
         "are always served", metavar="MODULE:CLASS", repeat=True),
    Flag("--set", "an option for server classes (repeatable)", metavar="NAME=VALUE",
         repeat=True, dest="settings"),
    Flag("--metrics", "where to serve /metrics (default 127.0.0.1:0, a free port; 'off' "
         "for none)", "127.0.0.1:0", metavar="HOST:PORT"),
)

#: The gateway's flags that ``wsgate run`` passes on.
GATEWAY_FLAGS: tuple[Flag, ...] = (
    Flag("--max-message-bytes", "largest message a browser may send; more closes with 1009",
         1024 * 1024, int, "N"),
    Flag("--max-queued-bytes", "bytes queued for one browser before it is closed as too "
         "slow, 1008 (default 8 MiB; never below one message)", 8 * 1024 * 1024, int, "N"),
    Flag("--max-held-bytes", "bytes of one browser's messages kept until its worker "
         "acknowledges them, also while no worker has it; more closes it with 1013 "
         "(default 4 MiB; never below one message)", 4 * 1024 * 1024, int, "N"),
    Flag("--ping-interval", "ping a browser silent for S seconds (default 20; 0: never)",
         20.0, float, "S"),
    Flag("--ping-timeout", "close (1001) a browser silent for S seconds after a ping "
         "(default 20)", 20.0, float, "S"),
    Flag("--max-sockets", "sockets held at once at most; more get 503 (default 100000)",
         100_000, int, "N"),
    Flag("--max-connect-rate", "new connections per second per client address; more get "
         "429 (default 1000; 0: no limit)", 1000.0, float, "R"),
    Flag("--handshake-timeout", "how long a client may take to send its request (and a TLS "
         "handshake) before it is hung up on (default 10)", 10.0, float, "S"),
    Flag("--allowed-origin", "a page origin (scheme://host[:port]) allowed to open sockets "
         "besides this gateway's own; '*' allows any (repeatable; default: only the "
         "gateway's own pages, and clients that send no Origin)", metavar="ORIGIN",
         repeat=True),
    Flag("--certfile", "TLS certificate chain (PEM): serve https and wss", metavar="PATH"),
    Flag("--keyfile", "the certificate's private key (PEM; default: in --certfile)",
         metavar="PATH"),
    Flag("--queue-timeout", "how long a new socket waits for a free link before 503 "
         "(IRIS: Queued Request Timeout; default 10)", 10.0, float, "S"),
    Flag("--response-timeout", "how long a worker may take to answer a handshake "
         "(IRIS: Server Response Timeout; default 30)", 30.0, float, "S"),
    Flag("--session-timeout", "close a socket after S seconds with no message either way "
         "(IRIS: the CSP session timeout; default 0, never)", 0.0, float, "S"),
    Flag("--registry-methods", "disabled: refuse shared sockets, so every socket runs "
         "private (IRIS: REGISTRY_METHODS in CSP.ini)", "enabled",
         choices=("enabled", "disabled")),
    Flag("--status-allow", "clients allowed to read /status and /metrics (default loopback "
         "only; repeatable)", metavar="CIDR", repeat=True),
    Flag("--park-after", "a socket silent for S seconds gives up its reader task (memory) "
         "until the browser sends again; every socket starts so (default 1; 0: only until "
         "it first speaks)", 1.0, float, "S"),
)
