"""The bus between nodes, from a worker's side: writes for gateways it has no link to.

A worker is linked to the gateways of its own node. A socket held by another node's
gateway is reached through Redis: each gateway reads a stream of its own
(``wsgate:bus:<gateway id>``), and a worker appends to it the same link frames it would
have sent on a link (``Write``, ``WriteGroup``, ``WriteMany``). A broadcast enters each
other gateway once, whatever its number of sockets; each gateway fans it out, and its
sequenced groups put the room's messages in order and drop any repeat.

Which gateways a broadcast goes to is decided in Redis, by one script, when the batch
holding it is appended: every gateway with a lease (``wsgate:gateways``, kept by the
leases of appserver/leases.py) but those the worker already sent it to over a link.
A broadcast is appended after the message it carries was stored, and a gateway's lease
exists before any of its sockets is registered (a worker renews it before it reads a
new link), so a socket that joined a room before a message was stored gets it, however
new its node is.

Appending happens in one task, in order, a batch per round trip, so a write never waits
for Redis. While Redis is unreachable the frames wait (up to :data:`BACKLOG_FRAMES`;
older ones are dropped, and counted) and go once it is back.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from typing import Any

import trio

__all__ = ["BACKLOG_FRAMES", "BATCH_FRAMES", "STREAM_MAXLEN", "Bus"]

log = logging.getLogger(__name__)

#: Frames waiting for Redis at most (a bound on memory during an outage).
BACKLOG_FRAMES = 100_000
#: Frames appended at most by one call of the script.
BATCH_FRAMES = 500
#: Each gateway's stream is trimmed to about this many frames.
STREAM_MAXLEN = 10_000
_RETRY_MAX_S = 2.0

#: KEYS: the set of gateways, the key prefix. ARGV: the stream length, its ttl, then
#: (kind, target, frame) triples: kind "p" appends to gateway ``target``; kind "b" to
#: every gateway with a lease except those named in ``target`` (comma-separated).
_PUBLISH = """
local prefix, maxlen, ttl = KEYS[2], ARGV[1], ARGV[2]
local live = {}
for _, gw in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', prefix .. 'lease:' .. gw) == 1 then
    table.insert(live, gw)
  else
    redis.call('SREM', KEYS[1], gw)
  end
end
local touched, appended = {}, 0
local function append(gw, frame)
  redis.call('XADD', prefix .. 'bus:' .. gw, 'MAXLEN', '~', maxlen, '*', 'f', frame)
  touched[gw] = true
  appended = appended + 1
end
for i = 3, #ARGV, 3 do
  local kind, target, frame = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if kind == 'p' then
    append(target, frame)
  else
    local skip = {}
    for gw in string.gmatch(target, '[^,]+') do skip[gw] = true end
    for _, gw in ipairs(live) do
      if not skip[gw] then append(gw, frame) end
    end
  end
end
for gw, _ in pairs(touched) do
  redis.call('EXPIRE', prefix .. 'bus:' .. gw, ttl)
end
return appended
"""


class Bus:
    """Appends frames to other gateways' streams; see the module docstring."""

    def __init__(self, url: str) -> None:
        self.url = url
        #: (kind, target, frame): see _PUBLISH.
        self._queue: deque[tuple[str, str, bytes]] = deque()
        self._wakeup = trio.Event()
        #: Whether the last append reached Redis.
        self.up = False
        #: Frames appended to streams (a broadcast counts once per gateway).
        self.appended = 0
        #: Frames given up during an outage longer than the backlog.
        self.dropped = 0

    def send(self, gateway: str, frame: bytes) -> None:
        """Queue one frame for ``gateway``'s stream."""
        self._push(("p", gateway, frame))

    def broadcast(self, frame: bytes, linked: list[str]) -> None:
        """Queue one frame for every gateway with a lease but ``linked`` (those the
        worker sent it to over its links)."""
        self._push(("b", ",".join(linked), frame))

    def _push(self, item: tuple[str, str, bytes]) -> None:
        if len(self._queue) >= BACKLOG_FRAMES:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(item)
        self._wakeup.set()

    async def run(self) -> None:
        """Append what is queued, in order, forever (reconnecting as needed)."""
        from store.redis import BUS_STREAM_TTL_S, KEY, redis_client

        async with redis_client(self.url) as client:
            script = client.register_script(_PUBLISH)
            await self._append_forever(script, [f"{KEY}gateways", KEY],
                                       [STREAM_MAXLEN, BUS_STREAM_TTL_S])

    async def _append_forever(self, script: Any, keys: list[str], head: list[int]) -> None:
        import coredis.exceptions

        delay = 0.05
        while True:
            if not self._queue:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                continue
            batch = [self._queue[i] for i in range(min(len(self._queue), BATCH_FRAMES))]
            args: list[Any] = list(head)
            for item in batch:
                args.extend(item)
            try:
                appended = await script(keys=keys, args=args)
            except (coredis.exceptions.ConnectionError, coredis.exceptions.BusyLoadingError,
                    TimeoutError, OSError) as exc:
                if self.up or delay == 0.05:
                    log.warning("bus: Redis at %s is unreachable (%s); %d frames wait",
                                self.url, exc, len(self._queue))
                self.up = False
                await trio.sleep(random.uniform(0, delay))
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            for _ in batch:
                self._queue.popleft()
            self.appended += int(appended)
            if not self.up:
                log.info("bus: appending to the other gateways' streams on %s", self.url)
            self.up, delay = True, 0.05
