"""Plan cost: jobs per rule and estimated device-hours, before anything runs.

Each run's cost is ``epochs x (train samples + test samples)`` samples at a throughput that is
scaled from one measured anchor by compute per sample: a training sample costs the teacher's
forward plus ~3x the student's forward (forward + backward), times a per-method factor. The
anchor is, in order of preference, a throughput measured by ``benchmarks/throughput.py`` on this
kind of device (``--measured FILE``), else the published figure of the DKD paper: KD
resnet32x4 → resnet8x4 at 11 ms per batch of 64 with the official code (GPU not stated).
"""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

from .plan import NO_TEACHER, Plan

#: per-method step-time factors relative to KD, from the DKD paper's figure (mdistiller
#: .github/dkd.png: KD 11 ms, CRD 41, ReviewKD 26, DKD 11 per batch of 64); others assumed 1
METHOD_FACTORS = {"kd": 1.0, "dkd": 1.0, "crd": 41 / 11, "reviewkd": 26 / 11, "vanilla": 1.0}
ANCHOR = {"teacher": "resnet32x4", "student": "resnet8x4", "method": "kd",
          "samples_per_s": 64 / 0.011, "source": "DKD paper figure: KD res32x4->res8x4, 11 ms "
                                                  "per batch of 64, official code"}
DATASET_SIZES = {"cifar100": (50_000, 10_000), "digits": (1_438, 359)}


@lru_cache(maxsize=None)
def forward_macs(model: str, num_classes: int = 100) -> float:
    """Multiply-accumulates of one 32x32 forward (conv + linear), counted by torch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .models import build_model

    net = build_model(model, num_classes=num_classes).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 32, 32))
    return counter.get_total_flops() / 2


def sample_cost(teacher: str, student: str, method_name: str, base: str | None = None) -> float:
    """Relative compute of one training sample (MACs x method factor)."""
    t = forward_macs(teacher) if teacher != NO_TEACHER else 0.0
    factor = METHOD_FACTORS.get(base or method_name, 1.0)
    return (t + 3.0 * forward_macs(student)) * factor


def _base_method(cfg: dict) -> str:
    m = cfg["method"]
    return m.get("base", m["name"]) if m["name"] == "angularkd" else m["name"]


def job_counts(plan: Plan) -> Counter:
    counts: Counter = Counter()
    teachers = plan.teachers_used()
    for t in teachers:
        counts["fetch_teachers" if plan.teachers[t]["source"] == "download"
               else "pretrain_teacher"] += 1
        counts["evaluate_teacher"] += 1
        if plan.use_teacher_cache:
            counts["teacher_cache"] += 1
    counts["pretrain_views"] = len({(r.teacher, r.method, r.seed) for r in plan.runs
                                    if r.needs_pretrained_views})
    counts["distill"] = len(plan.runs)
    for rule in ("collect", "render_table", "plot"):
        counts[rule] = len(plan.tables)
    counts["summary"] = 1
    return +counts


def estimate(plan: Plan, measured: dict[str, Any] | None = None) -> dict[str, Any]:
    """Jobs per rule and device-hours of ``plan`` (see the module docstring)."""
    anchor = dict(measured or ANCHOR)
    anchor_cost = sample_cost(anchor["teacher"], anchor["student"], anchor["method"])
    work_per_s = anchor["samples_per_s"] * anchor_cost  # "relative MACs" per second
    n_train, n_test = DATASET_SIZES[plan.dataset]
    seconds: Counter = Counter()
    for run in plan.runs:
        epochs = run.config["solver"]["epochs"]
        train = epochs * n_train * sample_cost(run.teacher, run.student, run.method,
                                               _base_method(run.config))
        evals = epochs * n_test * forward_macs(run.student)
        seconds["distill"] += (train + evals) / work_per_s
    for teacher, method, seed in {(r.teacher, r.method, r.seed) for r in plan.runs
                                  if r.needs_pretrained_views}:
        # stage 1: 30 epochs of the frozen teacher's forward (the view branches are tiny)
        seconds["pretrain_views"] += 30 * (n_train + n_test) * forward_macs(teacher) / work_per_s
    for t in plan.teachers_used():
        if plan.teachers[t]["source"] == "pretrain":
            epochs = plan.teacher_config(t)["solver"]["epochs"]
            seconds["pretrain_teacher"] += epochs * (n_train * 3 + n_test) * \
                forward_macs(t) / work_per_s
        seconds["evaluate_teacher"] += n_test * forward_macs(t) / work_per_s
        if plan.use_teacher_cache:
            seconds["teacher_cache"] += 162 * n_train * forward_macs(t) / work_per_s
    return {"plan": plan.name, "jobs": dict(job_counts(plan)),
            "device_hours": {k: v / 3600 for k, v in seconds.items()},
            "total_device_hours": sum(seconds.values()) / 3600,
            "anchor": anchor}


def format_estimate(est: dict[str, Any], gpus: int = 1) -> str:
    lines = [f"plan {est['plan']}", "", f"{'rule':<18}{'jobs':>6}{'device-hours':>15}"]
    for rule, n in sorted(est["jobs"].items(), key=lambda kv: -kv[1]):
        h = est["device_hours"].get(rule)
        lines.append(f"{rule:<18}{n:>6}{'' if h is None else f'{h:15.1f}'}")
    total = est["total_device_hours"]
    lines += ["", f"total: {sum(est['jobs'].values())} jobs, {total:.1f} device-hours "
                  f"(~{total / max(gpus, 1):.1f} h on {gpus} device(s))",
              f"throughput anchor: {est['anchor']['samples_per_s']:.0f} samples/s for "
              f"{est['anchor']['method']} {est['anchor']['teacher']}->"
              f"{est['anchor']['student']} ({est['anchor']['source']})"]
    return "\n".join(lines)


def load_measured(path: str | Path) -> dict[str, Any]:
    """An anchor from a benchmark JSON (``benchmarks/throughput.py --out``: its ``anchor``, the
    reference loop's KD throughput) or a flat mapping with the same fields."""
    data = json.loads(Path(path).read_text())
    data = data.get("anchor", data)
    return {"teacher": data["teacher"], "student": data["student"], "method": data["method"],
            "samples_per_s": float(data["samples_per_s"]),
            "source": f"measured: {path} ({data.get('device', 'unknown device')}, "
                      f"mode {data.get('mode', '?')})"}
