"""What a measured phase cost: the load generators' CPU, the system's, the machine's.

Every result carries these, so a reader can tell a server's limit from the load
generator's: ``loadgen_cpu_share`` is the load generators' CPU over the phase as a share
of all the machine's cores, ``sut_cpu_s`` the system under test's CPU seconds (from
``/proc``, all its processes), and ``machine_cpu_share`` how busy the whole machine was
(near 1: the figures are CPU-bound, on a machine the load generator shares).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from bench.fleet import Fleet
from bench.procstat import TreeSample, machine_cpu
from bench.systems import RunningSystem

__all__ = ["Usage", "read_usage", "record_cost", "settle"]

_NS_PER_S = 1e9
_REPLY_TIMEOUT_S = 60.0
_CORES = os.cpu_count() or 1
#: A system is idle once it uses less than this share of one core.
IDLE_CPU_SHARE = 0.05
SETTLE_MAX_S = 15.0
SETTLE_STEP_S = 0.25
#: Without a process to watch, settling is just a pause.
SETTLE_BLIND_S = 1.0


@dataclass(frozen=True, slots=True)
class Usage:
    """The load generators' CPU seconds and the machine's, at one moment."""

    loadgen_cpu_s: list[float]
    now_ns: int
    machine: tuple[float, float]


def read_usage(fleet: Fleet) -> Usage:
    """Ask every load generator for its CPU seconds; read the machine's."""
    replies = fleet.ask_all({"op": "usage"}, _REPLY_TIMEOUT_S)
    return Usage([r["cpu_s"] for r in replies], min(r["now_ns"] for r in replies),
                  machine_cpu())


def record_cost(fleet: Fleet, before: Usage, system: RunningSystem,
                sut_before: TreeSample | None, extra: dict[str, Any]) -> TreeSample | None:
    """Record what the phase since ``before`` cost the load generators and the system;
    return the system's sample at the end (None when its process is unknown)."""
    after = read_usage(fleet)
    wall_s = (after.now_ns - before.now_ns) / _NS_PER_S
    busy_s, total_s = (a - b for a, b in zip(after.machine, before.machine, strict=True))
    # The whole machine's busy share: near 1 means the figures are CPU-bound.
    extra["machine_cpu_share"] = round(busy_s / total_s, 4) if total_s > 0 else None
    spent = sum(a - b for a, b in zip(after.loadgen_cpu_s, before.loadgen_cpu_s, strict=True))
    extra["loadgen_procs"] = fleet.size
    extra["loadgen_cpu_s"] = round(spent, 3)
    extra["loadgen_cpu_share"] = round(spent / (wall_s * _CORES), 4) if wall_s > 0 else None
    sut_after = system.sample()
    if sut_before is not None and sut_after is not None:
        extra["sut_cpu_s"] = round(sut_after.cpu_s - sut_before.cpu_s, 3)
        extra["sut_cpu_share"] = (round(extra["sut_cpu_s"] / (wall_s * _CORES), 4)
                                  if wall_s > 0 else None)
    else:
        extra["sut_cpu_s"] = extra["sut_cpu_share"] = None
    extra["measured_s"] = round(wall_s, 3)
    return sut_after


def settle(system: RunningSystem) -> None:
    """Wait until the system is idle (it may still be closing the last run's sockets)."""
    last = system.sample()
    if last is None:
        time.sleep(SETTLE_BLIND_S)
        return
    deadline = time.monotonic() + SETTLE_MAX_S
    while time.monotonic() < deadline:
        time.sleep(SETTLE_STEP_S)
        now = system.sample()
        if now is None or now.cpu_s - last.cpu_s < IDLE_CPU_SHARE * SETTLE_STEP_S:
            return
        last = now
