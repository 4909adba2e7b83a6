"""The paper plan's DAG: job counts per rule, GPU requests, lint."""

from __future__ import annotations

import re

import pytest
from repo_copy import REPO, SNAKEMAKE, job_stats, run

# Counted by hand from config/plans/paper.yaml:
#  13 pairs (7 same + 6 cross) x 12 methods x 3 seeds = 468; vanilla: 9 distinct students x 3 =
#  27; rsd on the 6 cross pairs x 3 = 18; 5 ablation variants on resnet32x4->resnet8x4 x 3 = 15.
#  Pretrained views (teacher x method x seed): angularkd_kd/mlkd/reviewkd use them under the
#  official preset: 6 teachers x 3 methods x 3 seeds = 54, plus angularkd_crd_pretrained 1 x 3.
PAPER_JOBS = {"distill": 528, "fetch_teachers": 6, "evaluate_teacher": 6, "pretrain_views": 57,
              "collect": 5, "render_table": 5, "plot": 5, "summary": 1, "all": 1}


@pytest.fixture(scope="module")
def paper_dry_run() -> str:
    out = run(SNAKEMAKE + ["-n", "--forceall", "--cores", "all", "--resources", "gpu=4",
                           "--config", "plan=paper"], REPO)
    return out.stdout + out.stderr


def test_paper_plan_job_counts(paper_dry_run):
    counts = job_stats(paper_dry_run)
    assert counts == {**PAPER_JOBS, "total": sum(PAPER_JOBS.values())}


def test_every_gpu_job_asks_for_one_gpu(paper_dry_run):
    blocks = re.split(r"\n(?=(?:local)?rule \w+:)", paper_dry_run)
    gpu_rules = {"distill", "pretrain_views", "evaluate_teacher", "pretrain_teacher",
                 "teacher_cache"}
    seen = 0
    for block in blocks:
        m = re.match(r"(?:local)?rule (\w+):", block)
        if not m:
            continue
        resources = re.search(r"resources: (.*)", block).group(1)
        if m.group(1) in gpu_rules:
            assert "gpu=1" in resources, block
            seen += 1
        else:
            assert "gpu=" not in resources, block
    assert seen == PAPER_JOBS["distill"] + PAPER_JOBS["evaluate_teacher"] + \
        PAPER_JOBS["pretrain_views"]


def test_lint_only_the_justified_conda_lint():
    """README ("Lint") explains why rules have no conda env: the project is PyPI-only."""
    out = run(SNAKEMAKE + ["--lint", "--config", "plan=quick"], REPO, check=False)
    text = out.stdout + out.stderr
    lints = set(re.findall(r"^\s+\* (.+?):?$", text, re.M))
    assert lints <= {"Specify a conda environment or container for each rule."}, lints


# Counted by hand from config/plans/rsd.yaml: 6 CNN pairs x (kd, rsd) x 3 seeds = 36; 2 DeiT-T
# pairs x (kd_vit, rsd_vit) x 3 = 12; vanilla: 3 students x 3 = 9; 4 downloaded teachers.
RSD_JOBS = {"distill": 57, "fetch_teachers": 4, "evaluate_teacher": 4, "collect": 3,
            "render_table": 3, "plot": 3, "summary": 1, "all": 1}


def test_rsd_plan_dry_run():
    out = run(SNAKEMAKE + ["-n", "--forceall", "--cores", "all", "--resources", "gpu=4",
                           "--config", "plan=rsd"], REPO)
    counts = job_stats(out.stdout + out.stderr)
    assert counts == {**RSD_JOBS, "total": sum(RSD_JOBS.values())}


# config/plans/multiview.yaml: 4 methods x 3 seeds (vanilla's teacher is none); the fine-tuned
# ViT-S: its ImageNet weights fetched, fine-tuned, evaluated; its two stored-view caches (1 and
# 5 views), each read by the KD runs that name it
MULTIVIEW_JOBS = {"distill": 12, "fetch_init": 1, "finetune_teacher": 1, "evaluate_teacher": 1,
                  "teacher_cache": 2, "collect": 2, "render_table": 2, "plot": 2, "summary": 1,
                  "all": 1}


def test_multiview_plan_dry_run():
    out = run(SNAKEMAKE + ["-n", "--forceall", "--cores", "all", "--resources", "gpu=4",
                           "--config", "plan=multiview"], REPO)
    text = out.stdout + out.stderr
    assert job_stats(text) == {**MULTIVIEW_JOBS, "total": sum(MULTIVIEW_JOBS.values())}
    cache = "results/cache/cifar10/timm-vit_small_patch16_224/autoaugment-"
    for k in (1, 5):
        assert f"output: {cache}{k}" in text
    # each cached KD entry reads its own scheme's folder; the online one none
    seen = {"kd_5views": 0, "kd_online": 0}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        if not block.startswith("rule distill:"):
            continue
        if "kd_5views/seed" in block:
            assert f"{cache}5" in block and f"{cache}1" not in block, block
            seen["kd_5views"] += 1
        if "kd_online/seed" in block:
            assert cache not in block, block
            seen["kd_online"] += 1
    assert seen == {"kd_5views": 3, "kd_online": 3}
