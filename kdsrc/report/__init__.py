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

import importlib
from pathlib import Path
from typing import Any, Iterable

#: what the package exports, and the module each name lives in: imported on first use, so that
#: the plan can ask :mod:`kdsrc.report.kinds` about a table without pandas, tabulate and
#: matplotlib (Snakemake builds its DAG in that time)
_EXPORTS = {
    **dict.fromkeys(("COLUMNS", "collect", "metrics_csv_text", "metrics_summary",
                     "read_metrics_csv", "write_metrics_csv"), ".collect"),
    **dict.fromkeys(("Published", "load_published"), ".published"),
    **dict.fromkeys(("METRICS", "load_records"), ".records"),
    **dict.fromkeys(("escape_latex", "render_latex", "render_markdown", "write_table"),
                    ".render"),
    **dict.fromkeys(("KINDS", "validate_spec"), ".spec"),
}

__all__ = sorted([*_EXPORTS, "make_table", "plot_table_bars", "plot_training_curves"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


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
    from .collect import collect, write_metrics_csv
    from .render import write_table

    df = collect(records, spec, table_name, published=published)
    if metrics_csv is not None:
        write_metrics_csv(df, metrics_csv)
    write_table(df, spec, tex, md)
    if png is not None:
        plot_table_bars(df, spec, png)
    return df
