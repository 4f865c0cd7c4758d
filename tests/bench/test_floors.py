"""``python -m bench.floors``: the machine's floors, measured, and what follows from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.floors import bounce, interpreter_rss_kb

RUN_TIMEOUT_S = 120


def test_floors_writes_measured_figures_and_what_follows(tmp_path: Path) -> None:
    """The command prints and writes every figure; the derived ones follow from the
    measured ones by the documented formulas."""
    out = tmp_path / "floors.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.floors", "--round-trips", "300", "--workers", "3",
         "--sockets", "5000", "--json", str(out)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    assert "waking a sleeping process" in done.stdout
    assert "a node with --workers 3 (6 processes), 5,000 sockets" in done.stdout
    floors = json.loads(out.read_text())
    assert floors["round_trips"] == 300
    assert floors["workers"] == 3
    assert floors["blocking_round_trip_us"] > 0
    assert floors["spinning_round_trip_us"] > 0
    assert floors["wake_up_us"] == round(
        max(floors["blocking_round_trip_us"] - floors["spinning_round_trip_us"], 0) / 2, 1)
    assert floors["gateway_echo_floor_us"] == floors["blocking_round_trip_us"]
    # importing trio loads its modules and the ssl library: more resident memory
    assert floors["trio_rss_kb"] > floors["python_rss_kb"] > 0
    assert floors["fixed_kb_per_socket"] == round(
        (5 * floors["trio_rss_kb"] + floors["python_rss_kb"]) / 5000, 2)


def _children() -> set[int]:
    """This process's children, zombies included (the kernel lists them until reaped)."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        pids.update(int(pid) for pid in (task / "children").read_text().split())
    return pids


@pytest.mark.parametrize("spin", [False, True])
def test_bounce_reaps_its_child(spin: bool) -> None:
    """Each measurement forks an echo child and waits for it: none is left behind."""
    before = _children()
    assert bounce(50, spin=spin) > 0
    assert _children() == before


def test_interpreter_rss_counts_what_is_imported() -> None:
    """A module that allocates shows in the probe's resident set."""
    small = interpreter_rss_kb("sys")
    big = interpreter_rss_kb("sys; blob = bytearray(64 * 1024 * 1024)")
    assert big - small >= 60 * 1024


@pytest.mark.parametrize("flag", ["--round-trips", "--workers", "--sockets"])
def test_floors_refuses_nonsense(flag: str) -> None:
    done = subprocess.run([sys.executable, "-m", "bench.floors", flag, "0"],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode == 2
    assert f"{flag} must be at least 1" in done.stderr
