"""The Web Gateway: holds browser WebSockets and multiplexes them over links to workers.

The names below are loaded on first use (PEP 562), so that importing the sans-I/O link
protocol (``gateway.frames``, ``gateway.protocol``) does not import trio or sockets.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.server import Gateway, serve_gateway

__all__ = ["Gateway", "GatewayConfig", "serve_gateway"]

_HOMES = {"Gateway": "gateway.server", "serve_gateway": "gateway.server",
          "GatewayConfig": "gateway.config"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
