"""kdsrc.report.rule_jobs: the report rules' bodies, called as Snakemake calls them."""

from __future__ import annotations

import json
import os

import pytest
from report_testutil import EVAL, GOLDEN, PUBLISHED, SPECS

from kdsrc.errors import KdsrcError
from kdsrc.report.rule_jobs import collect_job, curve_label, job_log, render_table_job, \
    summary_job


def test_curve_labels():
    assert curve_label("results/eval/runs/cifar100/resnet32x4/resnet8x4/kd/seed2.csv") == \
        "resnet32x4->resnet8x4 kd"
    assert curve_label("results/eval/teachers/digits/resnet20.csv") == "resnet20 (teacher)"


def test_job_log_records_success_and_failure(tmp_path):
    with job_log(tmp_path / "logs" / "ok.log") as say:
        say("hello")
    text = (tmp_path / "logs" / "ok.log").read_text()
    assert text.startswith("hello\n") and f"(pid {os.getpid()})" in text
    with pytest.raises(KdsrcError, match="boom"):
        with job_log(tmp_path / "bad.log"):
            raise KdsrcError("boom")
    text = (tmp_path / "bad.log").read_text()
    assert "FAILED: KdsrcError: boom" in text and "Traceback" in text


@pytest.mark.parametrize("name", sorted(SPECS))
def test_collect_render_summary_jobs(tmp_path, name):
    """The jobs write what the library writes: the golden tables, byte for byte."""
    records = sorted(str(p) for p in (EVAL / "runs").rglob("*.json"))
    teachers = sorted(str(p) for p in (EVAL / "teachers").rglob("*.json"))
    csv = tmp_path / "metrics" / f"{name}.csv"
    collect_job(records, teachers, str(csv), spec=json.dumps(SPECS[name]), table=name,
                published=str(PUBLISHED), log=str(tmp_path / "c.log"))
    assert csv.read_bytes() == (GOLDEN / f"{name}.csv").read_bytes()
    render_table_job(str(csv), spec=json.dumps(SPECS[name]), tex=str(tmp_path / "t.tex"),
                     md=str(tmp_path / "t.md"), log=str(tmp_path / "r.log"))
    assert (tmp_path / "t.tex").read_bytes() == (GOLDEN / f"{name}.tex").read_bytes()
    assert (tmp_path / "t.md").read_bytes() == (GOLDEN / f"{name}.md").read_bytes()
    summary = summary_job([str(csv)], str(tmp_path / "metrics.json"), log=str(tmp_path / "s.log"))
    assert json.loads((tmp_path / "metrics.json").read_text()) == summary and name in summary
