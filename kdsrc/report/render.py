"""LaTeX (booktabs) and markdown renderings of a collected table.

Both renderings come from one intermediate layout (headers, alignments, rows of typed cells), so
the markdown twin always shows the same numbers, bold marks and missing cells as the LaTeX table.

Conventions (identical for every kind):

* a statistic is ``mean ± std`` with 2 decimals (``$73.33 \\pm 0.21$``); the std is left out when
  the cell has one seed; a cell with no record is ``--``;
* bold marks the best of the values compared (grid: the methods of a row; plugin: each base and
  its variant; ablation: each column), comparing the *displayed* (2-decimal) means, so ties are
  all bold; nothing is bold where fewer than two values are present;
* Δ columns are signed with 2 decimals and computed from the displayed numbers
  (e.g. ``75.12`` vs published ``74.50`` gives ``+0.62``): ours − published, or variant − base;
* names (methods, models, column and row labels) are plain text, escaped for LaTeX
  (``angularkd_crd`` -> ``angularkd\\_crd``); so are a spec's ``title`` and ``caption``
  (``%`` -> ``\\%``, ``±`` -> ``$\\pm$``) unless they contain a backslash or a ``$``: then they
  are LaTeX already (``"top-1 (\\%), mean $\\pm$ std"``, as the plans write them) and go in
  verbatim (the markdown twin shows them as written);
* the caption is the spec's title and caption followed by generated sentences naming the metric
  (grid, plugin, teachers; an ablation's headers name theirs) and what Published and Δ mean.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from ..errors import KdsrcError
from ..atomicio import atomic_write_text
from .kinds import kind_of
from .spec import validate_spec

METRIC_HEADERS = {"top1_best": "Top-1 (best)", "top1_last": "Top-1 (last)",
                  "top5_best": "Top-5 (best)", "top5_last": "Top-5 (last)"}
METRIC_SENTENCES = {
    "top1_best": "Metric: top-1 accuracy (%) at the best epoch.",
    "top1_last": "Metric: top-1 accuracy (%) at the last epoch.",
    "top5_best": "Metric: top-5 accuracy (%) at the best epoch.",
    "top5_last": "Metric: top-5 accuracy (%) at the last epoch.",
}
MISSING = "--"

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    "±": r"$\pm$", "Δ": r"$\Delta$", "→": r"$\rightarrow$", "−": r"$-$", "×": r"$\times$",
    "–": "--", "—": "---", "†": r"$^\dagger$",
}


def escape_latex(text: str) -> str:
    """Escape plain text for LaTeX (specials, and the few symbols captions use; ``->`` is an arrow)."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text).replace("->", "→"))


def _escape_md(text: str) -> str:
    return str(text).replace("|", r"\|")


# ------------------------------------------------------------------------------ cells

@dataclass(frozen=True)
class Stat:
    """A mean ± std over ``n`` seeds (``n`` 0: missing)."""
    mean: float
    std: float
    n: int
    bold: bool = False


@dataclass(frozen=True)
class Num:
    """A plain 2-decimal number (e.g. a published value); None: missing. ``secondary``: a
    published number from a secondary source, marked † (and footnoted in the caption)."""
    value: float | None
    secondary: bool = False

#: the caption's footnote for the † of a published number from a secondary source
SECONDARY_NOTE = ("† published number from a secondary source (a summary of the paper or "
                  "another project's README), not yet checked against the paper.")


@dataclass(frozen=True)
class Delta:
    """A signed 2-decimal difference; None: missing."""
    value: float | None


Cell = str | Stat | Num | Delta


def _f2(v: float) -> str:
    """2 decimals, rounding half up on the value cleaned to 9 decimals (a mean of 71.535 shows
    71.54 whether it is stored as 71.535000000001 or 71.534999999999; plain ``f"{v:.2f}"``
    rounds the binary value and may give 71.53). Same result from a metrics CSV read back."""
    d = Decimal(f"{float(v):.9f}").quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    s = f"{d:.2f}"
    return "0.00" if s == "-0.00" else s


def _r2(v: float) -> float:
    """The value as displayed (2 decimals)."""
    return float(_f2(v))


def _signed(v: float) -> str:
    s = _f2(v)
    return s if s.startswith("-") or s == "0.00" else "+" + s


def _diff(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return _r2(a) - _r2(b)


def _latex_cell(c: Cell) -> str:
    if isinstance(c, str):
        return escape_latex(c)
    if isinstance(c, Stat):
        if c.n == 0:
            return MISSING
        body = _f2(c.mean) if c.n == 1 else rf"{_f2(c.mean)} \pm {_f2(c.std)}"
        return rf"$\mathbf{{{body}}}$" if c.bold else f"${body}$"
    if isinstance(c, Num):
        if c.value is None:
            return MISSING
        return f"${_f2(c.value)}^\\dagger$" if c.secondary else f"${_f2(c.value)}$"
    return MISSING if c.value is None else f"${_signed(c.value)}$"


def _md_cell(c: Cell) -> str:
    if isinstance(c, str):
        return _escape_md(c)
    if isinstance(c, Stat):
        if c.n == 0:
            return MISSING
        body = _f2(c.mean) if c.n == 1 else f"{_f2(c.mean)} ± {_f2(c.std)}"
        return f"**{body}**" if c.bold else body
    if isinstance(c, Num):
        if c.value is None:
            return MISSING
        return _f2(c.value) + ("†" if c.secondary else "")
    return MISSING if c.value is None else _signed(c.value)


# ----------------------------------------------------------------------------- layout

@dataclass
class Layout:
    table: str
    headers: list[str]
    align: list[str]  # "l" or "c" per column
    rows: list[list[Cell]]
    caption: list[tuple[str, bool]]  # (text, is LaTeX already) parts
    label: str
    title: str


class _Cells:
    def __init__(self, df: pd.DataFrame):
        self._by_key: dict[tuple[str, str], dict[str, Any]] = {}
        for rec in df.to_dict("records"):
            self._by_key.setdefault((str(rec["row"]), str(rec["column"])), rec)

    def get(self, row: str, column: str) -> dict[str, Any] | None:
        return self._by_key.get((row, column))

    def stat(self, row: str, column: str) -> Stat:
        rec = self.get(row, column)
        if rec is None or int(rec["n_seeds"]) == 0 or _isnan(rec["mean"]):
            return Stat(math.nan, math.nan, 0)
        return Stat(float(rec["mean"]), float(rec["std"]), int(rec["n_seeds"]))

    def published(self, row: str, column: str) -> float | None:
        rec = self.get(row, column)
        if rec is None or _isnan(rec["published"]):
            return None
        return float(rec["published"])

    def published_num(self, row: str, column: str) -> Num:
        rec = self.get(row, column)
        return Num(self.published(row, column),
                   bool(rec is not None and rec.get("published_secondary", False)))


def _isnan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _mean(s: Stat) -> float | None:
    return None if s.n == 0 else s.mean


def _bold_best(stats: list[Stat]) -> list[Stat]:
    """Bold every present stat whose displayed mean is the maximum (needs >= 2 present)."""
    present = [_r2(s.mean) for s in stats if s.n > 0]
    if len(present) < 2:
        return stats
    best = max(present)
    return [Stat(s.mean, s.std, s.n, s.n > 0 and _r2(s.mean) == best) for s in stats]


def is_latex(text: str) -> bool:
    """A title or caption holding a backslash or ``$`` is LaTeX source, used verbatim."""
    return "\\" in text or "$" in text


def _caption(spec: dict[str, Any], *extra: str) -> list[tuple[str, bool]]:
    parts = []
    title = spec["title"].strip()
    if title:
        parts.append((title if title[-1] in ".:!?" else title + ".", is_latex(title)))
    caption = spec["caption"].strip()
    if caption:
        parts.append((caption, is_latex(caption)))
    parts.extend((e, False) for e in extra if e)
    return parts


def _layout(df: pd.DataFrame, spec: dict[str, Any], table: str) -> Layout:
    cells = _Cells(df)
    headers, rows, extra = kind_of(spec).layout(cells, spec)
    caption = _caption(spec, *extra)
    if any(isinstance(c, Num) and c.secondary and c.value is not None for r in rows for c in r):
        caption = caption + [(SECONDARY_NOTE, False)]
    align = ["l" if isinstance(c, str) else "c" for c in rows[0]]
    return Layout(table, headers, align, rows, caption, spec["label"], spec["title"])


def _one_table(df: pd.DataFrame, table_name: str | None) -> tuple[pd.DataFrame, str]:
    if "table" not in df.columns:
        raise KdsrcError("not a collected table frame (no 'table' column); use report.collect")
    names = list(dict.fromkeys(str(t) for t in df["table"]))
    if table_name is None:
        if len(names) != 1:
            raise KdsrcError(f"the frame holds {len(names)} tables ({', '.join(names) or 'none'}); "
                             "pass table_name")
        table_name = names[0]
    elif table_name not in names:
        raise KdsrcError(f"table {table_name}: not in the frame (it holds {', '.join(names) or 'none'})")
    return df[df["table"].astype(str) == table_name], table_name


def layout(df: pd.DataFrame, spec: dict[str, Any], table_name: str | None = None) -> Layout:
    df, name = _one_table(df, table_name)
    return _layout(df, validate_spec(spec, name), name)


# ---------------------------------------------------------------------------- emitters

def render_latex(df: pd.DataFrame, spec: dict[str, Any], table_name: str | None = None) -> str:
    """The table as a LaTeX ``table`` float (booktabs; needs ``booktabs`` and ``graphicx``).

    Wide tables are scaled down to ``\\linewidth``; narrow ones keep their natural size.
    """
    lay = layout(df, spec, table_name)
    lines = [
        f"% {lay.table}: generated by kdsrc.report from the eval records; do not edit by hand.",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{' '.join(t if tex else escape_latex(t) for t, tex in lay.caption)}}}",
        rf"\label{{{lay.label}}}",
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
        rf"\begin{{tabular}}{{{''.join(lay.align)}}}",
        r"\toprule",
        " & ".join(escape_latex(h) for h in lay.headers) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(_latex_cell(c) for c in row) + r" \\" for row in lay.rows]
    lines += [r"\bottomrule", r"\end{tabular}%", "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def render_markdown(df: pd.DataFrame, spec: dict[str, Any], table_name: str | None = None) -> str:
    """The same table as a markdown pipe table (via ``tabulate``), with title and caption."""
    lay = layout(df, spec, table_name)
    colalign = ["left" if a == "l" else "center" for a in lay.align]
    body = tabulate([[_md_cell(c) for c in row] for row in lay.rows],
                    headers=[_escape_md(h) for h in lay.headers], tablefmt="pipe",
                    colalign=colalign, disable_numparse=True)
    head = f"**{lay.table}: {lay.title.strip()}**" if lay.title.strip() else f"**{lay.table}**"
    caption = " ".join(t for t, _ in lay.caption)
    return f"{head}\n\n{body}\n\n{caption}\n"


def write_table(df: pd.DataFrame, spec: dict[str, Any], tex_path: str | Path | None,
                md_path: str | Path | None, table_name: str | None = None) -> None:
    """Render both twins first, then write each atomically (None: skip that file)."""
    tex = render_latex(df, spec, table_name) if tex_path is not None else None
    md = render_markdown(df, spec, table_name) if md_path is not None else None
    if tex is not None:
        atomic_write_text(tex, tex_path)
    if md is not None:
        atomic_write_text(md, md_path)
