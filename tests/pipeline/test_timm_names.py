"""Model names with a '-' (timm-<model>) pass every name pattern: the plan schema, the
overrides keys and the rules' wildcards, through a Snakemake dry run."""

from __future__ import annotations

import yaml
from repo_copy import SNAKEMAKE, copy_repo, job_stats, run

from kdsrc.plan import Plan

PLAN = {
    "description": "timm names",
    "dataset": "digits",
    "seeds": [0],
    "solver": {"epochs": 1},
    "teachers": {"timm-resnet18": {"source": "pretrain", "solver": {"epochs": 1}}},
    "pairs": {"cross": [["timm-resnet18", "vit6_p4_32"],
                        ["timm-resnet18", "timm-convnext_tiny"]]},
    "methods": {"vanilla": {"method": "vanilla"},
                "kd": {"method": {"name": "kd"},
                       "overrides": {"timm-resnet18->vit6_p4_32": {"solver": {"lr": 0.01}}}}},
    "runs": [{"pairs": ["cross"], "methods": ["vanilla", "kd"]}],
    "tables": {"T1": {"kind": "grid", "caption": "timm", "label": "tab:timm", "pairs": ["cross"],
                      "methods": ["vanilla", "kd"]}},
}


def test_plan_with_timm_names_resolves_and_dry_runs(tmp_path):
    plan = Plan(PLAN, name="timm_names.yaml")
    kd = [r for r in plan.runs if r.method == "kd" and r.student == "vit6_p4_32"]
    assert kd and kd[0].config["solver"]["lr"] == 0.01    # the '->' override key matched
    repo = copy_repo(tmp_path / "repo")
    (repo / "config/plans/timm_names.yaml").write_text(yaml.safe_dump(PLAN))
    out = run(SNAKEMAKE + ["-n", "--cores", "1", "--config", "plan=timm_names"], repo)
    text = out.stdout + out.stderr
    counts = job_stats(text)
    assert counts.get("pretrain_teacher") == 1 and counts.get("distill") == 4, counts
    assert "results/runs/digits/timm-resnet18/vit6_p4_32/kd/seed0/final.pt" in text
