"""runs_per_gpu: the runs of a teacher train in groups (rules distill_group_<n>) whose outputs are
exactly their members' distill outputs, with the same results as one job per run."""

from __future__ import annotations

import csv

import pytest
import yaml
from repo_copy import SNAKEMAKE, copy_repo, job_stats, run

from kdsrc.plan import Plan

pytestmark = pytest.mark.slow

PLAN = {
    "description": "run groups",
    "dataset": "digits",
    "seeds": [0, 1],
    "solver": {"epochs": 1, "batch_size": 128},
    "teachers": {"resnet8": {"source": "pretrain", "solver": {"epochs": 1}}},
    "pairs": {"same": [["resnet8", "resnet8"]]},
    "methods": {"kd": {"method": {"name": "kd"}}, "dkd": {"method": {"name": "dkd"}}},
    "runs": [{"pairs": ["same"], "methods": ["kd", "dkd"]}],
    "tables": {"T1": {"kind": "grid", "caption": "groups", "label": "tab:groups",
                      "pairs": ["same"], "methods": ["kd", "dkd"]}},
}
SKIP = {"epoch_s"}


def test_groups_of_a_plan():
    plan = Plan(PLAN, name="groups.yaml")
    assert plan.run_groups(1) == []
    groups = plan.run_groups(3)
    assert [len(g) for g in groups] == [3]            # 4 runs of one teacher: 3 + a lone run
    assert [r.key for r in groups[0]] == [r.key for r in plan.runs[:3]]
    assert [len(g) for g in plan.run_groups(2)] == [2, 2]


def _logs(repo):
    out = {}
    for p in sorted((repo / "results/eval/runs").rglob("*.csv")):
        with open(p) as f:
            out[str(p.relative_to(repo))] = [{k: v for k, v in r.items() if k not in SKIP}
                                             for r in csv.DictReader(f)]
    return out


def test_groups_train_the_same_runs_as_single_jobs(tmp_path):
    results = {}
    for k in (1, 2):
        repo = copy_repo(tmp_path / f"k{k}")
        (repo / "config/plans/groups.yaml").write_text(yaml.safe_dump(PLAN))
        out = run(SNAKEMAKE + ["--cores", "2", "runs", "--config", "plan=groups",
                               f"runs_per_gpu={k}"], repo, timeout=1200)
        counts = job_stats(out.stdout + out.stderr)
        if k == 1:
            assert counts.get("distill") == 4, counts
        else:
            assert "distill" not in counts, counts
            assert counts.get("distill_group_0") == 1 and counts.get("distill_group_1") == 1
            log = (repo / "logs/distill_group/0.log").read_text()
            assert log.count("epoch 1/1 lr") == 2         # two runs in the one process
            again = run(SNAKEMAKE + ["-n", "--cores", "2", "runs", "--config", "plan=groups",
                                     "runs_per_gpu=2"], repo)
            assert "Nothing to be done" in again.stdout + again.stderr
        results[k] = _logs(repo)
    assert len(results[1]) == 4 and results[1] == results[2]

    # a changed method entry reruns its jobs, whose last.pt belongs to the old config: they train
    # from the start (the pipeline's stale_resume="restart"), the other runs stay as they are
    repo = tmp_path / "k1"
    edited = {**PLAN, "methods": {**PLAN["methods"],
                                  "kd": {"method": {"name": "kd", "temperature": 2.0}}}}
    (repo / "config/plans/groups.yaml").write_text(yaml.safe_dump(edited))
    out = run(SNAKEMAKE + ["--cores", "2", "runs", "--config", "plan=groups"], repo, timeout=1200)
    assert job_stats(out.stdout + out.stderr).get("distill") == 2
    for seed in (0, 1):
        log = (repo / f"logs/distill/digits/resnet8/resnet8/kd/seed{seed}.log").read_text()
        assert "not resuming: " in log and "a different run config" in log, log[-2000:]
        assert "resuming from" not in log
    assert _logs(repo) != results[1]
