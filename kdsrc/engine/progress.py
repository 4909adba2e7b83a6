"""Progress output: a live bar in a terminal, plain periodic lines in log files."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Reports steps within an epoch.

    In a terminal the line is redrawn in place; otherwise (Snakemake logs, CI) one plain line is
    written at most every ``interval`` seconds, plus the epoch summary lines the engine prints.

    The engine hands :meth:`step` the step's loss as a device tensor and never reads it itself:
    reading it blocks the host until the GPU has caught up. The display reads it at most every
    ``read_interval`` seconds (the bar itself is redrawn more often, with the last value read).
    """

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True,
                 interval: float = 30.0, read_interval: float = 2.0):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval
        self.read_interval = read_interval
        self._last = 0.0
        self._last_read = float("-inf")
        self._loss = float("nan")

    def _loss_value(self, loss, now: float) -> float:
        if now - self._last_read >= self.read_interval:
            self._loss = float(loss.detach() if hasattr(loss, "detach") else loss)
            self._last_read = now
        return self._loss

    def step(self, epoch: int, epochs: int, step: int, steps: int, loss) -> None:
        """``loss``: the step's total loss (a tensor, or a float)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if step != steps and now - self._last < 0.1:
                return
            value = self._loss_value(loss, now)
            width = 30
            done = int(width * step / max(steps, 1))
            bar = "#" * done + "-" * (width - done)
            self.stream.write(f"\repoch {epoch}/{epochs} [{bar}] {step}/{steps} loss {value:.4f}")
            if step == steps:
                self.stream.write("\r" + " " * 80 + "\r")
            self.stream.flush()
            self._last = now
        elif now - self._last >= self.interval and step != steps:
            value = self._loss_value(loss, now)
            self.stream.write(f"epoch {epoch}/{epochs} step {step}/{steps} loss {value:.4f}\n")
            self.stream.flush()
            self._last = now

    def line(self, text: str) -> None:
        if self.enabled:
            self.stream.write(text + "\n")
            self.stream.flush()


class StepRecorder(Progress):
    """A silent progress that records every step's total loss and every line (tests, checks).
    It reads each loss back to the host: fine for a check, never for timing."""

    def __init__(self):
        super().__init__(enabled=False)
        self.losses: list[float] = []
        self.lines: list[str] = []

    def step(self, epoch, epochs, step, steps, loss):
        self.losses.append(float(loss))

    def line(self, text):
        self.lines.append(text)
