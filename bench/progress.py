"""A plain-text progress bar on stderr: ``[#####.....] 5/12 broadcast wsgate-shared w2 C=1000``.

On a terminal the bar redraws in place; into a file or a pipe (CI logs) each step is
one line, so the log stays readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]

BAR_CELLS = 20


class Progress:
    """Steps done out of a known total, and what runs now."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self._started = time.monotonic()
        self._width = 0

    def _bar(self) -> str:
        filled = BAR_CELLS * self.done // self.total
        return "[" + "#" * filled + "." * (BAR_CELLS - filled) + "]"

    def _show(self, text: str) -> None:
        elapsed = time.monotonic() - self._started
        line = f"{self._bar()} {self.done}/{self.total} {text} ({elapsed:.0f} s)"
        if self.stream.isatty():
            padding = " " * max(0, self._width - len(line))
            self.stream.write("\r" + line + padding)
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def start(self, text: str) -> None:
        """A step begins."""
        self._show(text)

    def step_done(self, text: str = "") -> None:
        """A step ended."""
        self.done += 1
        if text:
            self._show(text)

    def finish(self) -> None:
        """All steps ended: leave the bar's line."""
        self.done = self.total
        self._show("done")
        if self.stream.isatty():
            self.stream.write("\n")
            self.stream.flush()
