"""The benchmark's baselines: the chat and the echo served by one process, no store.

``python -m bench.baselines.trio_ws`` (trio-websocket),
``python -m bench.baselines.websockets_server`` (websockets, asyncio),
``python -m bench.baselines.picows_server`` (picows: asyncio and Cython) and
``python -m bench.baselines.socketify_server`` (socketify: uWebSockets, C++); all share
the sans-I/O room of :mod:`bench.baselines.chatroom`.
"""

__all__: list[str] = []
