"""Every rendered table compiles with pdflatex (booktabs + graphicx, nothing else).

Without pdflatex the tests skip, except when the env var ``CI`` is set (to anything), where they
fail: CI must prove that the tables compile.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from report_testutil import EVAL, PUBLISHED, SPECS

from kdsrc import report

PREAMBLE = "\\documentclass{article}\n\\usepackage{booktabs,graphicx}\n\\begin{document}\n"


def _pdflatex() -> str:
    exe = shutil.which("pdflatex")
    if exe is None:
        if "CI" in os.environ:  # set at all (CI=true, CI=1...): a missing pdflatex is a failure
            pytest.fail("pdflatex is not installed, and CI is set: the LaTeX tables must be "
                        "compiled in CI (install texlive-latex-base/texlive-latex-recommended)")
        pytest.skip("pdflatex not installed (set CI=1 to make this a failure)")
    return exe


def _compile(tmp_path, tex: str, name: str = "doc") -> None:
    exe = _pdflatex()
    (tmp_path / f"{name}.tex").write_text(PREAMBLE + tex + "\\end{document}\n", encoding="utf-8")
    proc = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", f"{name}.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"pdflatex failed:\n{proc.stdout[-3000:]}"
    log = (tmp_path / f"{name}.log").read_text(errors="replace")
    pdf = tmp_path / f"{name}.pdf"
    assert pdf.exists() and pdf.read_bytes()[:5] == b"%PDF-"
    assert "Overfull \\hbox" not in log, "a table is wider than the text"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_table_compiles(tmp_path, name):
    df = report.collect([EVAL], SPECS[name], name, published=PUBLISHED)
    _compile(tmp_path, report.render_latex(df, SPECS[name]))


def test_awkward_table_compiles(tmp_path, run_records):
    """One seed, missing cells, every LaTeX special in names and caption, a very wide table."""
    recs = [r for r in run_records if r.get("seed", 0) == 0]
    methods = ["vanilla", "kd", "crd", "angularkd_crd"] + [f"variant_{i}_of_angularkd_crd" for i in range(8)]
    spec = {"kind": "grid", "title": "Odd & ends_1", "caption": "100% {braces} #hash & ~ ^ | <> x_1 ± Δ − →",
            "pairs": [["resnet56", "resnet20"], ["resnet32x4", "resnet8x4"]], "methods": methods,
            "teacher_column": True, "compare": "kd",
            "column_labels": {"kd": "KD & friends_%"}}
    tex = report.render_latex(report.collect(recs, spec, "T_x", published=PUBLISHED), spec)
    _compile(tmp_path, tex)


def test_latex_caption_from_a_plan_compiles(tmp_path):
    """Plans write captions in LaTeX ("(\\%)", "$\\pm$"): they go in verbatim and compile."""
    spec = {"kind": "grid", "pairs": [["resnet56", "resnet20"]], "methods": ["kd", "crd"],
            "title": "Same-architecture pairs",
            "caption": "CIFAR-100 top-1 accuracy (\\%), resnet56 $\\to$ resnet20; mean $\\pm$ std."}
    tex = report.render_latex(report.collect([EVAL], spec, "T"), spec)
    assert "accuracy (\\%), resnet56 $\\to$ resnet20; mean $\\pm$ std. Metric: top-1" in tex
    _compile(tmp_path, tex)


def test_all_tables_in_one_document(tmp_path):
    pub = report.load_published(PUBLISHED)
    body = "\n".join(report.render_latex(report.collect([EVAL], s, n, published=pub), s)
                     for n, s in SPECS.items())
    _compile(tmp_path, body)


def test_missing_pdflatex_skips_locally_fails_under_ci(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        _pdflatex()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        _pdflatex()


def test_a_table_with_a_secondary_published_number_compiles(tmp_path):
    """The † of a number from a secondary source, in a cell and in the caption's footnote."""
    spec = SPECS["T1"]
    pub = report.load_published(PUBLISHED).frame.assign(secondary=True)
    tex = report.render_latex(report.collect([EVAL], spec, "T1", published=pub), spec)
    assert r"^\dagger$" in tex and "secondary source" in tex
    _compile(tmp_path, tex)
