#!/usr/bin/env python
"""How far the outcome of a short CPU training run moves between CPU models.

Floating-point results of training differ between CPUs: instruction sets pick other kernels
(other summation orders), thread counts split reductions differently, and after a few dozen SGD
steps those last-bit differences grow into different networks. The test suite asserts learning
outcomes of short runs (the session's digits teacher, loss decreases of the method tests), so a
threshold must hold on CPUs nobody tested on. This script measures the spread on one machine by
forcing the kernel paths of other CPUs:

  ATEN_CPU_CAPABILITY     default | avx2 | avx512   (PyTorch's own vectorised kernels)
  ONEDNN_MAX_CPU_ISA      SSE41 | AVX2 | (native)   (oneDNN: convolutions)
  MKL_ENABLE_INSTRUCTIONS SSE4_2 | AVX2 | (native)  (MKL: linear layers)

times thread counts (1, 2) times seeds. Each cell runs in its own process (the variables are read
at start-up). A capability the CPU lacks falls back silently, so each cell records the one torch
reports. Probes (the scenarios the tests assert on, built from the tests' own helpers):

  teacher   the session's digits teacher fixture (tests/lib/kdsrc_testutil.DIGITS_TEACHER):
            test top-1; with --lr0 the same run at learning rate 0 (the negative control)
  methods   that teacher, then the method tests' short runs: Angular-KD's view-CE drop and
            teacher top-1, RSD's term drop, DKD's NCKD/CE ratio; with --lr0 the same runs at
            learning rate 0 (batch-order and augmentation noise only)
  quick_teacher  the quick plan's pretrained teacher (resnet20, 5 epochs of batch 16): test
            top-1

    python benchmarks/cpu_spread.py --probe teacher --seeds 0,1,2
    python benchmarks/cpu_spread.py --probe methods --lr0 --seeds 0
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "lib"))

#: kernel-path profiles: environment variables standing in for other CPU models
PROFILES = {
    "sse41": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
              "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "avx512-dnnl-avx2": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}


def _probe_teacher(work: Path, seed: int, lr0: bool) -> dict:
    from kdsrc_testutil import LR_ZERO, train_digits_teacher

    record = train_digits_teacher(work / "teacher", seed=seed, solver=LR_ZERO if lr0 else None)
    return {"teacher_top1": record["top1_last"]}


def _probe_methods(work: Path, seed: int, lr0: bool) -> dict:
    """The method tests' runs on a teacher trained in this cell (as a CI machine would)."""
    from kdsrc_testutil import LR_ZERO, digits_head, train_digits_teacher, train_on_digits

    train_digits_teacher(work / "teacher", seed=seed)
    ckpt = work / "teacher" / "final.pt"
    solver = LR_ZERO if lr0 else None
    out = {}
    _, rows = train_on_digits(work / "akd", ckpt, {"name": "angularkd", "base": "kd",
                                                   "views": "joint"}, seed=1, solver=solver)
    out["akd_teacher_top1"] = float(rows[-1]["teacher_top1"])
    out["akd_view_ce_drop"] = float(rows[0]["loss_view_ce"]) - float(rows[-1]["loss_view_ce"])
    with digits_head(384, 96):
        _, rows = train_on_digits(work / "rsd", ckpt, {"name": "rsd"}, seed=1, solver=solver)
    out["rsd_drop"] = float(rows[0]["loss_rsd"]) - float(rows[1]["loss_rsd"])
    _, rows = train_on_digits(work / "dkd", ckpt, {"name": "dkd"}, solver=solver)
    out["dkd_nckd_over_ce"] = float(rows[0]["loss_nckd"]) / float(rows[0]["loss_ce"])
    return out


def _probe_quick_teacher(work: Path, seed: int, lr0: bool) -> dict:
    """The quick plan's pretrained teacher (test_quick_dvc asserts >= 95% on it)."""
    from kdsrc.engine import Progress, RunPaths, train
    from kdsrc.plan import load_plan

    cfg = load_plan("quick", config_dir=REPO / "config").teacher_config("resnet20")
    cfg["seed"] = seed
    if lr0:
        from kdsrc_testutil import LR_ZERO
        cfg["solver"] = {**cfg["solver"], **LR_ZERO}
    record = train(cfg, RunPaths.in_dir(work / "t"), device="cpu", progress=Progress(enabled=False))
    return {"quick_teacher_top1": record["top1_last"]}


PROBES = {"teacher": _probe_teacher, "methods": _probe_methods,
          "quick_teacher": _probe_quick_teacher}


def _child(probe: str, seed: int, lr0: bool) -> None:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        values = PROBES[probe](Path(tmp), seed, lr0)
    print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
                      "threads": torch.get_num_threads(), "values": values}))


def _cell(probe: str, profile: str, threads: int, seed: int, lr0: bool) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")}
    env.update(PROFILES[profile], OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, __file__, "--child", probe, "--seeds", str(seed)]
                          + (["--lr0"] if lr0 else []), env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"cell {profile}/{threads} threads/seed {seed} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update(profile=profile, seed=seed, seconds=round(time.monotonic() - t0, 1))
    return res


def _summary(cells: list[dict]) -> dict:
    keys = cells[0]["values"].keys()
    out = {}
    for k in keys:
        vals = [c["values"][k] for c in cells]
        out[k] = {"min": min(vals), "max": max(vals), "mean": statistics.fmean(vals),
                  "std": statistics.pstdev(vals), "n": len(vals)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--probe", choices=sorted(PROBES), default="teacher")
    p.add_argument("--profiles", default=",".join(PROFILES),
                   help="comma-separated kernel profiles (default: all)")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--lr0", action="store_true", help="learning rate 0 (the negative control)")
    p.add_argument("--jobs", type=int, default=2, help="cells run at once (results do not "
                   "depend on it: each cell is deterministic for its thread count)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON file to write (default: benchmarks/results/cpu-spread-<probe>.json)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.child:
        _child(args.child, seeds[0], args.lr0)
        return 0
    profiles = args.profiles.split(",")
    unknown = sorted(set(profiles) - set(PROFILES))
    if unknown:
        p.error(f"unknown profile(s) {', '.join(unknown)}; known: {', '.join(PROFILES)}")
    grid = [(pr, int(t), s) for pr in profiles for t in args.threads.split(",") for s in seeds]
    print(f"{args.probe}{' (lr 0)' if args.lr0 else ''}: {len(grid)} cells", flush=True)
    cells = []
    with cf.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(_cell, args.probe, pr, t, s, args.lr0) for pr, t, s in grid]
        for fut in cf.as_completed(futures):
            c = fut.result()
            cells.append(c)
            vals = " ".join(f"{k}={v:.4g}" for k, v in c["values"].items())
            print(f"  {c['profile']:>16} ({c['capability']}) {c['threads']} threads seed "
                  f"{c['seed']}: {vals}  [{c['seconds']} s]", flush=True)
    cells.sort(key=lambda c: (c["profile"], c["threads"], c["seed"]))
    summary = _summary(cells)
    for k, s in summary.items():
        print(f"{k}: min {s['min']:.4g} max {s['max']:.4g} mean {s['mean']:.4g} "
              f"std {s['std']:.3g} over {s['n']} cells")
    out = args.out or REPO / "benchmarks" / "results" / \
        f"cpu-spread-{args.probe}{'-lr0' if args.lr0 else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    import platform

    out.write_text(json.dumps({"probe": args.probe, "lr0": args.lr0, "machine": platform.processor()
                               or platform.machine(), "cpu": _cpu_model(), "summary": summary,
                               "cells": cells}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
