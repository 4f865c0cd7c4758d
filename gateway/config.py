"""The gateway's settings, as the command line gives them."""

from __future__ import annotations

import ipaddress
import re
import secrets
import ssl
from dataclasses import dataclass, field

__all__ = ["GatewayConfig", "new_gateway_id"]

_GATEWAY_NAME = re.compile(r"^[A-Za-z0-9_]{1,32}$")


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
    #: Bytes of one browser's messages kept until its worker acknowledges them (also
    #: while no worker has the socket); over it the socket closes with 1013.
    hold_bytes: int = 4 * 1024 * 1024
    #: How long a new socket waits for a free link (IRIS: Queued Request Timeout).
    queue_timeout_s: float = 10.0
    #: How long a worker may take to answer a handshake (IRIS: Server Response Timeout).
    response_timeout_s: float = 30.0
    #: Close sockets with no message either way for this long; 0 never (IRIS: the CSP
    #: session timeout ends an idle socket).
    session_timeout_s: float = 0.0
    #: Ping a browser silent this long; 0: never (keep-alive, and dead-peer detection).
    ping_interval_s: float = 20.0
    #: Close (1001) a browser silent this long after a ping.
    ping_timeout_s: float = 20.0
    #: On SIGTERM: how long closing every browser socket (1001) may take before exiting.
    drain_timeout_s: float = 10.0
    #: How often links send heartbeats (a peer silent for three periods is dead).
    link_heartbeat_s: float = 5.0
    #: Sockets held at once at most; over it an upgrade gets 503.
    max_sockets: int = 100_000
    #: New connections per second per client address; over it 429 (0: no limit).
    max_connect_rate: float = 1000.0
    #: How long a client may take to send its request (and a TLS handshake): slowloris.
    handshake_timeout_s: float = 10.0
    #: A socket silent this long loses its reader task until the browser sends again
    #: (gateway/parking.py); 0: only right after the handshake.
    park_after_s: float = 1.0
    #: Page origins allowed to open sockets besides the gateway's own ("*": any).
    allowed_origins: frozenset[str] = frozenset()
    #: The Redis through which other nodes' workers reach this gateway ("": none).
    bus_url: str = ""
    #: TLS: the certificate chain and its key (PEM); both set: https and wss only.
    certfile: str | None = None
    keyfile: str | None = None
    #: False: refuse shared sockets, every socket runs private (IRIS: REGISTRY_METHODS).
    registry_enabled: bool = True
    #: Who may read /status and /metrics.
    status_allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )

    def tls_context(self) -> ssl.SSLContext | None:
        """The server's TLS context, when a certificate is configured (else None).

        Raises ``OSError`` or ``ssl.SSLError`` for a file that cannot be read or used.
        """
        if not self.certfile:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certfile, self.keyfile)
        context.set_alpn_protocols(["http/1.1"])
        return context

    def status_allowed(self, client_host: str) -> bool:
        """Whether ``client_host`` may read the System Status page."""
        try:
            address = ipaddress.ip_address(client_host)
        except ValueError:
            return False
        return any(address in network for network in self.status_allow)
