"""Table semantics: bold best, one-seed std, missing cells, Δ vs published, escaping, metrics."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from report_testutil import EVAL, PUBLISHED, find

from kdsrc import report
from kdsrc.errors import ConfigError

PAIR = [["resnet32x4", "resnet8x4"]]


def _body_rows(tex: str) -> list[list[str]]:
    """The data rows of a rendered tabular, split into cells."""
    lines = tex.splitlines()
    start, end = lines.index(r"\midrule") + 1, lines.index(r"\bottomrule")
    return [[c.strip() for c in line.removesuffix(r" \\").split(" & ")] for line in lines[start:end]]


def _md_rows(md: str) -> list[list[str]]:
    rows = [line for line in md.splitlines() if line.startswith("|")][2:]
    return [[c.strip() for c in line.strip("|").split("|")] for line in rows]


def _grid(**over):
    spec = {"kind": "grid", "pairs": [["resnet56", "resnet20"], ["resnet32x4", "resnet8x4"]],
            "methods": ["vanilla", "kd", "crd", "angularkd_crd"]}
    spec.update(over)
    return spec


def test_frame_columns_and_values():
    df = report.collect([EVAL], _grid(), "T")
    assert list(df.columns) == list(report.COLUMNS)
    assert list(df["column"][:4]) == ["vanilla", "kd", "crd", "angularkd_crd"]
    van = df[(df.row == "resnet56->resnet20") & (df.column == "vanilla")].iloc[0]
    assert (van.teacher, van.student, van.method, van.metric) == ("none", "resnet20", "vanilla", "top1_best")
    assert van["values"] == (69.12, 69.40) and van.seeds == (0, 1) and van.n_seeds == 2
    assert van["mean"] == pytest.approx(69.26)
    assert van["std"] == pytest.approx(math.sqrt(((69.12 - 69.26) ** 2 + (69.40 - 69.26) ** 2) / 1))
    assert math.isnan(van.published)  # no published CSV passed


def test_bold_best_per_row():
    rows = _body_rows(report.render_latex(report.collect([EVAL], _grid(), "T"), _grid()))
    # columns: teacher, student, vanilla, kd, crd, angularkd_crd
    for row in rows:
        bold = [i for i, c in enumerate(row) if r"\mathbf" in c]
        assert bold == [5], row
    md = _md_rows(report.render_markdown(report.collect([EVAL], _grid(), "T"), _grid()))
    assert [[i for i, c in enumerate(r) if c.startswith("**")] for r in md] == [[5], [5]]


def test_metric_switch_top1_last():
    spec = _grid(metric="top1_last")
    df = report.collect([EVAL], spec, "T")
    assert set(df["metric"]) == {"top1_last"}
    crd = df[(df.row == "resnet56->resnet20") & (df.column == "crd")].iloc[0]
    assert crd["values"] == (71.70, 71.82)
    tex = report.render_latex(df, spec)
    rows = _body_rows(tex)
    # under top1_last crd wins on resnet56->resnet20, angularkd_crd still on resnet32x4->resnet8x4
    assert rows[0][4] == r"$\mathbf{71.76 \pm 0.08}$" and rows[0][5] == r"$71.54 \pm 0.09$"
    assert rows[1][5] == r"$\mathbf{75.81 \pm 0.13}$"
    assert "at the last epoch" in tex and "at the best epoch" not in tex
    assert "at the last epoch" in report.render_markdown(df, spec)


def test_ties_are_all_bold(run_records):
    for r in run_records:
        if r.get("method") == "kd" and r["teacher"] == "resnet32x4":
            r["top1_best"] = find(run_records, teacher="resnet32x4", method="angularkd_crd",
                                  seed=r["seed"])["top1_best"]
    spec = _grid(pairs=PAIR)
    rows = _body_rows(report.render_latex(report.collect(run_records, spec, "T"), spec))
    assert [i for i, c in enumerate(rows[0]) if r"\mathbf" in c] == [3, 5]


def test_one_seed_omits_std(run_records):
    recs = [r for r in run_records if not (r.get("method") == "kd" and r["seed"] == 1)]
    spec = _grid(pairs=PAIR)
    df = report.collect(recs, spec, "T")
    kd = df[df.column == "kd"].iloc[0]
    assert kd.n_seeds == 1 and math.isnan(kd["std"])
    rows = _body_rows(report.render_latex(df, spec))
    assert rows[0][3] == "$73.40$"
    assert rows[0][4] == r"$75.51 \pm 0.13$"  # two seeds keep their std
    assert _md_rows(report.render_markdown(df, spec))[0][3] == "73.40"
    line = [ln for ln in report.metrics_csv_text(df).splitlines() if ",kd," in ln][0]
    assert ",1,73.4000,,73.4000,0," in line


def test_missing_cells_are_dashes(run_records):
    recs = [r for r in run_records if r.get("method") != "crd" or r["teacher"] != "resnet56"]
    spec = _grid(methods=["vanilla", "kd", "dkd", "crd"], compare="crd")
    df = report.collect(recs, spec, "T", published=PUBLISHED)
    rows = _body_rows(report.render_latex(df, spec))
    assert rows[0][4] == "--" and rows[0][5] == "--"      # dkd: never trained
    assert rows[0][-2:] == ["$71.16$", "--"]             # published known, ours missing: no Δ
    assert rows[1][4] == "--" and rows[1][5] != "--"
    md = _md_rows(report.render_markdown(df, spec))
    assert md[0][4] == "--" and md[0][5] == "--" and md[0][-1] == "--"
    missing = df[df.n_seeds == 0]
    assert set(missing["column"]) == {"dkd", "crd"} and missing["mean"].isna().all()


def test_delta_against_published():
    spec = _grid(metric="top1_last", methods=["vanilla", "kd", "crd"], compare="kd")
    df = report.collect([EVAL], spec, "T", published=report.load_published(PUBLISHED))
    rows = _body_rows(report.render_latex(df, spec))
    # ours kd top1_last: 70.66 (pub 70.66) and 73.16 (pub 73.33)
    assert rows[0][-2:] == ["$70.66$", "$0.00$"]
    assert rows[1][-2:] == ["$73.33$", "$-0.17$"]
    md = _md_rows(report.render_markdown(df, spec))
    assert md[1][-2:] == ["73.33", "-0.17"]
    kd = df[(df.column == "kd") & (df.row == "resnet32x4->resnet8x4")].iloc[0]
    assert kd.published == 73.33 and kd.delta == pytest.approx(73.16 - 73.33)
    # published numbers are top-1: a top-5 table has none
    spec5 = _grid(metric="top5_best", compare="kd")
    df5 = report.collect([EVAL], spec5, "T", published=PUBLISHED)
    assert df5["published"].isna().all()
    assert _body_rows(report.render_latex(df5, spec5))[0][-2:] == ["--", "--"]


def test_published_names_map_plan_methods(run_records):
    spec = _grid(compare="angularkd_crd", published_names={"angularkd_crd": "crd"})
    df = report.collect([EVAL], spec, "T", published=PUBLISHED)
    rows = _body_rows(report.render_latex(df, spec))
    assert rows[0][-2:] == ["$71.16$", "$+0.57$"]  # 71.73 - 71.16


def test_latex_escaping():
    spec = _grid(pairs=[["wrn_40_2", "wrn_16_2"]], methods=["kd", "angularkd_crd"],
                 caption="50% of #runs & {more}_x ~ ^", title="Pairs_with_underscores",
                 column_labels={"kd": "KD (T=4) $x$ \\"})
    tex = report.render_latex(report.collect([EVAL], spec, "T"), spec)
    assert r"angularkd\_crd" in tex and "angularkd_crd" not in tex
    assert r"wrn\_40\_2 & wrn\_16\_2 & -- & --" in tex
    assert r"Pairs\_with\_underscores" in tex
    assert r"50\% of \#runs \& \{more\}\_x \textasciitilde{} \textasciicircum{}" in tex
    assert r"KD (T=4) \$x\$ \textbackslash{}" in tex  # labels are names: always escaped
    assert r"\label{tab:T}" in tex  # default label
    assert report.escape_latex("a->b ± Δ") == r"a$\rightarrow$b $\pm$ $\Delta$"


def test_layout_of_every_kind(specs):
    pub = report.load_published(PUBLISHED)
    for name, spec in specs.items():
        tex = report.render_latex(report.collect([EVAL], spec, name, published=pub), spec)
        assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 1
        assert r"\centering" in tex and r"\resizebox" in tex and r"\begin{tabular}" in tex
        assert rf"\label{{{spec['label']}}}" in tex and r"\caption{" in tex
        assert ("Metric:" in tex) or ("Top-1 (best)" in tex)


def test_plugin_delta_and_bold():
    spec = {"kind": "plugin", "pairs": [["resnet56", "resnet20"]], "bases": {"kd": "crd"}}
    df = report.collect([EVAL], spec, "T")
    rows = _body_rows(report.render_latex(df, spec))
    assert rows[0][2:] == [r"$70.83 \pm 0.17$", r"$\mathbf{71.34 \pm 0.20}$", "$+0.51$"]


def test_ablation_bold_per_column(run_records):
    # make kd win top5_last only
    for r in run_records:
        if r.get("method") == "kd" and r["teacher"] == "resnet32x4":
            r["top5_last"] = 99.0
    spec = {"kind": "ablation", "pair": PAIR[0], "methods": ["angularkd_crd", "kd"],
            "metrics": ["top1_best", "top5_last"]}
    rows = _body_rows(report.render_latex(report.collect(run_records, spec, "T"), spec))
    assert rows[0][1].startswith(r"$\mathbf") and not rows[0][2].startswith(r"$\mathbf")
    assert rows[1][2] == r"$\mathbf{99.00 \pm 0.00}$" and not rows[1][1].startswith(r"$\mathbf")


def test_teachers_published_from_record_without_csv():
    spec = {"kind": "teachers", "teachers": ["resnet56", "resnet32x4"]}
    rows = _body_rows(report.render_latex(report.collect([EVAL], spec, "T"), spec))
    assert rows == [["resnet56", "$72.41$", "$72.34$", "$+0.07$"],  # record's published_top1
                    ["resnet32x4", "$79.30$", "--", "--"]]          # null, and no CSV


def test_dataset_selection(run_records):
    other = dict(run_records[0], dataset="digits", top1_best=10.0)
    with pytest.raises(ConfigError, match="several datasets"):
        report.collect(run_records + [other], _grid(), "T")
    df = report.collect(run_records + [other], _grid(dataset="cifar100"), "T")
    assert set(df["dataset"]) == {"cifar100"} and 10.0 not in df["mean"].tolist()


def test_make_table_writes_everything(tmp_path, specs):
    out = {k: tmp_path / k / f"T1.{e}" for k, e in
           (("metrics", "csv"), ("tables", "tex"), ("md", "md"), ("figures", "png"))}
    df = report.make_table([EVAL], specs["T1"], "T1", published=PUBLISHED, metrics_csv=out["metrics"],
                           tex=out["tables"], md=out["md"], png=out["figures"])
    assert len(df) == 10 and all(p.stat().st_size > 0 for p in out.values())


def test_report_does_not_import_torch():
    """The tables rebuild in seconds from the eval outputs: no torch import on that path."""
    code = "import sys, kdsrc.report; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(report.__file__).parents[2])
