"""Rule distill: train one run of the plan (thin adapter around kdsrc.engine.train)."""

import json
from pathlib import Path

from kdsrc.engine import RunPaths, train
from kdsrc.jobs import job

sm = snakemake  # noqa: F821  (injected by Snakemake)

with job(sm.log[0], threads=sm.threads, jobs_per_gpu=sm.params.jobs_per_gpu) as device:
    train(json.loads(sm.params.config),
          RunPaths(Path(sm.params.ckpt_dir), Path(sm.output.eval), Path(sm.output.log_csv)),
          device=device, data_root=sm.params.data_root, download=sm.params.download,
          method_label=sm.wildcards.method, stale_resume="restart")
