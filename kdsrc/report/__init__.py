"""Report: eval records -> metrics CSVs, LaTeX/markdown tables and figures (README "The pipeline").

Typical use (what the ``collect``/``render_table``/``plot`` rules do)::

    from kdsrc import report
    pub = report.load_published("config/published.csv")
    df = report.collect(["results/eval"], plan["tables"]["T1"], "T1", published=pub)
    report.write_metrics_csv(df, "results/metrics/T1.csv")
    report.write_table(df, plan["tables"]["T1"], "results/tables/T1.tex", "results/tables/T1.md")
    report.plot_table_bars(df, plan["tables"]["T1"], "results/figures/T1.png")

or all at once with :func:`make_table`. ``read_metrics_csv`` turns a metrics CSV back into the
frame, so tables can be rendered from ``results/metrics/*.csv`` alone; ``metrics_summary`` folds
metrics CSVs into the nested dict that ``dvc metrics`` reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from .collect import (COLUMNS, collect, metrics_csv_text, metrics_summary, read_metrics_csv,
                      write_metrics_csv)
from .published import Published, load_published
from .records import METRICS, load_records
from .render import escape_latex, render_latex, render_markdown, write_table
from .spec import KINDS, validate_spec

__all__ = [
    "COLUMNS", "KINDS", "METRICS", "Published", "collect", "escape_latex", "load_published",
    "load_records", "make_table", "metrics_csv_text", "metrics_summary", "plot_table_bars",
    "plot_training_curves", "read_metrics_csv", "render_latex", "render_markdown",
    "validate_spec", "write_metrics_csv", "write_table",
]


def plot_table_bars(*args, **kwargs):
    """:func:`kdsrc.report.figures.plot_table_bars` (matplotlib is imported on first use only:
    the collect and render jobs do not pay its ~0.6 s)."""
    from .figures import plot_table_bars as plot

    return plot(*args, **kwargs)


def plot_training_curves(*args, **kwargs):
    """:func:`kdsrc.report.figures.plot_training_curves` (matplotlib imported on first use)."""
    from .figures import plot_training_curves as plot

    return plot(*args, **kwargs)


def make_table(records: Iterable[Any] | Any, spec: dict[str, Any], table_name: str, *,
               published: Any = None, metrics_csv: str | Path | None = None,
               tex: str | Path | None = None, md: str | Path | None = None,
               png: str | Path | None = None):
    """collect + every requested output (each written atomically); returns the frame."""
    df = collect(records, spec, table_name, published=published)
    if metrics_csv is not None:
        write_metrics_csv(df, metrics_csv)
    write_table(df, spec, tex, md)
    if png is not None:
        plot_table_bars(df, spec, png)
    return df
