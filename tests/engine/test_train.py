"""End-to-end behaviour of the training engine on the embedded digits dataset (CPU)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math

import pytest
import torch

from kdsrc.data import load_dataset
from kdsrc.engine import RECORD_FIELDS, Progress, RunPaths, train
from kdsrc.errors import ConfigError, NonFiniteLossError, StaleResumeError
from kdsrc.models import load_state_dict_file
from kdsrc_testutil import TEACHER_FLOOR, assert_learned

QUIET = Progress(enabled=False)


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_teacher_fixture_learns(digits_teacher):
    """8 epochs (184 steps) of resnet8 on digits: 93.9-96.9% under every kernel path, thread
    count and seed measured (benchmarks/results/cpu-spread-teacher.json); 10% is chance. (3
    epochs gave 33-66% on one machine alone: too short to learn the same on every CPU.)"""
    record = json.loads((digits_teacher.parent / "eval.json").read_text())
    assert_learned(record["top1_last"], TEACHER_FLOOR, "the digits teacher's test top-1")
    assert set(RECORD_FIELDS) <= set(record)
    assert record["teacher"] == "none" and record["method"] == "vanilla"
    assert record["extra_params"] == 0 and record["precision"] == "fp32"


def test_kd_logs_every_loss_term(tmp_path, digits_teacher):
    paths = RunPaths(tmp_path / "ckpt", tmp_path / "eval" / "seed0.json", tmp_path / "eval" / "seed0.csv")
    record = train({"dataset": "digits", "student": "resnet8", "method": {"name": "kd"},
                    "teacher": {"name": "resnet8", "checkpoint": str(digits_teacher)},
                    "solver": {"epochs": 2}, "seed": 3}, paths, device="cpu", progress=QUIET)
    rows = _rows(paths.log_csv)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for r in rows:
        for col in ("lr", "train_loss", "loss_ce", "loss_kd", "train_top1", "test_top1",
                    "test_top5", "test_loss", "epoch_s"):
            assert math.isfinite(float(r[col])), col
        assert math.isclose(float(r["loss_ce"]) + float(r["loss_kd"]), float(r["train_loss"]),
                            rel_tol=1e-4)
    assert record["switches"] == {"ce_weight": 0.1, "kd_weight": 0.9, "temperature": 4.0}
    assert record["teacher"] == "resnet8" and record["seed"] == 3
    assert json.loads(paths.eval_json.read_text()) == record
    # final.pt is in the published format: {"model": state_dict}, readable weights-only
    sd = load_state_dict_file(paths.final)
    assert "fc.weight" in sd
    assert paths.last.exists()


def test_non_finite_loss_names_epoch_step_and_term(tmp_path):
    # a NaN setting is rejected when the config resolves; what still yields a non-finite loss is
    # the data: a zero normalisation std makes every normalised pixel inf or NaN (0/0)
    paths = RunPaths.in_dir(tmp_path)
    broken = dataclasses.replace(load_dataset("digits").head(256, 64), std=(0.0, 0.0, 0.0))
    with pytest.raises(NonFiniteLossError) as e:
        train({"dataset": "digits", "student": "resnet8", "method": "vanilla",
               "solver": {"epochs": 1}}, paths, device="cpu", progress=QUIET, arrays=broken)
    assert "epoch 1, step 1" in str(e.value) and "loss_ce" in str(e.value)
    assert not paths.eval_json.exists() and not paths.final.exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_refuses_a_foreign_checkpoint(tmp_path):
    paths = RunPaths.in_dir(tmp_path)
    base = {"dataset": "digits", "student": "resnet8", "method": "vanilla",
            "solver": {"epochs": 1}}
    first = train(base, paths, device="cpu", progress=QUIET)
    with pytest.raises(StaleResumeError, match="different run config"):
        train({**base, "seed": 5}, paths, device="cpu", progress=QUIET)
    train({**base, "seed": 5}, paths, device="cpu", progress=QUIET, resume=False)
    # the pipeline's choice: a resume file of another training is not resumed but replaced,
    # and the run is exactly a fresh one
    text = io.StringIO()
    again = train(base, paths, device="cpu", progress=Progress(text),
                  stale_resume="restart")
    assert "not resuming: " in text.getvalue() and "different run config" in text.getvalue()
    assert "resuming from" not in text.getvalue()
    assert again["top1_last"] == first["top1_last"]
    assert torch.load(paths.last, weights_only=True)["config_hash"] == first["config_hash"]
    with pytest.raises(ConfigError, match="stale_resume: expected one of refuse, restart"):
        train(base, paths, device="cpu", progress=QUIET, stale_resume="ignore")


def test_resume_refuses_a_checkpoint_of_other_teacher_or_initial_weights(tmp_path,
                                                                         digits_teacher):
    """A teacher retrained under the same name, or a fine-tune's new initial weights, leave the
    config hash as it was: the resume file records them by content and refuses to finish the
    old training with them (which would publish the old weights as the new run's)."""
    state = load_state_dict_file(digits_teacher)
    other = tmp_path / "other.pt"
    torch.save({"model": {**state, "fc.bias": state["fc.bias"] + 1}}, other)
    same = tmp_path / "same.pt"
    torch.save({"model": state}, same)     # the same weights in another file: the same source
    kd = {"dataset": "digits", "student": "resnet8", "method": {"name": "kd"},
          "solver": {"epochs": 1}, "teacher": {"name": "resnet8", "checkpoint": str(digits_teacher)}}
    paths = RunPaths.in_dir(tmp_path / "kd")
    first = train(kd, paths, device="cpu", progress=QUIET)
    again = train({**kd, "teacher": {"name": "resnet8", "checkpoint": str(same)}}, paths,
                  device="cpu", progress=QUIET)
    assert again["top1_last"] == first["top1_last"]
    with pytest.raises(ConfigError, match=r"another teacher \(weights sha256\).*--no-resume"):
        train({**kd, "teacher": {"name": "resnet8", "checkpoint": str(other)}}, paths,
              device="cpu", progress=QUIET)
    vanilla = {"dataset": "digits", "student": "resnet8", "method": "vanilla",
               "solver": {"epochs": 1, "trainable": "head"}}
    paths = RunPaths.in_dir(tmp_path / "finetune")
    train(vanilla, paths, device="cpu", progress=QUIET, init_weights=digits_teacher)
    with pytest.raises(ConfigError, match=r"another initial-weights file \(sha256\)"):
        train(vanilla, paths, device="cpu", progress=QUIET, init_weights=other)
    train(vanilla, paths, device="cpu", progress=QUIET, init_weights=other, resume=False)


def test_completed_run_is_not_retrained(tmp_path):
    paths = RunPaths.in_dir(tmp_path)
    cfg = {"dataset": "digits", "student": "resnet8", "method": "vanilla", "solver": {"epochs": 1}}
    first = train(cfg, paths, device="cpu", progress=QUIET)
    w = load_state_dict_file(paths.final)
    for out in (paths.final, paths.eval_json, paths.log_csv):  # what Snakemake deletes first
        out.unlink()
    again = train(cfg, paths, device="cpu", progress=QUIET)
    assert paths.final.exists() and paths.eval_json.exists() and len(_rows(paths.log_csv)) == 1
    assert again["top1_last"] == first["top1_last"]
    assert all(torch.equal(w[k], v) for k, v in load_state_dict_file(paths.final).items())
