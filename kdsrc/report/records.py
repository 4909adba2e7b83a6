"""Eval records (README "Run configs"): loading and validation.

Two kinds of record reach the report:

* a **run record** (``results/eval/runs/{d}/{t}/{s}/{m}/seed{n}.json``), written by ``kdsrc train``:
  at least ``dataset, teacher, student, method, seed, top1_best, top1_last, top5_best, top5_last,
  epochs``; ``teacher`` is ``"none"`` for a student trained alone (method ``vanilla``);
* a **teacher record** (``results/eval/teachers/{d}/{t}.json``): ``dataset, teacher, top1, top5``
  and ``published_top1`` (a number or null).

A record with a ``method`` or ``student`` key is a run record; otherwise one with ``top1`` is a
teacher record. Every loaded record carries ``_source`` (its file, or ``record #i`` for a dict
passed in directly) so later errors can name it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import KdsrcError

#: metrics a table can show, in display order
METRICS = ("top1_best", "top1_last", "top5_best", "top5_last")
RUN_FIELDS = ("dataset", "teacher", "student", "method", "seed") + METRICS + ("epochs",)
TEACHER_FIELDS = ("dataset", "teacher", "top1", "top5")
SOURCE = "_source"

RecordLike = Mapping[str, Any] | str | Path


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def record_kind(rec: Mapping[str, Any]) -> str:
    """``"run"`` or ``"teacher"`` (see the module docstring)."""
    if "method" in rec or "student" in rec:
        return "run"
    if "top1" in rec:
        return "teacher"
    return "run"  # the common case: report the run fields it lacks


def validate_record(rec: Any, source: str) -> dict[str, Any]:
    """Check one record's fields and types; return a copy with ``_source`` set."""
    if not isinstance(rec, Mapping):
        raise KdsrcError(f"{source}: an eval record must be a JSON object, got {type(rec).__name__}")
    kind = record_kind(rec)
    fields = RUN_FIELDS if kind == "run" else TEACHER_FIELDS
    missing = [f for f in fields if f not in rec]
    if missing:
        what = "run eval record" if kind == "run" else "teacher eval record"
        raise KdsrcError(f"{source}: {what} misses field{'s' if len(missing) > 1 else ''} "
                         + ", ".join(repr(f) for f in missing))
    names = ("dataset", "teacher", "student", "method") if kind == "run" else ("dataset", "teacher")
    for f in names:
        if not isinstance(rec[f], str) or not rec[f]:
            raise KdsrcError(f"{source}: field {f!r} must be a non-empty string, got {rec[f]!r}")
    numbers = METRICS if kind == "run" else ("top1", "top5")
    for f in numbers:
        if not _is_number(rec[f]):
            raise KdsrcError(f"{source}: field {f!r} must be a finite number, got {rec[f]!r}")
    if kind == "run":
        for f in ("seed", "epochs"):
            if not isinstance(rec[f], int) or isinstance(rec[f], bool):
                raise KdsrcError(f"{source}: field {f!r} must be an integer, got {rec[f]!r}")
    else:
        pub = rec.get("published_top1")
        if pub is not None and not _is_number(pub):
            raise KdsrcError(f"{source}: field 'published_top1' must be a number or null, got {pub!r}")
    out = dict(rec)
    out[SOURCE] = source
    return out


def _expand(item: str | Path) -> list[Path]:
    p = Path(item)
    if p.is_dir():
        return sorted(q for q in p.rglob("*.json") if q.is_file())
    return [p]


def load_record(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise KdsrcError(f"{path}: cannot read eval record ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise KdsrcError(f"{path}: not valid JSON (not UTF-8 text)") from None
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        raise KdsrcError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    return validate_record(rec, str(path))


def load_records(items: RecordLike | Iterable[RecordLike]) -> list[dict[str, Any]]:
    """Load and validate eval records.

    ``items``: one path or a list of paths and/or dicts. A directory stands for every ``*.json``
    below it (sorted). Raises :class:`KdsrcError` naming the file that is not valid JSON or
    misses a field.
    """
    if isinstance(items, (str, Path, Mapping)):
        items = [items]
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if isinstance(item, Mapping):
            src = str(item.get(SOURCE, f"record #{i}"))
            out.append(validate_record(item, src))
        elif isinstance(item, (str, Path)):
            for p in _expand(item):
                out.append(load_record(p))
        else:
            raise KdsrcError(f"record #{i}: expected a dict or a path, got {type(item).__name__}")
    return out
