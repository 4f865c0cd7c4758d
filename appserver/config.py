"""The app server's settings, as the command line gives them."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AppServerConfig"]


@dataclass(slots=True)
class AppServerConfig:
    """Everything ``wsgate appserver`` is told."""

    @property
    def store(self) -> str:
        """What the workers open: the Redis URL, else the SQLite file."""
        return self.store_url or self.db

    secret: bytes
    host: str = "127.0.0.1"
    port: int = 0
    workers: int = 2
    max_workers: int = 8
    #: Seconds an idle worker above ``workers`` lives (IRIS: No Activity Timeout).
    idle_timeout_s: float = 60.0
    #: Seconds a gateway may have no link before it counts as gone, and the sockets it
    #: left behind get their OnPostServer on a live worker.
    node_ttl_s: float = 15.0
    #: How often links send heartbeats (a gateway silent for three periods is dead).
    link_heartbeat_s: float = 5.0
    db: str = "wsgate.db"
    #: A Redis store shared by many nodes (``redis://HOST:PORT/DB``); "" for SQLite (db).
    store_url: str = ""
    #: The Redis that carries writes to other nodes' gateways ("": none; by default the
    #: Redis store's).
    bus_url: str = ""
    apps: tuple[str, ...] = ()
    #: Options for server classes (``--set NAME=VALUE``; the chat reads ``mode``).
    settings: dict[str, str] = field(default_factory=dict)
    appserver_id: str = "as"
    log_level: str = "INFO"
