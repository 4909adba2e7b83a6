"""The bodies of the report rules (``collect``, ``render_table``, ``plot``, ``summary``).

``collect``, ``render_table`` and ``summary`` run inside the Snakemake process (``run:`` blocks,
with ``force-use-threads`` from the workflow profile): each is a few milliseconds of work next to
the ~0.7 s a separate Python interpreter costs to start and import pandas, and a paper plan has 11
of them. ``plot`` draws figures, real CPU work, and calls :func:`plot_job` from its own script
process so the tables' figures draw in parallel. Running in threads means: no ``sys.stdout``
redirection (other jobs share the process); each job writes its own log file, and a failure
leaves its message and traceback there before Snakemake reports it. Outputs are written
atomically by :mod:`kdsrc.report`, as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..atomicio import atomic_write_json


@contextlib.contextmanager
def job_log(log_path: str | Path) -> Iterator[Callable[[str], None]]:
    """Yield ``say(text)`` that appends a line to the job's log; an exception is logged with
    its traceback and re-raised (Snakemake then names the rule, the job and the log)."""
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(path, "w", buffering=1) as log:
        def say(text: str) -> None:
            log.write(text.rstrip("\n") + "\n")
        try:
            yield say
        except BaseException as e:
            say(f"FAILED: {type(e).__name__}: {e}")
            traceback.print_exc(file=log)
            raise
        # the pid shows where the job ran: the Snakemake process itself for run: bodies
        say(f"done in {time.perf_counter() - t0:.2f} s (pid {os.getpid()})")


def curve_label(csv_path: str | Path) -> str:
    """Legend label of a per-epoch log: ``results/eval/runs/{d}/{t}/{s}/{m}/seed{n}.csv`` ->
    ``"t->s m"`` (the seeds of one run share it: one line, mean ± std); a teacher's pretraining
    log ``results/eval/teachers/{d}/{t}.csv`` -> ``"t (teacher)"``."""
    parts = Path(csv_path).parts
    if "runs" in parts and len(parts) >= 5:
        _d, t, s, m = parts[-5:-1]
        return f"{t}->{s} {m}"
    return f"{Path(csv_path).stem} (teacher)"


def collect_job(records: Sequence[str], teachers: Sequence[str], out_csv: str, *, spec: str,
                table: str, published: str, log: str) -> None:
    from . import collect, load_published, load_records, write_metrics_csv

    with job_log(log) as say:
        recs = load_records(list(records) + list(teachers))
        df = collect(recs, json.loads(spec), table, published=load_published(published))
        write_metrics_csv(df, out_csv)
        say(f"{table}: {len(df)} cells from {len(recs)} records -> {out_csv}")


def render_table_job(metrics_csv: str, *, spec: str, tex: str, md: str, log: str) -> None:
    from . import read_metrics_csv, write_table

    with job_log(log) as say:
        write_table(read_metrics_csv(metrics_csv), json.loads(spec), tex, md)
        say(f"{metrics_csv} -> {tex}, {md}")


def plot_job(metrics_csv: str, logs: Sequence[str], *, spec: str, bars: str, curves: str,
             log: str) -> None:
    from . import plot_table_bars, plot_training_curves, read_metrics_csv

    with job_log(log) as say:
        plot_table_bars(read_metrics_csv(metrics_csv), json.loads(spec), bars)
        plot_training_curves([(p, curve_label(p)) for p in logs], curves)
        say(f"{metrics_csv} -> {bars}; {len(logs)} per-epoch logs -> {curves}")


def summary_job(metrics_csvs: Sequence[str], out_json: str, *, log: str) -> dict[str, Any]:
    from . import metrics_summary

    with job_log(log) as say:
        summary = metrics_summary(list(metrics_csvs))
        atomic_write_json(summary, out_json)
        say(f"{len(metrics_csvs)} metrics CSVs -> {out_json}")
    return summary
