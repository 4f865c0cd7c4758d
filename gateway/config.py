"""The gateway's settings, as the command line gives them."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["GatewayConfig", "SecretError", "load_secret", "new_gateway_id", "parse_hostport"]

_GATEWAY_NAME = re.compile(r"^[A-Za-z0-9_]{1,32}$")


class SecretError(Exception):
    """No usable link secret was given."""


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


def new_gateway_id(name: str = "gw") -> str:
    """A gateway id unique across gateways and restarts: ``<name>.<random>``.

    WebSocketIDs are ``<gateway id>-<n>``, so every id names the gateway holding it.
    """
    if not _GATEWAY_NAME.match(name):
        raise ValueError(f"gateway name must be 1-32 letters, digits or _, got {name!r}")
    return f"{name}.{secrets.token_hex(3)}"


@dataclass(slots=True)
class GatewayConfig:
    """Everything ``wsgate gateway`` is told."""

    appserver: tuple[str, int]
    secret: bytes
    host: str = "127.0.0.1"
    port: int = 8080
    pool: int = 2
    gateway_id: str = field(default_factory=new_gateway_id)
    #: Largest message a browser may send; larger ones close the socket with 1009.
    max_message_bytes: int = 1024 * 1024
    #: Bytes queued for one browser before it is dropped as too slow.
    socket_buffer_bytes: int = 8 * 1024 * 1024
    #: How long a new socket waits for a free link (IRIS: Queued Request Timeout).
    queue_timeout_s: float = 10.0
    #: How long a worker may take to answer a handshake (IRIS: Server Response Timeout).
    response_timeout_s: float = 30.0
    #: Close sockets with no message either way for this long; 0 never (IRIS: the CSP
    #: session timeout ends an idle socket).
    session_timeout_s: float = 0.0
    #: False: refuse shared sockets, every socket runs private (IRIS: REGISTRY_METHODS).
    registry_enabled: bool = True
    #: Who may read /status and /metrics.
    status_allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )

    def status_allowed(self, client_host: str) -> bool:
        """Whether ``client_host`` may read the System Status page."""
        try:
            address = ipaddress.ip_address(client_host)
        except ValueError:
            return False
        return any(address in network for network in self.status_allow)
