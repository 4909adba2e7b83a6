"""Published reference numbers: ``config/published.csv``, the one file of every published number
the tables compare with (teachers' own top-1 included).

Columns ``dataset, teacher, student, method, top1, source`` and optionally ``secondary``
(``true`` for a number read from a secondary source -- a summary or another project's README,
not the paper itself: the rendered tables footnote it). Which dataset the numbers are for: an
optional ``dataset`` column (per row); else the ``dataset`` argument of :func:`load_published`;
else the file name ``published_<dataset>.csv`` (``published_cifar100.csv`` -> cifar100); else
the rows apply to every dataset. A table of another dataset (the quick plan's digits) so gets
no published numbers and no Δ from a CIFAR-100 file.

``method`` uses the papers' names: ``teacher`` (the teacher's own top-1, repeated on each of its
pairs), ``vanilla`` (the student trained alone), ``kd``, ``crd``, ``dkd``... A plan method whose
name differs is mapped with the table's ``published_names``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from ..errors import KdsrcError

PUBLISHED_COLUMNS = ("teacher", "student", "method", "top1", "source")
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0", "")


class Published:
    """Look-ups into a published-numbers table (first row wins where a key repeats)."""

    def __init__(self, frame: pd.DataFrame, source: str = "published numbers",
                 dataset: str | None = None):
        self.frame = frame
        self.source = source
        self.dataset = dataset
        self._runs: dict[tuple[str, str, str, str | None], float] = {}
        self._teachers: dict[tuple[str, str | None], float] = {}
        self._secondary: set[tuple[str, str, str, str | None]] = set()
        has_ds = "dataset" in frame.columns
        has_secondary = "secondary" in frame.columns
        for row in frame.itertuples(index=False):
            ds = getattr(row, "dataset") if has_ds else None
            ds = dataset if ds is None or (isinstance(ds, float) and math.isnan(ds)) or ds == "" \
                else str(ds)
            key = (str(row.teacher), str(row.student), str(row.method), ds)
            if key not in self._runs and has_secondary and bool(getattr(row, "secondary")):
                self._secondary.add(key)
            self._runs.setdefault(key, float(row.top1))
            if row.method == "teacher":
                self._teachers.setdefault((str(row.teacher), ds), float(row.top1))

    def _key(self, table: dict, key: tuple, dataset: str | None) -> tuple | None:
        """The full key of ``key`` in ``table``: for the dataset asked (default: the file's),
        else for rows without a dataset; None if neither."""
        for ds in (self.dataset if dataset is None else dataset, None):
            if key + (ds,) in table:
                return key + (ds,)
        return None

    def _get(self, table: dict, key: tuple, dataset: str | None) -> float | None:
        found = self._key(table, key, dataset)
        return None if found is None else table[found]

    def run(self, teacher: str, student: str, method: str, dataset: str | None = None) -> float | None:
        """Published top-1 of ``method`` on the pair (``vanilla``: the student trained alone);
        ``dataset`` None: the file's own dataset."""
        return self._get(self._runs, (teacher, student, method), dataset)

    def is_secondary(self, teacher: str, student: str, method: str,
                     dataset: str | None = None) -> bool:
        """Whether the number :meth:`run` gives comes from a secondary source."""
        return self._key(self._runs, (teacher, student, method), dataset) in self._secondary

    def teacher(self, teacher: str, dataset: str | None = None) -> float | None:
        """Published top-1 of a teacher (any of its rows with method ``teacher``)."""
        return self._get(self._teachers, (teacher,), dataset)


def load_published(csv_path: str | Path, dataset: str | None = None) -> Published:
    """Read a published-numbers CSV; errors name the file and the problem.

    ``dataset``: the dataset its numbers are for (default: from a ``dataset`` column, else from
    a file name ``published_<dataset>.csv``, else any dataset).
    """
    path = Path(csv_path)
    try:
        frame = pd.read_csv(path, dtype={"teacher": str, "student": str, "method": str,
                                         "source": str, "secondary": str},
                            keep_default_na=False,
                            na_values={"top1": [""]})
    except FileNotFoundError:
        raise KdsrcError(f"{path}: published-numbers file not found") from None
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise KdsrcError(f"{path}: cannot read published numbers ({str(e).splitlines()[0]})") from None
    missing = [c for c in PUBLISHED_COLUMNS if c not in frame.columns]
    if missing:
        raise KdsrcError(f"{path}: published-numbers CSV misses column{'s' if len(missing) > 1 else ''} "
                         + ", ".join(repr(c) for c in missing))
    top1 = pd.to_numeric(frame["top1"], errors="coerce")
    bad = frame.index[top1.isna() | ~top1.apply(lambda v: math.isfinite(v) if v == v else False)]
    if len(bad):
        i = int(bad[0])
        raise KdsrcError(f"{path}: line {i + 2}: top1 must be a number, got {frame['top1'][i]!r}")
    frame = frame.assign(top1=top1.astype(float))
    if "secondary" in frame.columns:
        flags = frame["secondary"].astype(str).str.strip().str.lower()
        bad = frame.index[~flags.isin(_TRUE + _FALSE)]
        if len(bad):
            i = int(bad[0])
            raise KdsrcError(f"{path}: line {i + 2}: secondary must be true or false, got "
                             f"{frame['secondary'][i]!r}")
        frame = frame.assign(secondary=flags.isin(_TRUE))
    for c in ("teacher", "student", "method"):
        empty = frame.index[frame[c].str.strip() == ""]
        if len(empty):
            raise KdsrcError(f"{path}: line {int(empty[0]) + 2}: empty {c!r}")
    if dataset is None:
        m = re.fullmatch(r"published_([A-Za-z0-9]+)\.csv", path.name)
        dataset = m.group(1) if m else None
    return Published(frame, str(path), dataset)


def as_published(published: "Published | str | Path | pd.DataFrame | None") -> Published | None:
    if published is None or isinstance(published, Published):
        return published
    if isinstance(published, pd.DataFrame):
        return Published(published)
    return load_published(published)
