"""Rule collect: the eval records a table needs -> results/metrics/{table}.csv."""

import json

from kdsrc.jobs import job
from kdsrc.report import collect, load_published, load_records, write_metrics_csv

sm = snakemake  # noqa: F821  (injected by Snakemake)

with job(sm.log[0], gpu=False):
    spec = json.loads(sm.params.spec)
    records = load_records(list(sm.input.records) + list(sm.input.teachers))
    df = collect(records, spec, sm.params.table, published=load_published(sm.params.published))
    write_metrics_csv(df, sm.output[0])
    print(f"{sm.params.table}: {len(df)} cells from {len(records)} records")
