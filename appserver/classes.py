"""Finding server classes by name: the built-in ones and the user's ``--app module:Class``."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from appserver.csp import WebSocket

__all__ = ["BUILTIN_APPS", "ClassLoadError", "load_classes"]

#: Served by every app server: the tutorial's chat, and an echo for the benchmark.
BUILTIN_APPS: tuple[str, ...] = ("appserver.chat:ChatServer", "appserver.echo:EchoServer")


class ClassLoadError(Exception):
    """An ``--app`` spec does not name a WebSocket server class."""


def _load(spec: str) -> type[WebSocket]:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ClassLoadError(f"--app {spec!r}: expected module:Class, e.g. myapp.echo:Echo")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ClassLoadError(f"--app {spec!r}: cannot import {module_name}: {exc}") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise ClassLoadError(f"--app {spec!r}: {module_name} has no {attr}")
    if not isinstance(cls, type) or not issubclass(cls, WebSocket):
        raise ClassLoadError(f"--app {spec!r}: {attr} is not a subclass of "
                             "appserver.WebSocket")
    return cls


def load_classes(apps: Iterable[str] = ()) -> dict[str, type[WebSocket]]:
    """Server classes by their routing key (``namespace/Package.Class``)."""
    classes: dict[str, type[WebSocket]] = {}
    for spec in (*BUILTIN_APPS, *apps):
        cls = _load(spec)
        key = cls.csp_name()
        if key in classes and classes[key] is not cls:
            raise ClassLoadError(f"--app {spec!r}: /csp/{key}.cls is already served by "
                                 f"{classes[key].__module__}.{classes[key].__name__}")
        classes[key] = cls
    return classes
