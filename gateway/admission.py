"""Who may connect, and how much: the checks an upgrade passes before a worker sees it.

* **Origin** (cross-site WebSocket hijacking): a browser sends the page's origin with
  every upgrade. One from a page on another site (its host is not the request's
  ``Host``) gets 403 unless ``--allowed-origin`` lists it; a request with no Origin
  (not a browser) is let in. RFC 6455 section 10.2.
* **Sockets**: at most ``--max-sockets`` at once; over it, 503.
* **Connection rate**: each client address may open ``--max-connect-rate`` new
  connections per second (a token bucket holding one second's worth, at least one);
  over it, 429 (over TLS the connection is closed instead: no handshake is spent).

Each check answers a :class:`~gateway.handshake.Rejection`-like (status, text) pair or
None, and counts what it refused.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["ConnectRate", "origin_refusal"]

#: Client addresses whose bucket is kept; older ones are forgotten when there are more.
MAX_TRACKED_ADDRESSES = 100_000


def origin_refusal(origin: str, host: str, allowed: frozenset[str]) -> str:
    """Why an upgrade with ``Origin: origin`` for ``Host: host`` is refused ("" if not).

    Allowed: no Origin; an origin in ``allowed`` (or ``*`` there); an origin whose
    host and port are the request's own.
    """
    if not origin or "*" in allowed or origin in allowed:
        return ""
    parts = urlsplit(origin)
    if parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower():
        return ""
    return (f"cross-origin WebSocket refused: the page at {origin} is not served by "
            f"this gateway ({host or 'no Host'}); allow it with --allowed-origin")


class ConnectRate:
    """New connections per second per client address, as token buckets."""

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self._buckets: dict[str, tuple[float, float]] = {}

    def admit(self, address: str, now: float) -> bool:
        """Take one token for a new connection from ``address``; False if none is left."""
        if self.per_second <= 0:
            return True
        # The bucket holds a second's worth, and at least one connection (a rate
        # below one a second still admits one, then one every 1/rate seconds).
        capacity = max(1.0, self.per_second)
        tokens, then = self._buckets.get(address, (capacity, now))
        tokens = min(capacity, tokens + (now - then) * self.per_second)
        if tokens < 1:
            self._buckets[address] = (tokens, now)
            return False
        self._buckets[address] = (tokens - 1, now)
        if len(self._buckets) > MAX_TRACKED_ADDRESSES:
            self._forget_full(now)
        return True

    def _forget_full(self, now: float) -> None:
        """Forget the buckets that have refilled (their addresses have been quiet)."""
        quiet = max(1.0, 1.0 / self.per_second)  # a bucket refills within this
        self._buckets = {a: (t, then) for a, (t, then) in self._buckets.items()
                         if now - then < quiet}
