"""Rule summary: results/metrics/summary.json, the numbers `dvc metrics show/diff` compare."""

from kdsrc.engine import atomic_write_json
from kdsrc.jobs import job
from kdsrc.report import metrics_summary

sm = snakemake  # noqa: F821  (injected by Snakemake)

with job(sm.log[0], gpu=False):
    atomic_write_json(metrics_summary(list(sm.input)), sm.output[0])
