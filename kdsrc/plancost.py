"""Plan cost: jobs per rule and estimated device-hours, before anything runs.

Two ways to cost a distillation run, the first where it applies:

* **measured speed** (``--measured FILE`` from ``benchmarks/throughput.py``, whose ``speeds``
  hold each method entry's step time and GPU-busy time per step, measured on resnet32x4 →
  resnet8x4 in each mode): a step costs the larger of the measured step time and the GPU-busy
  time scaled by the pair's compute (MACs) relative to the measured pair. A host-bound step
  (small students on a big GPU) does not get faster with a smaller pair, nor slower with a
  bigger one until the GPU is the bound; a compute-bound one scales with MACs. Without a
  GPU-busy figure (a CPU measurement) the step time itself is MAC-scaled.
* **MAC-scaled anchor** (methods not measured, and every other rule): ``epochs x (train
  samples + test samples)`` at a throughput scaled from one anchor by compute per sample: a
  training sample costs the teacher's forward plus ~3x the student's forward (forward +
  backward), times a per-method factor. The anchor is the measured reference loop's KD speed
  (``--measured``), else the published figure of the DKD paper: KD resnet32x4 → resnet8x4 at
  11 ms per batch of 64 with the official code (GPU not stated).

The estimate says how many runs were costed each way. ``mode`` (``--mode fast``) costs every
run in that mode instead of the one its plan sets.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

from .cache.layout import scheme_views, stored_views
from .dataset_facts import DATASET_FACTS
from .errors import ConfigError
from .plan import NO_TEACHER, Plan

ANCHOR = {"teacher": "resnet32x4", "student": "resnet8x4", "method": "kd",
          "samples_per_s": 64 / 0.011, "source": "DKD paper figure: KD res32x4->res8x4, 11 ms "
                                                  "per batch of 64, official code"}
#: the pair the benchmark measures step times on
ANCHOR_PAIR = (ANCHOR["teacher"], ANCHOR["student"])


@lru_cache(maxsize=None)
def forward_macs(model: str, num_classes: int = 100, size: int | None = None) -> float:
    """Multiply-accumulates of one forward (conv + linear + matmuls), counted by torch, at
    ``size`` px (default: the model's own input size, 32 for the CIFAR zoo, 224 for the timm
    models built for it)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .models import build_model
    from .models.timm_zoo import input_size

    side = size or input_size(model)
    net = build_model(model, num_classes=num_classes).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, side, side))
    return counter.get_total_flops() / 2


def sample_cost(teacher: str, student: str, method_name: str, base: str | None = None,
                size: int | None = None, teacher_online: bool = True) -> float:
    """Relative compute of one training sample (MACs x method factor) at ``size`` px (None:
    each model's own input size). ``teacher_online=False``: the run reads a teacher cache."""
    t = forward_macs(teacher, size=size) if teacher != NO_TEACHER and teacher_online else 0.0
    factor = _cost_factor(base or method_name)
    return (t + 3.0 * forward_macs(student, size=size)) * factor


def _cost_factor(method_name: str) -> float:
    """The method's step time relative to KD (``Distiller.cost_factor``); 1 for a name that is
    a plan's method entry rather than a kdsrc method."""
    from .distillers import METHODS

    cls = METHODS.get(method_name)
    return 1.0 if cls is None else float(cls.cost_factor)


def _settings(cfg: dict) -> dict:
    return {k: v for k, v in cfg["method"].items() if k != "name"}


def _base_method(cfg: dict) -> str:
    from .distillers import get_method

    return get_method(cfg["method"]["name"]).cost_base(_settings(cfg))


def job_counts(plan: Plan) -> Counter:
    counts: Counter = Counter()
    teachers = plan.teachers_used()
    rule = {"download": "fetch_teachers", "pretrain": "pretrain_teacher",
            "finetune": "finetune_teacher"}
    for t in teachers:
        spec = plan.teachers[t]
        counts[rule[spec["source"]]] += 1
        if spec["source"] == "finetune":
            counts["fetch_init" if "url" in spec["init"] else "pretrain_init"] += 1
        counts["evaluate_teacher"] += 1
    counts["teacher_cache"] = len(teacher_caches(plan))
    counts["pretrain_views"] = len({(r.teacher, r.method, r.seed) for r in plan.runs
                                    if r.needs_pretrained_views})
    counts["distill"] = len(plan.runs)
    for rule in ("collect", "render_table", "plot"):
        counts[rule] = len(plan.tables)
    counts["summary"] = 1
    return +counts


def teacher_caches(plan: Plan) -> list[tuple[str, str]]:
    """``(teacher, cache folder)`` of every teacher cache the plan builds: each teacher's exact
    cache with ``cache_teachers``, and the schemes its method entries read (``cache``)."""
    from .plan import teacher_cache_path

    out = {(t, teacher_cache_path(plan.dataset, t)) for t in plan.teachers_used()
           if plan.caches_teachers}
    out |= {(r.teacher, r.config["teacher"]["cache"]) for r in plan.runs
            if r.teacher != NO_TEACHER and r.config["teacher"].get("cache")}
    return sorted(out)


def _reads_cache(run) -> bool:
    """Whether a run reads its teacher from a cache (so its steps run no teacher)."""
    from .plan import cache_problem

    if run.teacher == NO_TEACHER or not run.config["teacher"].get("cache"):
        return False
    return cache_problem(run.config) is None


def measured_step_s(run, speeds: dict[str, Any], mode: str) -> tuple[float, str] | None:
    """``(seconds per step, how)`` of ``run`` from measured speeds, or None when its method
    entry (or its kdsrc method) was not measured in ``mode``. ``how``: "measured" (the larger of
    the step time and the MAC-scaled GPU-busy time) or "MAC-scaled" (no GPU-busy figure)."""
    entry = speeds.get(run.method) or speeds.get(run.config["method"]["name"])
    m = (entry or {}).get(mode)
    if not m:
        return None
    base = _base_method(run.config)
    pair = m.get("pair", ANCHOR_PAIR)
    ratio = sample_cost(run.teacher, run.student, run.method, base) / \
        sample_cost(pair[0], pair[1], run.method, base)
    step = m["ms_per_step"] / 1e3
    busy = m.get("gpu_busy_ms_per_step")
    if busy is None:
        return step * ratio, "MAC-scaled"
    return max(step, busy / 1e3 * ratio), "measured"


def estimate(plan: Plan, measured: dict[str, Any] | None = None, *,
             speeds: dict[str, Any] | None = None, mode: str | None = None) -> dict[str, Any]:
    """Jobs per rule and device-hours of ``plan`` (see the module docstring). ``speeds``: the
    ``speeds`` of a benchmark JSON; ``mode``: cost every run in this mode."""
    anchor = dict(measured or ANCHOR)
    anchor_cost = sample_cost(anchor["teacher"], anchor["student"], anchor["method"])
    work_per_s = anchor["samples_per_s"] * anchor_cost  # "relative MACs" per second
    facts = DATASET_FACTS[plan.dataset]
    n_train, n_test = facts.train_images, facts.test_images
    seconds: Counter = Counter()
    how: Counter = Counter()
    for run in plan.runs:
        epochs = run.config["solver"]["epochs"]
        size = run.config["solver"].get("image_size")     # a 224-px run: MACs at 224 px
        evals = epochs * n_test * forward_macs(run.student, size=size)
        step = measured_step_s(run, speeds or {}, mode or run.config["mode"])
        if step is not None:
            steps = epochs * -(-n_train // run.config["solver"]["batch_size"])
            seconds["distill"] += steps * step[0] + evals / work_per_s
            how[step[1]] += 1
            continue
        train = epochs * n_train * sample_cost(run.teacher, run.student, run.method,
                                               _base_method(run.config), size=size,
                                               teacher_online=not _reads_cache(run))
        seconds["distill"] += (train + evals) / work_per_s
        how["MAC-scaled anchor"] += 1
    for teacher, method, seed in {(r.teacher, r.method, r.seed) for r in plan.runs
                                  if r.needs_pretrained_views}:
        # stage 1: its epochs of the frozen teacher's forward (what it trains is tiny)
        from .distillers import get_method

        cfg = next(r for r in plan.runs if (r.teacher, r.method, r.seed) ==
                   (teacher, method, seed)).config
        epochs = get_method(cfg["method"]["name"]).stage_one_epochs(_settings(cfg))
        seconds["pretrain_views"] += epochs * (n_train + n_test) * forward_macs(teacher) / \
            work_per_s
    def training(cfg: dict) -> float:
        # forward + backward (3 forwards; a head-only fine-tune: the forward alone) of every
        # training image and a forward of every test one, per epoch, at the size the model sees
        solver = cfg["solver"]
        size = solver.get("upsample") or solver.get("image_size")
        passes = 1 if solver.get("trainable") == "head" else 3
        return solver["epochs"] * (n_train * passes + n_test) * \
            forward_macs(cfg["student"], size=size) / work_per_s

    for t in plan.teachers_used():
        source = plan.teachers[t]["source"]
        if source in ("pretrain", "finetune"):
            seconds[f"{source}_teacher"] += training(plan.teacher_config(t))
        if t in plan.pretrained_inits():
            seconds["pretrain_init"] += training(plan.init_config(t))
        seconds["evaluate_teacher"] += n_test * forward_macs(t) / work_per_s
    for t, folder in teacher_caches(plan):
        # one teacher forward per stored variant of every training image
        name = Path(folder).name
        variants = (162 if name == "exact" else stored_views(name) or scheme_views(name))
        seconds["teacher_cache"] += variants * n_train * forward_macs(t) / work_per_s
    return {"plan": plan.name, "jobs": dict(job_counts(plan)),
            "device_hours": {k: v / 3600 for k, v in seconds.items()},
            "total_device_hours": sum(seconds.values()) / 3600,
            "anchor": anchor, "distill_costed": dict(how), "mode": mode or "as planned"}


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
              f"{est['anchor']['student']} ({est['anchor']['source']})",
              f"distill runs costed (mode: {est['mode']}): " + ", ".join(
                  f"{n} {how}" for how, n in sorted(est["distill_costed"].items()))]
    return "\n".join(lines)


def load_speeds(path: str | Path) -> dict[str, Any]:
    """The per-method step times of a benchmark JSON (``speeds``; empty for an older file)."""
    return dict(json.loads(Path(path).read_text()).get("speeds", {}))


def load_measured(path: str | Path) -> dict[str, Any]:
    """An anchor from a benchmark JSON (``benchmarks/throughput.py --out``: its ``anchor``, the
    reference loop's KD throughput) or a flat mapping with the same fields."""
    data = json.loads(Path(path).read_text())
    data = data.get("anchor", data)
    missing = [k for k in ("teacher", "student", "method", "samples_per_s") if k not in data]
    if missing:
        raise ConfigError(f"--measured {path}: no anchor (the reference loop's KD speed, written "
                          f"by benchmarks/throughput.py when it measures kd); missing "
                          f"{', '.join(missing)}")
    return {"teacher": data["teacher"], "student": data["student"], "method": data["method"],
            "samples_per_s": float(data["samples_per_s"]),
            "source": f"measured: {path} ({data.get('device', 'unknown device')}, "
                      f"mode {data.get('mode', '?')})"}
