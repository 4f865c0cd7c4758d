"""What this machine allows any design of ours: the costs no code of ours can go below.

    python -m bench.floors                      # measure and print
    python -m bench.floors --json floors.json   # and write them

Three figures, each measured here, none of them from wsgate's code:

- **A wake-up.** Two processes bounce a few bytes over a Unix socket pair: once
  blocking in ``epoll_wait`` between messages, as every server here does when idle,
  and once spinning on non-blocking reads (neither ever sleeps). The difference, per
  one-way hop, is what waking a sleeping process costs. A gateway in front of the
  worker adds two such hops to every round trip (browser, gateway, worker, gateway,
  browser) that a one-process server does not make.
- **An interpreter.** The resident memory of a fresh ``python`` and of one that has
  imported trio (every process of wsgate runs trio): what each process costs before it
  holds a single socket.
- **What follows.** With ``--workers W`` a node is ``W + 3`` processes (the ``wsgate
  run`` launcher, the gateway, the app-server supervisor, its workers), so at ``N``
  sockets the fixed part alone is ``((W + 2) x trio + launcher) / N`` KB per socket;
  and an echo through the gateway costs at least one blocking round trip (two hops)
  more than the same echo served by one process.

``docs/benchmarks.md`` compares these with the issue's targets.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Floors", "bounce", "interpreter_rss_kb", "main", "measure"]

_MESSAGE = b"x" * 40
#: Round trips before timing, so both processes run warm.
_WARM_UP = 200
_RSS_PROBE = ("import {imports}\n"
              "print(next(int(l.split()[1]) for l in open('/proc/self/status')"
              " if l.startswith('VmRSS:')))")


@dataclass(frozen=True, slots=True)
class Floors:
    """The measured floors and what they imply for a wsgate node."""

    round_trips: int
    #: Microseconds per round trip between two processes that sleep while waiting.
    blocking_round_trip_us: float
    #: The same between two processes that spin instead of sleeping.
    spinning_round_trip_us: float
    #: Waking a sleeping process, per one-way hop: (blocking - spinning) / 2.
    wake_up_us: float
    #: What the gateway's two extra hops add to an echo at least: one blocking round trip.
    gateway_echo_floor_us: float
    #: Resident set of a fresh interpreter, and of one that imported trio.
    python_rss_kb: int
    trio_rss_kb: int
    workers: int
    sockets: int
    #: ((workers + 2) x trio_rss_kb + python_rss_kb) / sockets: before any socket.
    fixed_kb_per_socket: float


def _serve_echo(sock: socket.socket, *, spin: bool) -> None:
    """The child: send back whatever arrives until the parent hangs up."""
    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)
    sock.setblocking(False)
    while True:
        if not spin:
            poller.poll()
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            continue
        if not data:
            return
        sock.sendall(data)


def bounce(round_trips: int, *, spin: bool) -> float:
    """Microseconds per round trip between this process and a forked child."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        status = 0
        try:
            ours.close()
            _serve_echo(theirs, spin=spin)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    theirs.close()
    poller = select.epoll()
    poller.register(ours.fileno(), select.EPOLLIN)
    ours.setblocking(False)

    def once() -> None:
        ours.sendall(_MESSAGE)
        got = 0
        while got < len(_MESSAGE):
            if not spin:
                poller.poll()
            try:
                chunk = ours.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                raise RuntimeError("the echo child went away")
            got += len(chunk)

    try:
        for _ in range(_WARM_UP):
            once()
        start = time.perf_counter()
        for _ in range(round_trips):
            once()
        elapsed = time.perf_counter() - start
    finally:
        ours.close()
        os.waitpid(pid, 0)
    return elapsed / round_trips * 1e6


def interpreter_rss_kb(imports: str) -> int:
    """VmRSS of a fresh interpreter (this one's executable) after ``import imports``."""
    probe = _RSS_PROBE.format(imports=imports)
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True).stdout
    return int(out.strip())


def measure(round_trips: int = 20_000, *, workers: int = 2, sockets: int = 10_000) -> Floors:
    """Measure the floors (the round trips three times each; the fastest counts)."""
    # What follows is computed from the figures as reported (rounded), so that the
    # JSON checks out by its own numbers.
    blocking = round(min(bounce(round_trips, spin=False) for _ in range(3)), 1)
    spinning = round(min(bounce(round_trips, spin=True) for _ in range(3)), 1)
    python_kb = min(interpreter_rss_kb("sys") for _ in range(3))
    trio_kb = min(interpreter_rss_kb("trio") for _ in range(3))
    return Floors(
        round_trips=round_trips,
        blocking_round_trip_us=blocking,
        spinning_round_trip_us=spinning,
        wake_up_us=round(max(blocking - spinning, 0.0) / 2, 1),
        gateway_echo_floor_us=blocking,
        python_rss_kb=python_kb,
        trio_rss_kb=trio_kb,
        workers=workers,
        sockets=sockets,
        fixed_kb_per_socket=round(((workers + 2) * trio_kb + python_kb) / sockets, 2),
    )


def render(floors: Floors) -> str:
    """The figures as a user reads them."""
    return "\n".join([
        f"round trip between two processes ({floors.round_trips:,} each, fastest of 3):",
        f"  sleeping between messages {floors.blocking_round_trip_us:8.1f} us",
        f"  spinning, never sleeping  {floors.spinning_round_trip_us:8.1f} us",
        f"  waking a sleeping process {floors.wake_up_us:8.1f} us per hop",
        f"  an echo through a gateway costs at least {floors.gateway_echo_floor_us:.1f} us "
        "more than one served by one process (two more hops)",
        "resident memory of a fresh interpreter:",
        f"  python                    {floors.python_rss_kb:8,d} KB",
        f"  python + trio             {floors.trio_rss_kb:8,d} KB",
        f"  a node with --workers {floors.workers} ({floors.workers + 3} processes), "
        f"{floors.sockets:,} sockets: {floors.fixed_kb_per_socket:.2f} KB per socket "
        "before the first socket",
    ])


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.floors``."""
    parser = argparse.ArgumentParser(prog="python -m bench.floors",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--round-trips", type=int, default=20_000, metavar="N",
                        help="round trips per measurement (default 20000)")
    parser.add_argument("--workers", type=int, default=2,
                        help="the node whose fixed memory is computed (default 2)")
    parser.add_argument("--sockets", type=int, default=10_000,
                        help="sockets that fixed memory is spread over (default 10000)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the figures here")
    args = parser.parse_args(argv)
    for name in ("round_trips", "workers", "sockets"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    floors = measure(args.round_trips, workers=args.workers, sockets=args.sockets)
    print(render(floors), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(floors), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
