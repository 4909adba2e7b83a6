"""Figures: training curves and one bar chart per table.

Drawn on matplotlib's Agg canvas attached to each figure: no pyplot, no global backend switch,
no display needed.

PNG files are written atomically and without a ``Software`` version stamp, so the same inputs on
the same matplotlib version give the same bytes.
"""

from __future__ import annotations

import csv
import functools
import math
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..errors import KdsrcError
from ..atomicio import atomic_write
from .kinds import kind_of
from .render import _Cells, _one_table
from .spec import validate_spec

CURVE_LABELS = {"test_top1": "test top-1 (%)", "test_top5": "test top-5 (%)",
                "train_top1": "train top-1 (%)", "train_loss": "train loss",
                "test_loss": "test loss", "lr": "learning rate"}
PathLike = str | Path
#: most legend entries shown beside the curves; a longer legend goes below them in columns
LEGEND_SIDE = 12
#: matplotlib is not thread-safe: one figure at a time for callers that draw from threads (the
#: plot rule itself runs as a script, one process per table; the GIL serialises drawing anyway)
_DRAW_LOCK = threading.RLock()


def _one_at_a_time(fn: Callable[..., Path]) -> Callable[..., Path]:
    @functools.wraps(fn)
    def locked(*args: Any, **kwargs: Any) -> Path:
        with _DRAW_LOCK:
            return fn(*args, **kwargs)
    return locked


def _new_figure(**kw: Any) -> Figure:
    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_png: PathLike) -> Path:
    return atomic_write(out_png, lambda p: fig.savefig(p, format="png", dpi=120,
                                                      metadata={"Software": None}))


def _group_curves(curves: Mapping[str, PathLike | Sequence[PathLike]]
                  | Iterable[tuple[PathLike, str]]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    if isinstance(curves, Mapping):
        items = [(paths, label) for label, paths in curves.items()]
    else:
        items = list(curves)
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise KdsrcError(f"training curves: expected (csv path, label) pairs, got {item!r}")
        paths, label = item
        if isinstance(paths, (str, Path)):
            paths = [paths]
        groups.setdefault(str(label), []).extend(Path(p) for p in paths)
    return groups


def _read_log(path: Path, metrics: Sequence[str]) -> dict[str, np.ndarray]:
    """The ``epoch`` column and ``metrics`` of one per-epoch log, as float arrays (an empty
    cell is NaN). The csv module, not pandas: a paper table reads a few hundred of these."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise KdsrcError(f"{path}: per-epoch log not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise KdsrcError(f"{path}: cannot read per-epoch log ({str(e).splitlines()[0]})") from None
    if not rows:
        raise KdsrcError(f"{path}: cannot read per-epoch log (empty file)")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in ("epoch", *metrics) if c not in header]
    if missing:
        raise KdsrcError(f"{path}: per-epoch log misses column{'s' if len(missing) > 1 else ''} "
                         + ", ".join(repr(c) for c in missing))
    body = [r for r in rows[1:] if r]
    if not body:
        raise KdsrcError(f"{path}: per-epoch log has no rows")
    out = {}
    for name in ("epoch", *metrics):
        j = header.index(name)
        try:
            out[name] = np.array([float(r[j]) if j < len(r) and r[j].strip() else np.nan
                                  for r in body])
        except ValueError as e:
            raise KdsrcError(f"{path}: per-epoch log column {name!r}: {e}") from None
    return out


def _curve_stats(logs: Sequence[dict[str, np.ndarray]], metric: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per epoch over the logs (seeds) that have it: epochs, mean, sample std (0 where a
    single log has the epoch); NaN cells are left out."""
    epochs = np.concatenate([log["epoch"] for log in logs])
    values = np.concatenate([log[metric] for log in logs])
    keep = ~(np.isnan(epochs) | np.isnan(values))
    epochs, values = epochs[keep], values[keep]
    xs, idx = np.unique(epochs, return_inverse=True)
    n = np.bincount(idx, minlength=len(xs)).astype(float)
    mean = np.bincount(idx, weights=values, minlength=len(xs)) / np.maximum(n, 1)
    sq = np.bincount(idx, weights=(values - mean[idx]) ** 2, minlength=len(xs))
    std = np.where(n > 1, np.sqrt(sq / np.maximum(n - 1, 1)), 0.0)
    return xs, mean, std


@_one_at_a_time
def plot_training_curves(curves: Iterable[tuple[PathLike, str]]
                         | Mapping[str, PathLike | Sequence[PathLike]], out_png: PathLike,
                         metrics: Sequence[str] = ("test_top1", "train_loss"),
                         title: str | None = None) -> Path:
    """One panel per metric (x: epoch), one line per label.

    ``curves``: ``[(csv, label), ...]`` or ``{label: csv or [csv, ...]}``. Files sharing a label
    are one method over several seeds: the line is the mean per epoch and a band shows ± one
    (sample) std. Files are per-epoch logs with an ``epoch`` column and the metrics. With no
    file at all the figure says so (a table whose teachers were downloaded has no curves).
    """
    groups = _group_curves(curves)
    logs = {label: [_read_log(p, metrics) for p in paths] for label, paths in groups.items()}
    # up to LEGEND_SIDE labels: legend beside the last panel; more (a paper table has ~60):
    # below the panels in columns, the figure growing with its rows, so the axes keep their size
    below = len(logs) > LEGEND_SIDE
    ncol = min(4, math.ceil(len(logs) / LEGEND_SIDE)) if below else 1
    rows = math.ceil(len(logs) / ncol) if below else 0
    width = 4.8 * len(metrics) + (2.2 if logs and not below else 0.0)
    if below:  # a column as wide as the longest entry ("label (mean of n)"), small font
        longest = max(len(label) + 12 for label in logs)
        width = max(width, ncol * (0.6 + 0.07 * longest))
    fig = _new_figure(figsize=(width, 3.6 + 0.2 * rows), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        for i, (label, frames) in enumerate(logs.items()):
            color = f"C{i % 10}"
            xs, mean, std = _curve_stats(frames, metric)
            n = len(frames)
            ax.plot(xs, mean, color=color, linewidth=1.4,
                    label=label if n == 1 else f"{label} (mean of {n})")
            if n > 1:
                ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.2,
                                linewidth=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(CURVE_LABELS.get(metric, metric))
        ax.grid(True, alpha=0.3)
        if not logs:
            ax.text(0.5, 0.5, "no per-epoch logs", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
    if logs and below:
        handles, labels = axes[-1].get_legend_handles_labels()
        fig.legend(handles, labels, fontsize="small", loc="outside lower center", ncol=ncol)
    elif logs:
        axes[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0),
                        borderaxespad=0.0)
    if title:
        fig.suptitle(title)
    return _save(fig, out_png)


def _bar_series(df: pd.DataFrame, spec: dict[str, Any]
                ) -> tuple[list[str], list[tuple[str, list[tuple[float, float]]]], str]:
    """Group labels, [(series label, [(mean, std) per group])], y label. NaN mean: no bar."""
    cells = _Cells(df)

    def ms(row: str, col: str) -> tuple[float, float]:
        s = cells.stat(row, col)
        return (s.mean, s.std if s.n > 1 else 0.0) if s.n else (math.nan, 0.0)

    return kind_of(spec).bars(cells, spec, ms)


@_one_at_a_time
def plot_table_bars(df: pd.DataFrame, spec: dict[str, Any], out_png: PathLike,
                    table_name: str | None = None) -> Path:
    """A grouped bar chart of one table: means with ± std error bars, missing cells left out."""
    df, name = _one_table(df, table_name)
    norm = validate_spec(spec, name)
    groups, series, ylabel = _bar_series(df, norm)
    k = max(len(series), 1)
    width = 0.8 / k
    plot_width = max(4.0, 1.0 + len(groups) * (0.5 + 0.22 * k))
    fig = _new_figure(figsize=(plot_width + 1.8, 3.8), layout="constrained")  # + legend
    ax = fig.subplots()
    lows, highs, handles = [], [], []
    for i, (label, vals) in enumerate(series):
        color = f"C{i % 10}"
        xs = [g + (i - (k - 1) / 2) * width for g in range(len(groups))]
        pts = [(x, m, s) for x, (m, s) in zip(xs, vals) if not math.isnan(m)]
        if pts:
            ax.bar([p[0] for p in pts], [p[1] for p in pts], width=width, yerr=[p[2] for p in pts],
                   capsize=2, color=color, error_kw={"linewidth": 0.8})
            lows += [m - s for _, m, s in pts]
            highs += [m + s for _, m, s in pts]
        handles.append(Patch(color=color, label=label if pts else f"{label} (no data)"))
    if lows:
        lo, hi = min(lows), max(highs)
        pad = max(1.0, 0.15 * (hi - lo))
        ax.set_ylim(max(0.0, math.floor(lo - pad)), math.ceil(hi + pad / 2))
    ax.set_xticks(range(len(groups)))
    tilt = len(groups) > 3
    ax.set_xticklabels(groups, rotation=20 if tilt else 0, ha="right" if tilt else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{name}: {norm['title']}" if norm["title"] else name)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0.0)
    return _save(fig, out_png)
