"""The coordinator's handle on the load-generator processes.

A :class:`Fleet` starts its processes once, with the ``spawn`` context (a fresh
interpreter each: nothing of the coordinator, no inherited sockets), and reuses them
for every scenario. A command goes to some or all of them; :meth:`Fleet.ask` waits for
every addressed process to answer, so each phase of a scenario starts on all load
generators together.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

from bench.loadgen import agent_main

__all__ = ["Fleet", "FleetError", "split"]

STOP_GRACE_S = 5.0

Message = dict[str, Any]


class FleetError(Exception):
    """A load-generator process died or did not answer in time."""


def split(total: int, parts: int) -> list[int]:
    """``total`` spread over ``parts`` as evenly as integers allow (first ones larger)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


class Fleet:
    """Load-generator processes, addressed by index."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a fleet needs at least one process")
        context = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self._processes: list[BaseProcess] = []
        #: Set once a process died or missed a deadline: its late replies would be
        #: taken for answers to later commands, so the fleet must be replaced.
        self.broken = False
        for number in range(size):
            ours, theirs = context.Pipe()
            process = context.Process(target=agent_main, args=(theirs,), daemon=True,
                                      name=f"wsgate-bench-loadgen-{number}")
            process.start()
            theirs.close()
            self._pipes.append(ours)
            self._processes.append(process)

    @property
    def size(self) -> int:
        """How many load-generator processes there are."""
        return len(self._processes)

    @property
    def pids(self) -> list[int]:
        """Their process ids."""
        return [p.pid for p in self._processes if p.pid is not None]

    def ask(self, messages: Sequence[Message | None], timeout_s: float) -> list[Message]:
        """Send ``messages[i]`` to process ``i`` (None: skip it); return their replies."""
        addressed = [i for i, m in enumerate(messages) if m is not None]
        for i in addressed:
            try:
                self._pipes[i].send(messages[i])
            except OSError as exc:
                self.broken = True
                raise FleetError(f"load generator {i} is gone: {exc}") from None
        replies: dict[int, Message] = {}
        deadline = time.monotonic() + timeout_s
        pending = {self._pipes[i]: i for i in addressed}
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                self.broken = True
                raise FleetError(f"load generators {sorted(pending.values())} did not answer "
                                 f"{messages[addressed[0]]!r:.60} within {timeout_s:g} s")
            for pipe in wait(list(pending), left):
                assert isinstance(pipe, Connection)
                index = pending.pop(pipe)
                try:
                    replies[index] = pipe.recv()
                except EOFError:
                    self.broken = True
                    raise FleetError(f"load generator {index} died "
                                     f"(exit code {self._processes[index].exitcode})") from None
        return [replies[i] for i in addressed]

    def ask_all(self, message: Message, timeout_s: float) -> list[Message]:
        """Send one command to every process; return their replies."""
        return self.ask([message] * self.size, timeout_s)

    def close(self) -> None:
        """Ask every process to exit; terminate, by PID, those that do not."""
        for pipe in self._pipes:
            with contextlib.suppress(OSError, ValueError):
                pipe.send({"op": "exit"})
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join(STOP_GRACE_S)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in self._pipes:
            pipe.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
