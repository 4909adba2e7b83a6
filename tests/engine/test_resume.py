"""A run killed with SIGKILL mid-training and started again ends exactly like an uninterrupted one."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time

import pytest
import torch
import yaml
from kdsrc_testutil import KDSRC

from kdsrc.models import load_state_dict_file

EPOCHS = 4


def _cmd(cfg, out):
    return KDSRC + ["train", "--config", str(cfg), "--out", str(out), "--device", "cpu"]


def _epochs_done(log):
    if not log.exists():
        return 0
    with open(log) as f:
        return len(list(csv.DictReader(f)))


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, digits_teacher, child_env):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "dataset": "digits", "student": "resnet8", "seed": 7,
        "teacher": {"name": "resnet8", "checkpoint": str(digits_teacher)},
        "method": {"name": "kd"}, "solver": {"epochs": EPOCHS, "lr_decay_epochs": [2, 3]}}))
    env = {**child_env, "OMP_NUM_THREADS": "1"}

    straight = tmp_path / "straight"
    subprocess.run(_cmd(cfg, straight), env=env, check=True, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(cfg, killed), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while _epochs_done(killed / "log.csv") < 2 and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert _epochs_done(killed / "log.csv") < EPOCHS, "the kill came too late to test anything"
    assert not (killed / "final.pt").exists()

    resumed = subprocess.run(_cmd(cfg, killed), env=env, check=True, capture_output=True, text=True)
    assert "resuming from" in resumed.stderr

    a = load_state_dict_file(straight / "final.pt")
    b = load_state_dict_file(killed / "final.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ra = json.loads((straight / "eval.json").read_text())
    rb = json.loads((killed / "eval.json").read_text())
    for key in ("top1_best", "top1_last", "top5_best", "top5_last", "epoch_best", "config_hash"):
        assert ra[key] == rb[key], key
    with open(straight / "log.csv") as f1, open(killed / "log.csv") as f2:
        rows_a, rows_b = list(csv.DictReader(f1)), list(csv.DictReader(f2))
    assert len(rows_a) == len(rows_b) == EPOCHS
    for x, y in zip(rows_a, rows_b):
        x.pop("epoch_s"), y.pop("epoch_s")
        assert x == y
