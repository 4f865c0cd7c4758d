"""The Web Gateway: holds browser WebSockets and multiplexes them over links to workers.

:mod:`gateway.link` is the link protocol that the gateway and the app server both
build on; :mod:`gateway.gateway` holds :class:`~gateway.gateway.Gateway`;
:mod:`gateway.cli` is the ``wsgate`` command. Nothing is re-exported here, so that
importing the sans-I/O link does not import trio.
"""

__all__: list[str] = []
