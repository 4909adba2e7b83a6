"""The quick plan end to end through `dvc repro`, then tables from cached outputs.

One `dvc repro` of the quick plan (the README's main job, on the embedded dataset) is shared
by every test here: it is the quick plan's end-to-end test, and the DVC checks reuse its
outputs — push to a local remote, fresh clones without weights, full pull + `snakemake --touch`,
and a rebuild of a restored output by a user without root's permission override.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from kdsrc_testutil import (QUICK_QUARTILE_FLOOR, QUICK_STUDENT_FLOOR, QUICK_TEACHER_FLOOR,
                            assert_learned)
from repo_copy import DVC, SNAKEMAKE, copy_repo, job_stats, run

pytestmark = pytest.mark.slow

TRAINING_RULES = {"distill", "pretrain_teacher", "fetch_teachers", "teacher_cache",
                  "pretrain_views", "evaluate_teacher"}
TABLES = ["T1", "T2", "T3", "T4", "T5"]
# a fresh checkout makes every workflow script newer than the results: without the `code`
# trigger Snakemake rebuilds only what the eval records feed (README, "Tables from cache")
TABLES_ONLY = ["--rerun-triggers", "mtime", "params", "input"]
# root without the capabilities that let it ignore file permissions: what a normal user sees
AS_USER = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner",
           "--inh-caps", "-dac_override,-dac_read_search,-fowner"]


def _git(repo, *args):
    return run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], repo)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """A repository copy on the quick plan after `dvc repro`, pushed to a local remote."""
    base = tmp_path_factory.mktemp("dvc")
    repo = copy_repo(base / "repo")
    cfg = repo / "config/config.yaml"
    cfg.write_text(cfg.read_text().replace("plan: paper", "plan: quick"))   # mode: plan stays
    run(DVC + ["remote", "modify", "local", "url", str(base / "remote")], repo)
    _git(repo, "commit", "-qam", "quick plan, test remote")
    t0 = time.monotonic()
    out = run(DVC + ["repro"], repo, timeout=3600)
    repro_s = time.monotonic() - t0
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "results")
    run(DVC + ["push"], repo)
    return {"repo": repo, "base": base, "repro_s": repro_s, "log": out.stdout + out.stderr}


def _clone(quick, name):
    dest = quick["base"] / name
    run(["git", "clone", "-q", str(quick["repo"]), str(dest)], quick["base"])
    return dest


def test_repro_builds_every_table(quick):
    repo = quick["repo"]
    print(f"dvc repro of the quick plan: {quick['repro_s']:.0f} s")
    for t in TABLES:
        for path in (f"results/tables/{t}.tex", f"results/tables/{t}.md",
                     f"results/figures/{t}_bars.png", f"results/figures/{t}_curves.png",
                     f"results/metrics/{t}.csv"):
            assert (repo / path).stat().st_size > 0, path
    summary = json.loads((repo / "results/metrics.json").read_text())
    assert summary
    assert "\\toprule" in (repo / "results/tables/T1.tex").read_text()


def test_tables_compile(quick, tmp_path):
    if shutil.which("pdflatex") is None:
        if os.environ.get("CI"):
            pytest.fail("pdflatex is missing under CI (.ci/run installs texlive)")
        pytest.skip("pdflatex not installed")
    for t in TABLES:
        doc = tmp_path / f"{t}.tex"
        body = (quick["repo"] / f"results/tables/{t}.tex").read_text()
        doc.write_text("\\documentclass{article}\n\\usepackage{booktabs,graphicx}\n"
                       f"\\begin{{document}}\n{body}\n\\end{{document}}\n")
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                               doc.name], cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0 and (tmp_path / f"{t}.pdf").exists(), proc.stdout[-3000:]


def test_teachers_learn_and_students_are_real(quick):
    repo = quick["repo"]
    teacher = json.loads((repo / "results/eval/teachers/digits/resnet20.json").read_text())
    # 10 balanced classes: chance is 10%. 93% needs a network that really learned the digits
    # (a nearest-centroid classifier on the pixels stays < 90%); 5 epochs of resnet20 reached
    # 97.2-98.6% under every kernel path and thread count measured
    # (benchmarks/results/cpu-spread-quick_teacher.json)
    assert_learned(teacher["top1"], QUICK_TEACHER_FLOOR, "the quick plan's teacher")
    records = list((repo / "results/eval/runs").rglob("*.json"))
    assert len(records) == 36  # 13 methods x 2 seeds + 4 x 2 cross + 1 x 2 ablation
    best = {str(p): json.loads(p.read_text())["top1_best"] for p in records}
    # 2 epochs on 10 classes (chance 10%): every method but one well above chance (most runs
    # 60-95%; under the AVX2 kernel path on one thread the lowest was 50.7 and the lower
    # quartile 73.3). The exception, Angular-KD's official preset on MLKD (views pretrained for
    # 2 epochs only), is seen at 10-70%: a known open point, reported on the methods issue.
    slow = {p: v for p, v in best.items() if "/angularkd_mlkd/" not in p}
    assert_learned(min(slow.values()), QUICK_STUDENT_FLOOR, f"the weakest student {slow}")
    assert_learned(sorted(best.values())[len(best) // 4], QUICK_QUARTILE_FLOOR,
                   f"the lower quartile of {best}")


def test_second_run_has_nothing_to_do(quick):
    repo = quick["repo"]
    out = run(SNAKEMAKE + ["-n"], repo)
    assert "Nothing to be done" in out.stdout + out.stderr
    status = run(DVC + ["status"], repo)
    assert "up to date" in status.stdout + status.stderr


def test_tables_from_eval_records_without_any_weights(quick):
    clone = _clone(quick, "no_weights")
    assert not (clone / "results/runs").exists() and not (clone / "results/teachers").exists()
    for d in ("results/tables", "results/metrics", "results/figures"):
        shutil.rmtree(clone / d)
    (clone / "results/metrics.json").unlink()
    dry = run(SNAKEMAKE + ["-n", "tables"] + TABLES_ONLY, clone)
    counts = job_stats(dry.stdout + dry.stderr)
    assert not TRAINING_RULES & set(counts), counts
    t0 = time.monotonic()
    run(SNAKEMAKE + ["tables"] + TABLES_ONLY, clone)
    elapsed = time.monotonic() - t0
    print(f"tables from eval records: {elapsed:.1f} s")
    for t in TABLES:
        assert (clone / f"results/tables/{t}.tex").read_text() == \
            (quick["repo"] / f"results/tables/{t}.tex").read_text()


def test_full_pull_then_touch_schedules_no_training(quick):
    clone = _clone(quick, "full_pull")
    run(DVC + ["pull"], clone)
    assert (clone / "results/teachers/digits/resnet20/model.pt").exists()
    run(SNAKEMAKE + ["--touch", "--cores", "1"], clone)
    dry = run(SNAKEMAKE + ["-n"], clone)
    text = dry.stdout + dry.stderr
    assert "Nothing to be done" in text, text[-3000:]


def test_restored_outputs_can_be_rebuilt_by_a_normal_user(quick):
    """cache.type reflink,copy: restored files stay writable, so Snakemake can rebuild them.

    With `cache.type hardlink` the same command stops with ProtectedOutputException for a
    normal user (root's permission override hides it, hence the capability drop).
    """
    clone = _clone(quick, "as_user")
    run(DVC + ["pull"], clone)
    target = "results/runs/digits/none/resnet8/vanilla/seed0/final.pt"
    cmd = AS_USER + SNAKEMAKE + ["--cores", "1", "--forcerun", "distill", "--allowed-rules",
                                 "distill", "--", target]
    run(cmd, clone)
    run(DVC + ["config", "cache.type", "hardlink"], clone)
    run(DVC + ["checkout", "--relink", "-f"], clone)
    proc = run(cmd, clone, check=False)
    assert proc.returncode != 0 and "Write-protected" in proc.stdout + proc.stderr


def test_html_report_has_tables_and_figures(quick):
    repo = quick["repo"]
    run(SNAKEMAKE + ["--report", "report.html"], repo)
    html = (repo / "report.html").read_text(errors="replace")
    assert "T1_bars.png" in html and "T1.tex" in html and "T1_curves.png" in html
