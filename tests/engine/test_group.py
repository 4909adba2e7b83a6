"""Several runs in one process: each member's weights, per-epoch log and record equal those of
the same run trained alone (the CPU runs the same scheduler as the GPU), and a failing member
stops alone."""

from __future__ import annotations

import copy
import csv

import pytest
import torch

from kdsrc.data import load_dataset
from kdsrc.engine import Progress, RunPaths, train
from kdsrc.engine.group import GroupMember, train_group
from kdsrc.errors import KdsrcError

QUIET = Progress(enabled=False)
# timings, and what a group cannot share with a lone run, are not compared
SKIP = {"wall_s", "samples_per_s", "epoch_s", "git_rev", "versions"}


def _configs(teacher_ckpt):
    teacher = {"name": "resnet8", "checkpoint": str(teacher_ckpt)}
    solver = {"epochs": 2, "batch_size": 32, "lr_decay_epochs": [1]}
    return [
        {"dataset": "digits", "student": "resnet8", "method": "kd", "teacher": teacher,
         "solver": solver, "seed": 1},
        # CRD draws its negatives from torch's RNG every step: a shared RNG would show
        {"dataset": "digits", "student": "resnet8", "method": {"name": "crd", "nce_k": 64},
         "teacher": teacher, "solver": solver, "seed": 2},
        {"dataset": "digits", "student": "resnet8", "method": "vanilla", "solver": solver,
         "seed": 3},
    ]


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in SKIP} for r in csv.DictReader(f)]


def _same_run(a: RunPaths, b: RunPaths):
    wa = torch.load(a.final, weights_only=True)["model"]
    wb = torch.load(b.final, weights_only=True)["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _rows(a.log_csv) == _rows(b.log_csv)


def test_members_train_as_if_alone(tmp_path, digits_teacher):
    data = load_dataset("digits").head(192, 96)
    configs = _configs(digits_teacher)
    alone = [RunPaths.in_dir(tmp_path / f"alone{i}") for i in range(3)]
    records = [train(copy.deepcopy(c), p, device="cpu", arrays=data, progress=QUIET)
               for c, p in zip(configs, alone)]
    grouped = [RunPaths.in_dir(tmp_path / f"group{i}") for i in range(3)]
    got = train_group([GroupMember(copy.deepcopy(c), p, progress=QUIET)
                       for c, p in zip(configs, grouped)], device="cpu", arrays=data)
    for a, g, ra, rg in zip(alone, grouped, records, got):
        _same_run(a, g)
        assert {k: v for k, v in ra.items() if k not in SKIP} == \
            {k: v for k, v in rg.items() if k not in SKIP}



def test_without_its_own_rng_a_member_would_depend_on_its_neighbours(tmp_path, digits_teacher,
                                                                     monkeypatch):
    """The negative control of the test above: with the RNG swap disabled, CRD's negatives come
    from the stream the last member seeded, and its weights differ from its lone run."""
    import kdsrc.engine.group as group

    data = load_dataset("digits").head(192, 96)
    configs = _configs(digits_teacher)
    alone = RunPaths.in_dir(tmp_path / "alone")
    train(copy.deepcopy(configs[1]), alone, device="cpu", arrays=data, progress=QUIET)
    monkeypatch.setattr(group, "set_rng_state", lambda state: None)
    grouped = [RunPaths.in_dir(tmp_path / f"group{i}") for i in range(3)]
    train_group([GroupMember(copy.deepcopy(c), p, progress=QUIET)
                 for c, p in zip(configs, grouped)], device="cpu", arrays=data)
    with pytest.raises(AssertionError):
        _same_run(alone, grouped[1])


def test_a_failing_member_stops_alone_and_the_rerun_resumes(tmp_path, digits_teacher):
    data = load_dataset("digits").head(192, 96)
    good, _, plain = _configs(digits_teacher)
    bad = copy.deepcopy(plain)
    bad["solver"] = {**bad["solver"], "lr": 1e30}         # diverges: a non-finite loss
    paths = [RunPaths.in_dir(tmp_path / n) for n in ("good", "bad")]
    with pytest.raises(KdsrcError, match=r"bad: .*non-finite loss.*resumes each run"):
        train_group([GroupMember(good, paths[0], progress=QUIET),
                     GroupMember(bad, paths[1], progress=QUIET)], device="cpu", arrays=data)
    assert paths[0].eval_json.exists() and not paths[1].eval_json.exists()
    # the rerun (the bad run fixed): the good member resumes after its last epoch
    fixed = copy.deepcopy(plain)
    recs = train_group([GroupMember(good, paths[0], progress=QUIET),
                        GroupMember(fixed, RunPaths.in_dir(tmp_path / "fixed"),
                                    progress=QUIET)], device="cpu", arrays=data)
    assert recs[0]["epochs"] == 2 and len(_rows(paths[0].log_csv)) == 2
