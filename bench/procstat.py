"""What a process tree costs the machine, read from ``/proc``: processes, memory, CPU.

The system under test is the process the benchmark started and all its descendants
(``wsgate run`` is a launcher, a gateway, an app-server supervisor and its workers), so
every figure is a sum over that tree, found afresh at each sample by walking the
parent links in ``/proc/<pid>/stat`` (workers come and go, in private mode above all).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcessId", "TreeSample", "descendants", "identify", "machine_cpu",
           "sample_tree"]

_PROC = Path("/proc")
_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True, slots=True)
class ProcessId:
    """A PID and its start time: together they name one process even if the PID is reused."""

    pid: int
    start_ticks: int


@dataclass(frozen=True, slots=True)
class TreeSample:
    """One look at a process tree."""

    processes: int
    rss_kb: int
    #: Proportional set size: shared pages divided among the processes sharing them.
    pss_kb: int
    #: User + system CPU of the live processes and of the children they have reaped.
    cpu_s: float


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None if gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself hold spaces or ")".
    return text[text.rindex(")") + 2:].split()


def identify(pid: int) -> ProcessId | None:
    """The :class:`ProcessId` of a live process, or None (gone, or a zombie)."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return None
    return ProcessId(pid, int(fields[19]))  # field 22 of stat(5): starttime


def descendants(root: int) -> list[int]:
    """``root`` (if alive) and every live process below it, parents first."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    if identify(root) is None:
        return []
    tree = [root]
    for pid in tree:  # grows while we walk it: a breadth-first walk
        tree.extend(children.get(pid, []))
    return tree


def _rss_kb(pid: int) -> int:
    try:
        return int((_PROC / str(pid) / "statm").read_text().split()[1]) * _PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


def _pss_kb(pid: int) -> int:
    try:
        text = (_PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # stat(5) fields 14-17: utime, stime, cutime, cstime (clock ticks).
    return sum(int(f) for f in fields[11:15]) / _CLOCK_TICKS_PER_S


def sample_tree(root: int) -> TreeSample:
    """Count, and sum the memory and CPU of, ``root`` and its descendants."""
    pids = descendants(root)
    return TreeSample(
        processes=len(pids),
        rss_kb=sum(_rss_kb(pid) for pid in pids),
        pss_kb=sum(_pss_kb(pid) for pid in pids),
        cpu_s=sum(_cpu_s(pid) for pid in pids),
    )


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores together.

    Busy is everything but idle and iowait, so it includes the kernel's softirq work
    (loopback TCP) that no process is charged for.
    """
    fields = [int(f) for f in (_PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return (total - fields[3] - fields[4]) / _CLOCK_TICKS_PER_S, total / _CLOCK_TICKS_PER_S
