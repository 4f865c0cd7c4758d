"""The run's progress on stderr, drawn by tqdm: steps done out of all, the step that runs
now and the time it has taken, and each step's figures as soon as it ends.

On a terminal the bar redraws in place and each finished step's figures print above
it; into a file or a pipe (CI logs) there is no bar: a line when a step starts and one
with its figures when it ends, so the log stays readable.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

from bench.results import Result

__all__ = ["Progress", "figures"]


def figures(result: Result) -> str:
    """A finished step's main figures, in a few words."""
    if result.extra.get("error"):
        return f"failed: {str(result.extra['error']).splitlines()[0][:120]}"
    parts = []
    if result.deliveries_per_s is not None:
        parts.append(f"{result.deliveries_per_s:,.0f} deliveries/s")
        per_cpu = result.extra.get("deliveries_per_cpu_s")
        if per_cpu:
            parts.append(f"{per_cpu:,.0f}/CPU-s")
    if result.round_trips_per_s is not None:
        parts.append(f"{result.round_trips_per_s:,.0f} round trips/s")
    for name, key in (("connects/s", "connect_per_s"), ("handshakes/s", "handshakes_per_s")):
        if result.extra.get(key) is not None:
            parts.append(f"{result.extra[key]:,.0f} {name}")
    if result.extra.get("storm_s") is not None:
        parts.append(f"all {result.extra.get('reopened')} back in "
                     f"{result.extra['storm_s']:.2f} s")
    if result.latency_ms.get("p50") is not None:
        parts.append(f"p50 {result.latency_ms['p50']:.2f} ms")
    if result.rss_per_socket_kb is not None:
        parts.append(f"{result.rss_per_socket_kb:.1f} KB/socket")
    if result.lost is not None:
        parts.append(f"lost {result.lost}")
    return ", ".join(parts) or "done"


class Progress:
    """Steps done out of a known total, what runs now, what each measured."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        # Into a file or a pipe no bar is drawn (its redraws would fill the log): each
        # step prints one line as it starts and one with its figures as it ends.
        self.tty = self.stream.isatty()
        self.bar = tqdm(total=max(total, 1), file=self.stream, unit="step",
                        dynamic_ncols=True, leave=True, disable=not self.tty,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}]")
        self.total = max(total, 1)
        self.done = 0
        self.text = ""

    def start(self, text: str) -> None:
        """A step begins."""
        self.text = text
        if self.tty:
            self.bar.set_description_str(text)
        else:
            self._line(f"{text} ...")

    def step_done(self, result: Result | None = None) -> None:
        """A step ended; ``result``'s figures are shown at once."""
        self.done += 1
        if result is not None:
            if self.tty:
                self.bar.write(f"{self.text}: {figures(result)}", file=self.stream)
            else:
                self._line(f"{self.text}: {figures(result)}")
        self.bar.update(1)

    def _line(self, text: str) -> None:
        self.stream.write(f"[{self.done}/{self.total}] {text}\n")
        self.stream.flush()

    def finish(self) -> None:
        """All steps ended."""
        self.bar.set_description_str("done")
        self.bar.close()
