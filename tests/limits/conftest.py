"""``start_bare``: ``wsgate run`` started as a user starts it, ready once it says so.

The shared ``start_run`` fixture then polls ``http://.../healthz``, which a TLS gateway
does not answer and a gateway limiting its connection rate may refuse; this one waits
for the launcher's "chat ready" line only (the links may still be coming up).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import WSGATE, Process, System

StartBare = Callable[..., System]


@pytest.fixture
def start_bare(tmp_path: Path) -> Iterator[StartBare]:
    """Start ``wsgate run`` with extra flags; stopped after the test."""
    systems: list[System] = []

    def start(*extra: str, workers: int = 1) -> System:
        n = len(systems)
        db = tmp_path / f"bare{n}.db"
        process = Process([WSGATE, "run", "--port", "0", "--workers", str(workers),
                           "--db", str(db), *extra], log_path=tmp_path / f"bare{n}.log")
        system = System("", db, [process])
        systems.append(system)
        system.base_url = process.wait_for_line(r"wsgate: chat ready at (https?://\S+)")[1]
        return system

    yield start
    for system in systems:
        system.stop()
