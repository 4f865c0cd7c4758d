"""Fixtures: wsgate systems started as a user starts them, and stopped by PID."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisServer, redis_server
from tests.support import WSGATE, Process, System

StartRun = Callable[..., System]


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "link.secret"
    path.write_text(secrets.token_hex(32))
    path.chmod(0o600)
    return path


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[StartRun]:
    """Start ``wsgate run`` (app server + gateway + SQLite); stopped after the test."""
    systems: list[System] = []

    def start(*extra: str, workers: int = 2, db: Path | None = None) -> System:
        db = db or tmp_path / f"run{len(systems)}.db"
        log = tmp_path / f"run{len(systems)}.log"
        process = Process([WSGATE, "run", "--port", "0", "--workers", str(workers),
                           "--db", str(db), *extra], log_path=log)
        match = process.wait_for_line(r"wsgate: chat ready at (http://\S+)")
        system = System(match[1], db, [process])
        systems.append(system)
        system.wait_healthy(links=workers)
        return system

    yield start
    for system in systems:
        system.stop()


@pytest.fixture
def start_split(tmp_path: Path, secret_file: Path) -> Iterator[StartRun]:
    """Start ``wsgate appserver`` and ``wsgate gateway`` as two separate commands."""
    systems: list[System] = []
    env = {k: v for k, v in os.environ.items() if k != "WSGATE_SECRET"}

    def start(*gateway_extra: str, workers: int = 2, appserver_extra: tuple[str, ...] = (),
              pool: int | None = None) -> System:
        n = len(systems)
        db = tmp_path / f"split{n}.db"
        appserver = Process(
            [WSGATE, "appserver", "--listen", "127.0.0.1:0", "--workers", str(workers),
             "--db", str(db), "--secret-file", str(secret_file), *appserver_extra],
            log_path=tmp_path / f"appserver{n}.log", env=env)
        address = appserver.wait_for_line(r"listening on (\S+) ")[1]
        gateway = Process(
            [WSGATE, "gateway", "--port", "0", "--appserver", address, "--pool",
             str(pool or workers), "--secret-file", str(secret_file), *gateway_extra],
            log_path=tmp_path / f"gateway{n}.log", env=env)
        url = gateway.wait_for_line(r"serving (http://\S+) ")[1]
        system = System(url, db, [appserver, gateway])
        systems.append(system)
        system.wait_healthy(links=pool or workers)
        return system

    yield start
    for system in systems:
        system.stop()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (tests/redis_server.py), stopped after it."""
    with redis_server(tmp_path / "redis") as server:
        yield server
