"""Rule plot: one bar chart per table and the training curves of its runs.

A script, not a `run:` body like the other report rules: drawing is the one report job with
real CPU work (~0.3-1 s per table), and separate processes draw the tables' figures in parallel.
"""

from kdsrc.report.rule_jobs import plot_job

sm = snakemake  # noqa: F821  (injected by Snakemake)

plot_job(sm.input.metrics, list(sm.input.logs) + list(sm.input.teacher_logs), spec=sm.params.spec,
         bars=sm.output.bars, curves=sm.output.curves, log=sm.log[0])
