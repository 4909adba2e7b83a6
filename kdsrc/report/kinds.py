"""The table kinds, one class each: what a table of that kind reads, how its cells are collected,
laid out and drawn. The plan (which runs and teacher records a table needs), :func:`validate_spec`,
:func:`~kdsrc.report.collect`, the renderers and the bar charts all ask the table's kind
(:func:`kind_of`) instead of branching on its name.

Kinds and their keys (``*`` = required)::

  grid      rows = (teacher, student) pairs, one column per method
            pairs*, methods*, metric, compare, published_names, teacher_column, column_labels
  plugin    rows = pairs; for every base method: base | Angular-KD variant | Δ (variant − base)
            pairs*, bases* ({base: variant}), metric, published_names, column_labels
  ablation  rows = method variants on one pair, one column per metric
            pair*, methods*, metrics (default: all four), row_labels
  teachers  rows = teachers: ours, published, Δ (ours − published)
            teachers*, metric (top1_* -> the record's top1, top5_* -> top5)

This module imports neither pandas nor matplotlib (the plan asks it while Snakemake builds its
DAG); the collect, layout and bar methods import their helpers when called.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .records import METRICS
from .spec import KINDS, _err, _metric, _name, _names, _pair, _pairs, _str_map, teacher_metric

Pair = tuple[str, str]


class TableKind:
    """The base: subclasses set the class attributes and implement every method."""

    name: ClassVar[str] = ""
    #: the kind's own keys (besides the common ones) and which of them are required
    keys: ClassVar[tuple[str, ...]] = ()
    required: ClassVar[tuple[str, ...]] = ()

    def normalise(self, spec: dict[str, Any], table: str) -> dict[str, Any]:
        """The kind's keys of a spec, checked and with their defaults."""
        raise NotImplementedError

    # -- what the table reads (spec with explicit pairs) -------------------------------------
    def pairs(self, spec: dict[str, Any]) -> list[Pair]:
        """The (teacher, student) pairs whose runs the table reads."""
        return []

    def methods(self, spec: dict[str, Any]) -> list[str]:
        """The method entries whose runs the table reads, on every pair of :meth:`pairs`."""
        return []

    def teachers(self, spec: dict[str, Any]) -> list[str]:
        """The teachers whose teacher records the table reads."""
        return []

    # -- report --------------------------------------------------------------------------------
    def cells(self, idx, spec: dict[str, Any], table: str, pub) -> list[dict[str, Any]]:
        """The table's cells (:mod:`kdsrc.report.collect`), missing ones included."""
        raise NotImplementedError

    def layout(self, cells, spec: dict[str, Any]) -> tuple[list[str], list[list], list[str]]:
        """``(headers, rows of typed cells, generated caption sentences)``."""
        raise NotImplementedError

    def bars(self, cells, spec: dict[str, Any], stat) -> tuple[list[str], list, str]:
        """``(group labels, [(series label, [(mean, std) per group])], y label)``;
        ``stat(row, column)`` gives a cell's ``(mean, std)``."""
        raise NotImplementedError


class _PairRows(TableKind):
    """Grid and plugin: one row per pair."""

    def _normalise_pairs(self, spec: dict[str, Any], table: str) -> dict[str, Any]:
        return {"pairs": _pairs(spec["pairs"], table, "pairs"),
                "published_names": _str_map(spec.get("published_names"), table,
                                            "published_names"),
                "column_labels": _str_map(spec.get("column_labels"), table, "column_labels")}

    def pairs(self, spec):
        return [tuple(p) for p in spec["pairs"]]

    def cells(self, idx, spec, table, pub):
        from .collect import _run_cell, _teacher_cell, pair_row

        names, metric = spec["published_names"], spec["metric"]
        out = []
        for pair in spec["pairs"]:
            row = pair_row(*pair)
            if spec.get("teacher_column"):
                out.append(_teacher_cell(idx, table, row, "teacher", pair[0], metric, pub))
            for m in self.methods(spec):
                out.append(_run_cell(idx, table, row, m, pair, m, metric, pub, names.get(m, m)))
        return out

    def bars(self, cells, spec, stat):
        from .collect import pair_row
        from .render import METRIC_HEADERS

        groups = [f"{t}→{s}" for t, s in spec["pairs"]]
        rows = [pair_row(t, s) for t, s in spec["pairs"]]
        labels = spec["column_labels"]
        series = [(labels.get(m, m), [stat(r, m) for r in rows]) for m in self.methods(spec)]
        return groups, series, METRIC_HEADERS[spec["metric"]] + " (%)"


class Grid(_PairRows):
    name = "grid"
    keys = ("pairs", "methods", "compare", "published_names", "teacher_column", "column_labels")
    required = ("pairs", "methods")

    def normalise(self, spec, table):
        out = self._normalise_pairs(spec, table)
        out["methods"] = _names(spec["methods"], table, "methods")
        if "teacher" in out["methods"]:
            raise _err(table, "methods", "'teacher' is reserved (use teacher_column: true)")
        comp = spec.get("compare")
        if comp is not None:
            comp = _name(comp, table, "compare")
            if comp not in out["methods"]:
                raise _err(table, "compare", f"{comp!r} is not one of the table's methods "
                           f"({', '.join(out['methods'])})")
        out["compare"] = comp
        tc = spec.get("teacher_column", False)
        if not isinstance(tc, bool):
            raise _err(table, "teacher_column", f"expected true or false, got {tc!r}")
        out["teacher_column"] = tc
        return out

    def methods(self, spec):
        return list(spec["methods"])

    def teachers(self, spec):
        if not spec.get("teacher_column"):
            return []
        return sorted({t for t, _ in self.pairs(spec)})

    def layout(self, cells, spec):
        from .collect import pair_row
        from .render import METRIC_SENTENCES, Delta, _bold_best, _diff, _mean

        labels = spec["column_labels"]
        headers = ["Teacher", "Student"]
        if spec["teacher_column"]:
            headers.append("Teacher acc.")
        headers += [labels.get(m, m) for m in spec["methods"]]
        comp = spec["compare"]
        if comp:
            headers += ["Published", "Δ"]
        rows = []
        for t, s in spec["pairs"]:
            r = pair_row(t, s)
            row: list = [t, s]
            if spec["teacher_column"]:
                row.append(cells.stat(r, "teacher"))
            row += _bold_best([cells.stat(r, m) for m in spec["methods"]])
            if comp:
                pub = cells.published_num(r, comp)
                row += [pub, Delta(_diff(_mean(cells.stat(r, comp)), pub.value))]
            rows.append(row)
        extra = [METRIC_SENTENCES[spec["metric"]]]
        if comp:
            extra.append(f"Published: the published top-1 of {labels.get(comp, comp)}; "
                         "Δ = ours − published.")
        return headers, rows, extra


class Plugin(_PairRows):
    name = "plugin"
    keys = ("pairs", "bases", "published_names", "column_labels")
    required = ("pairs", "bases")

    def normalise(self, spec, table):
        out = self._normalise_pairs(spec, table)
        bases = _str_map(spec["bases"], table, "bases", nonempty=True)
        methods = list(bases) + list(bases.values())
        dup = sorted({m for m in methods if methods.count(m) > 1})
        if dup:
            raise _err(table, "bases", f"a method appears twice: {', '.join(dup)}")
        out["bases"] = bases
        return out

    def methods(self, spec):
        return [m for b, v in spec["bases"].items() for m in (b, v)]

    def layout(self, cells, spec):
        from .collect import pair_row
        from .render import METRIC_SENTENCES, Delta, _bold_best, _diff, _mean

        labels = spec["column_labels"]
        headers = ["Teacher", "Student"]
        for b, v in spec["bases"].items():
            headers += [labels.get(b, b), labels.get(v, v), "Δ"]
        rows = []
        for t, s in spec["pairs"]:
            r = pair_row(t, s)
            row: list = [t, s]
            for b, v in spec["bases"].items():
                sb, sv = _bold_best([cells.stat(r, b), cells.stat(r, v)])
                row += [sb, sv, Delta(_diff(_mean(sv), _mean(sb)))]
            rows.append(row)
        return headers, rows, [METRIC_SENTENCES[spec["metric"]],
                               "Δ = each variant − its base method."]


class Ablation(TableKind):
    name = "ablation"
    keys = ("pair", "methods", "metrics", "row_labels")
    required = ("pair", "methods")

    def normalise(self, spec, table):
        out = {"pair": _pair(spec["pair"], table, "pair"),
               "methods": _names(spec["methods"], table, "methods")}
        metrics = _names(spec.get("metrics", list(METRICS)), table, "metrics")
        for i, m in enumerate(metrics):
            _metric(m, table, f"metrics[{i}]")
        out["metrics"] = metrics
        out["row_labels"] = _str_map(spec.get("row_labels"), table, "row_labels")
        return out

    def pairs(self, spec):
        return [tuple(spec["pair"])]

    def methods(self, spec):
        return list(spec["methods"])

    def cells(self, idx, spec, table, pub):
        from .collect import _run_cell

        return [_run_cell(idx, table, m, met, spec["pair"], m, met, pub, m)
                for m in spec["methods"] for met in spec["metrics"]]

    def layout(self, cells, spec):
        from .render import METRIC_HEADERS, _bold_best

        labels = spec["row_labels"]
        headers = ["Variant"] + [METRIC_HEADERS[m] for m in spec["metrics"]]
        columns = [_bold_best([cells.stat(m, met) for m in spec["methods"]])
                   for met in spec["metrics"]]
        rows = [[labels.get(m, m)] + [col[i] for col in columns]
                for i, m in enumerate(spec["methods"])]
        t, s = spec["pair"]
        return headers, rows, [f"Pair: teacher {t}, student {s}. Accuracy in %."]

    def bars(self, cells, spec, stat):
        from .render import METRIC_HEADERS

        labels = spec["row_labels"]
        groups = [METRIC_HEADERS[m] for m in spec["metrics"]]
        series = [(labels.get(m, m), [stat(m, met) for met in spec["metrics"]])
                  for m in spec["methods"]]
        return groups, series, "accuracy (%)"


class Teachers(TableKind):
    name = "teachers"
    keys = ("teachers",)
    required = ("teachers",)

    def normalise(self, spec, table):
        return {"teachers": _names(spec["teachers"], table, "teachers")}

    def teachers(self, spec):
        return list(spec["teachers"])

    def cells(self, idx, spec, table, pub):
        from .collect import _teacher_cell

        field = teacher_metric(spec["metric"])
        return [_teacher_cell(idx, table, t, field, t, spec["metric"], pub)
                for t in spec["teachers"]]

    def layout(self, cells, spec):
        from .render import Delta, _diff, _mean

        field = teacher_metric(spec["metric"])
        what = "top-1" if field == "top1" else "top-5"
        rows = []
        for t in spec["teachers"]:
            ours = cells.stat(t, field)
            pub = cells.published_num(t, field)
            rows.append([t, ours, pub, Delta(_diff(_mean(ours), pub.value))])
        return ["Teacher", "Ours", "Published", "Δ"], rows, [
            f"Metric: teacher {what} accuracy (%) on the test set; Δ = ours − published."]

    def bars(self, cells, spec, stat):
        import math

        field = teacher_metric(spec["metric"])
        ours = [stat(t, field) for t in spec["teachers"]]
        pubs = []
        for t in spec["teachers"]:
            p = cells.published(t, field)
            pubs.append((math.nan if p is None else p, 0.0))
        what = "top-1" if field == "top1" else "top-5"
        return list(spec["teachers"]), [("ours", ours), ("published", pubs)], \
            f"teacher {what} (%)"


#: every kind by name (the names :data:`kdsrc.report.spec.KINDS` lists)
TABLE_KINDS: dict[str, TableKind] = {k.name: k for k in (Ablation(), Grid(), Plugin(), Teachers())}
assert tuple(sorted(TABLE_KINDS)) == KINDS


def kind_of(spec: dict[str, Any]) -> TableKind:
    """The kind of a (validated) table spec."""
    return TABLE_KINDS[spec["kind"]]
