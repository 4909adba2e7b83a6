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
from .settings import Setting, check_all, choice, flag, without_new_defaults

#: students that the reference recipes train with lr 0.01 instead of 0.05
LOW_LR_STUDENTS = frozenset({"MobileNetV2", "ShuffleV1", "ShuffleV2"})

WARMUP_MODES = ("linear", "ldrld_as_coded")
LR_SCHEDULES = ("step", "cosine", "cosine_after_warmup")
#: normalisation constants a recipe may ask for instead of the dataset's own
NORMALIZATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    # RSD's configs/cifar: CIFAR-100 constants slightly different from mdistiller's
    "cifar100_rsd": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

#: the solver (the reference recipe: mdistiller's CIFAR-100 SGD); the plan schema's solver
#: definition is built from these declarations
SOLVER: tuple[Setting, ...] = (
    Setting("epochs", 240, "training epochs", type="integer", low=1),
    Setting("batch_size", 64, "training batch size", type="integer", low=1),
    Setting("lr", None, "initial learning rate; null: 0.05, or 0.01 for MobileNetV2, ShuffleV1 "
            "and ShuffleV2 students (the reference recipes)", above=0.0, nullable=True),
    Setting("momentum", 0.9, "SGD momentum", low=0.0),
    Setting("weight_decay", 5e-4, "SGD weight decay", low=0.0),
    flag("nesterov", False, "Nesterov momentum"),
    Setting("lr_decay_epochs", [150, 180, 210], "epochs after which the LR is multiplied by "
            "lr_decay_rate", type="integers", low=0, increasing=True),
    Setting("lr_decay_rate", 0.1, "LR factor at each decay epoch", low=0.0),
    Setting("warmup_epochs", 0, "epochs of LR warm-up (0: none; at most solver.epochs)",
            type="integer", low=0),
    # "ldrld_as_coded": LDRLD's adjust_learning_rate_wram_up, whose LR sticks at (w-1)/w·lr from
    # epoch w until the first decay (0.0475 for lr 0.05, w 20): the base LR is never written back
    choice("warmup_mode", "linear", WARMUP_MODES, "linear: lr·epoch/w for the first w epochs; "
           "ldrld_as_coded: LDRLD's warm-up as its code runs"),
    Setting("eval_batch_size", 256, "test batch size", type="integer", low=1),
    # -- the transformer recipes (RSD's timm recipes, the multi-view project): added after
    # results were recorded, so each stays out of the hash and the params at its default
    choice("optimizer", "sgd", ("sgd", "adamw"), "sgd: the reference recipe (momentum, "
           "nesterov); adamw: torch AdamW (betas 0.9/0.999, eps 1e-8; momentum and nesterov "
           "unused)", identity_at_default=False),
    choice("weight_decay_on", "all", ("all", "weights"), "all: every parameter (the reference); "
           "weights: not biases, norm parameters or a model's no_weight_decay() names (timm's "
           "param_groups_weight_decay, as RSD's timm optimizer)", identity_at_default=False),
    choice("trainable", "all", ("all", "head"), "all: every student parameter trains; head: "
           "only the student's classifier (the multi-view project's head-only fine-tune; the "
           "rest is frozen)", identity_at_default=False),
    choice("lr_schedule", "step", LR_SCHEDULES, "step: lr_decay_epochs and lr_decay_rate; "
           "cosine: timm's CosineLRScheduler per epoch (cosine over all epochs from lr to min_lr, "
           "the first warmup_epochs linear from warmup_lr); cosine_after_warmup: the cosine "
           "starts after the warm-up (torch LinearLR then CosineAnnealingLR, the multi-view "
           "project)", identity_at_default=False),
    Setting("min_lr", 0.0, "floor of the cosine schedules", low=0.0, identity_at_default=False),
    Setting("warmup_lr", 0.0, "LR of the first warm-up epoch of the cosine schedules", low=0.0,
            identity_at_default=False),
    Setting("label_smoothing", 0.0, "label smoothing of the student's cross-entropy (every "
            "method)", low=0.0, high=0.99, identity_at_default=False),
    Setting("clip_grad_norm", None, "clip the global L2 norm of the gradients to this before "
            "each step; null: no clipping", above=0.0, nullable=True,
            identity_at_default=False),
    Setting("mixup_alpha", 0.0, "mixup's Beta(α, α); 0: off (timm Mixup, the teacher sees the "
            "mixed image)", low=0.0, identity_at_default=False),
    Setting("cutmix_alpha", 0.0, "cutmix's Beta(α, α); 0: off", low=0.0,
            identity_at_default=False),
    Setting("mixup_prob", 1.0, "probability that a batch is mixed (mixup or cutmix on)",
            low=0.0, high=1.0, identity_at_default=False),
    Setting("mixup_switch_prob", 0.5, "probability of cutmix instead of mixup when both are on",
            low=0.0, high=1.0, identity_at_default=False),
    Setting("image_size", None, "resize every batch on the device to this many px (random "
            "resized crop + flip in training, resize + centre crop for evaluation: RSD's 224-px "
            "timm pipeline); null: the stored images as they are", type="integer", low=8,
            nullable=True, identity_at_default=False),
    Setting("upsample", None, "the model sees each batch of the 32-px pipeline bilinearly "
            "upsampled to this many px, in training and evaluation alike (the multi-view "
            "project's Resize(224) of a ViT-S teacher); null: as the pipeline gives it",
            type="integer", low=8, nullable=True, identity_at_default=False),
    Setting("crop_pct", None, "evaluation centre-crop fraction of image_size; null: the "
            "student's (timm 0.6.5's value for a timm model, 1 otherwise)", above=0.0, high=1.0,
            nullable=True, identity_at_default=False),
    choice("normalize", "dataset", ("dataset", *NORMALIZATIONS), "normalisation constants: the "
           "dataset's, or a recipe's (imagenet, inception = 0.5, cifar100_rsd = RSD's)",
           identity_at_default=False),
    choice("randaugment", "off", ("off", "rand-m9-mstd0.5-inc1"), "timm's RandAugment config "
           "(RSD's ViT recipe: rand-m9-mstd0.5-inc1), per image on the device",
           identity_at_default=False),
    choice("autoaugment", "off", ("off", "cifar10"), "torchvision's AutoAugment with the "
           "CIFAR-10 policy, per image", identity_at_default=False),
    Setting("color_jitter", 0.0, "torchvision ColorJitter strength (brightness, contrast, "
            "saturation); not applied with RandAugment, as in timm 0.6.5", low=0.0, high=1.0,
            identity_at_default=False),
    Setting("random_erasing", 0.0, "probability of timm's RandomErasing (pixel mode) per image",
            low=0.0, high=1.0, identity_at_default=False),
    Setting("val_fraction", 0.0, "fraction of the training set held out for validation (a "
            "fixed split drawn from the seed); 0: none", low=0.0, high=0.5,
            identity_at_default=False),
    Setting("early_stop_patience", None, "stop after this many epochs without a better "
            "validation top-1 (needs val_fraction > 0); null: never", type="integer", low=1,
            nullable=True, identity_at_default=False),
    Setting("early_stop_after", 0, "epochs before early stopping may stop", type="integer",
            low=0, identity_at_default=False),
)

#: run keys with a fixed set of values (the plan schema's mode, precision, channels_last and
#: compile are built from these declarations)
RUN_CHOICES: tuple[Setting, ...] = (
    choice("mode", "reference", ("reference", "fast"), "reference: the published recipe "
           "(fp32, PIL pipeline semantics); fast: device data, teacher cache, bf16, compile"),
    choice("precision", "fp32", ("fp32", "bf16"), "bf16: autocast on CUDA (fp32 elsewhere)"),
    choice("teacher_cache", "auto", ("auto", "off"), "read a precomputed teacher cache where "
           "the method allows"),
    choice("channels_last", "auto", ("auto", "on", "off"),
           "memory format of images and models; auto: channels_last in fast mode"),
    choice("compile", "auto", ("auto", "on", "off"),
           "torch.compile the networks; auto: in fast mode on CUDA when the step is not a CUDA "
           "graph"),
    # identity_at_default=False: adding the key changed no run's hash or params (and auto,
    # which the mode and the device decide, stays out of them like the other auto keys)
    choice("cuda_graph", "auto", ("auto", "on", "off"),
           "capture the whole training step as a CUDA graph and replay it; auto: in fast mode "
           "on CUDA where the method allows; on: a CPU run or a method that cannot be captured "
           "is an error", identity_at_default=False),
)
SEED = Setting("seed", 0, "the run's seed (data order, augmentation, initialisation)",
               type="integer", low=0)
TOP_KEYS = ("dataset", "teacher", "student", "method", "solver", "seed",
            *(s.name for s in RUN_CHOICES))
#: keys whose "auto" value the mode (and the device) decide: left out of the config hash
AUTO_KEYS = ("channels_last", "compile", "cuda_graph")


def default_lr(student: str) -> float:
    return 0.01 if student in LOW_LR_STUDENTS else 0.05


def _require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _resolve_solver(raw: Any, student: str) -> dict[str, Any]:
    _require(raw is None or isinstance(raw, dict), "solver", "must be a mapping")
    solver = check_all(SOLVER, raw, prefix="solver.", unknown="key")
    if solver["lr"] is None:
        solver["lr"] = default_lr(student)
    _require(solver["warmup_epochs"] <= solver["epochs"], "solver.warmup_epochs",
             "cannot exceed solver.epochs")
    _require(solver["lr_schedule"] == "step" or solver["warmup_mode"] == "linear",
             "solver.warmup_mode", "the cosine schedules warm up linearly only")
    _require(solver["lr_schedule"] != "cosine_after_warmup"
             or solver["warmup_epochs"] < solver["epochs"], "solver.warmup_epochs",
             "cosine_after_warmup needs at least one epoch after the warm-up")
    _require(solver["crop_pct"] is None or solver["image_size"] is not None, "solver.crop_pct",
             "needs solver.image_size")
    _require(solver["upsample"] is None or solver["image_size"] is None, "solver.upsample",
             "upsamples the 32-px pipeline; solver.image_size is the other (timm) pipeline: "
             "set one of them")
    _require(solver["early_stop_patience"] is None or solver["val_fraction"] > 0,
             "solver.early_stop_patience", "needs a validation split (solver.val_fraction > 0)")
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
        _require(key in ("name", "checkpoint", "cache", "upsample"), f"teacher.{key}",
                 "unknown key; allowed: name, checkpoint, cache, upsample")
    name = raw.get("name")
    _require(isinstance(name, str), "teacher.name", "missing or not a string")
    if name not in MODEL_NAMES:
        raise unknown_name("model", name, MODEL_NAMES)
    ckpt = raw.get("checkpoint")
    _require(ckpt is None or isinstance(ckpt, str), "teacher.checkpoint", "expected a path")
    cache = raw.get("cache")
    _require(cache is None or isinstance(cache, str), "teacher.cache",
             "expected the path of a precomputed teacher cache")
    out = {"name": name, "checkpoint": ckpt, "cache": cache}
    upsample = raw.get("upsample")
    if upsample is not None:
        # only when set: the key came after results were recorded (no run's params change)
        _require(isinstance(upsample, int) and not isinstance(upsample, bool) and upsample >= 8,
                 "teacher.upsample", "expected a size in px (the teacher's own solver.upsample)")
        out["upsample"] = upsample
    return out


def _check_input_sizes(solver: dict[str, Any], student: str, teacher: dict | None, *,
                       role: str = "student") -> None:
    """A model built for one image size (a ViT's patch grid, Swin's windows, a Mixer's token
    mixing) must be given that size: say so before any work, not at the first forward. Every
    dataset here stores 32-px images; ``solver.image_size`` resizes them."""
    from .models.timm_zoo import FIXED_SIZE, input_size

    size = solver["image_size"] or 32
    sizes = {role: solver["upsample"] or size,
             "teacher": (teacher or {}).get("upsample") or size}
    for who, model in ((role, student), ("teacher", teacher and teacher["name"])):
        if model in FIXED_SIZE and input_size(model) != sizes[who]:
            fix = (f"set solver.image_size (or solver.upsample): {input_size(model)}"
                   if who != "teacher" else
                   "a teacher sees the student's images: give both the same input size, or "
                   "the teacher its own upsampling (teacher.upsample)")
            size = sizes[who]
            raise ConfigError(f"{who}: {model} takes {input_size(model)}-px images, this run "
                              f"gives it {size} px ({fix})")


def resolve_model_solver(model: str, solver: dict[str, Any] | None) -> dict[str, Any]:
    """A solver mapping checked and resolved for ``model`` alone (no method, no teacher): what
    a teacher's evaluation reads (its image size, crop and normalisation)."""
    out = _resolve_solver(solver, model)
    _check_input_sizes(out, model, None, role="model")
    return out


def resolve_run_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate ``raw`` and return the complete run config (defaults filled in).

    Raises :class:`ConfigError` naming the first bad key.
    """
    from .dataset_facts import DATASET_FACTS, DATASET_NAMES
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
    METHODS[name].check_dataset(settings, DATASET_FACTS[dataset])

    teacher = _resolve_teacher(raw.get("teacher", "none"))
    if METHODS[name].needs_teacher and teacher is None:
        raise ConfigError(f"teacher: method {name!r} needs a teacher, but none is given")
    solver = _resolve_solver(raw.get("solver"), student)
    _check_input_sizes(solver, student, teacher)

    return {
        "dataset": dataset,
        "teacher": teacher,
        "student": student,
        "method": {"name": name, **settings},
        "solver": solver,
        "seed": SEED.check(raw.get("seed", SEED.default)),
        **{c.name: c.check(raw.get(c.name, c.default)) for c in RUN_CHOICES},
    }


def uses_channels_last(cfg: dict[str, Any]) -> bool:
    """Whether a resolved run trains in channels_last memory format. It changes which
    convolution kernels run (faster on GPUs and on CPUs with oneDNN), and with them the rounding:
    the same run in both formats drifts apart by ~1e-3 in the loss within a few steps."""
    if cfg["channels_last"] == "auto":
        return cfg["mode"] == "fast"
    return cfg["channels_last"] == "on"


def uses_compile(cfg: dict[str, Any], device_type: str) -> bool:
    """Whether a resolved run compiles its networks with ``torch.compile``: ``auto`` = fast mode
    on CUDA, where fused kernels and fewer launches pay for the compile time, unless the step is
    a CUDA graph (one launch per step already); on a CPU the compile costs more than a short
    run saves (``on`` forces it; it needs a C++ compiler)."""
    if cfg["compile"] == "auto":
        return (cfg["mode"] == "fast" and device_type == "cuda"
                and not wants_cuda_graph(cfg, device_type))
    return cfg["compile"] == "on"


def wants_cuda_graph(cfg: dict[str, Any], device_type: str) -> bool:
    """Whether a resolved run asks for a CUDA-graphed step on this device: ``auto`` = fast mode
    on CUDA; ``on`` anywhere but CUDA is a ConfigError. Whether the step is then captured also
    depends on the method and the teacher cache (:func:`kdsrc.engine.capture.run_capture_blocker`)."""
    value = cfg["cuda_graph"]
    if value == "on" and device_type != "cuda":
        raise ConfigError(f"cuda_graph: 'on' needs a CUDA device, this run is on {device_type} "
                          f"(use auto, which captures only on CUDA, or off)")
    if value == "auto":
        return cfg["mode"] == "fast" and device_type == "cuda"
    return value == "on"


def canonical(cfg: dict[str, Any]) -> dict[str, Any]:
    """A resolved config without the settings declared ``identity_at_default=False`` that hold
    their default (see :mod:`kdsrc.settings`): what a plan hands to the rules, whose params
    Snakemake compares. Resolving it again gives ``cfg`` back, so declaring a new setting
    changes neither the params nor ``config_hash`` of a run that leaves it at its default."""
    from .distillers import get_method

    out = copy.deepcopy(cfg)
    method = dict(out["method"])
    name = method.pop("name")
    out["method"] = {"name": name, **get_method(name).canonical_settings(method)}
    out["solver"] = without_new_defaults(SOLVER, out["solver"])
    return without_new_defaults(RUN_CHOICES, out)


def identity(cfg: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that defines the run (no file locations).

    Dropped: the teacher's checkpoint and cache paths, and method settings ending in
    ``_checkpoint`` (e.g. pretrained Angular-KD views): where a file lies is not what the run is;
    ``channels_last: auto``, ``compile: auto`` and ``cuda_graph: auto``, which ``mode`` (and the
    device) decide.
    """
    ident = canonical(cfg)
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
