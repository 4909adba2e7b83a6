"""The report rules on a copy of the repository with made-up eval records (no training):
collect, render_table and summary run inside the Snakemake process (one pid, the workflow
profile's force-use-threads), plot in its own processes; a broken record fails the job with the
file named on the console and in the job's log, and leaves no metrics CSV behind."""

from __future__ import annotations

import re

import pytest
import yaml
from kdsrc_testutil import load_script
from repo_copy import REPO, SNAKEMAKE, copy_repo, job_stats, run

TRAINING = {"distill", "pretrain_views", "pretrain_teacher", "fetch_teachers",
            "evaluate_teacher", "teacher_cache"}


@pytest.fixture(scope="module")
def quick_copy(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("report-rules") / "repo")
    bench = load_script(REPO / "benchmarks" / "throughput.py", "kdsrc_bench_records")
    assert bench.synthetic_records(repo, "quick") > 0
    return repo


def _pid(log) -> int:
    m = re.search(r"done in [\d.]+ s \(pid (\d+)\)", log.read_text())
    assert m, log.read_text()
    return int(m.group(1))


def test_profile_runs_report_bodies_in_threads():
    for profile in ("default", "slurm"):
        cfg = yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text())
        assert cfg.get("force-use-threads") is True, profile


def test_tables_from_records_in_process(quick_copy):
    out = run(SNAKEMAKE + ["tables", "--cores", "2", "--config", "plan=quick"], quick_copy)
    stats = job_stats(out.stdout + out.stderr)
    assert not TRAINING & set(stats), stats
    tables = sorted(p.stem for p in (quick_copy / "results/tables").glob("*.tex"))
    assert tables and stats["collect"] == stats["render_table"] == stats["plot"] == len(tables)
    logs = quick_copy / "logs"
    in_process = {_pid(p) for rule in ("collect", "render_table") for p in (logs / rule).glob("*")}
    in_process.add(_pid(logs / "summary.log"))
    assert len(in_process) == 1, "collect/render_table/summary ran in more than one process"
    plots = {_pid(p) for p in (logs / "plot").glob("*.log")}
    assert len(plots) == len(tables) and not plots & in_process
    for t in tables:
        assert (quick_copy / f"results/figures/{t}_curves.png").stat().st_size > 1000


def test_broken_record_fails_cleanly(quick_copy):
    records = sorted((quick_copy / "results/eval/runs").rglob("seed0.json"))
    records[0].write_text("{broken")
    for p in (quick_copy / "results/metrics").glob("*.csv"):
        p.unlink()
    out = run(SNAKEMAKE + ["tables", "--cores", "2", "--config", "plan=quick"], quick_copy,
              check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    rel = records[0].relative_to(quick_copy)
    assert f"{rel}: not valid JSON" in text
    failed = [p for p in (quick_copy / "logs/collect").glob("*.log")
              if "FAILED: KdsrcError" in p.read_text()]
    assert failed and all(str(rel) in p.read_text() for p in failed)
    for p in failed:  # the failed table's CSV was never written, not even half
        assert not (quick_copy / "results/metrics" / f"{p.stem}.csv").exists()
    assert not list((quick_copy / "results/metrics").glob(".*.tmp"))
