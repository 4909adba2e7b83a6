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
    """final.pt of the digits teacher (``kdsrc_testutil.DIGITS_TEACHER``), trained once per session."""
    from kdsrc_testutil import train_digits_teacher

    out = tmp_path_factory.mktemp("teacher")
    train_digits_teacher(out)
    return out / "final.pt"


@pytest.fixture
def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env
