"""The table printed at the end of a run: one row per result, then the ratios."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench.results import Result

__all__ = ["render_table"]

Cell = Callable[[Result], Any]

#: (heading, how to get the value, format). A missing value shows as "-".
COLUMNS: tuple[tuple[str, Cell, str], ...] = (
    ("scenario", lambda r: r.scenario, "{}"),
    ("system", lambda r: r.label, "{}"),
    ("clients", lambda r: r.clients, "{:d}"),
    ("deliv/s", lambda r: r.deliveries_per_s, "{:,.0f}"),
    ("deliv/cpu-s", lambda r: r.extra.get("deliveries_per_cpu_s"), "{:,.0f}"),
    ("rt/s", lambda r: r.round_trips_per_s, "{:,.0f}"),
    ("p50 ms", lambda r: r.latency_ms["p50"], "{:.2f}"),
    ("p95 ms", lambda r: r.latency_ms["p95"], "{:.2f}"),
    ("p99 ms", lambda r: r.latency_ms["p99"], "{:.2f}"),
    ("lost", lambda r: r.lost, "{:d}"),
    ("dup", lambda r: r.extra.get("duplicates"), "{:d}"),
    ("late", lambda r: r.extra.get("out_of_order"), "{:d}"),
    ("KB/sock", lambda r: r.rss_per_socket_kb, "{:,.1f}"),
    ("marg KB", lambda r: r.extra.get("rss_marginal_per_socket_kb"), "{:,.1f}"),
    ("procs", lambda r: r.processes, "{:d}"),
    ("conn/s", lambda r: r.extra.get("connect_per_s") or r.extra.get("handshakes_per_s"),
     "{:,.0f}"),
    ("storm s", lambda r: r.extra.get("storm_s"), "{:.2f}"),
    ("503 at", lambda r: r.extra.get("sockets_until_503"), "{:d}"),
    ("lg cpu%", lambda r: _percent(r.extra.get("loadgen_cpu_share")), "{:.0f}"),
    ("sut cpu s", lambda r: r.extra.get("sut_cpu_s"), "{:.2f}"),
    ("mach cpu%", lambda r: _percent(r.extra.get("machine_cpu_share")), "{:.0f}"),
)


def _percent(share: float | None) -> float | None:
    return None if share is None else share * 100


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _grid(headings: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(headings)]

    def line(cells: Sequence[str]) -> str:
        # Text columns flush left, figures flush right.
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return [line(headings), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def render_table(results: Sequence[Result], ratios: Sequence[dict[str, Any]]) -> str:
    """The results table and the ratios against the baselines, as text."""
    headings = [heading for heading, _, _ in COLUMNS]
    rows = [[_cell(get(r), fmt) for _, get, fmt in COLUMNS] for r in results]
    lines = _grid(headings, rows)
    errors = [f"  {r.scenario} {r.label}: {r.extra['error']}" for r in results
              if r.extra.get("error")]
    if errors:
        lines += ["", "errors:", *errors]
    if ratios:
        lines += ["", "ratios (system / baseline, same run, same clients):"]
        for ratio in ratios:
            what = {"deliveries_per_s": "deliveries/s",
                    "deliveries_per_cpu_s": "deliveries per CPU-second"}.get(
                        ratio["metric"], "echo p50 latency")
            lines.append(f"  {ratio['scenario']} C={ratio['clients']}: {what} "
                         f"{ratio['system']} / {ratio['baseline']} = "
                         f"{_cell(ratio['ratio'], '{:.2f}')}")
    lines += ["", "deliv/cpu-s: deliveries per CPU-second of every process of the system; "
                  "lost, dup, late: counted per socket and per sender; conn/s: handshakes "
                  "per second (idle, handshake: clients = handshakes in flight); storm s: "
                  "seconds from a gateway restart until every socket is open again; "
                  "lg cpu%: the load generators' CPU as a share of the whole machine "
                  "(all cores) while measuring; sut cpu s: CPU seconds of the system "
                  "under test in that time; mach cpu%: how busy the whole machine was."]
    return "\n".join(lines)
