"""Helpers shared by test modules (tests/conftest.py puts this folder on sys.path)."""

import sys

#: how tests start the CLI in a child process: the running interpreter, no PATH assumptions
KDSRC = [sys.executable, "-m", "kdsrc"]


def step_losses():
    """A progress sink that records every training step's total loss (the engine reports each
    one to ``step()``) and every line it prints."""
    from kdsrc.engine import Progress

    class StepLosses(Progress):
        def __init__(self):
            super().__init__(enabled=False)
            self.losses: list[float] = []
            self.lines: list[str] = []

        def step(self, epoch, epochs, step, steps, loss):
            self.losses.append(loss)

        def line(self, text):
            self.lines.append(text)

    return StepLosses()
