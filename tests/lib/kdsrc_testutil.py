"""Helpers shared by test modules (tests/conftest.py puts this folder on sys.path)."""

import contextlib
import importlib.util
import sys

#: how tests start the CLI in a child process: the running interpreter, no PATH assumptions
KDSRC = [sys.executable, "-m", "kdsrc"]


#: the session's digits teacher (tests/conftest.py ``digits_teacher``): resnet8, vanilla. Its
#: length is set by the cross-CPU spread (benchmarks/cpu_spread.py, README "Tests on any CPU")
DIGITS_TEACHER = {"dataset": "digits", "student": "resnet8", "method": "vanilla",
                  "solver": {"epochs": 8, "lr_decay_epochs": [6]}, "seed": 0}

#: solver keys that hold the learning rate at 0 from the first epoch (the schedule decays at
#: every epoch > 0 by a factor 0): the negative control of the learning-outcome assertions
LR_ZERO = {"lr_decay_epochs": [0], "lr_decay_rate": 0.0}


def train_digits_teacher(out_dir, *, seed: int = 0, solver=None):
    """Train :data:`DIGITS_TEACHER` (``seed`` and ``solver`` keys replaced) quietly on the CPU into
    ``out_dir`` (final.pt, eval.json, log.csv); return the eval record."""
    from kdsrc.engine import Progress, RunPaths, train

    cfg = {**DIGITS_TEACHER, "seed": seed,
           "solver": {**DIGITS_TEACHER["solver"], **(solver or {})}}
    return train(cfg, RunPaths.in_dir(out_dir), device="cpu", progress=Progress(enabled=False))


#: accuracy floor (%) of the digits teacher and of what it scores on training batches: measured
#: 93.9-98.4 under every kernel path and thread count (benchmarks/results/cpu-spread-*.json),
#: chance 10%, an untrained or learning-rate-0 network ~10% (tests/engine/test_learning_checks.py)
TEACHER_FLOOR = 80.0
#: the quick plan's floors (tests/pipeline/test_quick_dvc.py): its teacher (97.2-98.6% on every
#: kernel path), its weakest student and its lower quartile (50.7 and 73.3 on the AVX2 path)
QUICK_TEACHER_FLOOR = 93.0
QUICK_STUDENT_FLOOR = 20.0
QUICK_QUARTILE_FLOOR = 40.0
#: how far a loss must fall over a 2-epoch method test: measured falls 2.2-2.7 on every kernel
#: path; at learning rate 0 the same losses move by at most 0.13 (augmentation, batch order)
DROP_MARGIN = 0.5


def assert_learned(top1: float, floor: float, what: str = "top-1") -> None:
    """A short run learned: its accuracy (%) reaches ``floor``, set far below what any CPU
    measured (benchmarks/results/cpu-spread-*.json) and far above chance. The negative
    controls (tests/engine/test_learning_checks.py) show an untrained network and a run at
    learning rate 0 fail it."""
    assert top1 >= floor, f"{what} {top1:.2f}% is below {floor}%: the run did not learn"


def assert_decreased(first: float, last: float, margin: float, what: str = "loss") -> None:
    """A loss fell by at least ``margin``: several times what it moves at learning rate 0 (batch
    order and augmentation alone), so that noise cannot pass it."""
    assert first - last >= margin, (f"{what} fell {first - last:.4g} ({first:.4g} -> {last:.4g}), "
                                    f"less than the required {margin:.4g}")


@contextlib.contextmanager
def digits_head(n_train: int, n_test: int):
    """Within the block, the engine trains on the first ``n_train`` / ``n_test`` digits images
    (a smaller run of the same data, to keep a test fast)."""
    import kdsrc.engine.loop as loop
    from kdsrc.data import load_dataset

    part = load_dataset("digits").head(n_train, n_test)
    real = loop.load_dataset
    loop.load_dataset = lambda *a, **k: part
    try:
        yield part
    finally:
        loop.load_dataset = real


def step_losses():
    """A progress sink that records every training step's total loss (the engine reports each
    one to ``step()``) and every line it prints."""
    from kdsrc.engine.progress import StepRecorder

    return StepRecorder()


def digits_setup(teacher_checkpoint, *, epochs: int = 1):
    """``(student, teacher, loader, ctx)`` for one-batch method checks: a fresh resnet8 student,
    the session's digits teacher (resnet8), the digits training loader (batch 32, seed 0) and the
    DistillContext the engine would give a method."""
    import torch

    from kdsrc.data import DeviceLoader, load_dataset
    from kdsrc.distillers import DistillContext
    from kdsrc.models import build_model, feature_dims, load_teacher

    data = load_dataset("digits")
    teacher = load_teacher("resnet8", teacher_checkpoint, num_classes=10)
    student = build_model("resnet8", num_classes=10)
    loader = DeviceLoader.from_arrays(data, "train", batch_size=32, seed=0)
    ctx = DistillContext(num_classes=10, num_train=data.num_train, epochs=epochs,
                         device=torch.device("cpu"), train_labels=loader.labels,
                         train_images=loader.images, mean=data.mean, std=data.std,
                         pad=data.pad, flip=data.flip,
                         student_dims=feature_dims(student), teacher_dims=feature_dims(teacher))
    return student, teacher, loader, ctx


def train_on_digits(out_dir, teacher_checkpoint, method, *, solver=None, seed: int = 0):
    """Train resnet8 from the digits teacher (resnet8) for 2 epochs (``solver`` adds keys) on the
    CPU, quietly; return the eval record and the per-epoch log rows."""
    import csv

    from kdsrc.engine import Progress, RunPaths, train

    paths = RunPaths.in_dir(out_dir)
    record = train({"dataset": "digits", "student": "resnet8", "method": method,
                    "teacher": {"name": "resnet8", "checkpoint": str(teacher_checkpoint)},
                    "solver": {"epochs": 2, **(solver or {})}, "seed": seed},
                   paths, device="cpu", progress=Progress(enabled=False))
    with open(paths.log_csv) as f:
        return record, list(csv.DictReader(f))


def load_script(path, name: str):
    """Import a script that is not in a package (benchmarks/*.py) as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
