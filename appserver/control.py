"""The control socket between the supervisor and a worker: one JSON message a packet.

``AF_UNIX``/``SOCK_SEQPACKET``. Supervisor to worker: ``{"cmd": "link", ...}`` with the
link's file descriptor attached (``SCM_RIGHTS``), and ``{"cmd": "stop"}``. Worker to
supervisor: ``{"event": "ready"}``, ``{"event": "link-closed", "link": n}`` and, each
second, ``{"event": "stats", ...}``. Each side reads 64 KiB at a time.
"""

from __future__ import annotations

import contextlib
import json
import socket
from typing import Any

__all__ = ["send_control"]


def send_control(ctrl: socket.socket, message: dict[str, Any]) -> None:
    """Send one control message (the socket has room: these are small and rare)."""
    with contextlib.suppress(OSError):  # the peer is gone; its control loop notices
        ctrl.send(json.dumps(message).encode())
