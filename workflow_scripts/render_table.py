"""Rule render_table: results/metrics/{table}.csv -> LaTeX (booktabs) and markdown tables."""

import json

from kdsrc.jobs import job
from kdsrc.report import read_metrics_csv, write_table

sm = snakemake  # noqa: F821  (injected by Snakemake)

with job(sm.log[0], gpu=False):
    write_table(read_metrics_csv(sm.input[0]), json.loads(sm.params.spec), sm.output.tex,
                sm.output.md)
