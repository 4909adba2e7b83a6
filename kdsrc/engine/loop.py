"""The training loop: one run config in, weights + per-epoch log + eval record out.

Resumable (the shared epoch machinery of :mod:`kdsrc.engine.epochs`): after every epoch the whole
training state (student, the distiller's extra modules, optimizer, RNG states, history) is
written to ``last.pt`` atomically, and each epoch's data order
and augmentation are a pure function of (seed, epoch). A run killed at any point and started
again with the same config therefore ends with exactly the weights and metrics of an
uninterrupted run.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from ..cache import open_run_cache
from ..cache.store import weights_sha256
from ..cache.layout import stored_views_folder
from ..config import (config_hash, resolve_model_solver, resolve_run_config,
                      uses_channels_last, uses_compile, wants_cuda_graph)
from ..data import DatasetArrays, DeviceLoader, load_dataset
from ..data.recipe_aug import PixelAugment
from ..distillers import DistillContext, StepState, build_distiller, get_method
from ..errors import ConfigError, StaleResumeError
from ..models import build_model, feature_dims, load_teacher
from ..models.checkpoint import load_init_weights
from ..models.upsample import upsample_inputs
from ..teachers import sha256_file
from .capture import StaticStep, run_capture_blocker
from .epochs import (ResumeFile, RunProgress, check_stale_resume, drain, epoch_steps,
                     start_or_resume)
from .recipe import (build_mixup, build_optimizer, cache_blocker, head_only_modes, mixes,
                     normalization,
                     recipe_capture_blocker, resize_spec)
from .io import atomic_torch_save, atomic_write_json, atomic_write_text
from .meter import EpochMeter, EpochTotals
from .metrics import evaluate
from .progress import Progress
from .record import device_name, git_rev, versions
from .seeding import seed_everything
from .step import autocast_for, train_step

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
    size = solver["image_size"] or int(data.train_x.shape[-1])
    student = upsample_inputs(build_model(cfg["student"], num_classes=data.num_classes),
                              solver["upsample"])
    teacher = None
    if cfg["teacher"] is not None:
        ckpt = cfg["teacher"]["checkpoint"]
        if not ckpt:
            raise ConfigError("teacher.checkpoint: missing (path to the teacher's weights)")
        teacher = upsample_inputs(load_teacher(cfg["teacher"]["name"], ckpt,
                                               num_classes=data.num_classes),
                                  cfg["teacher"].get("upsample"))
    method = dict(cfg["method"])
    teacher_cache, cache_note = None, "not asked for"
    blocker = cache_blocker(solver)
    if use_cache and blocker is not None:
        cache_note = blocker
    elif use_cache:
        teacher_cache, cache_note = open_run_cache(
            cfg, method=method["name"],
            needs=get_method(method["name"]).cache_needs_for(method),
            teacher=teacher, data=data, device=device)
    stored = stored_views_folder(cfg)
    if use_cache and stored and teacher_cache is None:
        # its stored views are the run's training data: training on anything else is another run
        raise ConfigError(f"teacher.cache: {cfg['teacher']['cache']} holds the augmented views "
                          f"this run trains on, and it cannot be read: {cache_note}")
    cache_views = None
    if teacher_cache is not None and teacher_cache.variants is not None:
        # multi-view scheme: the student trains on the cache's K fixed views per image only
        cache_views = int(teacher_cache.variants.shape[1])
        train_loader.set_fixed_variants(teacher_cache.variants)
    if teacher_cache is not None and teacher_cache.view_images is not None:
        # autoaugment scheme: one stored view of every image per epoch, as it is
        cache_views = int(teacher_cache.view_images.shape[0])
        train_loader.set_view_images(teacher_cache.view_images)
    ctx = DistillContext(num_classes=data.num_classes, num_train=int(data.train_y.numel()),
                         epochs=solver["epochs"], device=device, train_labels=train_loader.labels,
                         train_images=train_loader.images, mean=train_loader.mean,
                         std=train_loader.std,
                         pad=data.pad, flip=data.flip, image_size=size,
                         student_dims=feature_dims(student, size),
                         teacher_dims=feature_dims(teacher, size) if teacher is not None else {},
                         teacher_cache=teacher_cache, label_smoothing=solver["label_smoothing"])
    distiller = build_distiller(method.pop("name"), student, teacher, method, ctx)
    distiller.to(device)
    if uses_channels_last(cfg):
        distiller.to(memory_format=torch.channels_last)
    if uses_compile(cfg, device.type) if compile_networks is None else compile_networks:
        # in place (nn.Module.compile): parameter names, and so checkpoints, stay the same
        distiller.student.compile()
        if teacher is not None and teacher_cache is None:
            teacher.compile()
    optimizer = build_optimizer(distiller, solver)
    return RunParts(distiller, optimizer, teacher_cache, cache_note, cache_views)


def _step_kind(cfg: dict[str, Any], dev: torch.device, asked: str | None) -> str:
    """``train``'s ``step_kind`` (see there), checked against the device."""
    if asked is None:
        return "graph" if wants_cuda_graph(cfg, dev.type) else "ordinary"
    if asked not in STEP_KINDS:
        raise ValueError(f"step_kind: expected one of {', '.join(STEP_KINDS)}, got {asked!r}")
    if asked == "graph" and dev.type != "cuda":
        raise ConfigError(f"cuda_graph: a CUDA graph needs a CUDA device, this run is on {dev.type}")
    return asked


def _run_data(cfg: dict[str, Any], arrays: DatasetArrays | None, data_root, download: bool
              ) -> DatasetArrays:
    if arrays is None:
        return load_dataset(cfg["dataset"], root=data_root, download=download)
    if arrays.name != cfg["dataset"]:
        raise ConfigError(f"dataset: the run config says {cfg['dataset']!r}, the arrays given "
                          f"are {arrays.name!r}")
    return arrays


def _capturable(cfg: dict[str, Any], step_kind: str, parts: RunParts | None,
                progress: Progress) -> tuple[str, str | None]:
    """``(step kind, why not captured)``: a run that asked for a graph (or the capturable step)
    and cannot have one falls back to the ordinary step under ``cuda_graph: auto``, else stops.
    ``parts`` None: the method's own reason only (checked before any work starts)."""
    if step_kind == "ordinary":
        return step_kind, None
    settings = {k: v for k, v in cfg["method"].items() if k != "name"}
    note = recipe_capture_blocker(cfg["solver"]) or run_capture_blocker(
        get_method(cfg["method"]["name"]), settings,
        None if parts is None else parts.teacher_cache)
    if note and (cfg["cuda_graph"] == "on" or step_kind == "static"):
        raise ConfigError(f"cuda_graph: this run's step cannot be captured: {note}")
    if note and parts is None:
        return step_kind, None   # decided with the teacher cache, once the run is built
    if note:
        progress.line(f"CUDA graph: not used ({note}); the step runs eagerly")
        return "ordinary", note
    return step_kind, None


class RunWork:
    """A distillation run as :func:`~kdsrc.engine.epochs.run_epochs` trains it: its epoch of
    steps (ordinary or static/graphed), its log row after evaluating the student, its resume
    states and its per-epoch log file."""

    where = ""

    def __init__(self, cfg: dict[str, Any], parts: RunParts, loader: DeviceLoader,
                 test_loader: DeviceLoader, static: StaticStep | None, autocast,
                 paths: RunPaths, progress: Progress, val_loader: DeviceLoader | None = None,
                 num_classes: int = 0, sources: dict[str, str | None] | None = None):
        self.cfg, self.parts, self.loader, self.test_loader = cfg, parts, loader, test_loader
        self.sources = dict(sources or {})
        self.static, self.autocast, self.paths, self.progress = static, autocast, paths, progress
        solver = cfg["solver"]
        self.epochs = solver["epochs"]
        self.val_loader = val_loader
        self.mixup = build_mixup(solver, num_classes)
        self.clip = solver["clip_grad_norm"]
        self.patience, self.stop_after = solver["early_stop_patience"], solver["early_stop_after"]

    def train_epoch(self, epoch: int, lr: float) -> Iterator[None]:
        """One epoch of steps (yielding after each), nothing read back to the host until its
        end: losses, top-1 and the finiteness check add up on the device (kdsrc.engine.meter);
        returns the epoch's totals."""
        parts, loader, static = self.parts, self.loader, self.static
        parts.distiller.train()
        if self.cfg["solver"]["trainable"] == "head":
            head_only_modes(parts.distiller.student)
        steps = len(loader)
        if static is not None:
            static.begin_epoch(epoch, lr)
            batch_size, n = loader.batch_size, loader.num_samples
            for i in range(1, steps + 1):
                total = static.step(min(batch_size, n - (i - 1) * batch_size))
                self.progress.step(epoch, self.epochs, i, steps, total)
                yield
            return static.meter.read()
        meter = EpochMeter(loader.device)
        epoch_t = torch.full((), float(epoch), dtype=torch.float32, device=loader.device)
        for i, batch in enumerate(loader, 1):
            state = StepState(epoch=epoch, step=(epoch - 1) * steps + i, epochs=self.epochs,
                              epoch_t=epoch_t)
            if self.mixup is not None:   # the student and the teacher see the mixed images
                batch.x, batch.y_soft = self.mixup(batch.x, batch.y)
            logits, losses, total = train_step(parts.distiller, parts.optimizer, batch, state,
                                               autocast=self.autocast,
                                               clip_grad_norm=self.clip)
            meter.add(losses, total, logits, batch.y)
            self.progress.step(epoch, self.epochs, i, steps, total)
            yield
        return meter.read()

    def epoch_row(self, epoch: int, lr: float, totals: EpochTotals) -> dict[str, Any]:
        distiller = self.parts.distiller
        test = evaluate(distiller.student, self.test_loader, autocast=self.autocast)
        seen = totals.seen
        row = {"epoch": epoch, "lr": lr, "train_loss": totals.total_sum / seen}
        row.update({k: v / seen for k, v in totals.loss_sums.items()})
        row.update({"train_top1": 100.0 * totals.correct / seen, "test_top1": test["top1"],
                    "test_top5": test["top5"], "test_loss": test["loss"]})
        if self.val_loader is not None:
            val = evaluate(distiller.student, self.val_loader, autocast=self.autocast)
            row.update({"val_top1": val["top1"], "val_loss": val["loss"]})
        row.update(distiller.epoch_metrics())
        return row

    def summary(self, row: dict[str, Any], done: RunProgress) -> str:
        best = done.best
        val = f" val {row['val_top1']:.2f}" if "val_top1" in row else ""
        return (f"epoch {row['epoch']}/{self.epochs} lr {row['lr']:.4g} loss "
                f"{row['train_loss']:.4f} train {row['train_top1']:.2f}{val} test "
                f"{row['test_top1']:.2f} (best {best['top1']:.2f} @ {best['epoch']}) "
                f"{row['epoch_s']:.1f}s")

    def finished(self, done: RunProgress) -> bool:
        """Early stopping: ``early_stop_patience`` epochs after ``early_stop_after`` without a
        validation top-1 at least 0.01 points above the best so far (the multi-view project's
        EarlyStopping, delta 1e-4 on accuracy as a fraction)."""
        return self.patience is not None and early_stop_due(done.history, self.patience,
                                                            self.stop_after)

    def epoch_logged(self, done: RunProgress) -> None:
        _write_csv(done.history, self.paths.log_csv)

    def states(self) -> dict[str, Any]:
        return {"config": self.cfg, "distiller": self.parts.distiller.state_dict(),
                "optimizer": self.parts.optimizer.state_dict(),
                "teacher_cache_views": self.parts.cache_views, "sources": self.sources}

    def load_states(self, state: dict[str, Any]) -> None:
        # resume files written before "sources" was recorded carry none: nothing to compare
        for key, old in (state.get("sources") or {}).items():
            if old != self.sources.get(key):
                raise StaleResumeError(
                    self.paths.last, f"was trained with another {_source_what(key)} "
                    f"({_short(old)}, this run has {_short(self.sources.get(key))})")
        views = self.parts.cache_views
        if state.get("teacher_cache_views") != views:
            raise StaleResumeError(
                self.paths.last, f"was trained with teacher-cache views "
                f"{state.get('teacher_cache_views')}, this run has {views} (a multi-view "
                f"cache changes what the student sees; or point teacher.cache back)")
        self.parts.distiller.load_state_dict(state["distiller"])
        self.parts.optimizer.load_state_dict(state["optimizer"])


#: what each entry of a resume file's ``sources`` is, for the refusal's message
SOURCE_WHAT = {"teacher_weights_sha256": "teacher (weights sha256)",
               "init_sha256": "initial-weights file (sha256)",
               "teacher_cache": "teacher-cache scheme"}


def _source_what(key: str) -> str:
    if key.startswith("method."):
        return f"file of {key} (sha256)"
    return SOURCE_WHAT.get(key, key)


def _short(value: str | None) -> str:
    if value is None:
        return "none"
    return value[:12] if len(value) == 64 else value


def run_sources(cfg: dict[str, Any], parts: RunParts,
                init_weights: str | Path | None) -> dict[str, str | None]:
    """What a run reads besides its config, by content: the teacher's weights (a teacher
    retrained under the same name), the initial-weights file of a fine-tune, the files of
    method settings ending in ``_checkpoint`` (e.g. Angular-KD's stage-1 views) and the cache
    scheme whose views the student trains on (a config hash names the teacher alone and leaves
    file locations out). A resume file of other sources is refused: resuming it would finish
    another training."""
    teacher = parts.distiller.teacher
    cache = (cfg.get("teacher") or {}).get("cache")
    files = {f"method.{k}": sha256_file(v) for k, v in sorted(cfg["method"].items())
             if k.endswith("_checkpoint") and v}
    return {"teacher_weights_sha256": weights_sha256(teacher) if teacher is not None else None,
            "init_sha256": sha256_file(init_weights) if init_weights is not None else None,
            "teacher_cache": (Path(cache).name if parts.cache_views is not None and cache
                              else None), **files}


def early_stop_due(history: list[dict[str, Any]], patience: int, after: int,
                   delta: float = 0.01) -> bool:
    """Whether the epochs after ``after`` have gone ``patience`` epochs without a validation
    top-1 (%) of at least the best so far + ``delta``; only those epochs count."""
    best, since = None, 0
    for row in history:
        if row["epoch"] <= after:
            continue
        if best is None or row["val_top1"] >= best + delta:
            best, since = row["val_top1"], 0
        else:
            since += 1
    return since >= patience


def val_best(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch of the best validation top-1 (the first on a tie) and the test top-1 there."""
    row = max(history, key=lambda r: (r["val_top1"], -r["epoch"]))
    return {"val_top1_best": row["val_top1"], "epoch_val_best": row["epoch"],
            "top1_at_val_best": row["test_top1"]}


def resume_file(paths: RunPaths, chash: str) -> ResumeFile:
    """A run's ``last.pt``: it belongs to the run config of hash ``chash``."""
    return ResumeFile(paths.last, RESUME_FORMAT, "config_hash", chash, lambda old: (
        f"a different run config (hash {str(old)[:12]} vs {chash[:12]})"))


def _eval_record(cfg: dict[str, Any], chash: str, done: RunProgress, parts: RunParts, *,
                 dev: torch.device, precision: str, step_kind: str, graph_note: str | None,
                 method_label: str | None, seeds: dict[str, Any]) -> dict[str, Any]:
    best, last = done.best, done.history[-1]
    return {
        "dataset": cfg["dataset"],
        "teacher": cfg["teacher"]["name"] if cfg["teacher"] else "none",
        "student": cfg["student"],
        "method": method_label or cfg["method"]["name"],
        "kdsrc_method": cfg["method"]["name"],
        "seed": cfg["seed"],
        "config_hash": chash,
        "top1_best": best["top1"], "top5_best": best["top5"], "epoch_best": best["epoch"],
        "top1_last": last["test_top1"], "top5_last": last["test_top5"],
        "epochs": cfg["solver"]["epochs"],
        **({"epochs_run": len(done.history),
            "stopped_early": len(done.history) < cfg["solver"]["epochs"]}
           if cfg["solver"]["early_stop_patience"] is not None else {}),
        **(val_best(done.history) if cfg["solver"]["val_fraction"] > 0 else {}),
        "wall_s": round(done.wall_s, 3),
        "samples_per_s": round(done.samples / done.train_s, 2) if done.train_s > 0 else 0.0,
        "device": device_name(dev),
        "mode": cfg["mode"],
        "precision": precision,
        "cuda_graph": "on" if step_kind == "graph" else "off",
        **({"cuda_graph_note": graph_note} if graph_note else {}),
        "extra_params": parts.distiller.extra_param_count(),
        "teacher_cache_used": parts.teacher_cache is not None,
        "teacher_cache_views": parts.cache_views,
        "switches": {k: v for k, v in cfg["method"].items() if k != "name"},
        "versions": versions(),
        "git_rev": git_rev(),
        "seeds": seeds,
        "config": cfg,
    }


@dataclass
class RunJob:
    """One run, built and resumed, ready to train: :meth:`steps` yields after every training
    step (a group interleaves several jobs' steps), :meth:`finish` writes the outputs."""

    cfg: dict[str, Any]
    chash: str
    paths: RunPaths
    parts: RunParts
    work: RunWork
    resume: ResumeFile
    done: RunProgress
    dev: torch.device
    precision: str
    step_kind: str
    graph_note: str | None
    method_label: str | None
    seeds: dict[str, Any]

    @property
    def progress(self) -> Progress:
        return self.work.progress

    def steps(self) -> Iterator[None]:
        solver = self.cfg["solver"]
        self.done = yield from epoch_steps(
            self.work, epochs=solver["epochs"], solver=solver, optimizer=self.parts.optimizer,
            loader=self.work.loader, resume=self.resume, done=self.done,
            progress=self.work.progress)

    def finish(self) -> dict[str, Any]:
        """The log, ``final.pt`` and the eval record (written last); returns the record."""
        done, paths = self.done, self.paths
        # a run resumed from a complete last.pt trains nothing; its log must still be written
        # (Snakemake deletes a job's outputs before it starts)
        _write_csv(done.history, paths.log_csv)
        record = _eval_record(self.cfg, self.chash, done, self.parts, dev=self.dev,
                              precision=self.precision, step_kind=self.step_kind,
                              graph_note=self.graph_note, method_label=self.method_label,
                              seeds=self.seeds)
        atomic_torch_save({"model": self.parts.distiller.student.state_dict(),
                           "kdsrc": {"config": self.cfg, "config_hash": self.chash,
                                     "epoch": done.history[-1]["epoch"],
                                     "top1_last": done.history[-1]["test_top1"]}}, paths.final)
        atomic_write_json(record, paths.eval_json)
        return record


def train(config: dict[str, Any], paths: RunPaths, *, device: str | torch.device = "auto",
          data_root: str | Path = "data", download: bool = False, resume: bool = True,
          progress: Progress | None = None, method_label: str | None = None,
          arrays: DatasetArrays | None = None, step_kind: str | None = None,
          init_weights: str | Path | None = None,
          stale_resume: str = "refuse") -> dict[str, Any]:
    """Train one run; return its eval record (also written to ``paths.eval_json``).

    ``stale_resume``: what to do with a ``last.pt`` of another training (another config or
    other inputs: :class:`~kdsrc.errors.StaleResumeError`): ``refuse`` (an error; the CLI) or
    ``restart`` (say so and train from the start; the pipeline, where a job reruns precisely
    because its config or inputs changed).

    ``init_weights``: a checkpoint the student starts from (a fine-tune), every tensor but its
    classifier's loaded strictly (:func:`~kdsrc.models.checkpoint.load_init_weights`); a resumed
    run continues from ``last.pt`` instead.

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
    job = prepare_run(config, paths, device=device, data_root=data_root, download=download,
                      resume=resume, progress=progress, method_label=method_label,
                      arrays=arrays, step_kind=step_kind, init_weights=init_weights,
                      stale_resume=stale_resume)
    drain(job.steps())
    return job.finish()


def prepare_run(config: dict[str, Any], paths: RunPaths, *, device: str | torch.device = "auto",
                data_root: str | Path = "data", download: bool = False, resume: bool = True,
                progress: Progress | None = None, method_label: str | None = None,
                arrays: DatasetArrays | None = None, step_kind: str | None = None,
                init_weights: str | Path | None = None,
                stale_resume: str = "refuse") -> RunJob:
    """Everything :func:`train` does before the first step (same arguments): resolve the
    config, seed, load the data, build the run, resume it. Draws from the global RNGs in the
    order :func:`train` always has."""
    check_stale_resume(stale_resume)
    cfg = resolve_run_config(config)
    chash = config_hash(cfg)
    progress = progress or Progress()
    dev = resolve_device(device)
    step_kind = _step_kind(cfg, dev, step_kind)
    _capturable(cfg, step_kind, None, progress)   # cuda_graph: on that cannot be: stop now
    autocast = autocast_for(dev, cfg["precision"])
    precision = "bf16" if autocast else "fp32"
    if cfg["precision"] == "bf16" and not autocast:
        progress.line("precision bf16 asked for, but autocast is CUDA-only here: running fp32")
    if dev.type == "cpu":
        progress.line(f"no GPU in use: running on the CPU ({torch.get_num_threads()} threads)")

    seeds = seed_everything(cfg["seed"])
    data = _run_data(cfg, arrays, data_root, download)
    solver = cfg["solver"]
    channels_last = uses_channels_last(cfg)
    mean, std = normalization(solver, data)
    looks = {"channels_last": channels_last, "mean": mean, "std": std,
             "resize": resize_spec(solver, cfg["student"])}
    pixel_augment = PixelAugment.from_solver(solver, mean)
    val_loader = None
    if solver["val_fraction"] > 0:
        data, val = data.holdout(solver["val_fraction"], cfg["seed"])
        val_loader = DeviceLoader.from_arrays(val, "test", batch_size=solver["eval_batch_size"],
                                              device=dev, **looks)
    # timm's Mixup pairs a batch with its reverse and needs an even size: like timm's training
    # loader, a mixing run drops the last partial batch
    train_loader = DeviceLoader.from_arrays(data, "train", batch_size=solver["batch_size"],
                                            device=dev, seed=cfg["seed"],
                                            drop_last=mixes(solver),
                                            pixel_augment=pixel_augment, **looks)
    test_loader = DeviceLoader.from_arrays(data, "test", batch_size=solver["eval_batch_size"],
                                           device=dev, **looks)

    # compile: auto never compiles a step that is captured or run as the capturable one
    parts = build_run(cfg, data, dev, train_loader, compile_networks=(
        False if step_kind != "ordinary" and cfg["compile"] == "auto" else None))
    distiller, optimizer = parts.distiller, parts.optimizer
    if init_weights is not None:
        kept = load_init_weights(distiller.student, init_weights)
        progress.line(f"student initialised from {init_weights} ({kept} tensors; its "
                      f"classifier starts afresh)")
    if distiller.teacher is not None:
        progress.line(f"teacher cache: {'used' if parts.teacher_cache is not None else 'not used'} "
                      f"({parts.cache_note})")
    step_kind, graph_note = _capturable(cfg, step_kind, parts, progress)

    work = RunWork(cfg, parts, train_loader, test_loader, None, autocast, paths, progress,
                   val_loader=val_loader, num_classes=data.num_classes,
                   sources=run_sources(cfg, parts, init_weights))
    last = resume_file(paths, chash)
    done = start_or_resume(last, work, "test_top1", progress, enabled=resume,
                           stale_resume=stale_resume)
    if step_kind != "ordinary":   # after a resume: its buffers are the resumed optimizer's
        work.static = StaticStep(distiller, optimizer, train_loader, epochs=solver["epochs"],
                                 autocast_dtype=torch.bfloat16 if autocast else None,
                                 capture=step_kind == "graph")
        progress.line(f"step: captured as a CUDA graph after {work.static.warmup} eager steps "
                      f"per batch shape" if work.static.capture else "step: static buffers, eager")
    return RunJob(cfg, chash, paths, parts, work, last, done, dev, precision, step_kind,
                  graph_note, method_label, seeds)


def evaluate_checkpoint(model_name: str, checkpoint: str | Path, dataset: str, *,
                        data_root: str | Path = "data", download: bool = False,
                        device: str = "auto", batch_size: int = 256,
                        solver: dict[str, Any] | None = None) -> dict[str, Any]:
    """Top-1/top-5 of a checkpoint (published format or ours) on a dataset's test split.

    ``solver``: solver keys whose evaluation transform applies (``image_size``, ``crop_pct``,
    ``normalize``, ``upsample``: a 224-px teacher is evaluated at its size and normalisation);
    checked as a
    run config's solver for this model."""
    dev = resolve_device(device)
    resolved = resolve_model_solver(model_name, solver)
    data = load_dataset(dataset, root=data_root, download=download)
    model = upsample_inputs(load_teacher(model_name, checkpoint, num_classes=data.num_classes),
                            resolved["upsample"]).to(dev)
    mean, std = normalization(resolved, data)
    loader = DeviceLoader.from_arrays(data, "test", batch_size=batch_size, device=dev, mean=mean,
                                      std=std, resize=resize_spec(resolved, model_name))
    res = evaluate(model, loader)
    return {"model": model_name, "checkpoint": str(checkpoint), "dataset": dataset,
            "top1": res["top1"], "top5": res["top5"], "loss": res["loss"],
            "num_test": int(data.test_y.numel()), "device": device_name(dev),
            "versions": versions()}
