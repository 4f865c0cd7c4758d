"""The Web Gateway: holds browser WebSockets and multiplexes them over links to workers."""

from gateway.config import GatewayConfig
from gateway.server import Gateway, serve_gateway

__all__ = ["Gateway", "GatewayConfig", "serve_gateway"]
