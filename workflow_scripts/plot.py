"""Rule plot: one bar chart per table and the training curves of its runs."""

import json
from pathlib import Path

from kdsrc.jobs import job
from kdsrc.report import plot_table_bars, plot_training_curves, read_metrics_csv

sm = snakemake  # noqa: F821  (injected by Snakemake)


def label(csv_path: str) -> str:
    # results/eval/runs/{d}/{t}/{s}/{m}/seed{n}.csv -> "t->s m";
    # results/eval/teachers/{d}/{t}.csv (a teacher's pretraining) -> "t (teacher)"
    parts = Path(csv_path).parts
    if "runs" in parts:
        d, t, s, m = parts[-5:-1]
        return f"{t}->{s} {m}"
    return f"{Path(csv_path).stem} (teacher)"


with job(sm.log[0], gpu=False):
    spec = json.loads(sm.params.spec)
    plot_table_bars(read_metrics_csv(sm.input.metrics), spec, sm.output.bars)
    logs = list(sm.input.logs) + list(sm.input.teacher_logs)
    plot_training_curves([(p, label(p)) for p in logs], sm.output.curves)
