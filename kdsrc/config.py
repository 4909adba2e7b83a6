"""Run configs: one mapping per training run, resolved against the reference recipe.

A run config names the dataset, teacher, student, method (+ settings), solver, seed, mode and
precision. :func:`resolve_run_config` fills every default (the mdistiller CIFAR-100 recipe) and
validates every key, so the resolved mapping is the complete description of the run;
:func:`config_hash` is the sha256 of its canonical JSON, without the teacher's checkpoint path
(a location, not part of the run's identity).

Example (YAML)::

    dataset: digits
    teacher: {name: resnet20, checkpoint: results/teachers/digits/resnet20/model.pt}
    student: resnet8
    method: {name: kd, temperature: 4.0}
    solver: {epochs: 8}
    seed: 0
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, unknown_name

#: students that the reference recipes train with lr 0.01 instead of 0.05
LOW_LR_STUDENTS = frozenset({"MobileNetV2", "ShuffleV1", "ShuffleV2"})

SOLVER_DEFAULTS: dict[str, Any] = {
    "epochs": 240,
    "batch_size": 64,
    "lr": None,  # None: 0.05, or 0.01 for LOW_LR_STUDENTS (the reference recipes)
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "nesterov": False,
    "lr_decay_epochs": [150, 180, 210],
    "lr_decay_rate": 0.1,
    "warmup_epochs": 0,
    # "linear": lr·epoch/w for the first w epochs. "ldrld_as_coded": LDRLD's
    # adjust_learning_rate_wram_up, whose LR sticks at (w-1)/w·lr from epoch w until the first
    # decay (0.0475 for lr 0.05, w 20) because the base LR is never written back.
    "warmup_mode": "linear",
    "eval_batch_size": 256,
}
WARMUP_MODES = ("linear", "ldrld_as_coded")
TEACHER_CACHE_MODES = ("auto", "off")
MODES = ("reference", "fast")
PRECISIONS = ("fp32", "bf16")
#: "auto": channels_last in fast mode, contiguous in reference mode
CHANNELS_LAST_MODES = ("auto", "on", "off")
#: "auto": torch.compile the student (and a live teacher) in fast mode on CUDA
COMPILE_MODES = ("auto", "on", "off")
TOP_KEYS = ("dataset", "teacher", "student", "method", "solver", "seed", "mode", "precision",
            "teacher_cache", "channels_last", "compile")
#: top-level keys with a fixed set of values, the first being the default
CHOICE_KEYS = {"mode": MODES, "precision": PRECISIONS, "teacher_cache": TEACHER_CACHE_MODES,
               "channels_last": CHANNELS_LAST_MODES, "compile": COMPILE_MODES}
#: keys whose "auto" value the mode (and the device) decide: left out of the config hash
AUTO_KEYS = ("channels_last", "compile")


def default_lr(student: str) -> float:
    return 0.01 if student in LOW_LR_STUDENTS else 0.05


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _resolve_solver(raw: Any, student: str) -> dict[str, Any]:
    _require(raw is None or isinstance(raw, dict), "solver", "must be a mapping")
    solver = copy.deepcopy(SOLVER_DEFAULTS)
    for key, value in (raw or {}).items():
        _require(key in SOLVER_DEFAULTS, f"solver.{key}",
                 f"unknown key; allowed: {', '.join(SOLVER_DEFAULTS)}")
        solver[key] = value
    for key in ("epochs", "batch_size", "warmup_epochs", "eval_batch_size"):
        v = solver[key]
        _require(isinstance(v, int) and not isinstance(v, bool), f"solver.{key}",
                 f"expected an integer, got {v!r}")
        _require(v >= (0 if key == "warmup_epochs" else 1), f"solver.{key}", f"out of range: {v}")
    if solver["lr"] is None:
        solver["lr"] = default_lr(student)
    for key in ("lr", "momentum", "weight_decay", "lr_decay_rate"):
        v = solver[key]
        _require(_is_number(v), f"solver.{key}", f"expected a number, got {v!r}")
        _require(v >= 0, f"solver.{key}", f"must be >= 0, got {v}")
        solver[key] = float(v)
    _require(solver["lr"] > 0, "solver.lr", "must be > 0")
    _require(isinstance(solver["nesterov"], bool), "solver.nesterov", "expected true/false")
    _require(solver["warmup_mode"] in WARMUP_MODES, "solver.warmup_mode",
             f"expected one of {', '.join(WARMUP_MODES)}, got {solver['warmup_mode']!r}")
    stages = solver["lr_decay_epochs"]
    _require(isinstance(stages, list) and all(isinstance(s, int) and not isinstance(s, bool)
                                              for s in stages),
             "solver.lr_decay_epochs", f"expected a list of integers, got {stages!r}")
    _require(stages == sorted(stages), "solver.lr_decay_epochs", "must be increasing")
    _require(solver["warmup_epochs"] <= solver["epochs"], "solver.warmup_epochs",
             "cannot exceed solver.epochs")
    return solver


def _resolve_teacher(raw: Any) -> dict[str, Any] | None:
    from .models import MODEL_NAMES

    if raw is None or raw == "none":
        return None
    if isinstance(raw, str):
        raw = {"name": raw}
    _require(isinstance(raw, dict), "teacher", "expected 'none', a model name or a mapping "
             "{name, checkpoint}")
    for key in raw:
        _require(key in ("name", "checkpoint", "cache"), f"teacher.{key}",
                 "unknown key; allowed: name, checkpoint, cache")
    name = raw.get("name")
    _require(isinstance(name, str), "teacher.name", "missing or not a string")
    if name not in MODEL_NAMES:
        raise unknown_name("model", name, MODEL_NAMES)
    ckpt = raw.get("checkpoint")
    _require(ckpt is None or isinstance(ckpt, str), "teacher.checkpoint", "expected a path")
    cache = raw.get("cache")
    _require(cache is None or isinstance(cache, str), "teacher.cache",
             "expected the path of a precomputed teacher cache")
    return {"name": name, "checkpoint": ckpt, "cache": cache}


def resolve_run_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate ``raw`` and return the complete run config (defaults filled in).

    Raises :class:`ConfigError` naming the first bad key.
    """
    from .data import DATASET_NAMES
    from .distillers import METHODS, resolve_settings
    from .models import MODEL_NAMES

    _require(isinstance(raw, dict), "config", "the run config must be a mapping")
    for key in raw:
        _require(key in TOP_KEYS, key, f"unknown key; allowed: {', '.join(TOP_KEYS)}")
    for key in ("dataset", "student", "method"):
        _require(key in raw, key, "missing required key")

    dataset = raw["dataset"]
    _require(isinstance(dataset, str), "dataset", "expected a dataset name")
    if dataset not in DATASET_NAMES:
        raise unknown_name("dataset", dataset, DATASET_NAMES)

    student = raw["student"]
    _require(isinstance(student, str), "student", "expected a model name")
    if student not in MODEL_NAMES:
        raise unknown_name("model", student, MODEL_NAMES)

    method = raw["method"]
    if isinstance(method, str):
        method = {"name": method}
    _require(isinstance(method, dict) and isinstance(method.get("name"), str), "method.name",
             "missing or not a string")
    name = method["name"]
    if name not in METHODS:
        raise unknown_name("method", name, METHODS)
    settings = resolve_settings(name, {k: v for k, v in method.items() if k != "name"})

    teacher = _resolve_teacher(raw.get("teacher", "none"))
    if METHODS[name].needs_teacher and teacher is None:
        raise ConfigError(f"teacher: method {name!r} needs a teacher, but none is given")

    seed = raw.get("seed", 0)
    _require(isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0, "seed",
             f"expected a non-negative integer, got {seed!r}")
    return {
        "dataset": dataset,
        "teacher": teacher,
        "student": student,
        "method": {"name": name, **settings},
        "solver": _resolve_solver(raw.get("solver"), student),
        "seed": seed,
        **{key: _choice(raw, key, choices) for key, choices in CHOICE_KEYS.items()},
    }


def _choice(raw: dict[str, Any], key: str, choices: tuple[str, ...]) -> str:
    """``raw[key]`` (default: the first choice), which must be one of ``choices``."""
    value = raw.get(key, choices[0])
    _require(value in choices, key, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def uses_channels_last(cfg: dict[str, Any]) -> bool:
    """Whether a resolved run trains in channels_last memory format. It changes which
    convolution kernels run (faster on GPUs and on CPUs with oneDNN), and with them the rounding:
    the same run in both formats drifts apart by ~1e-3 in the loss within a few steps."""
    if cfg["channels_last"] == "auto":
        return cfg["mode"] == "fast"
    return cfg["channels_last"] == "on"


def uses_compile(cfg: dict[str, Any], device_type: str) -> bool:
    """Whether a resolved run compiles its networks with ``torch.compile``: ``auto`` = fast mode
    on CUDA, where fused kernels and fewer launches pay for the compile time; on a CPU the
    compile costs more than a short run saves (``on`` forces it; it needs a C++ compiler)."""
    if cfg["compile"] == "auto":
        return cfg["mode"] == "fast" and device_type == "cuda"
    return cfg["compile"] == "on"


def identity(cfg: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that defines the run (no file locations).

    Dropped: the teacher's checkpoint and cache paths, and method settings ending in
    ``_checkpoint`` (e.g. pretrained Angular-KD views): where a file lies is not what the run is;
    ``channels_last: auto`` and ``compile: auto``, which ``mode`` (and the device) decide.
    """
    ident = copy.deepcopy(cfg)
    if ident.get("teacher"):
        ident["teacher"] = {"name": ident["teacher"]["name"]}
    ident["method"] = {k: v for k, v in ident["method"].items() if not k.endswith("_checkpoint")}
    for key in AUTO_KEYS:
        if ident.get(key, "auto") == "auto":
            ident.pop(key, None)
    return ident


def config_hash(cfg: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the run's identity."""
    blob = json.dumps(identity(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping; a missing or malformed file is a ConfigError."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must contain a mapping, got {type(data).__name__}")
    return data


def apply_overrides(cfg: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a raw config."""
    out = copy.deepcopy(cfg)
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. solver.epochs=8)")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            if isinstance(node.get(part), str) and part in ("method", "teacher"):
                node[part] = {"name": node[part]}
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a mapping")
        node[parts[-1]] = parsed
    return out
