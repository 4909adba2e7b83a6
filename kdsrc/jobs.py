"""What every pipeline job does before its real work (used by ``workflow_scripts/``).

Redirects the job's output into its Snakemake log file (line-buffered, so progress shows up
while it runs), limits torch to the job's threads, and takes a GPU slot (or says it runs on the
CPU) for the job's whole life.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
import time
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def job(log_path: str | None, *, threads: int = 1, gpu: bool = True,
        jobs_per_gpu: int = 1) -> Iterator[str]:
    """Context for one pipeline job; yields the torch device string to use."""
    stream = None
    saved = sys.stdout, sys.stderr
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_path, "w", buffering=1)
        sys.stdout = sys.stderr = stream
    try:
        try:
            yield from _setup(threads, gpu, jobs_per_gpu)
        except BaseException:
            if stream is not None:  # the traceback belongs in the job's log, too
                traceback.print_exc(file=stream)
            raise
    finally:
        if stream is not None:
            sys.stdout, sys.stderr = saved
            stream.close()


def _setup(threads: int, gpu: bool, jobs_per_gpu: int) -> Iterator[str]:
    if not gpu:
        # report and download jobs: torch only if the script imported it already (importing it
        # here would cost each report job ~1.5 s of its ~2)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(max(1, int(threads)))
        yield "cpu"
        return
    import torch

    torch.set_num_threads(max(1, int(threads)))
    from .gpu import acquire_device

    with acquire_device(jobs_per_gpu=jobs_per_gpu) as lease:
        print(f"kdsrc.jobs: lease {lease.as_dict()} pid {os.getpid()} start {time.time():.3f}",
              flush=True)
        device = lease.device
        if os.environ.get("KDSRC_FAKE_GPUS") and device.startswith("cuda"):
            # simulated devices (tests, dry runs): the slot is real, the math runs on the CPU
            print("kdsrc.jobs: simulated GPU slot (KDSRC_FAKE_GPUS): computing on the CPU")
            device = "cpu"
        try:
            yield device
        finally:
            print(f"kdsrc.jobs: release pid {os.getpid()} end {time.time():.3f}", flush=True)
