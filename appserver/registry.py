"""The worker's copy of the Web Gateway Registry: which sockets exist, in which mode.

IRIS keeps ``^CacheTemp.cspWebSockets("SERVER", wsid)`` so that ``OpenServer`` can find
a socket from any process. Here the gateway is the source of truth: it announces every
socket's state (connecting, shared, private, closed) on every link, and each worker
keeps this table so ``OpenServer`` answers at once, without a round trip.

WebSocketIDs are ``<gateway id>-<n>`` with ``n`` counting up per gateway, and the
gateway announces ``connecting`` in that order. So an id the table does not hold is
*closed* when its ``n`` is at most the highest seen for its gateway, and merely *not
announced yet* (still in flight) when it is higher.
"""

from __future__ import annotations

import enum

from gateway.link.events import SocketStatus

__all__ = ["Lookup", "SocketRegistry", "parse_wsid"]


class Lookup(enum.Enum):
    """What the registry knows of an id."""

    CONNECTING = "connecting"
    SHARED = "shared"
    PRIVATE = "private"
    CLOSED = "closed"
    UNKNOWN = "unknown"  # not announced yet: OpenServer lets it through, as IRIS does


_FROM_STATUS = {
    SocketStatus.CONNECTING: Lookup.CONNECTING,
    SocketStatus.SHARED: Lookup.SHARED,
    SocketStatus.PRIVATE: Lookup.PRIVATE,
}


def parse_wsid(wsid: str) -> tuple[str, int] | None:
    """Split a WebSocketID into (gateway id, n), or None if it is not one."""
    gateway, sep, number = wsid.rpartition("-")
    if not sep or not gateway or not number.isdigit():
        return None
    return gateway, int(number)


class SocketRegistry:
    """Socket states by id, as announced by the gateways this worker is linked to."""

    def __init__(self) -> None:
        self._states: dict[str, Lookup] = {}
        self._sessions: dict[str, str] = {}
        self._highest: dict[str, int] = {}

    def update(self, wsid: str, status: SocketStatus, session: str = "") -> None:
        """Apply one announcement from a gateway."""
        parsed = parse_wsid(wsid)
        if parsed is None:
            return
        gateway, number = parsed
        if number > self._highest.get(gateway, 0):
            self._highest[gateway] = number
        if status is SocketStatus.CLOSED:
            self.mark_closed(wsid)
            return
        self._states[wsid] = _FROM_STATUS[status]
        if session:
            self._sessions[wsid] = session

    def mark_closed(self, wsid: str) -> None:
        """Forget a socket this worker saw end (before the gateway's announcement)."""
        self._states.pop(wsid, None)
        self._sessions.pop(wsid, None)

    def session(self, wsid: str) -> str:
        """The CSP session id the socket was opened with ("" if none)."""
        return self._sessions.get(wsid, "")

    def lookup(self, wsid: str) -> Lookup:
        """The state of ``wsid`` as far as this worker knows."""
        state = self._states.get(wsid)
        if state is not None:
            return state
        parsed = parse_wsid(wsid)
        if parsed is not None and parsed[1] <= self._highest.get(parsed[0], 0):
            return Lookup.CLOSED
        return Lookup.UNKNOWN

    def __len__(self) -> int:
        return len(self._states)
