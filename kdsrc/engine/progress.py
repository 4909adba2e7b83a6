"""Progress output: a live bar in a terminal, plain periodic lines in log files."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Reports steps within an epoch.

    In a terminal the line is redrawn in place; otherwise (Snakemake logs, CI) one plain line is
    written at most every ``interval`` seconds, plus the epoch summary lines the engine prints.
    """

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True,
                 interval: float = 30.0):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval
        self._last = 0.0

    def step(self, epoch: int, epochs: int, step: int, steps: int, loss: float) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if step != steps and now - self._last < 0.1:
                return
            width = 30
            done = int(width * step / max(steps, 1))
            bar = "#" * done + "-" * (width - done)
            self.stream.write(f"\repoch {epoch}/{epochs} [{bar}] {step}/{steps} loss {loss:.4f}")
            if step == steps:
                self.stream.write("\r" + " " * 80 + "\r")
            self.stream.flush()
            self._last = now
        elif now - self._last >= self.interval and step != steps:
            self.stream.write(f"epoch {epoch}/{epochs} step {step}/{steps} loss {loss:.4f}\n")
            self.stream.flush()
            self._last = now

    def line(self, text: str) -> None:
        if self.enabled:
            self.stream.write(text + "\n")
            self.stream.flush()
