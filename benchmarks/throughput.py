#!/usr/bin/env python
"""Side-by-side training throughput: the official code's loop vs kdsrc's fast mode.

Measured in one process, on one device, for KD and for Angular-KD on CRD (the paper plan's `kd`
and `angularkd_crd` entries), resnet32x4 -> resnet8x4:

  reference  the official code's loop: torchvision DataLoader over PIL images (RandomCrop +
             RandomHorizontalFlip + ToTensor + Normalize), 2 worker processes, fp32, contiguous
             memory format, the teacher run on every batch;
  fast       kdsrc.engine.train in `mode: fast`: device-resident uint8 data with per-sample
             crop/flip on the device, channels_last, bf16 autocast on CUDA (losses in fp32),
             and the exact teacher cache (all 162 crop/flip variants), so no teacher forward;
             its step run eagerly (`cuda_graph: off`, compile as --fast-compile says);
  graphed    (CUDA) the same fast mode with the whole step captured as a CUDA graph
             (`cuda_graph: on`, what `auto` does in fast mode on CUDA): `ratio_single`.

All use the same distiller code; reference and fast the same step (kdsrc.engine.step.train_step),
graphed its capturable form (kdsrc.engine.capture, the same maths): only the data path,
the memory format / precision and the teacher cache differ. Samples/s are taken from
consecutive steps inside an epoch after a warm-up, so worker start-up, evaluation and
checkpoints between epochs are not counted on either side. The cache's one-off build is timed
separately and reported with its cost relative to one run's teacher forwards.

Also reported: the paper plan's dry run (`snakemake -n`) and the regeneration of its tables from
eval records (synthetic records of every paper run): the tables alone (snakemake on every
.tex/.md and metrics.json: collect, render_table, summary), then everything `snakemake tables`
builds (the same plus the figures), then the same tables and figures in one process through
kdsrc.report.

Data: CIFAR-100 from --data-root when its files are there, else a synthetic set in CIFAR-100's
format (random uint8 images, 100 classes; throughput does not depend on pixel values). Weights
are random unless --teacher-checkpoint names a published resnet32x4 checkpoint.

Timing: the engine's steps never wait for the device, so steps are timed in windows of
`--window` steps between device synchronisations (see WindowClock).

Sizes: `--size gpu` (default with CUDA) uses 17,000 training images and CRD's K = 16,384;
`--size cpu` is reduced (64 images in batches of 32, K = 32: the exact cache of 50,000 images
would take ~50 hours of CPU teacher forwards, of 64 images ~4 minutes). Targets:
fast/reference >= 2.5x on CPU, >= 10x on a GPU.

    python benchmarks/throughput.py                      # auto device, JSON to benchmarks/results/
    python benchmarks/throughput.py --size cpu --methods kd --skip-pipeline
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from kdsrc.cache import build_teacher_cache  # noqa: E402
from kdsrc.config import resolve_run_config  # noqa: E402
from kdsrc.data import DatasetArrays, DeviceLoader, load_dataset  # noqa: E402
from kdsrc.data.reference_loader import ReferenceLoader  # noqa: E402
from kdsrc.distillers import StepState, get_method  # noqa: E402
from kdsrc.engine import Progress, RunPaths, learning_rate, resolve_device, train  # noqa: E402
from kdsrc.engine.loop import build_run  # noqa: E402
from kdsrc.engine.record import device_name, versions  # noqa: E402
from kdsrc.engine.seeding import seed_everything  # noqa: E402
from kdsrc.engine.step import train_step  # noqa: E402
from kdsrc.errors import KdsrcError  # noqa: E402
from kdsrc.models import build_model  # noqa: E402
from kdsrc.plan import eval_csv_path, eval_json_path, load_plan  # noqa: E402

TEACHER, STUDENT = "resnet32x4", "resnet8x4"
METHODS = ("kd", "angularkd_crd")   # entries of config/plans/paper.yaml
SIZES = {
    "cpu": {"n_train": 64, "batch_size": 32, "nce_k": 32, "warmup": 2, "steps": 20,
            "repeats": 3, "window": 1},
    # 17,000 images: enough for K = 16,384 other-class negatives (CIFAR-100 has 170 per class)
    "gpu": {"n_train": 17_000, "batch_size": 64, "nce_k": 16_384, "warmup": 30, "steps": 200,
            "repeats": 1, "window": 20},
}
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
TARGET = {"cpu": 2.5, "cuda": 10.0}
#: one CUDA-graphed run / the reference loop, on an H100 or H200 (GPU throughput, part 2a)
GRAPH_TARGET = {"kd": 5.0, "angularkd_crd": 3.0}


class _Enough(Exception):
    """Raised from the progress hook once the fast run has made its measured steps."""


class WindowClock(Progress):
    """Times windows of ``window`` steps between device synchronisations.

    The engine never waits for the device inside an epoch (host-free steps), so a timestamp per
    step would measure how fast work is queued, not done. The clock synchronises the device
    (``torch.cuda.synchronize``; a no-op on a CPU, whose steps finish when they return) once
    after ``warmup`` steps and then every ``window`` steps, and stamps each synchronisation;
    a window that crosses an epoch boundary (evaluation, checkpoint) is not used. Stops the run
    (raises :class:`_Enough`) once ``steps`` steps inside epochs have been timed."""

    def __init__(self, warmup: int, steps: int, device: torch.device, window: int = 1):
        super().__init__(enabled=False)
        self.warmup, self.steps, self.window, self.device = warmup, steps, max(1, window), device
        self.stamps: list[tuple[int, float]] = []   # (epoch, time) at each synchronisation
        self.count = 0
        self.timed = 0

    def step(self, epoch, epochs, step, steps, loss):
        self.tick(epoch)

    def tick(self, epoch: int) -> None:
        self.count += 1
        after = self.count - max(1, self.warmup)
        if after < 0 or after % self.window:
            return
        _sync(self.device)
        self.stamps.append((epoch, time.perf_counter()))
        if len(self.stamps) > 1 and self.stamps[-2][0] == epoch:
            self.timed += self.window
        if self.timed >= self.steps:
            raise _Enough

    def line(self, text):
        pass


def step_intervals(stamps: list[tuple[int, float]], warmup: int) -> list[float]:
    """Durations between consecutive steps of the same epoch, after ``warmup`` steps."""
    out = []
    for i in range(max(1, warmup), len(stamps)):
        (e0, t0), (e1, t1) = stamps[i - 1], stamps[i]
        if e0 == e1:
            out.append(t1 - t0)
    return out


def _speed(measured: dict) -> dict:
    """A method's step time for plan-cost (``speeds`` in the JSON), on the measured pair."""
    return {"ms_per_step": measured["ms_per_step_median"], "pair": [TEACHER, STUDENT],
            "gpu_busy_ms_per_step": None}


def _fast_only(spec: str, done: list[str]) -> list[str]:
    if spec == "all":
        plan = plan_in("paper", REPO / "config")
        names = sorted({r.method for r in plan.runs if r.teacher == TEACHER and
                        r.student == STUDENT and r.method != "vanilla"})
    else:
        names = [m.strip() for m in spec.split(",") if m.strip()]
    return [m for m in names if m not in done]


def say(text: str) -> None:
    print(text, flush=True)


@functools.lru_cache(maxsize=None)
def plan_in(name: str, config_dir: Path):
    """A plan, resolved once per config folder (the paper plan resolves 528 runs)."""
    return load_plan(name, config_dir=config_dir)


# -- data and teacher ------------------------------------------------------------------------
def benchmark_data(data_root: str, n_train: int, seed: int = 0) -> tuple[DatasetArrays, str]:
    try:
        d = load_dataset("cifar100", root=data_root, download=False)
        source = f"CIFAR-100 from {data_root}"
    except KdsrcError:
        g = np.random.default_rng(seed)
        n = max(n_train, 1)
        d = DatasetArrays(
            name="cifar100",
            train_x=torch.from_numpy(g.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)),
            train_y=torch.from_numpy(g.integers(0, 100, n, dtype=np.int64)),
            test_x=torch.from_numpy(g.integers(0, 256, (256, 3, 32, 32), dtype=np.uint8)),
            test_y=torch.from_numpy(g.integers(0, 100, 256, dtype=np.int64)),
            num_classes=100, mean=CIFAR100_MEAN, std=CIFAR100_STD, pad=4, flip=True)
        source = "synthetic, CIFAR-100 format (no CIFAR-100 under the data root)"
    if d.num_train > n_train:
        d = d.head(n_train)
    return d, source


def teacher_checkpoint(path: str | None, work: Path) -> tuple[str, str]:
    if path:
        return path, f"checkpoint {path}"
    torch.manual_seed(0)
    out = work / "teacher_random.pt"
    torch.save({"model": build_model(TEACHER, num_classes=100).state_dict()}, out)
    return str(out), "random weights (throughput does not depend on them)"


def build_cache(ckpt: str, data: DatasetArrays, work: Path, device: torch.device) -> dict:
    from kdsrc.models import load_teacher

    teacher = load_teacher(TEACHER, ckpt, num_classes=100)
    out = work / "cache"
    n_forwards = data.num_train * (2 * data.pad + 1) ** 2 * (2 if data.flip else 1)
    say(f"building the exact teacher cache: {data.num_train} images x 162 variants "
        f"({n_forwards:,} teacher forwards) on {device_name(device)}")
    _sync(device)
    t0 = time.perf_counter()
    build_teacher_cache(teacher, data, out, device=device, store_pooled=True,
                        teacher_name=TEACHER, batch_size=1024 if device.type == "cuda" else 256)
    _sync(device)
    seconds = time.perf_counter() - t0
    rate = n_forwards / seconds
    full = 50_000 * 162 / rate
    return {"path": out, "build_s": round(seconds, 2), "teacher_forwards": n_forwards,
            "teacher_forwards_per_s": round(rate, 1),
            "cifar100_build_s_estimate": round(full, 1),
            "note": ("one build per teacher serves every student, method and seed; its 162 "
                     "forwards per image equal 0.675 of the 240 that one reference run makes")}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- the two loops ---------------------------------------------------------------------------
def run_config(method: str, ckpt: str, cache: str | None, nce_k: int, *, fast: bool,
               device: torch.device, epochs: int, batch_size: int, graph: str = "off",
               compile_: str = "auto") -> dict:
    """The paper plan's resnet32x4 -> resnet8x4 run config for ``method``, with the
    benchmark's teacher, epochs and (reduced) K; ``graph``: its ``cuda_graph``, ``compile_``:
    its ``compile`` (fast mode)."""
    cfg = plan_in("paper", REPO / "config").run_config(TEACHER, STUDENT, method, 0)
    cfg = json.loads(json.dumps(cfg))
    m = cfg["method"]
    if m["name"] == "crd" or m.get("base") == "crd":
        target = m if m["name"] == "crd" else m.setdefault("base_settings", {})
        target["nce_k"] = nce_k
    cfg["teacher"] = {"name": TEACHER, "checkpoint": ckpt, **({"cache": cache} if cache else {})}
    cfg["solver"] = dict(cfg["solver"], epochs=epochs, lr_decay_epochs=[], batch_size=batch_size,
                         warmup_epochs=min(cfg["solver"].get("warmup_epochs", 0), epochs))
    cfg["mode"] = "fast" if fast else "reference"
    cfg["precision"] = "bf16" if fast and device.type == "cuda" else "fp32"
    cfg["teacher_cache"] = "auto" if fast else "off"
    cfg["cuda_graph"] = graph if fast else "off"
    if fast:
        cfg["compile"] = compile_
    return resolve_run_config(cfg)


def measure_reference(cfg: dict, data: DatasetArrays, device: torch.device, warmup: int,
                      steps: int, workers: int, window: int = 1) -> dict:
    """The official loop: PIL DataLoader with workers, fp32, the teacher on every batch. The
    images are the benchmark set repeated so that one epoch holds every measured step."""
    batch = cfg["solver"]["batch_size"]
    need = batch * (warmup + steps + 2)
    reps = max(1, math.ceil(need / data.num_train))
    tiled = replace(data, train_x=data.train_x.repeat(reps, 1, 1, 1),
                    train_y=data.train_y.repeat(reps))
    seed_everything(cfg["seed"])
    anchor = DeviceLoader.from_arrays(tiled, "train", batch_size=batch, device=device)
    parts = build_run(cfg, tiled, device, anchor, use_cache=False)
    loader = ReferenceLoader(tiled, batch_size=batch, workers=workers, device=device,
                             seed=cfg["seed"])
    loader.set_epoch(1)
    for group in parts.optimizer.param_groups:
        group["lr"] = learning_rate(1, cfg["solver"])
    parts.distiller.train()
    clock = WindowClock(warmup, steps, device, window)
    with contextlib.suppress(_Enough):
        for i, b in enumerate(loader, 1):
            train_step(parts.distiller, parts.optimizer, b,
                       StepState(epoch=1, step=i, epochs=cfg["solver"]["epochs"]))
            clock.tick(1)
    return _rate(clock, batch, teacher_forward=True)


def measure_fast(cfg: dict, data: DatasetArrays, device: torch.device, warmup: int,
                 steps: int, work: Path, window: int = 1) -> dict:
    clock = WindowClock(warmup, steps, device, window)
    out = work / f"fast_{cfg['method']['name']}"
    shutil.rmtree(out, ignore_errors=True)
    with contextlib.suppress(_Enough):
        train(cfg, RunPaths.in_dir(out), device=device, progress=clock, resume=False,
              arrays=data)
    return _rate(clock, cfg["solver"]["batch_size"], teacher_forward=False)


def measure_group(cfg: dict, size: int, data: DatasetArrays, device: torch.device, warmup: int,
                  steps: int, work: Path, window: int = 1) -> dict:
    """Aggregate samples/s of ``size`` copies of ``cfg`` (seeds 0..size-1) trained as one group
    (``runs_per_gpu``, kdsrc.engine.group): one clock counts every member's steps, so a
    step's time is the time per member step and ``samples_per_s`` the whole GPU's rate."""
    from kdsrc.engine.group import GroupMember, train_group

    clock = WindowClock(warmup * size, steps * size, device, window * size)
    members = []
    for k in range(size):
        out = work / f"group{size}_{cfg['method']['name']}_{k}"
        shutil.rmtree(out, ignore_errors=True)
        members.append(GroupMember({**cfg, "seed": k}, RunPaths.in_dir(out), progress=clock))
    with contextlib.suppress(_Enough):
        train_group(members, device=device, resume=False, arrays=data)
    return _rate(clock, cfg["solver"]["batch_size"], teacher_forward=False)


def _rate(clock: WindowClock, batch: int, *, teacher_forward: bool) -> dict:
    """Per-step time = the median window's duration / its steps."""
    iv = [t / clock.window for t in step_intervals(clock.stamps, 1)]
    if not iv:
        raise SystemExit("benchmark: no step windows measured (more --steps or --n-train)")
    med = statistics.median(iv)
    return {"samples_per_s": round(batch / med, 2), "ms_per_step_median": round(1e3 * med, 3),
            "ms_per_step_mean": round(1e3 * statistics.fmean(iv), 3),
            "steps_timed": len(iv) * clock.window, "window_steps": clock.window,
            "teacher_forward_per_step": teacher_forward}


def profile_fast(cfg: dict, data: DatasetArrays, device: torch.device, warmup: int,
                 steps: int, work: Path) -> dict:
    """torch.profiler over ``steps`` fast-mode steps after ``warmup``: the GPU-busy time per step
    (the sum of the kernels' device times: one stream, so they do not overlap), kernels per
    step and blocking device-to-host reads per step (``aten::_local_scalar_dense``: what
    ``float``, ``int``, ``bool`` and ``.item()`` of a device tensor run), next to the wall time
    per step between synchronisations. On a CPU only the reads (the rest is CUDA's)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    prof = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []))

    class Window(Progress):
        def __init__(self):
            super().__init__(enabled=False)
            self.n, self.t0 = 0, 0.0

        def step(self, epoch, epochs, step, steps_, loss):
            self.n += 1
            if self.n == warmup:
                _sync(device)
                prof.start()
                self.t0 = time.perf_counter()
            elif self.n == warmup + steps:
                _sync(device)
                self.wall = time.perf_counter() - self.t0
                prof.stop()
                raise _Enough

    clock = Window()
    out = work / f"profile_{cfg['method']['name']}"
    shutil.rmtree(out, ignore_errors=True)
    with contextlib.suppress(_Enough):
        train(cfg, RunPaths.in_dir(out), device=device, progress=clock, resume=False,
              arrays=data)
    if not hasattr(clock, "wall"):
        return {"note": f"not measured: the run ended before {warmup + steps} steps"}
    kernels = [e for e in prof.events()
               if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    busy_us = sum(getattr(e, "device_time", None) or getattr(e, "cuda_time", 0.0)
                  for e in kernels)
    reads = sum(1 for e in prof.events() if e.name == "aten::_local_scalar_dense")
    wall_ms = 1e3 * clock.wall / steps
    busy_ms = busy_us / 1e3 / steps if cuda else None
    return {"steps": steps, "wall_ms_per_step": round(wall_ms, 3),
            "gpu_busy_ms_per_step": None if busy_ms is None else round(busy_ms, 3),
            "gpu_busy_fraction": round(busy_ms / wall_ms, 3) if cuda and wall_ms else None,
            "kernels_per_step": round(len(kernels) / steps, 1) if cuda else None,
            "blocking_reads_per_step": round(reads / steps, 2)}


def median_round(rounds: list[dict]) -> dict:
    """The round with the median samples/s (the lower middle one for an even count), with
    every round's samples/s beside it."""
    ordered = sorted(rounds, key=lambda r: r["samples_per_s"])
    return {**ordered[(len(ordered) - 1) // 2],
            "samples_per_s_rounds": [r["samples_per_s"] for r in rounds]}


# -- pipeline timings ------------------------------------------------------------------------
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def pipeline_copy(work: Path) -> Path:
    dst = work / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.startswith(("results/", "logs/", "tests/", "benchmarks/")) or not (REPO / f).is_file():
            continue
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dst / f)
    (dst / "config/config.yaml").write_text("plan: paper\nmode: plan\n")
    return dst


def _epoch_log(path: Path, epochs: int, top1: float) -> None:
    rows = ["epoch,lr,train_loss,train_top1,test_top1,test_top5,test_loss,epoch_s"]
    rows += [f"{e},0.05,{3 / e:.4f},{min(99.0, e / 2):.2f},{top1 * e / epochs:.2f},90,"
             f"{2.5 / e:.4f},30" for e in range(1, epochs + 1)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")


def synthetic_records(repo: Path, plan_name: str = "paper") -> int:
    """Eval records and per-epoch logs for every run and teacher of a plan (what the report
    rules read), with made-up accuracies; returns the number of runs."""
    plan = plan_in(plan_name, repo / "config")
    g = np.random.default_rng(0)
    runs = plan.runs
    for run in runs:
        top1 = float(np.round(60 + 15 * g.random(), 2))
        epochs = int(run.config["solver"]["epochs"])
        rec = {"dataset": run.dataset, "teacher": run.teacher, "student": run.student,
               "method": run.method, "seed": run.seed, "top1_best": top1, "top1_last": top1 - 0.2,
               "top5_best": 90.0, "top5_last": 89.8, "epochs": epochs}
        p = repo / eval_json_path(run)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(rec))
        _epoch_log(repo / eval_csv_path(run), epochs, top1)
    from kdsrc import paths, report
    from kdsrc.plan import teacher_eval_path

    numbers = report.load_published(repo / paths.PUBLISHED)
    for t in plan.teachers_used():
        p = repo / teacher_eval_path(plan.dataset, t)
        p.parent.mkdir(parents=True, exist_ok=True)
        published = numbers.teacher(t, plan.dataset)
        p.write_text(json.dumps({"dataset": plan.dataset, "teacher": t, "model": t,
                                 "top1": 75.0, "top5": 93.0, "source": "benchmark",
                                 "published_top1": published, "delta": None}))
        if plan.teachers[t]["source"] == "pretrain":  # its training curve is a plot input
            _epoch_log(p.with_suffix(".csv"), 5, 75.0)
    return len(runs)


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"benchmark: {' '.join(cmd)} failed:\n{(p.stdout + p.stderr)[-3000:]}")
    return seconds, p.stdout + p.stderr


def _no_training(log: str) -> None:
    trained = re.findall(r"^(distill|pretrain_\w+|fetch_teachers|evaluate_teacher)\s+\d+$", log,
                         re.M)
    if trained:
        raise SystemExit(f"benchmark: the report scheduled {trained} jobs:\n{log[-3000:]}")


def measure_pipeline(work: Path) -> dict:
    repo = pipeline_copy(work)
    say("paper plan: dry run (snakemake -n --cores all --resources gpu=4) ...")
    dry = [SNAKEMAKE + ["-n", "--cores", "all", "--resources", "gpu=4"] for _ in range(3)]
    dry_s = [timed(c, repo)[0] for c in dry]
    n = synthetic_records(repo)
    plan = plan_in("paper", repo / "config")
    triggers = ["--rerun-triggers", "mtime", "params", "input"]
    # the tables alone (collect + render_table + summary): every .tex/.md and metrics.json
    only = [f"results/tables/{t}.{ext}" for t in sorted(plan.tables) for ext in ("tex", "md")]
    say(f"paper plan: tables from {n} synthetic eval records (snakemake <tables .tex/.md>) ...")
    only_s, log = timed(SNAKEMAKE + only + ["results/metrics.json", "--cores", "all"] + triggers,
                        repo)
    _no_training(log)
    for d in ("results/metrics", "results/tables"):
        shutil.rmtree(repo / d)
    (repo / "results/metrics.json").unlink()
    say(f"paper plan: tables and figures from {n} synthetic eval records (snakemake tables) ...")
    tables_s, log = timed(SNAKEMAKE + ["tables", "--cores", "all"] + triggers, repo)
    _no_training(log)
    made = sorted(p.name for p in (repo / "results/tables").glob("*.tex"))
    lib = regenerate_in_process(repo)
    return {"paper_dry_run_s": round(statistics.median(dry_s), 2),
            "paper_dry_run_s_all": [round(s, 2) for s in dry_s],
            "paper_tables_only_s": round(only_s, 2),
            "paper_tables_s": round(tables_s, 2), "paper_tables_from_records": n,
            "paper_tables_built": made, "in_process": lib,
            "targets_s": {"dry_run": 5.0, "tables": 5.0}}


def regenerate_in_process(repo: Path) -> dict:
    """The same tables (and figures) through kdsrc.report in this process: what the report
    rules compute, without Snakemake's DAG and one interpreter per job."""
    from kdsrc import paths, report
    from kdsrc.plan import eval_csv_path

    plan = plan_in("paper", repo / "config")
    published = report.load_published(repo / paths.PUBLISHED)
    out = repo / "results" / "in_process"
    t0 = time.perf_counter()
    frames = {}
    for table in plan.tables:
        spec = plan.table_spec(table)
        paths = [repo / eval_json_path(r) for r in plan.table_runs(table)]
        paths += [repo / f"results/eval/teachers/{plan.dataset}/{t}.json"
                  for t in plan.table_teachers(table)]
        frames[table] = df = report.collect(report.load_records(paths), spec, table,
                                            published=published)
        report.write_metrics_csv(df, out / f"{table}.csv")
        report.write_table(df, spec, out / f"{table}.tex", out / f"{table}.md")
    tables_s = time.perf_counter() - t0
    for table, df in frames.items():
        report.plot_table_bars(df, plan.table_spec(table), out / f"{table}_bars.png")
        logs = [(repo / eval_csv_path(r), r.method) for r in plan.table_runs(table)]
        report.plot_training_curves(logs, out / f"{table}_curves.png")
    return {"tables_s": round(tables_s, 2),
            "tables_and_figures_s": round(time.perf_counter() - t0, 2)}


# -- main ------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Writes a JSON (default benchmarks/results/throughput-<device>.json) and prints "
               "every figure with the fast/reference ratio.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    ap.add_argument("--size", choices=sorted(SIZES), help="default: gpu on CUDA, else cpu")
    ap.add_argument("--n-train", type=int, help="training images (default: by --size)")
    ap.add_argument("--nce-k", type=int, help="CRD negatives (default: by --size)")
    ap.add_argument("--warmup", type=int, help="steps not timed (default: by --size)")
    ap.add_argument("--steps", type=int, help="timed steps (default: by --size)")
    ap.add_argument("--repeats", type=int,
                    help="rounds of (reference, fast), alternated; the medians over rounds are "
                         "reported (default: by --size; 3 on a CPU, whose step times drift)")
    ap.add_argument("--window", type=int,
                    help="steps per timed window between device synchronisations (default: "
                         "by --size)")
    ap.add_argument("--workers", type=int, default=2, help="reference DataLoader workers (2)")
    ap.add_argument("--batch-size", type=int, help="batch size (default: by --size; 64 is "
                                                   "the recipe's)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"paper plan method entries (default {','.join(METHODS)})")
    ap.add_argument("--fast-only", default="",
                    help="more paper plan method entries timed in fast mode only (compile off, "
                         "short windows), for plan-cost; 'all': every entry of the paper plan")
    ap.add_argument("--fast-compile", choices=("auto", "off"), default="auto",
                    help="compile of the (eager) fast mode of --methods: auto (default: on "
                         "CUDA) or off")
    ap.add_argument("--no-graph", action="store_true",
                    help="on CUDA, do not time the CUDA-graphed fast step (timed by default: "
                         "ratio_single in the JSON)")
    ap.add_argument("--groups", default="",
                    help="comma-separated group sizes (runs_per_gpu), e.g. 1,2,4,8: the "
                         "aggregate samples/s of that many runs in one process (the graphed "
                         "fast step on CUDA), as `groups`, `runs_per_gpu` and `ratio_grouped` "
                         "per method in the JSON")
    ap.add_argument("--profile", action="store_true",
                    help="torch.profiler over the fast steps of --methods (CUDA): GPU-busy "
                         "time, kernels and blocking reads per step")
    ap.add_argument("--data-root", default="data", help="where CIFAR-100 is, if it is")
    ap.add_argument("--teacher-checkpoint", help="a resnet32x4 checkpoint (default: random)")
    ap.add_argument("--skip-pipeline", action="store_true",
                    help="no dry-run / tables timings")
    ap.add_argument("--out", help="JSON path")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
    except KdsrcError as e:
        raise SystemExit(f"benchmark: {e}") from None
    size = args.size or ("gpu" if device.type == "cuda" else "cpu")
    p = dict(SIZES[size])
    for k in p:
        if getattr(args, k, None) is not None:
            p[k] = getattr(args, k)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    out = Path(args.out or REPO / "benchmarks" / "results" / f"throughput-{device.type}.json")
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    say(f"device: {device_name(device)}; size {size}: {p}")
    result = {"device": device_name(device), "device_type": device.type, "size": size,
              "params": p, "workers": args.workers, "batch_size": p["batch_size"], "host": platform.node(),
              "cpu_threads": torch.get_num_threads(), "versions": versions(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "methods": {}}
    speeds = result["speeds"] = {}

    def write():
        # after every part: a run cut off keeps what it measured
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")

    graphed = device.type == "cuda" and not args.no_graph
    with tempfile.TemporaryDirectory(prefix="kdsrc-bench-") as tmp:
        work = Path(tmp)
        data, source = benchmark_data(args.data_root, p["n_train"])
        ckpt, teacher_src = teacher_checkpoint(args.teacher_checkpoint, work)
        result.update(data=source, n_train=data.num_train, teacher=teacher_src)
        result["cache"] = build_cache(ckpt, data, work, device)
        cache_dir = result["cache"].pop("path")
        steps_per_epoch = math.ceil(data.num_train / p["batch_size"])
        for method in methods:
            need = p["warmup"] + p["steps"] + 1
            per_epoch_timed = max(1, steps_per_epoch - 1)
            epochs = max(2, math.ceil(need * 1.5 / per_epoch_timed) + 1)
            ref_cfg = run_config(method, ckpt, None, p["nce_k"], fast=False, device=device,
                                 epochs=epochs, batch_size=p["batch_size"])
            fast_cfg = run_config(method, ckpt, str(cache_dir), p["nce_k"], fast=True,
                                  device=device, epochs=epochs, batch_size=p["batch_size"],
                                  compile_=args.fast_compile)
            graph_cfg = None
            if graphed:
                graph_cfg = run_config(method, ckpt, str(cache_dir), p["nce_k"], fast=True,
                                       device=device, epochs=epochs,
                                       batch_size=p["batch_size"], graph="on")
            refs, fasts, graphs = [], [], []
            graph_error = None
            for r in range(max(1, p["repeats"])):
                tag = f" (round {r + 1}/{p['repeats']})" if p["repeats"] > 1 else ""
                say(f"{method}: reference loop{tag} ...")
                refs.append(measure_reference(ref_cfg, data, device, p["warmup"], p["steps"],
                                              args.workers, p["window"]))
                say(f"{method}: fast mode{tag} ...")
                fasts.append(measure_fast(fast_cfg, data, device, p["warmup"], p["steps"], work,
                                          p["window"]))
                if graph_cfg is not None and graph_error is None:
                    say(f"{method}: fast mode, CUDA graph{tag} ...")
                    try:
                        graphs.append(measure_fast(graph_cfg, data, device, p["warmup"],
                                                   p["steps"], work, p["window"]))
                    except Exception as e:  # noqa: BLE001 -- reported, the other parts go on
                        graph_error = f"{type(e).__name__}: {e}".splitlines()[0]
                        say(f"{method}: the graphed step failed: {graph_error}")
            ref, fast = median_round(refs), median_round(fasts)
            ratio = fast["samples_per_s"] / ref["samples_per_s"]
            result["methods"][method] = {"reference": ref, "fast": fast,
                                         "ratio": round(ratio, 2),
                                         "ratio_per_round": [
                                             round(f["samples_per_s"] / r["samples_per_s"], 2)
                                             for r, f in zip(refs, fasts)],
                                         "fast_config": {k: fast_cfg[k] for k in (
                                             "mode", "precision", "channels_last",
                                             "teacher_cache")}}
            say(f"{method}: reference {ref['samples_per_s']:.1f} samples/s, fast "
                f"{fast['samples_per_s']:.1f} samples/s, ratio {ratio:.2f}x "
                f"(target >= {TARGET.get(device.type, 10.0)}x)")
            speeds[method] = {"reference": _speed(ref), "fast": _speed(fast)}
            if graph_error:
                result["methods"][method]["graphed_error"] = graph_error
            if graphs:
                graph = median_round(graphs)
                single = graph["samples_per_s"] / ref["samples_per_s"]
                entry = result["methods"][method]
                entry.update(graphed=graph, ratio_single=round(single, 2),
                             ratio_single_per_round=[
                                 round(g["samples_per_s"] / r["samples_per_s"], 2)
                                 for r, g in zip(refs, graphs)],
                             graphed_config={k: graph_cfg[k] for k in (
                                 "mode", "precision", "channels_last", "teacher_cache",
                                 "compile", "cuda_graph")})
                # the fast mode's step from here on is the graphed one (cuda_graph: auto)
                speeds[method] = {"reference": _speed(ref), "fast": _speed(graph),
                                  "fast_eager": _speed(fast)}
                say(f"{method}: one graphed run {graph['samples_per_s']:.1f} samples/s = "
                    f"{single:.2f}x the reference loop (target >= "
                    f"{GRAPH_TARGET.get(method, '-')}x)")
            if args.groups:
                group_cfg = graph_cfg or fast_cfg
                entry = result["methods"][method]
                entry["groups"] = {}
                for size in [int(g) for g in args.groups.split(",") if g.strip()]:
                    say(f"{method}: a group of {size} ...")
                    try:
                        got = measure_group(group_cfg, size, data, device, p["warmup"],
                                            p["steps"], work, p["window"])
                    except Exception as e:  # noqa: BLE001 -- reported, the other sizes go on
                        entry["groups"][str(size)] = {
                            "error": f"{type(e).__name__}: {e}".splitlines()[0]}
                        say(f"{method}: group of {size} failed: {entry['groups'][str(size)]}")
                        continue
                    got["ratio"] = round(got["samples_per_s"] / ref["samples_per_s"], 2)
                    entry["groups"][str(size)] = got
                    say(f"{method}: {size} runs in one process: {got['samples_per_s']:.1f} "
                        f"samples/s together = {got['ratio']:.2f}x the reference loop")
                ok = {k: v for k, v in entry["groups"].items() if "ratio" in v}
                if ok:
                    best = max(ok, key=lambda k: ok[k]["samples_per_s"])
                    entry.update(runs_per_gpu=int(best), ratio_grouped=ok[best]["ratio"])
                    # plan-cost: a member step of the best group costs the group's time per
                    # member step (the plan runs with --config runs_per_gpu=<best>)
                    speeds[method]["fast_single"] = speeds[method]["fast"]
                    speeds[method]["fast"] = {**_speed(ok[best]), "runs_per_gpu": int(best)}
            if method == "kd":
                # the plan-cost anchor (kdsrc plan-cost --measured): the official loop's KD
                # speed, written with KD's figures so that a run cut off later keeps it
                result["anchor"] = {"teacher": TEACHER, "student": STUDENT, "method": "kd",
                                    "samples_per_s": ref["samples_per_s"],
                                    "device": result["device"], "mode": "reference"}
            if args.profile:
                prof = profile_fast(fast_cfg, data, device, p["warmup"], p["steps"], work)
                result["methods"][method]["fast_profile"] = prof
                speeds[method]["fast"]["gpu_busy_ms_per_step"] = prof.get("gpu_busy_ms_per_step")
                say(f"{method}: fast profile {prof}")
            write()
        for method in _fast_only(args.fast_only, methods):
            cfg = run_config(method, ckpt, str(cache_dir), p["nce_k"], fast=True, device=device,
                             epochs=2, batch_size=p["batch_size"], compile_="off",
                             graph="auto" if graphed else "off")
            note = None
            if get_method(cfg["method"]["name"]).needs_pretrained_views(
                    {k: v for k, v in cfg["method"].items() if k != "name"}):
                # the stage-1 views file is not built here; joint views cost one more backward
                # through the small view branches (an upper bound of the frozen views' step)
                cfg = resolve_run_config({**cfg, "method": {**cfg["method"], "views": "joint"}})
                note = "timed with views: joint (no stage-1 views file in the benchmark)"
            say(f"{method}: fast mode only (compile off) ...")
            try:
                fast = measure_fast(cfg, data, device, p["warmup"], p["steps"], work, p["window"])
            except Exception as e:  # noqa: BLE001 -- reported, the other methods go on
                msg = str(e) if isinstance(e, KdsrcError) else \
                    f"{type(e).__name__}: {e}".splitlines()[0]
                result["methods"][method] = {"error": msg}
                say(f"{method}: not measured: {msg}")
                continue
            blocker = get_method(cfg["method"]["name"]).capture_blocker_for(
                {k: v for k, v in cfg["method"].items() if k != "name"})
            result["methods"][method] = {"fast": fast, "fast_config": {
                "compile": "off",
                "cuda_graph": ("off" if not graphed else
                               f"eager: {blocker}" if blocker else "on")},
                **({"note": note} if note else {})}
            speeds[method] = {"fast": _speed(fast)}
            say(f"{method}: fast {fast['samples_per_s']:.1f} samples/s")
            write()
        if not args.skip_pipeline:
            result["pipeline"] = measure_pipeline(work)
            pl = result["pipeline"]
            say(f"paper plan dry run: {pl['paper_dry_run_s']:.2f} s (target < 5 s); tables from "
                f"{pl['paper_tables_from_records']} eval records: "
                f"{pl['paper_tables_only_s']:.2f} s with snakemake (target < 5 s), "
                f"{pl['paper_tables_s']:.2f} s with their figures (`snakemake tables`); in one "
                f"process: tables {pl['in_process']['tables_s']:.2f} s, with figures "
                f"{pl['in_process']['tables_and_figures_s']:.2f} s")
    result["target_ratio"] = TARGET.get(device.type, 10.0)
    write()
    say(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
