"""Rule distill_group_<n>: train a group of runs in one process (thin adapter around
kdsrc.engine.group.train_group); each member writes exactly its own distill outputs."""

import json
from pathlib import Path

from kdsrc.engine import RunPaths
from kdsrc.engine.group import GroupMember, train_group
from kdsrc.jobs import job

sm = snakemake  # noqa: F821  (injected by Snakemake)

members = [GroupMember(m["config"], RunPaths(Path(m["ckpt_dir"]), Path(m["eval"]),
                                             Path(m["log_csv"])), method_label=m["method"])
           for m in json.loads(sm.params.members)]
with job(sm.log[0], threads=sm.threads, jobs_per_gpu=sm.params.jobs_per_gpu) as device:
    train_group(members, device=device, data_root=sm.params.data_root,
                download=sm.params.download, stale_resume="restart")
