"""Which worker runtime the running code belongs to (IRIS: the process's context).

``WebSocket`` instances find their runtime here, so that ``Chat.Server()`` followed by
``OpenServer(id)`` works anywhere in a worker, as ``%New()`` + ``OpenServer`` does in
IRIS. It is a context variable, not a global: trio tasks inherit it from the task that
started them, so tests can run several worker runtimes in one process.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appserver.runtime import WorkerRuntime

__all__ = ["current_runtime", "install_runtime"]

_current: contextvars.ContextVar[WorkerRuntime | None] = contextvars.ContextVar(
    "wsgate_worker_runtime", default=None)


def current_runtime() -> WorkerRuntime:
    """The runtime of the worker this code runs in."""
    runtime = _current.get()
    if runtime is None:
        raise RuntimeError("no wsgate worker runtime: WebSocket server classes run inside "
                           "an app-server worker (wsgate appserver)")
    return runtime


def install_runtime(runtime: WorkerRuntime | None) -> None:
    """Make ``runtime`` the current one, for this task and the tasks it starts."""
    _current.set(runtime)
