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


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node SLURM cluster on localhost (``tests/lib/slurm_cluster.py``), started once per
    session and stopped afterwards, leaving no process and no file behind (checked here).
    Without the SLURM binaries or root the tests skip, except when the env var ``CI`` is set (to
    anything): CI must run them (.ci/run installs SLURM)."""
    from slurm_cluster import PACKAGES, missing_binaries, processes_mentioning, start_cluster, \
        stop_cluster

    missing = missing_binaries()
    reason = (f"SLURM is not installed (missing {', '.join(missing)}; apt-get install "
              f"{' '.join(PACKAGES)})" if missing else
              "the one-node SLURM cluster needs root (slurmd runs jobs as their user)"
              if os.geteuid() != 0 else None)
    if reason:
        if "CI" in os.environ:
            pytest.fail(f"{reason}, and CI is set: the SLURM tests must run in CI")
        pytest.skip(f"{reason} (set CI=1 to make this a failure)")
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
    left = processes_mentioning(str(cluster.root))
    assert not left, f"SLURM processes left after the session: {left}"
    assert not cluster.root.exists(), f"{cluster.root} left after the session"
