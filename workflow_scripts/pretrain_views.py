"""Rule pretrain_views: stage-1 training of Angular-KD's view branches on the frozen teacher."""

import json

from kdsrc.distillers.angularkd_stage1 import pretrain_views
from kdsrc.jobs import job

sm = snakemake  # noqa: F821  (injected by Snakemake)

with job(sm.log[0], threads=sm.threads, jobs_per_gpu=sm.params.jobs_per_gpu) as device:
    cfg = json.loads(sm.params.config)
    pretrain_views(cfg["teacher"]["name"], sm.input.teacher, cfg["dataset"], cfg["method"],
                   sm.output[0], device=device, data_root=sm.params.data_root,
                   download=sm.params.download, seed=cfg["seed"], stale_resume="restart")
