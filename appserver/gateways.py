"""The gateways linked to this app server, and what a gateway that vanished left behind.

A worker whose link drops detaches the link's open sockets without running their
``OnPostServer``: if the gateway lives, it resumes them on another worker. But a gateway
that died (killed, its host gone) resumes nothing, and its users would stay in the
chat's user list forever. So the workers report the sockets they detached, with their
state, and the supervisor keeps them here: a new link from the same gateway proves it
alive (it owns its sockets again, and the report is dropped); a gateway with no link
for ``ttl_s`` seconds is gone, and its sockets' OnPostServer runs on a live worker.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["DetachedSocket", "GatewayWatch"]

#: A socket a worker detached: (wsid, server class, state as JSON).
DetachedSocket = tuple[str, str, str]


class GatewayWatch:
    """See the module docstring."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._gateway_of: dict[int, str] = {}
        self._links: Counter[str] = Counter()
        self._unlinked_since: dict[str, float] = {}
        self._left: dict[str, dict[str, DetachedSocket]] = {}

    def link_opened(self, link_id: int, gateway: str) -> None:
        """A link from ``gateway`` was handed to a worker: the gateway is alive."""
        self._gateway_of[link_id] = gateway
        self._links[gateway] += 1
        self._unlinked_since.pop(gateway, None)
        self._left.pop(gateway, None)  # it resumes (or ends) those sockets itself

    def link_closed(self, link_id: int, now: float) -> None:
        """A link ended (its worker says so, or the worker died)."""
        gateway = self._gateway_of.pop(link_id, None)
        if gateway is None:
            return
        self._links[gateway] -= 1
        if self._links[gateway] <= 0:
            del self._links[gateway]
            self._unlinked_since[gateway] = now

    def left_behind(self, gateway: str, sockets: list[DetachedSocket], lost_link: int) -> None:
        """A worker detached these sockets of ``gateway`` when link ``lost_link`` dropped.

        Link ids grow, so a link of the gateway newer than the lost one proves that it
        linked again after the loss (the report may arrive after that): then the report
        is dropped, as :meth:`link_opened` drops the ones before it.
        """
        if any(g == gateway and link > lost_link for link, g in self._gateway_of.items()):
            return
        kept = self._left.setdefault(gateway, {})
        for socket in sockets:
            kept[socket[0]] = socket

    def due(self, now: float) -> list[tuple[str, list[DetachedSocket]]]:
        """The gateways gone for ``ttl_s`` (no link), with the sockets they left; each is
        returned once."""
        gone = [g for g in self._left if g not in self._links
                and now - self._unlinked_since.setdefault(g, now) >= self.ttl_s]
        return [(g, list(self._left.pop(g).values())) for g in gone]

    @property
    def waiting(self) -> int:
        """Sockets left behind by gateways that may still come back."""
        return sum(len(sockets) for sockets in self._left.values())
