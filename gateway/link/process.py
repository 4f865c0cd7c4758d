"""What every wsgate command shares at start-up: the link secret, ``HOST:PORT``, the
log format, the file limit, and exiting with a parent.

Both the gateway's and the app server's command lines use these, so they live below
both. Only command-line entry points call :func:`configure_logging`; library code just
uses ``logging.getLogger(__name__)``. Nothing here ever logs or prints a secret.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import trio

__all__ = [
    "LOG_FORMAT",
    "SecretError",
    "configure_logging",
    "listen_error",
    "load_secret",
    "parse_hostport",
    "raise_file_limit",
    "watch_parent",
]

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
#: How often a child checks that its parent is still there.
PARENT_POLL_S = 0.5


class SecretError(Exception):
    """No usable link secret was given."""


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr at ``level`` (DEBUG, INFO, WARNING, ERROR)."""
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format=LOG_FORMAT,
                        force=True)


def parse_hostport(text: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Parse ``HOST:PORT`` (or ``:PORT``, or ``[v6]:PORT``); raise ValueError if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or default_host
    return host, int(port)


def load_secret(secret_file: str | None) -> bytes:
    """The link secret: from ``secret_file`` when given, else ``$WSGATE_SECRET``."""
    if secret_file:
        try:
            raw = Path(secret_file).read_bytes().strip()
        except OSError as exc:
            raise SecretError(f"cannot read the secret file {secret_file}: {exc}") from None
        if not raw:
            raise SecretError(f"the secret file {secret_file} is empty")
        return raw
    env = os.environ.get("WSGATE_SECRET", "").strip()
    if not env:
        raise SecretError(
            "no link secret: pass --secret-file PATH or set WSGATE_SECRET "
            "(wsgate run makes one for you)"
        )
    return env.encode()


def listen_error(host: str, port: int, exc: OSError) -> str:
    """One line saying why ``host:port`` cannot be listened on (for a command's output)."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    shown = f"[{host}]" if ":" in host else host
    return f"cannot listen on {shown}:{port}: {reason[:1].lower()}{reason[1:]}"


def raise_file_limit() -> None:
    """Let this process hold as many sockets as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def watch_parent(cancel_scope: trio.CancelScope) -> None:
    """Cancel ``cancel_scope`` when the parent process goes away."""
    # Imported here: `wsgate run`'s launcher uses this module and never imports trio,
    # which would cost it more memory than all its work does.
    import trio

    parent = os.getppid()
    # Polling is the portable way to notice a parent's death without its cooperation.
    while os.getppid() == parent:  # noqa: ASYNC110
        await trio.sleep(PARENT_POLL_S)
    log.warning("parent process %d is gone; stopping", parent)
    cancel_scope.cancel()
