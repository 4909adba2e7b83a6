"""Rule finetune_teacher: train a teacher from its initial weights (all but the classifier),
publish final.pt as its model.pt."""

import json
from pathlib import Path

from kdsrc.engine import RunPaths, train
from kdsrc.jobs import job
from kdsrc.teachers import write_finetune_source

sm = snakemake  # noqa: F821  (injected by Snakemake)

run_dir = Path(sm.params.run_dir)
with job(sm.log[0], threads=sm.threads, jobs_per_gpu=sm.params.jobs_per_gpu) as device:
    record = train(json.loads(sm.params.config),
                   RunPaths(run_dir, run_dir / "eval.json", Path(sm.output.log_csv)),
                   device=device, data_root=sm.params.data_root, download=sm.params.download,
                   init_weights=sm.input.init, stale_resume="restart")
    write_finetune_source(run_dir, sm.input.init_source, sm.output.model, sm.output.source,
                          record["config_hash"])
