"""Aggregate eval records into one long-format frame per table, and its metrics CSV.

One frame row per table cell, in the table's order (rows, then columns, as the spec lists them):

=========  ==================================================================================
table      the table's name (``T1``)
row        ``teacher->student`` (grid, plugin), the method (ablation), the teacher (teachers)
column     the method (grid, plugin), the metric (ablation), ``teacher`` (a grid's teacher
           column), ``top1``/``top5`` (teachers)
dataset    the dataset of the records
teacher    the record key used: ``none`` for ``vanilla`` cells
student    the record key used: empty for teacher cells
method     the record key used: ``teacher`` for teacher cells
metric     the record field aggregated (``top1_best``...; ``top1``/``top5`` for teacher cells)
n_seeds    number of records found (0: a missing cell, mean and std empty)
mean, std  over seeds; std is the sample std (ddof 1), empty for one seed
values     the per-seed values, ordered by seed (CSV: ``;``-separated)
seeds      the seeds, same order
published  the published top-1 for the cell (top-1 metrics only), if known
delta      mean − published
published_secondary  the published number comes from a secondary source (rendered with †)
=========  ==================================================================================
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..errors import ConfigError, KdsrcError
from ..atomicio import atomic_write_text
from .published import Published, as_published
from .records import SOURCE, RecordLike, load_records, record_kind
from .kinds import kind_of
from .spec import teacher_metric, validate_spec

COLUMNS = ("table", "row", "column", "dataset", "teacher", "student", "method", "metric",
           "n_seeds", "mean", "std", "values", "seeds", "published", "delta",
           "published_secondary")
FLOAT_COLUMNS = ("mean", "std", "published", "delta")
NAN = float("nan")


def pair_row(teacher: str, student: str) -> str:
    return f"{teacher}->{student}"


def _nan(v: float | None) -> float:
    return NAN if v is None else float(v)


class _Index:
    """Records of one dataset, indexed by (teacher, student, method) and by teacher."""

    def __init__(self, records: list[dict[str, Any]], dataset: str):
        self.dataset = dataset
        self.runs: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = {}
        self.teachers: dict[str, dict[str, Any]] = {}
        for rec in records:
            if rec["dataset"] != dataset:
                continue
            if record_kind(rec) == "teacher":
                prev = self.teachers.get(rec["teacher"])
                if prev is not None:
                    raise KdsrcError(f"two teacher eval records for {dataset}/{rec['teacher']}: "
                                     f"{prev[SOURCE]} and {rec[SOURCE]}")
                self.teachers[rec["teacher"]] = rec
                continue
            key = (rec["teacher"], rec["student"], rec["method"])
            seeds = self.runs.setdefault(key, {})
            prev = seeds.get(rec["seed"])
            if prev is not None:
                raise KdsrcError(f"two eval records for {dataset} {key[0]}->{key[1]} {key[2]} seed "
                                 f"{rec['seed']}: {prev[SOURCE]} and {rec[SOURCE]}")
            seeds[rec["seed"]] = rec


def _stats(values: list[float]) -> tuple[float, float]:
    if not values:
        return NAN, NAN
    mean = math.fsum(values) / len(values)
    std = statistics.stdev(values) if len(values) > 1 else NAN
    return mean, std


def _cell(table: str, row: str, column: str, dataset: str, teacher: str, student: str,
          method: str, metric: str, recs: list[dict[str, Any]], published: float | None,
          seeds: list[int] | None = None, secondary: bool = False) -> dict[str, Any]:
    values = [float(r[metric]) for r in recs]
    mean, std = _stats(values)
    pub = _nan(published)
    delta = mean - pub if values and published is not None else NAN
    return {"table": table, "row": row, "column": column, "dataset": dataset, "teacher": teacher,
            "student": student, "method": method, "metric": metric, "n_seeds": len(values),
            "mean": mean, "std": std, "values": tuple(values),
            "seeds": tuple(seeds if seeds is not None else ()), "published": pub, "delta": delta,
            "published_secondary": bool(secondary and published is not None)}


def _run_cell(idx: _Index, table: str, row: str, column: str, pair: tuple[str, str],
              method: str, metric: str, pub: Published | None, pub_name: str) -> dict[str, Any]:
    teacher, student = pair
    key = ("none", student, "vanilla") if method == "vanilla" else (teacher, student, method)
    by_seed = idx.runs.get(key, {})
    seeds = sorted(by_seed)
    recs = [by_seed[s] for s in seeds]
    epochs = sorted({r["epochs"] for r in recs})
    if len(epochs) > 1:
        srcs = ", ".join(f"{r[SOURCE]} ({r['epochs']})" for r in recs)
        raise KdsrcError(f"table {table}: the seeds of {key[0]}->{key[1]} {key[2]} were trained for "
                         f"different numbers of epochs: {srcs}")
    published, secondary = None, False
    if pub is not None and metric.startswith("top1"):
        published = pub.run(teacher, student, pub_name, idx.dataset)
        secondary = pub.is_secondary(teacher, student, pub_name, idx.dataset)
    return _cell(table, row, column, idx.dataset, key[0], key[1], key[2], metric, recs, published,
                 seeds, secondary)


def _teacher_cell(idx: _Index, table: str, row: str, column: str, teacher: str, metric: str,
                  pub: Published | None) -> dict[str, Any]:
    field = teacher_metric(metric)
    rec = idx.teachers.get(teacher)
    recs = [rec] if rec is not None else []
    published = None
    if field == "top1":
        if pub is not None:
            published = pub.teacher(teacher, idx.dataset)
        if published is None and rec is not None and rec.get("published_top1") is not None:
            published = float(rec["published_top1"])
    return _cell(table, row, column, idx.dataset, teacher, "", "teacher", field, recs, published)


def _choose_dataset(records: list[dict[str, Any]], spec: dict[str, Any], table: str) -> str:
    if spec["dataset"] is not None:
        return spec["dataset"]
    datasets = sorted({r["dataset"] for r in records})
    if len(datasets) > 1:
        raise ConfigError(f"table {table}: dataset: the records come from several datasets "
                          f"({', '.join(datasets)}); set 'dataset' in the table spec")
    return datasets[0] if datasets else ""


def collect(records: Iterable[RecordLike] | RecordLike, spec: dict[str, Any], table_name: str,
            published: Published | str | Path | pd.DataFrame | None = None) -> pd.DataFrame:
    """Aggregate eval records (dicts, files or folders of ``*.json``) into ``table_name``'s cells.

    ``published``: a :class:`Published`, a path to a published-numbers CSV, or None (no
    published/delta values). Returns a frame with :data:`COLUMNS`, one row per cell, missing
    cells included (``n_seeds`` 0).
    """
    norm = validate_spec(spec, table_name)
    recs = load_records(records)
    pub = as_published(published)
    idx = _Index(recs, _choose_dataset(recs, norm, table_name))
    cells = kind_of(norm).cells(idx, norm, table_name, pub)
    df = pd.DataFrame(cells, columns=list(COLUMNS))
    return df.astype({"n_seeds": "int64", **{c: "float64" for c in FLOAT_COLUMNS}})


# ---------------------------------------------------------------------------- metrics CSV

def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        s = f"{v:.4f}"
        return "0.0000" if s == "-0.0000" else s
    return str(v)


def metrics_csv_text(df: pd.DataFrame) -> str:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise KdsrcError(f"metrics frame misses columns {', '.join(missing)}")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for rec in df[list(COLUMNS)].to_dict("records"):
        row = []
        for c in COLUMNS:
            v = rec[c]
            if c == "values":
                row.append(";".join(_fmt(float(x)) for x in v))
            elif c == "seeds":
                row.append(";".join(str(int(x)) for x in v))
            elif c == "n_seeds":
                row.append(str(int(v)))
            elif c in FLOAT_COLUMNS:
                row.append(_fmt(float(v)))
            elif c == "published_secondary":
                row.append("yes" if v else "")
            else:
                row.append(_fmt(v))
        w.writerow(row)
    return buf.getvalue()


def write_metrics_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the frame as ``results/metrics/{table}.csv`` (fixed column order, 4 decimals,
    empty for missing values, ``\\n`` line ends), atomically."""
    return atomic_write_text(metrics_csv_text(df), path)


def read_metrics_csv(path: str | Path) -> pd.DataFrame:
    """Read a metrics CSV back into the frame :func:`collect` returns (values rounded to 4 dp)."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise KdsrcError(f"{path}: cannot read metrics CSV ({str(e).splitlines()[0]})") from None
    if "published_secondary" not in df.columns:   # a metrics CSV written before the column
        df["published_secondary"] = ""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise KdsrcError(f"{path}: not a metrics CSV (misses {', '.join(missing)})")
    df = df[list(COLUMNS)].copy()
    df["published_secondary"] = df["published_secondary"] == "yes"
    df["n_seeds"] = df["n_seeds"].astype("int64")
    for c in FLOAT_COLUMNS:
        df[c] = df[c].map(lambda s: float(s) if s != "" else NAN).astype("float64")
    df["values"] = df["values"].map(lambda s: tuple(float(x) for x in s.split(";")) if s else ())
    df["seeds"] = df["seeds"].map(lambda s: tuple(int(x) for x in s.split(";")) if s else ())
    return df


def metrics_summary(tables: Iterable[str | Path | pd.DataFrame]) -> dict[str, Any]:
    """The numbers ``dvc metrics show/diff`` compare, from metrics CSVs (or collected frames).

    ``{table: {row: {column: {"mean", "std", "n_seeds", "published", "delta"}}}}``, rounded to 4
    decimals; keys whose value is unknown are left out (a missing cell is ``{"n_seeds": 0}``).
    """
    out: dict[str, Any] = {}
    for item in tables:
        df = item if isinstance(item, pd.DataFrame) else read_metrics_csv(item)
        for rec in df.to_dict("records"):
            cell: dict[str, Any] = {"n_seeds": int(rec["n_seeds"])}
            for c in ("mean", "std", "published", "delta"):
                v = float(rec[c])
                if not math.isnan(v):
                    cell[c] = round(v, 4)
            table = out.setdefault(str(rec["table"]), {})
            table.setdefault(str(rec["row"]), {})[str(rec["column"])] = cell
    return out
