"""Several runs in one process, their training steps interleaved (``runs_per_gpu``).

A small student at batch 64 cannot fill a large GPU even with its step captured as a CUDA graph,
and separate processes on one GPU are time-sliced rather than overlapped. So a group trains its
members in one process: each member is a :class:`~kdsrc.engine.loop.RunJob` whose
:meth:`~kdsrc.engine.loop.RunJob.steps` yields after every step, and the scheduler here takes one
step of each member in turn — on CUDA each on its own stream, so that one member's kernels can
overlap another's.

A member's result does not depend on its neighbours: it is prepared exactly as a lone run
(seeded, built and resumed in :func:`~kdsrc.engine.loop.prepare_run`), and the global RNG states
(python, numpy, torch CPU and CUDA) are swapped in before and out after each of its steps, so
every draw it makes comes from its own stream of random numbers. Each member keeps its own
``last.pt``, log, ``final.pt`` and eval record. A member that fails (a non-finite loss, say)
stops alone; the others train to their end, and then the group raises an error naming the
failed members: a rerun resumes each member from its own ``last.pt`` (finished members train
nothing and only rewrite their outputs).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from ..data import DatasetArrays, load_dataset
from ..errors import ConfigError, KdsrcError
from .loop import RunJob, RunPaths, prepare_run, resolve_device
from .progress import Progress
from .seeding import rng_state, set_rng_state


@dataclass
class GroupMember:
    """One run of a group: what the pipeline asks for (config, output paths, method label)."""

    config: dict[str, Any]
    paths: RunPaths
    method_label: str | None = None
    progress: Progress | None = None


@dataclass
class _Running:
    name: str
    job: RunJob
    steps: Iterator[None]
    rng: dict[str, Any]
    stream: Any = None
    record: dict[str, Any] | None = None
    error: BaseException | None = field(default=None)


def train_group(members: list[GroupMember], *, device: str | torch.device = "auto",
                data_root: str | Path = "data", download: bool = False, resume: bool = True,
                arrays: DatasetArrays | None = None,
                stale_resume: str = "refuse") -> list[dict[str, Any]]:
    """Train ``members`` (one dataset) in one process, one step of each in turn; their eval
    records, in order. One member is exactly :func:`~kdsrc.engine.loop.train` (``resume`` and
    ``stale_resume`` as there)."""
    if not members:
        raise ConfigError("runs_per_gpu: a group needs at least one run")
    datasets = {m.config.get("dataset") for m in members}
    if len(datasets) != 1:
        raise ConfigError(f"a group trains runs of one dataset, got {sorted(map(str, datasets))}")
    dev = resolve_device(device)
    if arrays is None:   # loaded once for every member (loading draws no random numbers)
        arrays = load_dataset(datasets.pop(), root=data_root, download=download)
    running = []
    for m in members:
        job = prepare_run(m.config, m.paths, device=dev, resume=resume, progress=m.progress,
                          method_label=m.method_label, arrays=arrays,
                          stale_resume=stale_resume)
        stream = torch.cuda.Stream(dev) if dev.type == "cuda" else None
        running.append(_Running(str(m.paths.ckpt_dir), job, job.steps(), rng_state(), stream))
    active = list(running)
    while active:
        for r in list(active):
            set_rng_state(r.rng)
            try:
                with (torch.cuda.stream(r.stream) if r.stream is not None
                      else contextlib.nullcontext()):
                    next(r.steps)
            except StopIteration:
                active.remove(r)
                r.record = r.job.finish()
            except KdsrcError as e:          # this member stops; its neighbours go on
                active.remove(r)
                r.error = e
                r.job.progress.line(f"{r.name}: failed: {e}")
            r.rng = rng_state()
    failed = [r for r in running if r.error is not None]
    if failed:
        raise KdsrcError("; ".join(f"{r.name}: {r.error}" for r in failed)
                         + " (the other runs of the group finished; running the group again "
                         "resumes each run from its own last.pt)")
    return [r.record for r in running]
