"""What one run measures, as a list of steps, and how one step is carried out.

A step is one scenario against one system at one client count. Every step gets a
freshly started system (fresh store, fresh processes): memory before and after is
then that step's alone, and a private-mode worker still finishing the last step's
socket cannot turn this step's connection away.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, replace

from bench.cost import settle
from bench.fleet import Fleet, FleetError
from bench.results import Result
from bench.scenarios import (
    Load,
    run_broadcast,
    run_echo,
    run_handshake,
    run_idle,
    run_storm,
)
from bench.systems import RunningSystem, SystemSpec, SystemStartError, start_system

__all__ = ["PlanSettings", "Step", "build_plan", "run_step"]

log = logging.getLogger(__name__)

SCENARIOS = ("idle", "broadcast", "echo", "handshake", "storm")


@dataclass(frozen=True, slots=True)
class PlanSettings:
    """The knobs of a run, from the command line."""

    scenarios: tuple[str, ...]
    systems: tuple[SystemSpec, ...]
    clients: tuple[int, ...]
    echo_clients: tuple[int, ...]
    idle_sockets: int
    load: Load
    #: Private mode: senders in a broadcast (the others only listen, so they poll).
    private_senders: int = 1
    sut_log_level: str = "WARNING"
    #: The handshake scenario: how many, and how many in flight at once (each a step).
    handshakes: int = 2000
    handshake_in_flight: tuple[int, ...] = (1, 100)
    #: The reconnect storm (wsgate-shared only): sockets dropped by a gateway restart.
    storm_sockets: int = 10_000


@dataclass(frozen=True, slots=True)
class Step:
    """One scenario, one system, one client count."""

    scenario: str
    spec: SystemSpec
    clients: int

    @property
    def text(self) -> str:
        """How the progress bar names it."""
        return f"{self.scenario} {self.spec.label} C={self.clients}"


def _private_cap(spec: SystemSpec, clients: int) -> int:
    """Private mode holds one worker per socket: at most ``max_workers`` at once."""
    if spec.private and spec.max_workers is not None:
        return min(clients, spec.max_workers)
    return clients


def build_plan(settings: PlanSettings) -> list[Step]:
    """Every step of the run, system by system."""
    steps: list[Step] = []
    for spec in settings.systems:
        for scenario in settings.scenarios:
            if scenario == "handshake":
                # a private socket holds a worker process: not a handshake rate
                if not spec.private:
                    steps += [Step(scenario, spec, n) for n in settings.handshake_in_flight]
                continue
            if scenario == "storm":
                # only a gateway the benchmark can restart (bench/split.py)
                if spec.name == "wsgate-shared":
                    steps.append(Step(scenario, replace(spec, split=True),
                                      settings.storm_sockets))
                continue
            if scenario == "idle":
                counts: tuple[int, ...] = (settings.idle_sockets,)
                if spec.private:
                    # One at a time until refused: a couple more than the pool holds.
                    counts = ((spec.max_workers or 4) + 2,)
            else:
                wanted = settings.clients if scenario == "broadcast" else settings.echo_clients
                counts = tuple(dict.fromkeys(_private_cap(spec, c) for c in wanted))
            steps += [Step(scenario, spec, count) for count in counts]
    return steps


def _load_for(step: Step, settings: PlanSettings) -> Load:
    load = replace(settings.load, clients=step.clients)
    if step.scenario == "broadcast":
        senders = settings.private_senders if step.spec.private else load.senders
        load = replace(load, senders=max(1, min(senders, step.clients)))
    return load


def _carry_out(fleet: Fleet, system: RunningSystem, step: Step, load: Load,
               settings: PlanSettings) -> Result:
    if step.scenario == "idle":
        return run_idle(fleet, system, step.clients, load, until_refused=step.spec.private)
    if step.scenario == "broadcast":
        return run_broadcast(fleet, system, load)
    if step.scenario == "echo":
        return run_echo(fleet, system, load)
    if step.scenario == "handshake":
        return run_handshake(fleet, system, settings.handshakes, step.clients, load)
    if step.scenario == "storm":
        return run_storm(fleet, system, step.clients, load)
    raise ValueError(f"unknown scenario {step.scenario!r}")


def run_step(fleet: Fleet, step: Step, settings: PlanSettings) -> Result:
    """Start the step's system, run its scenario, stop the system; never raise.

    A failure (the system did not start, a load generator died) becomes a result with
    null figures and an ``error`` field, so one broken system does not lose the run.
    """
    load = _load_for(step, settings)
    system: RunningSystem | None = None
    try:
        system = start_system(step.spec, log_level=settings.sut_log_level)
        settle(system)
        result = _carry_out(fleet, system, step, load, settings)
    except (SystemStartError, FleetError, OSError) as exc:
        log.error("%s failed: %s", step.text, exc)
        log.debug("%s", traceback.format_exc())
        result = Result(step.scenario, step.spec.name, None)
        result.extra = {"label": step.spec.label, "workers": step.spec.workers,
                        "requested": step.clients, "error": str(exc)[:2000]}
    finally:
        if system is not None:
            system.stop()
    return result
