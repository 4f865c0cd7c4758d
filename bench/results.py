"""A benchmark result, the ratios between systems, the machine, and the JSON document.

The JSON is a contract: ``{"machine": {...}, "results": [...], "ratios": [...]}``, where
every result has at least :data:`CORE_KEYS` (null where a figure does not apply, e.g.
deliveries for echo) and any number of extra keys (workers, CPU, connect rate...).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "CORE_KEYS",
    "Result",
    "compute_ratios",
    "document",
    "machine_info",
    "percentiles_ms",
    "write_json",
]

CORE_KEYS = ("scenario", "system", "clients", "deliveries_per_s", "round_trips_per_s",
             "latency_ms", "lost", "rss_per_socket_kb", "processes")
_PERCENTILES = (50, 95, 99)
_NS_PER_MS = 1_000_000


@dataclass
class Result:
    """One scenario run against one system at one client count."""

    scenario: str
    system: str
    clients: int | None
    deliveries_per_s: float | None = None
    round_trips_per_s: float | None = None
    latency_ms: dict[str, float | None] = field(
        default_factory=lambda: {f"p{p}": None for p in _PERCENTILES})
    lost: int | None = None
    rss_per_socket_kb: float | None = None
    processes: int | None = None
    #: Every other figure: workers, label, CPU, connect rate, errors...
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The system with its worker count, as tables show it."""
        return str(self.extra.get("label", self.system))

    def as_json(self) -> dict[str, Any]:
        """The result as the JSON document holds it: the core keys first."""
        core = {key: getattr(self, key) for key in CORE_KEYS}
        return {**core, **{k: v for k, v in self.extra.items() if k not in core}}


def percentiles_ms(samples_ns: Sequence[int]) -> dict[str, float | None]:
    """p50, p95 and p99 of latencies in nanoseconds, in milliseconds (nearest rank)."""
    if not samples_ns:
        return {f"p{p}": None for p in _PERCENTILES}
    ordered = sorted(samples_ns)
    last = len(ordered) - 1
    return {f"p{p}": round(ordered[min(last, (len(ordered) * p + 99) // 100 - 1)]
                           / _NS_PER_MS, 3)
            for p in _PERCENTILES}


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def compute_ratios(results: Sequence[Result]) -> list[dict[str, Any]]:
    """wsgate-shared against the baselines measured in the same run, at equal clients
    (and wsgate-nodes, two nodes, against wsgate-shared, one, at equal workers).

    Broadcast: deliveries/s of wsgate-shared (each worker count) over each baseline's,
    and deliveries per CPU-second of the whole system over each baseline's.
    Echo: p50 latency of wsgate-shared over each baseline's (below 1 is faster).
    Each ratio is also recorded on the wsgate result, under ``ratios``.
    """
    ratios: list[dict[str, Any]] = []
    baselines = [r for r in results if r.system.startswith("baseline-")]
    pairs = [(ours, base) for ours in results if ours.system == "wsgate-shared"
             for base in baselines]
    # Two nodes against one, at the same workers per node.
    pairs += [(ours, base) for ours in results if ours.system == "wsgate-nodes"
              for base in results if base.system == "wsgate-shared"
              and base.extra.get("workers") == ours.extra.get("workers")]
    for ours, base in pairs:
        if base.scenario != ours.scenario or base.clients != ours.clients:
            continue
        if ours.scenario == "broadcast":
            compared = [("deliveries_per_s",
                         _ratio(ours.deliveries_per_s, base.deliveries_per_s)),
                        ("deliveries_per_cpu_s",
                         _ratio(ours.extra.get("deliveries_per_cpu_s"),
                                base.extra.get("deliveries_per_cpu_s")))]
        elif ours.scenario == "echo":
            compared = [("latency_p50",
                         _ratio(ours.latency_ms["p50"], base.latency_ms["p50"]))]
        else:
            continue
        for metric, value in compared:
            ratios.append({"scenario": ours.scenario, "metric": metric,
                           "clients": ours.clients, "system": ours.label,
                           "workers": ours.extra.get("workers"), "baseline": base.system,
                           "ratio": value})
            ours.extra.setdefault("ratios", {})[f"{metric} / {base.system}"] = value
    return ratios


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_total_kb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_total_kb": _memory_total_kb(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "system": platform.system(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "open_files_limit": {"soft": soft, "hard": hard},
    }


def document(results: Sequence[Result], ratios: list[dict[str, Any]],
             settings: dict[str, Any]) -> dict[str, Any]:
    """The whole ``--json`` document."""
    return {"machine": machine_info(), "settings": settings,
            "results": [r.as_json() for r in results], "ratios": ratios}


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write the document, readable by people too."""
    path.write_text(json.dumps(doc, indent=2) + "\n")
