"""Golden files: metrics CSV, LaTeX and markdown of five tables built from the stored fixtures.

Regenerate after an intended change: ``KDSRC_UPDATE_GOLDEN=1 pytest tests/report`` (then review
``git diff tests/report/golden``).
"""

from __future__ import annotations

import random

import pytest
from report_testutil import EVAL, PUBLISHED, SPECS, check_golden

from kdsrc import report


@pytest.fixture(scope="module")
def frames():
    pub = report.load_published(PUBLISHED)
    return {name: report.collect([EVAL], spec, name, published=pub) for name, spec in SPECS.items()}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_golden_metrics_csv(frames, name):
    check_golden(f"{name}.csv", report.metrics_csv_text(frames[name]))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_golden_latex(frames, name):
    check_golden(f"{name}.tex", report.render_latex(frames[name], SPECS[name]))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_golden_markdown(frames, name):
    check_golden(f"{name}.md", report.render_markdown(frames[name], SPECS[name]))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_written_files_match_golden(tmp_path, frames, name):
    """write_metrics_csv/write_table write exactly the golden bytes, and a metrics CSV read
    back renders the same tables (the `tables` rule may render from results/metrics alone)."""
    df = frames[name]
    csv_path = tmp_path / "metrics" / f"{name}.csv"
    report.write_metrics_csv(df, csv_path)
    report.write_table(df, SPECS[name], tmp_path / "t" / f"{name}.tex", tmp_path / "t" / f"{name}.md")
    check_golden(f"{name}.csv", csv_path.read_text(encoding="utf-8"))
    check_golden(f"{name}.tex", (tmp_path / "t" / f"{name}.tex").read_text(encoding="utf-8"))
    check_golden(f"{name}.md", (tmp_path / "t" / f"{name}.md").read_text(encoding="utf-8"))
    back = report.read_metrics_csv(csv_path)
    assert report.render_latex(back, SPECS[name]) == report.render_latex(df, SPECS[name])
    assert report.render_markdown(back, SPECS[name]) == report.render_markdown(df, SPECS[name])
    assert report.metrics_csv_text(back) == report.metrics_csv_text(df)
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["metrics", "t", f"{name}.csv", f"{name}.tex", f"{name}.md"])  # no temp files left


def test_record_order_does_not_matter(run_records):
    pub = report.load_published(PUBLISHED)
    texts = set()
    for seed in range(3):
        recs = list(run_records)
        random.Random(seed).shuffle(recs)
        df = report.collect(recs, SPECS["T1"], "T1", published=pub)
        texts.add(report.metrics_csv_text(df) + report.render_latex(df, SPECS["T1"]))
    assert len(texts) == 1
