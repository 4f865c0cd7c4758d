"""The benchmark's baselines: the chat and the echo served by one process, no store.

``python -m bench.baselines.trio_ws`` (trio-websocket) and
``python -m bench.baselines.websockets_server`` (websockets, asyncio); both share the
sans-I/O room of :mod:`bench.baselines.chatroom`.
"""

__all__: list[str] = []
