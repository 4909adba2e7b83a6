"""Table specs (the ``tables:`` entries of a plan): validation and defaults.

The kinds and their keys: :mod:`kdsrc.report.kinds` (one class each). Common keys: kind*,
title, caption, label, dataset (which records to use when several datasets are present), metric
(default ``top1_best``). Unknown keys are errors (a typo must not silently drop a column).
Method name ``vanilla`` is the student trained alone (teacher ``none``).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from ..errors import ConfigError
from .records import METRICS

KINDS = ("ablation", "grid", "plugin", "teachers")
COMMON_KEYS = ("kind", "title", "caption", "label", "dataset", "metric")
_LABEL_RE = re.compile(r"^[A-Za-z0-9_:.\-]+$")


def _err(table: str, key: str | None, msg: str) -> ConfigError:
    where = f"table {table}" + (f": {key}" if key else "")
    return ConfigError(f"{where}: {msg}")


def _name(v: Any, table: str, key: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _err(table, key, f"expected a non-empty name, got {v!r}")
    return v


def _names(v: Any, table: str, key: str) -> list[str]:
    if not isinstance(v, (list, tuple)) or not v:
        raise _err(table, key, f"expected a non-empty list of names, got {v!r}")
    out = [_name(x, table, f"{key}[{i}]") for i, x in enumerate(v)]
    dup = sorted({x for x in out if out.count(x) > 1})
    if dup:
        raise _err(table, key, f"duplicate entries {', '.join(dup)}")
    return out


def _pair(v: Any, table: str, key: str) -> tuple[str, str]:
    if isinstance(v, str):
        raise _err(table, key, f"expected [teacher, student], got {v!r}: a pair group name? "
                   "Expand the plan's pair groups (kdsrc.plan.Plan.expand_pairs) before "
                   "handing the spec to the report")
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise _err(table, key, f"expected [teacher, student], got {v!r}")
    return _name(v[0], table, f"{key}[0]"), _name(v[1], table, f"{key}[1]")


def _pairs(v: Any, table: str, key: str) -> list[tuple[str, str]]:
    if not isinstance(v, (list, tuple)) or not v:
        raise _err(table, key, f"expected a non-empty list of [teacher, student] pairs, got {v!r}")
    out = [_pair(x, table, f"{key}[{i}]") for i, x in enumerate(v)]
    dup = sorted({f"{t}->{s}" for t, s in out if out.count((t, s)) > 1})
    if dup:
        raise _err(table, key, f"duplicate pairs {', '.join(dup)}")
    return out


def _str_map(v: Any, table: str, key: str, nonempty: bool = False) -> dict[str, str]:
    if v is None and not nonempty:
        return {}
    if not isinstance(v, Mapping) or (nonempty and not v):
        raise _err(table, key, f"expected a {'non-empty ' if nonempty else ''}mapping of names, got {v!r}")
    return {_name(k, table, key): _name(x, table, f"{key}.{k}") for k, x in v.items()}


def _text(v: Any, table: str, key: str) -> str:
    if v is None:
        return ""
    if not isinstance(v, str):
        raise _err(table, key, f"expected a string, got {v!r}")
    return v


def _metric(v: Any, table: str, key: str) -> str:
    if v not in METRICS:
        raise _err(table, key, f"unknown metric {v!r}; valid metrics: {', '.join(METRICS)}")
    return v


def validate_spec(spec: Any, table: str) -> dict[str, Any]:
    """Return a normalised copy of a table spec, or raise :class:`ConfigError` naming the key.

    The result is itself a valid spec (validating it again returns an equal mapping).
    """
    if not isinstance(spec, Mapping):
        raise _err(table, None, f"a table spec must be a mapping, got {type(spec).__name__}")
    if "kind" not in spec:
        raise _err(table, "kind", f"missing required key; valid kinds: {', '.join(KINDS)}")
    kind = spec["kind"]
    if kind not in KINDS:
        raise _err(table, "kind", f"unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    from .kinds import TABLE_KINDS

    kind_class = TABLE_KINDS[kind]
    allowed = COMMON_KEYS + kind_class.keys
    unknown = sorted(str(k) for k in spec if k not in allowed)
    if unknown:
        raise _err(table, unknown[0], f"unknown key for a {kind} table; valid keys: "
                   + ", ".join(sorted(allowed)))
    for k in kind_class.required:
        if k not in spec or spec[k] is None:
            raise _err(table, k, f"missing required key for a {kind} table")

    out: dict[str, Any] = {"kind": kind}
    out["title"] = _text(spec.get("title"), table, "title")
    out["caption"] = _text(spec.get("caption"), table, "caption")
    label = _text(spec.get("label"), table, "label") or f"tab:{table}"
    if not _LABEL_RE.match(label):
        raise _err(table, "label", f"{label!r} may only hold letters, digits and _:.-")
    out["label"] = label
    ds = spec.get("dataset")
    out["dataset"] = None if ds is None else _name(ds, table, "dataset")
    out["metric"] = _metric(spec.get("metric", "top1_best"), table, "metric")

    out.update(kind_class.normalise(spec, table))
    return out


def teacher_metric(metric: str) -> str:
    """The teacher-record field that stands for a run metric (``top1_best`` -> ``top1``)."""
    return metric.split("_")[0]
