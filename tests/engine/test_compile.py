"""`compile: on`: the engine trains through torch.compile'd networks (here on the CPU, inductor's
C++ backend) with the eager losses, and the checkpoints keep their parameter names."""

from __future__ import annotations

import pytest
import torch

from kdsrc.data import load_dataset
from kdsrc.engine import RunPaths, train
from kdsrc_testutil import step_losses


@pytest.mark.slow
def test_compiled_run_matches_eager_and_keeps_parameter_names(tmp_path, digits_teacher):
    d = load_dataset("digits")
    small = d.head(64, 64)
    cfg = {"dataset": "digits", "student": "resnet8", "method": "kd",
           "teacher": {"name": "resnet8", "checkpoint": str(digits_teacher)},
           "solver": {"epochs": 1, "batch_size": 16}, "seed": 4}
    runs = {}
    for flag in ("off", "on"):
        prog = step_losses()
        rec = train({**cfg, "compile": flag}, RunPaths.in_dir(tmp_path / flag), device="cpu",
                    progress=prog, arrays=small)
        runs[flag] = (prog.losses, rec)
    eager, compiled = runs["off"][0], runs["on"][0]
    assert len(eager) == len(compiled) == 4
    # fused kernels round differently; the maths is the same
    assert all(abs(a - b) / abs(a) < 1e-3 for a, b in zip(eager, compiled)), (eager, compiled)
    keys = {f: set(torch.load(tmp_path / f / "final.pt", weights_only=True)["model"])
            for f in ("off", "on")}
    assert keys["on"] == keys["off"] and not any("_orig_mod" in k for k in keys["on"])
    assert runs["on"][1]["config"]["compile"] == "on"
