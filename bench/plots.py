"""PNG charts of a run (``--plot DIR``), drawn with matplotlib's Agg backend.

* ``latency.png``: broadcast and echo latency, p50 (solid) and p99 (dashed), against
  clients, one line per system;
* ``deliveries.png``: broadcast deliveries per second against clients, per system;
* ``memory.png``: resident memory per open socket, per system (the idle scenario),
  total and marginal side by side;
* ``cpu.png``: broadcast deliveries per CPU-second of the whole system against clients;
* ``handshakes.png``: handshakes per second, one at a time and many in flight, per
  system.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.results import Result

__all__ = ["write_plots"]

FIGURE_SIZE_IN = (9.0, 5.5)
DPI = 120


def _plain() -> Any:
    """A tick formatter that writes 1,000 rather than 10^3."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _position: f"{value:,.10g}")


def _series(results: Sequence[Result], scenario: str) -> dict[str, list[Result]]:
    """Results of one scenario, grouped by system label, in order of clients."""
    grouped: dict[str, list[Result]] = defaultdict(list)
    for result in results:
        if result.scenario == scenario and result.clients:
            grouped[result.label].append(result)
    return {label: sorted(rs, key=lambda r: r.clients or 0) for label, rs in grouped.items()}


def _plain_axes(ax: Any, clients: Sequence[int]) -> None:
    """Log axes labelled with plain numbers, and a tick at each client count measured."""
    from matplotlib.ticker import NullFormatter

    if clients:
        ax.set_xticks(sorted(set(clients)))
    ax.xaxis.set_major_formatter(_plain())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(_plain())


def _latency(plt: Any, results: Sequence[Result], path: Path) -> None:
    figure, axes = plt.subplots(1, 2, figsize=FIGURE_SIZE_IN)
    for ax, scenario in zip(axes, ("broadcast", "echo"), strict=True):
        for number, (label, series) in enumerate(_series(results, scenario).items()):
            colour = f"C{number}"
            clients = [r.clients for r in series]
            for percentile, style in (("p50", "-"), ("p99", "--")):
                values = [r.latency_ms[percentile] for r in series]
                points = [(c, v) for c, v in zip(clients, values, strict=True) if v]
                if points:
                    ax.plot(*zip(*points, strict=True), style, marker="o", color=colour,
                            label=f"{label} {percentile}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_axes(ax, [r.clients or 0 for r in results if r.scenario == scenario
                         and r.clients])
        ax.set_xlabel("clients")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{scenario}: latency p50 (solid), p99 (dashed)")
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize="x-small")
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def _broadcast_line(plt: Any, results: Sequence[Result], path: Path, value: Any,
                    ylabel: str, title: str) -> None:
    """A line per system of ``value(result)`` against the broadcast's clients."""
    figure, ax = plt.subplots(figsize=FIGURE_SIZE_IN)
    for label, series in _series(results, "broadcast").items():
        points = [(r.clients, value(r)) for r in series if value(r)]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.set_xscale("log")
    _plain_axes(ax, [r.clients or 0 for r in results if r.scenario == "broadcast"
                     and r.clients])
    ax.set_xlabel("clients in the room")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.has_data():
        ax.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def _deliveries(plt: Any, results: Sequence[Result], path: Path) -> None:
    _broadcast_line(plt, results, path, lambda r: r.deliveries_per_s,
                    "chat messages delivered per second",
                    "broadcast: deliveries per second (every client receives every message)")


def _cpu(plt: Any, results: Sequence[Result], path: Path) -> None:
    _broadcast_line(plt, results, path, lambda r: r.extra.get("deliveries_per_cpu_s"),
                    "deliveries per CPU-second (every process of the system)",
                    "broadcast: deliveries per CPU-second (work, not wall clock)")


def _handshakes(plt: Any, results: Sequence[Result], path: Path) -> None:
    figure, ax = plt.subplots(figsize=FIGURE_SIZE_IN)
    rows = [r for r in results if r.scenario == "handshake" and r.extra.get("handshakes_per_s")]
    in_flight = sorted({r.clients or 0 for r in rows})
    labels = list(dict.fromkeys(r.label for r in rows))
    width = 0.8 / max(len(in_flight), 1)
    for k, n in enumerate(in_flight):
        values = [next((r.extra["handshakes_per_s"] for r in rows
                        if r.label == label and r.clients == n), 0.0) for label in labels]
        ax.bar([i + (k - (len(in_flight) - 1) / 2) * width for i in range(len(labels))],
               values, width, label=f"{n} in flight")
    ax.set_xticks(range(len(labels)), [lb.replace("-", "-\n", 1) for lb in labels],
                  fontsize="small")
    ax.yaxis.set_major_formatter(_plain())
    ax.set_ylabel("handshakes per second (to the first message)")
    ax.set_title("handshake: connects per second")
    ax.grid(True, axis="y", alpha=0.3)
    if rows:
        ax.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def _memory(plt: Any, results: Sequence[Result], path: Path) -> None:
    idle = [r for r in results if r.scenario == "idle" and r.rss_per_socket_kb is not None]
    figure, ax = plt.subplots(figsize=FIGURE_SIZE_IN)
    # Names break at their dash so that six systems' labels fit side by side.
    labels = [f"{r.label.replace('-', '-' + chr(10), 1)}\n{r.clients} sockets\n"
              f"{r.processes} processes" for r in idle]
    positions = list(range(len(idle)))
    width = 0.4
    total = [r.rss_per_socket_kb or 0.0 for r in idle]
    marginal = [r.extra.get("rss_marginal_per_socket_kb") or 0.0 for r in idle]
    ax.bar([p - width / 2 for p in positions], total, width, label="all RSS / sockets")
    ax.bar([p + width / 2 for p in positions], marginal, width,
           label="(RSS open - RSS before) / sockets")
    ax.set_xticks(positions, labels, fontsize="small")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_plain())
    ax.set_ylabel("resident memory per socket (KB, log scale)")
    ax.set_title("idle: memory per open socket (all processes of the system)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    if idle:
        ax.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def write_plots(results: Sequence[Result], directory: Path) -> list[Path]:
    """Draw the charts into ``directory``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "latency.png", directory / "deliveries.png",
             directory / "memory.png", directory / "cpu.png", directory / "handshakes.png"]
    for draw, path in zip((_latency, _deliveries, _memory, _cpu, _handshakes), paths,
                          strict=True):
        draw(plt, results, path)
    return paths
