"""The control socket between the supervisor and a worker: one JSON message a packet.

``AF_UNIX``/``SOCK_SEQPACKET``. Supervisor to worker: ``{"cmd": "link", ...}`` with the
link's file descriptor attached (``SCM_RIGHTS``), ``{"cmd": "finish", ...}`` (run the
OnPostServer of sockets a vanished gateway left) and ``{"cmd": "stop"}``. Worker to
supervisor: ``{"event": "ready"}``, ``{"event": "link-closed", "link": n}``,
``{"event": "detached", ...}`` (the sockets a lost link left) and, each second,
``{"event": "stats", ...}``. Each side reads 64 KiB at a time, so long lists travel in
several packets (:func:`in_packets`).
"""

from __future__ import annotations

import contextlib
import json
import socket
from typing import Any

__all__ = ["CONTROL_PACKET_BYTES", "in_packets", "send_control"]

#: The most JSON one control message carries.
CONTROL_PACKET_BYTES = 48 * 1024


def send_control(ctrl: socket.socket, message: dict[str, Any]) -> None:
    """Send one control message (the socket has room: these are small and rare)."""
    with contextlib.suppress(OSError):  # the peer is gone; its control loop notices
        ctrl.send(json.dumps(message).encode())


def in_packets(items: list[Any], max_bytes: int = CONTROL_PACKET_BYTES) -> list[list[Any]]:
    """Split ``items`` into lists whose JSON fits one control packet each."""
    packets: list[list[Any]] = [[]]
    size = 0
    for item in items:
        item_size = len(json.dumps(item)) + 2
        if packets[-1] and size + item_size > max_bytes:
            packets.append([])
            size = 0
        packets[-1].append(item)
        size += item_size
    return packets
