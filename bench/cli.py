"""``wsgate bench``: start the systems, drive them from load-generator processes, report.

    wsgate bench                       # every system and scenario, default sizes
    wsgate bench --quick --json r.json # a tiny run of everything (what the test does)
    wsgate bench --scenarios broadcast --systems wsgate-shared,baseline-websockets \\
                 --workers 1,2 --clients 100,1000 --json r.json --plot charts/
    wsgate bench --url http://127.0.0.1:8080/ --pid 1234   # a system already running

``gateway/cli.py`` makes this the ``bench`` subcommand through :func:`add_arguments`
and :func:`run`; ``python -m bench.cli`` runs the same command alone (:func:`main`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from bench.fleet import Fleet
from bench.loadgen import raise_fd_limit
from bench.plan import SCENARIOS, PlanSettings, build_plan, run_step
from bench.progress import Progress
from bench.report import render_table
from bench.results import Result, compute_ratios, document, write_json
from bench.scenarios import Load
from bench.systems import SYSTEM_NAMES, SystemSpec

__all__ = ["add_arguments", "main", "run"]

log = logging.getLogger(__name__)

DEFAULT_LOADGEN_PROCS = max(2, min(4, os.cpu_count() or 2))
#: ``--quick``: every system and scenario, a few clients, about a second each.
QUICK = {"workers": "1", "clients": "8", "echo_clients": "2", "idle_sockets": 20,
         "senders": 2, "duration": 1.0, "private_max_workers": 3, "handshakes": 20,
         "handshake_in_flight": "1,10", "storm_sockets": 20}


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,2,4, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _names(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(part.strip() for part in text.split(",") if part.strip())
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown) or 'empty list'}; choose from {','.join(allowed)}")
        return names
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``wsgate bench`` flags."""
    what = parser.add_argument_group("what to measure")
    what.add_argument("--scenarios", type=_names(SCENARIOS), default=SCENARIOS,
                      help=f"{','.join(SCENARIOS)} (default all)")
    what.add_argument("--systems", type=_names(SYSTEM_NAMES), default=SYSTEM_NAMES,
                      help=f"{','.join(SYSTEM_NAMES)} (default all)")
    what.add_argument("--workers", default="1,2,4", help="worker counts of wsgate-shared")
    what.add_argument("--clients", default="100,1000", help="broadcast client counts")
    what.add_argument("--echo-clients", default="1,10", help="echo client counts")
    what.add_argument("--idle-sockets", type=int, default=1000, metavar="N",
                      help="sockets the idle scenario opens (default 1000)")
    what.add_argument("--handshakes", type=int, default=2000, metavar="N",
                      help="handshakes per handshake step (default 2000)")
    what.add_argument("--handshake-in-flight", default="1,100", metavar="K,...",
                      help="handshakes in flight at once, a step each (default 1,100)")
    what.add_argument("--storm-sockets", type=int, default=10_000, metavar="N",
                      help="sockets the reconnect storm drops and reopens (default 10000)")
    what.add_argument("--quick", action="store_true",
                      help="a tiny run: every system and scenario, a few clients, ~1 s each")
    load = parser.add_argument_group("load")
    load.add_argument("--senders", type=int, default=10, metavar="S",
                      help="broadcast: clients that send (default 10)")
    load.add_argument("--rate", type=float, default=0.0, metavar="R",
                      help="broadcast: messages/s per sender; 0 (default): closed loop, "
                           "each sender sends again once its own message came back")
    load.add_argument("--window", type=int, default=1, metavar="W",
                      help="closed loop: messages a sender keeps in flight (default 1)")
    load.add_argument("--duration", type=float, default=5.0, metavar="D",
                      help="seconds of sending (broadcast) or round trips (echo); default 5")
    load.add_argument("--drain-timeout", type=float, default=10.0, metavar="S",
                      help="how long to wait for the last deliveries before counting "
                           "the rest lost (default 10)")
    load.add_argument("--latency-clients", type=int, default=200, metavar="N",
                      help="broadcast: sockets that time what they receive (default 200)")
    load.add_argument("--loadgen-procs", type=int, default=DEFAULT_LOADGEN_PROCS,
                      metavar="P", help=f"load-generator processes (default "
                                        f"{DEFAULT_LOADGEN_PROCS})")
    load.add_argument("--connect-concurrency", type=int, default=64, metavar="N",
                      help="handshakes in flight per load generator (default 64)")
    private = parser.add_argument_group("wsgate-private")
    private.add_argument("--private-max-workers", type=int, default=4, metavar="M",
                         help="worker processes at most, hence sockets at once (default 4)")
    private.add_argument("--private-queue-timeout", type=float, default=3.0, metavar="S",
                         help="seconds a socket waits for a worker before 503 (default 3)")
    private.add_argument("--private-senders", type=int, default=1, metavar="S",
                         help="broadcast senders; the other clients only listen (default 1)")
    target = parser.add_argument_group("a system already running")
    target.add_argument("--url", help="measure only the system at this URL (not started)")
    target.add_argument("--pid", type=int, help="its root process, for memory and CPU")
    target.add_argument("--url-system", default="external", metavar="NAME",
                        help="the name to report it under (default external)")
    out = parser.add_argument_group("output")
    out.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    out.add_argument("--plot", type=Path, metavar="DIR", help="write PNG charts here")
    out.add_argument("--sut-log-level", default="WARNING",
                     choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                     help="log level of the systems under test (default WARNING)")


def _settings(args: argparse.Namespace) -> PlanSettings:
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    if args.url is not None:
        systems: tuple[SystemSpec, ...] = (
            SystemSpec(args.url_system, url=args.url, pid=args.pid),)
    else:
        systems = ()
        for name in args.systems:
            if name in ("wsgate-shared", "wsgate-nodes"):  # nodes: workers per node
                systems += tuple(SystemSpec(name, w) for w in _ints(args.workers))
            elif name == "wsgate-private":
                systems += (SystemSpec(name, 2, max_workers=args.private_max_workers,
                                       queue_timeout_s=args.private_queue_timeout),)
            else:
                systems += (SystemSpec(name),)
    load = Load(clients=1, senders=args.senders, rate_per_s=args.rate, window=args.window,
                duration_s=args.duration, drain_timeout_s=args.drain_timeout,
                latency_clients=args.latency_clients,
                connect_concurrency=args.connect_concurrency)
    return PlanSettings(scenarios=tuple(args.scenarios), systems=systems,
                        clients=_ints(args.clients), echo_clients=_ints(args.echo_clients),
                        idle_sockets=args.idle_sockets, load=load,
                        private_senders=args.private_senders,
                        sut_log_level=args.sut_log_level, handshakes=args.handshakes,
                        handshake_in_flight=_ints(args.handshake_in_flight),
                        storm_sockets=args.storm_sockets)


def _measure(settings: PlanSettings, loadgen_procs: int) -> tuple[list[Result], bool]:
    """Run every step; return the results and whether all steps ran (no Ctrl-C)."""
    steps = build_plan(settings)
    progress = Progress(len(steps))
    results: list[Result] = []
    fleet = Fleet(loadgen_procs)
    try:
        for step in steps:
            progress.start(step.text)
            results.append(run_step(fleet, step, settings))
            if fleet.broken:  # late replies would answer the next step's commands
                fleet.close()
                fleet = Fleet(loadgen_procs)
            progress.step_done(results[-1])
        progress.finish()
    except KeyboardInterrupt:
        # run_step has stopped its system on the way out; report what was measured.
        print("\ninterrupted: reporting the steps that finished", file=sys.stderr)
        return results, False
    finally:
        fleet.close()
    return results, True


def run(args: argparse.Namespace) -> int:
    """``wsgate bench``: 0 if every step measured, 1 if any failed, 2 on bad flags, 130
    when interrupted (after reporting the steps that finished)."""
    from gateway.link.process import configure_logging

    configure_logging(getattr(args, "log_level", "WARNING"))
    try:
        settings = _settings(args)
    except argparse.ArgumentTypeError as exc:
        print(f"wsgate bench: {exc}", file=sys.stderr)
        return 2
    if args.loadgen_procs < 1:
        print("wsgate bench: --loadgen-procs must be at least 1", file=sys.stderr)
        return 2
    raise_fd_limit()
    results, complete = _measure(settings, args.loadgen_procs)
    ratios = compute_ratios(results)
    print(render_table(results, ratios), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        recorded = {key: (str(value) if isinstance(value, Path) else value)
                    for key, value in vars(args).items() if not callable(value)}
        write_json(args.json, document(results, ratios, recorded))
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot is not None:
        from bench.plots import write_plots

        for path in write_plots(results, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    if not complete:
        return 130  # the shell's code for "stopped by SIGINT"
    return 1 if any(r.extra.get("error") for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.cli``: the same command without the ``wsgate`` front."""
    parser = argparse.ArgumentParser(prog="wsgate bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
