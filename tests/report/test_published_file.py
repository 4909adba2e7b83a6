"""config/published.csv: every published number in one file, with its dataset and source; the
plans hold none; a number from a secondary source is marked † and footnoted where a table
shows it, and kept as such in the metrics CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from report_testutil import EVAL, SPECS

from kdsrc import paths, report
from kdsrc.errors import ConfigError, KdsrcError
from kdsrc.plan import load_plan

REPO = Path(__file__).resolve().parents[2]
CSV = REPO / paths.PUBLISHED


def _rows():
    with open(CSV, newline="") as f:
        return list(csv.DictReader(f))


def test_one_file_with_dataset_and_source_columns():
    rows = _rows()
    assert list(rows[0]) == ["dataset", "teacher", "student", "method", "top1", "source",
                             "secondary"]
    assert all(r["dataset"] and r["source"] for r in rows)
    keys = [(r["dataset"], r["teacher"], r["student"], r["method"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert not list((REPO / "config").glob("published_*.csv"))


def test_secondary_numbers_have_a_cell_in_a_paper_table():
    cells = set()
    for plan, name in [(p, n) for p in map(load_plan, ("paper", "rsd")) for n in p.tables]:
        spec = plan.table_spec(name)
        if spec["kind"] == "teachers":
            continue
        pairs = [tuple(spec["pair"])] if spec["kind"] == "ablation" else \
            [tuple(p) for p in spec["pairs"]]
        methods = list(spec.get("methods", [])) + list(spec.get("bases", {})) + \
            list(spec.get("bases", {}).values())
        cells |= {(t, s, m) for t, s in pairs for m in methods}
    secondary = [r for r in _rows() if r["secondary"] == "true"]
    assert len(secondary) >= 20
    for r in secondary:
        assert (r["teacher"], r["student"], r["method"]) in cells, r
    pub = report.load_published(CSV)
    assert pub.run("resnet32x4", "resnet8x4", "angularkd_crd", "cifar100") == 76.46
    assert pub.is_secondary("resnet32x4", "resnet8x4", "angularkd_crd", "cifar100")
    assert not pub.is_secondary("resnet32x4", "resnet8x4", "kd", "cifar100")
    assert pub.teacher("resnet32x4", "cifar100") == 79.42


def test_plans_hold_no_published_numbers(tmp_path):
    for plan in (REPO / "config" / "plans").glob("*.yaml"):
        assert "published_top1" not in plan.read_text(), plan
    text = (REPO / "config" / "plans" / "quick.yaml").read_text().replace(
        "    source: pretrain\n", "    source: pretrain\n    published_top1: 90.0\n", 1)
    assert "published_top1" in text
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "q.yaml").write_text(text)
    (tmp_path / "schema").symlink_to(REPO / "config" / "schema")
    with pytest.raises(ConfigError, match="published_top1"):
        load_plan("q", config_dir=tmp_path)


def test_a_secondary_number_is_marked_and_footnoted(tmp_path):
    spec = SPECS["T1"]  # compare: crd
    rows = "dataset,teacher,student,method,top1,source,secondary\n" \
        "cifar100,resnet32x4,resnet8x4,crd,75.51,primary paper,false\n" \
        "cifar100,resnet56,resnet20,crd,71.16,a summary,true\n"
    (tmp_path / "p.csv").write_text(rows)
    df = report.collect([EVAL], spec, "T1", published=report.load_published(tmp_path / "p.csv"))
    flags = {r: bool(v) for r, v in zip(df["row"], df["published_secondary"]) if v}
    assert flags == {"resnet56->resnet20": True}
    md = report.render_markdown(df, spec)
    tex = report.render_latex(df, spec)
    assert "71.16†" in md and "75.51†" not in md and "secondary source" in md
    assert r"$71.16^\dagger$" in tex and "secondary source" in tex
    # the flag survives the metrics CSV (tables render from it alone)
    path = report.write_metrics_csv(df, tmp_path / "T1.csv")
    back = report.read_metrics_csv(path)
    assert report.render_markdown(back, spec) == md
    # without secondary numbers: no footnote
    plain = report.collect([EVAL], spec, "T1",
                           published=report.load_published(tmp_path / "p.csv").frame.assign(
                               secondary=False))
    assert "secondary source" not in report.render_markdown(plain, spec)


def test_a_bad_secondary_flag_is_a_clear_error(tmp_path):
    (tmp_path / "p.csv").write_text("dataset,teacher,student,method,top1,source,secondary\n"
                                    "cifar100,a,b,kd,70,x,maybe\n")
    with pytest.raises(KdsrcError, match="line 2: secondary must be true or false"):
        report.load_published(tmp_path / "p.csv")
