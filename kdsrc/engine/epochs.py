"""The epoch machinery every training in kdsrc goes through: a distillation run
(:func:`kdsrc.engine.loop.train`) and a method's own pre-stage (Angular-KD's view pretraining)
alike.

One loop (:func:`epoch_steps`, drained by :func:`run_epochs`) sets each epoch's learning rate and
data order, runs the work's epoch, stops on a non-finite loss before anything of that epoch is
saved, logs a row, and writes the whole state to a resume file atomically; :class:`ResumeFile` reads it back when the same
work is started again, so an interrupted job continues to the result of an uninterrupted one.
What is trained, and how an epoch and its row look, is the work's (:class:`EpochWork`); the
engine names no method.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Protocol

import torch

from ..errors import CheckpointError, ConfigError, NonFiniteLossError, StaleResumeError
from .io import atomic_torch_save
from .meter import EpochTotals
from .progress import Progress
from .schedule import begin_epoch
from .seeding import rng_state, set_rng_state
from .step import non_finite_message


@dataclass
class RunProgress:
    """What a training has done so far, saved in its resume file after every epoch.

    ``score``: the row key whose maximum is the best epoch (``test_top1``; None: no best)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"top1": -1.0, "top5": 0.0, "epoch": 0})
    wall_s: float = 0.0
    train_s: float = 0.0
    samples: int = 0
    score: str | None = "test_top1"

    @property
    def next_epoch(self) -> int:
        return int(self.history[-1]["epoch"]) + 1 if self.history else 1

    def add(self, row: dict[str, Any], *, train_s: float, samples: int) -> None:
        self.history.append(row)
        if self.score is not None and row[self.score] > self.best["top1"]:
            self.best = {"top1": row[self.score], "top5": row.get("test_top5", 0.0),
                         "epoch": row["epoch"]}
        self.wall_s += row["epoch_s"]
        self.train_s += train_s
        self.samples += samples

    def saved(self) -> dict[str, Any]:
        return {"history": self.history, "best": self.best, "wall_s": self.wall_s,
                "train_s": self.train_s, "samples": self.samples}

    @classmethod
    def from_saved(cls, state: dict[str, Any], score: str | None) -> "RunProgress":
        """From a resume file's state; keys a resume file of an older kdsrc lacks default."""
        done = cls(score=score)
        for key in ("history", "best", "wall_s", "train_s", "samples"):
            if key in state:
                setattr(done, key, state[key])
        return done


@dataclass(frozen=True)
class ResumeFile:
    """A resume file: ``format`` tags it, ``key`` = ``value`` says which training wrote it.

    ``written_by(stored value)``: how a file of another training is described in the error
    ("a different run config (hash ...)")."""

    path: Path
    format: str
    key: str
    value: Any
    written_by: Callable[[Any], str]

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> dict[str, Any]:
        """The saved state, checked to be this training's (else a clear error, nothing loaded)."""
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # a torn or foreign file: say which and why
            raise CheckpointError(f"cannot read resume file {self.path}: {e}".splitlines()[0]
                                  ) from None
        if not isinstance(state, dict) or state.get("format") != self.format:
            raise CheckpointError(f"{self.path} is not a kdsrc resume file ({self.format})")
        if state.get(self.key) != self.value:
            raise StaleResumeError(self.path,
                                   f"was written by {self.written_by(state.get(self.key))}")
        return state

    def save(self, epoch: int, states: dict[str, Any], done: RunProgress) -> None:
        atomic_torch_save({"format": self.format, self.key: self.value, "epoch": epoch,
                           **states, "rng": rng_state(), **done.saved()}, self.path)


class EpochWork(Protocol):
    """What :func:`run_epochs` trains."""

    #: prefix of a non-finite-loss error ("" for a run, "view pretraining: " for a pre-stage)
    where: str

    def train_epoch(self, epoch: int, lr: float) -> Generator[None, None, EpochTotals]:
        """One epoch of steps, yielding after each; returns its totals (read from the device
        once, at its end)."""

    def epoch_row(self, epoch: int, lr: float, totals: EpochTotals) -> dict[str, Any]:
        """The epoch's log row (evaluation included; ``epoch_s`` is added by the loop)."""

    def summary(self, row: dict[str, Any], done: RunProgress) -> str:
        """The epoch's progress line."""

    def states(self) -> dict[str, Any]:
        """What a resume file holds besides RNG and progress: modules, optimizer, ..."""

    def load_states(self, state: dict[str, Any]) -> None:
        """Load :meth:`states` back (checking what must match)."""

    def epoch_logged(self, done: RunProgress) -> None:
        """After an epoch's row is added, before the resume file is written (e.g. a log file)."""

    def finished(self, done: RunProgress) -> bool:
        """Whether to stop before ``epochs`` (early stopping); checked before every epoch, so a
        resumed run that had stopped stays stopped."""


def resume_from(resume: ResumeFile, work: EpochWork, score: str | None,
                progress: Progress) -> RunProgress:
    """The state of an existing resume file loaded into the work and the RNGs."""
    state = resume.load()
    work.load_states(state)
    set_rng_state(state["rng"])
    progress.line(f"resuming from {resume.path} after epoch {state['epoch']}")
    return RunProgress.from_saved(state, score)


#: what to do with a resume file of another training (:class:`~kdsrc.errors.StaleResumeError`):
#: ``refuse`` (the error; the CLI and the library) or ``restart`` (say so and start afresh: the
#: workflow, whose jobs rerun precisely because their config or inputs changed)
STALE_RESUME = ("refuse", "restart")


def check_stale_resume(stale_resume: str) -> None:
    if stale_resume not in STALE_RESUME:
        raise ConfigError(f"stale_resume: expected one of {', '.join(STALE_RESUME)}, got "
                          f"{stale_resume!r}")


def start_or_resume(resume: ResumeFile, work: EpochWork, score: str | None,
                    progress: Progress, *, enabled: bool = True,
                    stale_resume: str = "refuse") -> RunProgress:
    """:func:`resume_from` when resuming is ``enabled`` and the file exists, else a fresh start;
    a file of another training is refused or, with ``stale_resume="restart"``, left to be
    replaced after the first epoch (nothing of it was loaded: the work is as a fresh one)."""
    check_stale_resume(stale_resume)
    if not (enabled and resume.exists()):
        return RunProgress(score=score)
    try:
        return resume_from(resume, work, score, progress)
    except StaleResumeError as e:
        if stale_resume == "refuse":
            raise
        progress.line(f"not resuming: {e.path} {e.reason}; training from the start")
        return RunProgress(score=score)


def check_finite(totals: EpochTotals, epoch: int, steps: int, where: str) -> None:
    """Stop on the epoch's first non-finite loss, named by step and term."""
    if totals.first_bad is not None:
        step, term, value = totals.first_bad
        raise NonFiniteLossError(where + non_finite_message(epoch, f"step {step} of {steps}",
                                                            term, value))


def run_epochs(work: EpochWork, **kw) -> RunProgress:
    """:func:`epoch_steps` run to the end (one training, nothing interleaved)."""
    return drain(epoch_steps(work, **kw))


def drain(steps: Generator[None, None, Any]) -> Any:
    """Run a step generator to its end; its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value


def epoch_steps(work: EpochWork, *, epochs: int, solver: dict[str, Any], optimizer,
                loader, resume: ResumeFile, done: RunProgress, progress: Progress,
                epochs_key: str = "solver.epochs") -> Generator[None, None, RunProgress]:
    """Epochs ``done.next_epoch`` … ``epochs`` of ``work``, yielding after every step;
    ``solver`` sets each epoch's LR (:func:`~kdsrc.engine.schedule.begin_epoch`), which also
    fixes the loader's data order. Returns the progress."""
    for epoch in range(done.next_epoch, epochs + 1):
        if done.history and work.finished(done):
            progress.line(f"stopping early after epoch {done.history[-1]['epoch']}")
            break
        t_epoch = time.perf_counter()
        lr = begin_epoch(epoch, solver, optimizer, loader)
        totals = yield from work.train_epoch(epoch, lr)
        check_finite(totals, epoch, len(loader), work.where)
        train_s = time.perf_counter() - t_epoch
        row = work.epoch_row(epoch, lr, totals)
        row["epoch_s"] = time.perf_counter() - t_epoch
        done.add(row, train_s=train_s, samples=totals.seen)
        progress.line(work.summary(row, done))
        work.epoch_logged(done)
        resume.save(epoch, work.states(), done)
    if not done.history:
        raise ConfigError(f"{epochs_key}: nothing was trained")
    return done
