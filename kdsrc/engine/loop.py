"""The training loop: one run config in, weights + per-epoch log + eval record out.

Resumable: after every epoch the whole training state (student, the distiller's extra modules,
optimizer, RNG states, history) is written to ``last.pt`` atomically, and each epoch's data order
and augmentation are a pure function of (seed, epoch). A run killed at any point and started
again with the same config therefore ends with exactly the weights and metrics of an
uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..cache import open_run_cache
from ..config import (config_hash, resolve_run_config, uses_channels_last, uses_compile,
                      wants_cuda_graph)
from ..data import DatasetArrays, DeviceLoader, load_dataset
from ..distillers import DistillContext, StepState, build_distiller, get_method
from ..errors import CheckpointError, ConfigError, NonFiniteLossError
from ..models import build_model, feature_dims, load_teacher
from .capture import StaticStep, run_capture_blocker
from .io import atomic_torch_save, atomic_write_json, atomic_write_text
from .meter import EpochMeter
from .metrics import evaluate
from .progress import Progress
from .record import device_name, git_rev, versions
from .schedule import begin_epoch
from .seeding import rng_state, seed_everything, set_rng_state
from .step import autocast_for, non_finite_message, train_step

RESUME_FORMAT = "kdsrc-resume/1"
#: how :func:`train` runs each step (see its ``step_kind``)
STEP_KINDS = ("ordinary", "static", "graph")


@dataclass(frozen=True)
class RunPaths:
    """Where a run writes: checkpoint folder (last.pt, final.pt), eval record, per-epoch log."""

    ckpt_dir: Path
    eval_json: Path
    log_csv: Path

    @classmethod
    def in_dir(cls, out: str | Path) -> "RunPaths":
        out = Path(out)
        return cls(out, out / "eval.json", out / "log.csv")

    @property
    def last(self) -> Path:
        return self.ckpt_dir / "last.pt"

    @property
    def final(self) -> Path:
        return self.ckpt_dir / "final.pt"


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    if isinstance(spec, torch.device):
        return spec
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"device: cannot parse {spec!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {spec!r} requested but CUDA is not available on this machine")
    return dev


def _write_csv(history: list[dict[str, Any]], path: Path) -> None:
    columns: list[str] = []
    for row in history:
        columns.extend(k for k in row if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(buf.getvalue(), path)


def _load_resume(path: Path, chash: str) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a torn or foreign file: say which and why
        raise CheckpointError(f"cannot read resume checkpoint {path}: {e}".splitlines()[0]) from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise CheckpointError(f"{path} is not a kdsrc resume checkpoint")
    if state["config_hash"] != chash:
        raise ConfigError(
            f"{path} was written by a different run config (hash {state['config_hash'][:12]} vs "
            f"{chash[:12]}); delete it or pass --no-resume to start over")
    return state


@dataclass
class RunParts:
    """What a run trains: the distiller (student, teacher, extra modules) on its device, its
    optimizer, and the teacher cache it reads (None: the teacher runs on every batch)."""

    distiller: Any
    optimizer: torch.optim.Optimizer
    teacher_cache: Any
    cache_note: str
    cache_views: int | None


def build_run(cfg: dict[str, Any], data: DatasetArrays, device: torch.device,
              train_loader: DeviceLoader, *, use_cache: bool = True,
              compile_networks: bool | None = None) -> RunParts:
    """Build a resolved run config's models, distiller and optimizer, in the order (and so from
    the RNG draws) of :func:`train`: seed first, then call this. ``use_cache=False`` never opens
    a teacher cache (the reference path of the benchmark and the parity test). A multi-view
    cache restricts ``train_loader`` to its fixed views. ``compile_networks``: None = as
    ``compile`` resolves (:func:`kdsrc.config.uses_compile`)."""
    solver = cfg["solver"]
    size = int(data.train_x.shape[-1])
    student = build_model(cfg["student"], num_classes=data.num_classes)
    teacher = None
    if cfg["teacher"] is not None:
        ckpt = cfg["teacher"]["checkpoint"]
        if not ckpt:
            raise ConfigError("teacher.checkpoint: missing (path to the teacher's weights)")
        teacher = load_teacher(cfg["teacher"]["name"], ckpt, num_classes=data.num_classes)
    method = dict(cfg["method"])
    teacher_cache, cache_note = None, "not asked for"
    if use_cache:
        teacher_cache, cache_note = open_run_cache(
            cfg, method=method["name"],
            needs=get_method(method["name"]).cache_needs_for(method),
            teacher=teacher, data=data, device=device)
    cache_views = None
    if teacher_cache is not None and teacher_cache.variants is not None:
        # multi-view scheme: the student trains on the cache's K fixed views per image only
        cache_views = int(teacher_cache.variants.shape[1])
        train_loader.set_fixed_variants(teacher_cache.variants)
    ctx = DistillContext(num_classes=data.num_classes, num_train=int(data.train_y.numel()),
                         epochs=solver["epochs"], device=device, train_labels=train_loader.labels,
                         train_images=train_loader.images, mean=data.mean, std=data.std,
                         pad=data.pad, flip=data.flip, image_size=size,
                         student_dims=feature_dims(student, size),
                         teacher_dims=feature_dims(teacher, size) if teacher is not None else {},
                         teacher_cache=teacher_cache)
    distiller = build_distiller(method.pop("name"), student, teacher, method, ctx)
    distiller.to(device)
    if uses_channels_last(cfg):
        distiller.to(memory_format=torch.channels_last)
    if uses_compile(cfg, device.type) if compile_networks is None else compile_networks:
        # in place (nn.Module.compile): parameter names, and so checkpoints, stay the same
        distiller.student.compile()
        if teacher is not None and teacher_cache is None:
            teacher.compile()
    optimizer = torch.optim.SGD(distiller.trainable_parameters(), lr=solver["lr"],
                                momentum=solver["momentum"], weight_decay=solver["weight_decay"],
                                nesterov=solver["nesterov"])
    return RunParts(distiller, optimizer, teacher_cache, cache_note, cache_views)


def train(config: dict[str, Any], paths: RunPaths, *, device: str | torch.device = "auto",
          data_root: str | Path = "data", download: bool = False, resume: bool = True,
          progress: Progress | None = None, method_label: str | None = None,
          arrays: DatasetArrays | None = None, step_kind: str | None = None) -> dict[str, Any]:
    """Train one run; return its eval record (also written to ``paths.eval_json``).

    ``step_kind``: how each step runs. None (the default) decides from ``cuda_graph``:
    ``graph`` (:class:`~kdsrc.engine.capture.StaticStep` captured as CUDA graphs) where it
    resolves on and the run can be captured, else ``ordinary`` (:func:`train_step` on the
    loader's batches). ``static`` runs the capturable step eagerly, on any device: what the
    CPU tests compare with ``ordinary``.

    ``arrays``: train and test on these arrays instead of loading ``config["dataset"]`` (whose
    name they must carry), e.g. the benchmark's synthetic CIFAR-100-format set.

    ``method_label`` names the method in the record (the pipeline passes the plan's method
    entry, e.g. ``angularkd_crd``; default: the kdsrc method name). The kdsrc method is always
    in ``kdsrc_method``.
    """
    cfg = resolve_run_config(config)
    chash = config_hash(cfg)
    progress = progress or Progress()
    dev = resolve_device(device)
    if step_kind is None:
        step_kind = "graph" if wants_cuda_graph(cfg, dev.type) else "ordinary"
    elif step_kind not in STEP_KINDS:
        raise ValueError(f"step_kind: expected one of {', '.join(STEP_KINDS)}, got {step_kind!r}")
    elif step_kind == "graph" and dev.type != "cuda":
        raise ConfigError(f"cuda_graph: a CUDA graph needs a CUDA device, this run is on {dev.type}")
    autocast = autocast_for(dev, cfg["precision"])
    precision = "bf16" if autocast else "fp32"
    if cfg["precision"] == "bf16" and not autocast:
        progress.line("precision bf16 asked for, but autocast is CUDA-only here: running fp32")
    if dev.type == "cpu":
        progress.line(f"no GPU in use: running on the CPU ({torch.get_num_threads()} threads)")

    seeds = seed_everything(cfg["seed"])
    if arrays is None:
        data = load_dataset(cfg["dataset"], root=data_root, download=download)
    elif arrays.name != cfg["dataset"]:
        raise ConfigError(f"dataset: the run config says {cfg['dataset']!r}, the arrays given "
                          f"are {arrays.name!r}")
    else:
        data = arrays
    solver = cfg["solver"]
    channels_last = uses_channels_last(cfg)
    train_loader = DeviceLoader.from_arrays(data, "train", batch_size=solver["batch_size"],
                                            device=dev, seed=cfg["seed"],
                                            channels_last=channels_last)
    test_loader = DeviceLoader.from_arrays(data, "test", batch_size=solver["eval_batch_size"],
                                           device=dev, channels_last=channels_last)

    # compile: auto never compiles a step that is captured or run as the capturable one
    parts = build_run(cfg, data, dev, train_loader, compile_networks=(
        False if step_kind != "ordinary" and cfg["compile"] == "auto" else None))
    distiller, optimizer = parts.distiller, parts.optimizer
    teacher_cache, cache_views = parts.teacher_cache, parts.cache_views
    if distiller.teacher is not None:
        progress.line(f"teacher cache: {'used' if teacher_cache is not None else 'not used'} "
                      f"({parts.cache_note})")
    graph_note = None
    if step_kind != "ordinary":
        settings = {k: v for k, v in cfg["method"].items() if k != "name"}
        graph_note = run_capture_blocker(get_method(cfg["method"]["name"]), settings,
                                         teacher_cache)
        if graph_note and (cfg["cuda_graph"] == "on" or step_kind == "static"):
            raise ConfigError(f"cuda_graph: this run's step cannot be captured: {graph_note}")
        if graph_note:
            progress.line(f"CUDA graph: not used ({graph_note}); the step runs eagerly")
            step_kind = "ordinary"

    start_epoch, history = 1, []
    best = {"top1": -1.0, "top5": 0.0, "epoch": 0}
    wall_s = train_s = 0.0
    samples = 0
    if resume and paths.last.exists():
        state = _load_resume(paths.last, chash)
        if state.get("teacher_cache_views") != cache_views:
            raise ConfigError(
                f"{paths.last} was trained with teacher-cache views "
                f"{state.get('teacher_cache_views')}, this run has {cache_views} (a multi-view "
                f"cache changes what the student sees); point teacher.cache back or pass --no-resume")
        distiller.load_state_dict(state["distiller"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start_epoch = state["epoch"] + 1
        history, best = state["history"], state["best"]
        wall_s, train_s, samples = state["wall_s"], state["train_s"], state["samples"]
        progress.line(f"resuming from {paths.last} after epoch {state['epoch']}")

    epochs = solver["epochs"]
    steps_per_epoch = len(train_loader)
    static = None
    if step_kind != "ordinary":
        static = StaticStep(distiller, optimizer, train_loader, epochs=epochs,
                            autocast_dtype=torch.bfloat16 if autocast else None,
                            capture=step_kind == "graph")
        progress.line(f"step: captured as a CUDA graph after {static.warmup} eager steps per "
                      f"batch shape" if static.capture else "step: static buffers, eager")
    for epoch in range(start_epoch, epochs + 1):
        t_epoch = time.perf_counter()
        lr = begin_epoch(epoch, solver, optimizer, train_loader)
        distiller.train()
        # no read back to the host inside the epoch: losses, top-1 and the finiteness check
        # add up on the device (kdsrc.engine.meter) and are read once, below
        if static is not None:
            static.begin_epoch(epoch, lr)
            meter = static.meter
            batch_size, n = solver["batch_size"], train_loader.num_samples
            for i in range(1, steps_per_epoch + 1):
                total = static.step(min(batch_size, n - (i - 1) * batch_size))
                progress.step(epoch, epochs, i, steps_per_epoch, total)
        else:
            meter = EpochMeter(dev)
            epoch_t = torch.full((), float(epoch), dtype=torch.float32, device=dev)
            for i, batch in enumerate(train_loader, 1):
                state_ = StepState(epoch=epoch, step=(epoch - 1) * steps_per_epoch + i,
                                   epochs=epochs, epoch_t=epoch_t)
                logits, losses, total = train_step(distiller, optimizer, batch, state_,
                                                   autocast=autocast)
                meter.add(losses, total, logits, batch.y)
                progress.step(epoch, epochs, i, steps_per_epoch, total)
        totals = meter.read()
        if totals.first_bad is not None:
            step, term, value = totals.first_bad
            raise NonFiniteLossError(non_finite_message(
                epoch, f"step {step} of {steps_per_epoch}", term, value))
        train_time = time.perf_counter() - t_epoch
        test = evaluate(distiller.student, test_loader, autocast=autocast)
        seen = totals.seen
        row = {"epoch": epoch, "lr": lr, "train_loss": totals.total_sum / seen}
        row.update({k: v / seen for k, v in totals.loss_sums.items()})
        row.update({"train_top1": 100.0 * totals.correct / seen, "test_top1": test["top1"],
                    "test_top5": test["top5"], "test_loss": test["loss"]})
        row.update(distiller.epoch_metrics())
        epoch_s = time.perf_counter() - t_epoch
        row["epoch_s"] = epoch_s
        history.append(row)
        if test["top1"] > best["top1"]:
            best = {"top1": test["top1"], "top5": test["top5"], "epoch": epoch}
        wall_s += epoch_s
        train_s += train_time
        samples += seen
        progress.line(f"epoch {epoch}/{epochs} lr {lr:.4g} loss {row['train_loss']:.4f} "
                      f"train {row['train_top1']:.2f} test {test['top1']:.2f} "
                      f"(best {best['top1']:.2f} @ {best['epoch']}) {epoch_s:.1f}s")
        _write_csv(history, paths.log_csv)
        atomic_torch_save({
            "format": RESUME_FORMAT, "config_hash": chash, "config": cfg, "epoch": epoch,
            "distiller": distiller.state_dict(), "optimizer": optimizer.state_dict(),
            "rng": rng_state(), "history": history, "best": best,
            "wall_s": wall_s, "train_s": train_s, "samples": samples,
            "teacher_cache_views": cache_views,
        }, paths.last)

    if not history:
        raise ConfigError("solver.epochs: nothing was trained")
    # a run resumed from a complete last.pt trains nothing; its log must still be written
    # (Snakemake deletes a job's outputs before it starts)
    _write_csv(history, paths.log_csv)
    last = history[-1]
    record = {
        "dataset": cfg["dataset"],
        "teacher": cfg["teacher"]["name"] if cfg["teacher"] else "none",
        "student": cfg["student"],
        "method": method_label or cfg["method"]["name"],
        "kdsrc_method": cfg["method"]["name"],
        "seed": cfg["seed"],
        "config_hash": chash,
        "top1_best": best["top1"], "top5_best": best["top5"], "epoch_best": best["epoch"],
        "top1_last": last["test_top1"], "top5_last": last["test_top5"],
        "epochs": epochs,
        "wall_s": round(wall_s, 3),
        "samples_per_s": round(samples / train_s, 2) if train_s > 0 else 0.0,
        "device": device_name(dev),
        "mode": cfg["mode"],
        "precision": precision,
        "cuda_graph": "on" if step_kind == "graph" else "off",
        **({"cuda_graph_note": graph_note} if graph_note else {}),
        "extra_params": distiller.extra_param_count(),
        "teacher_cache_used": teacher_cache is not None,
        "teacher_cache_views": cache_views,
        "switches": {k: v for k, v in cfg["method"].items() if k != "name"},
        "versions": versions(),
        "git_rev": git_rev(),
        "seeds": seeds,
        "config": cfg,
    }
    atomic_torch_save({"model": distiller.student.state_dict(),
                       "kdsrc": {"config": cfg, "config_hash": chash, "epoch": epochs,
                                 "top1_last": last["test_top1"]}}, paths.final)
    atomic_write_json(record, paths.eval_json)
    return record


def evaluate_checkpoint(model_name: str, checkpoint: str | Path, dataset: str, *,
                        data_root: str | Path = "data", download: bool = False,
                        device: str = "auto", batch_size: int = 256) -> dict[str, Any]:
    """Top-1/top-5 of a checkpoint (published format or ours) on a dataset's test split."""
    dev = resolve_device(device)
    data = load_dataset(dataset, root=data_root, download=download)
    model = load_teacher(model_name, checkpoint, num_classes=data.num_classes).to(dev)
    loader = DeviceLoader.from_arrays(data, "test", batch_size=batch_size, device=dev)
    res = evaluate(model, loader)
    return {"model": model_name, "checkpoint": str(checkpoint), "dataset": dataset,
            "top1": res["top1"], "top5": res["top5"], "loss": res["loss"],
            "num_test": int(data.test_y.numel()), "device": device_name(dev),
            "versions": versions()}
