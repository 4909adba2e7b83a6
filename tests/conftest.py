"""Shared fixtures: a small digits teacher trained once per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent / "lib"))


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory) -> Path:
    """final.pt of a resnet8 trained for 3 epochs on digits (a teacher for KD tests)."""
    from kdsrc.engine import Progress, RunPaths, train

    out = tmp_path_factory.mktemp("teacher")
    train({"dataset": "digits", "student": "resnet8", "method": "vanilla",
           "solver": {"epochs": 3, "lr_decay_epochs": [2]}, "seed": 0}, RunPaths.in_dir(out), device="cpu",
          progress=Progress(enabled=False))
    return out / "final.pt"


@pytest.fixture
def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env
