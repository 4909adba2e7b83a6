"""`snakemake --resources gpu=N` + kdsrc.gpu: at most N distill jobs at once, each its own slot."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from repo_copy import SNAKEMAKE, copy_repo, run

PLAN = """
description: gpu slot test
dataset: digits
seeds: [0, 1, 2]
solver: {epochs: 1}
teachers:
  resnet8: {source: pretrain, solver: {epochs: 1}}
pairs:
  same: [[resnet8, resnet8]]
methods:
  vanilla: {method: vanilla}
runs:
  - {pairs: [same], methods: [vanilla]}
tables:
  T1: {kind: grid, pairs: [same], methods: [vanilla]}
"""

LEASE = re.compile(r"lease \{.*'physical_id': '(\d+)'.*'slot': (\d+).*\} pid (\d+) start ([\d.]+)")
END = re.compile(r"release pid (\d+) end ([\d.]+)")


@pytest.mark.slow
def test_distill_jobs_get_distinct_slots(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    (repo / "config/plans/slots.yaml").write_text(PLAN)
    out = run(SNAKEMAKE + ["runs", "--cores", "4", "--resources", "gpu=2",
                           "--config", "plan=slots"], repo,
              extra_env={"KDSRC_FAKE_GPUS": "2", "KDSRC_GPU_LOCK_DIR": str(tmp_path / "locks")})
    intervals = []
    for log in sorted((repo / "logs" / "distill").rglob("*.log")):
        text = log.read_text()
        m, e = LEASE.search(text), END.search(text)
        assert m and e, text[-2000:]
        assert "computing on the CPU" in text
        intervals.append((float(m.group(4)), float(e.group(2)), m.group(1), int(m.group(2))))
    assert len(intervals) == 3, out.stdout
    events = sorted([(s, 1) for s, _, _, _ in intervals] + [(e, -1) for _, e, _, _ in intervals])
    live = peak = 0
    for _, d in events:
        live += d
        peak = max(peak, live)
    assert peak <= 2
    for i, a in enumerate(intervals):
        for b in intervals[i + 1:]:
            if a[0] < b[1] and b[0] < a[1]:  # overlapping in time: different devices
                assert a[2] != b[2], (a, b)
    shutil.rmtree(repo)
