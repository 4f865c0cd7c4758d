"""The bus between nodes, from a gateway's side: what other nodes' workers write here.

With many nodes, a worker is linked only to the gateways of its own node. Writes for
this gateway's sockets from the other nodes arrive on a Redis stream of this gateway's
own (``wsgate:bus:<gateway id>``, see appserver/bus.py): the same link frames as on a
link, decoded with the link's codec and handled as if a link had brought them (writes,
group writes; sequenced groups order them and drop repeats). A stream, not pub/sub: a
gateway that loses Redis for a while reads on from the last entry it had once Redis is
back, so nothing sent meanwhile is lost (up to the stream's trimmed length).

While Redis is unreachable the gateway keeps serving its own sockets, says
``degraded`` in /healthz and 0 in ``wsgate_gateway_bus_up``, and reconnects with
backoff and jitter.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

import trio

from gateway.link.codec import decode_body
from gateway.link.errors import LinkProtocolError

if TYPE_CHECKING:
    from gateway.gateway import Gateway

__all__ = ["BusReader"]

log = logging.getLogger(__name__)

#: Entries read at most per round trip, and how long one read waits for some.
READ_COUNT = 1000
READ_BLOCK_MS = 1000
_RETRY_MAX_S = 2.0


class BusReader:
    """Reads this gateway's stream; see the module docstring."""

    def __init__(self, gw: Gateway, url: str) -> None:
        self.gw = gw
        self.url = url
        self.key = f"wsgate:bus:{gw.id}"
        #: Whether the last read reached Redis.
        self.up = False
        self.frames = 0
        self.ttl_s = 0

    async def run(self) -> None:
        """Read and handle this gateway's stream, forever (reconnecting as needed)."""
        from store.redis import BUS_STREAM_TTL_S, redis_client  # only with a bus

        self.ttl_s = BUS_STREAM_TTL_S

        async with redis_client(self.url, decode=False) as client:
            await self._read_forever(client)

    async def _read_forever(self, client: Any) -> None:
        import coredis.exceptions

        last: bytes | str = "0-0"  # a new gateway id: its stream holds only what is ours
        delay = 0.05
        renewed_at = -float(self.ttl_s)
        while True:
            try:
                now = trio.current_time()
                if now - renewed_at > self.ttl_s / 4:
                    await client.expire(self.key, self.ttl_s)
                    renewed_at = now
                reply = await client.xread({self.key: last}, count=READ_COUNT,
                                           block=READ_BLOCK_MS)
            except (coredis.exceptions.ConnectionError, coredis.exceptions.BusyLoadingError,
                    TimeoutError, OSError) as exc:
                if self.up:
                    log.warning("bus: Redis at %s is unreachable (%s): serving this "
                                "gateway's own sockets only", self.url, exc)
                self.up = False
                await trio.sleep(random.uniform(0, delay))
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            if not self.up:
                log.info("bus: reading %s on %s", self.key, self.url)
            self.up, delay = True, 0.05
            for entries in (reply or {}).values():
                for entry in entries:
                    last = entry.identifier
                    self._handle(entry.field_values.get(b"f", b""))
            self.gw.link_batch_done(None)

    def _handle(self, frame: bytes) -> None:
        if len(frame) < 5 or int.from_bytes(frame[:4], "big") != len(frame) - 4:
            log.error("bus: a malformed frame on %s", self.key)
            return
        try:
            event = decode_body(frame[4], frame[5:])
        except LinkProtocolError as exc:
            log.error("bus: a bad frame on %s: %s", self.key, exc.reason)
            return
        self.frames += 1
        self.gw.bus_event(event)
