"""The quick_vit plan end to end (the transformer branch's shape on the embedded dataset):
`snakemake --cores all --config plan=quick_vit` in a repository copy. A small ViT teacher is
pretrained in the workflow, fine-tuned head-only, its autoaugment-2 cache built; ViT students
(32 px and upsampled to 64 px) train alone, with KD, RSD and KD on the cached views; tables."""

from __future__ import annotations

import csv
import json
import time

import pytest
import torch
from kdsrc_testutil import assert_decreased
from repo_copy import SNAKEMAKE, copy_repo, job_stats, run

from kdsrc.models import build_model
from kdsrc.models.checkpoint import load_state_dict_file
from kdsrc.models.classifier import classifier_keys

pytestmark = pytest.mark.slow

T = "results/teachers/digits/vit4_p8_64"
JOBS = {"pretrain_init": 1, "finetune_teacher": 1, "evaluate_teacher": 1, "teacher_cache": 1,
        "distill": 7, "collect": 3, "render_table": 3, "plot": 3, "summary": 1, "all": 1}


@pytest.fixture(scope="module")
def quick_vit(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("quick_vit") / "repo", git=False)
    t0 = time.monotonic()
    out = run(SNAKEMAKE + ["--cores", "all", "--config", "plan=quick_vit"], repo, timeout=1200)
    return {"repo": repo, "log": out.stdout + out.stderr, "wall_s": time.monotonic() - t0}


def test_every_job_of_the_branch_ran(quick_vit):
    counts = job_stats(quick_vit["log"])
    assert counts == {**JOBS, "total": sum(JOBS.values())}
    print(f"quick_vit end to end: {quick_vit['wall_s']:.0f} s")


def test_the_fine_tune_trained_the_head_alone_from_the_pretrained_weights(quick_vit):
    repo = quick_vit["repo"]
    init = load_state_dict_file(repo / T / "init.pt")
    tuned = load_state_dict_file(repo / T / "model.pt")
    head = classifier_keys(build_model("vit4_p8_64", num_classes=10))
    assert set(init) == set(tuned) and head <= set(tuned)
    for key in tuned:
        if key in head:
            assert not torch.equal(tuned[key], init[key]), key     # the head trained
        else:
            assert torch.equal(tuned[key], init[key]), key         # the body stayed frozen
    source = json.loads((repo / T / "source.json").read_text())
    assert source["kind"] == "finetune" and source["init"]["kind"] == "pretrain"
    # the pretraining learned (its loss fell far more than at learning rate 0)
    rows = list(csv.DictReader(open(repo / T / "init_pretrain/log.csv")))
    assert_decreased(float(rows[0]["train_loss"]), float(rows[-1]["train_loss"]), 0.15,
                     "the ViT teacher's pretraining loss")
    record = json.loads((repo / "results/eval/teachers/digits/vit4_p8_64.json").read_text())
    assert record["source"] == "finetune" and 0 <= record["top1"] <= 100


def test_kd_on_the_cached_views_read_them_and_the_tables_show_every_run(quick_vit):
    repo = quick_vit["repo"]
    rec = json.loads((repo / "results/eval/runs/digits/vit4_p8_64/vit2_p4_32/kd_views/"
                             "seed0.json").read_text())
    assert rec["teacher_cache_views"] == 2
    meta = json.loads((repo / "results/cache/digits/vit4_p8_64/autoaugment-2/meta.json")
                      .read_text())
    assert meta["scheme"] == "autoaugment" and meta["views"] == 2
    log = (repo / "logs/distill/digits/vit4_p8_64/vit2_p4_32/kd_views/seed0.log").read_text()
    assert "teacher cache: used" in log
    # the 64-px student saw its images upsampled: its run config says so
    up = json.loads((repo / "results/eval/runs/digits/vit4_p8_64/vit3_p8_64/kd/seed0.json")
                    .read_text())
    assert up["config"]["solver"]["upsample"] == 64
    assert up["config"]["teacher"]["upsample"] == 64
    for table in ("V1", "V2", "V3"):
        assert (repo / f"results/tables/{table}.tex").is_file()
    assert "kd\\_views" in (repo / "results/tables/V3.tex").read_text() or \
        "kd_views" in (repo / "results/tables/V3.md").read_text()
