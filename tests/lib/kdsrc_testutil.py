"""Helpers shared by test modules (tests/conftest.py puts this folder on sys.path)."""

import importlib.util
import sys

#: how tests start the CLI in a child process: the running interpreter, no PATH assumptions
KDSRC = [sys.executable, "-m", "kdsrc"]


def step_losses():
    """A progress sink that records every training step's total loss (the engine reports each
    one to ``step()``) and every line it prints."""
    from kdsrc.engine import Progress

    class StepLosses(Progress):
        def __init__(self):
            super().__init__(enabled=False)
            self.losses: list[float] = []
            self.lines: list[str] = []

        def step(self, epoch, epochs, step, steps, loss):
            self.losses.append(loss)

        def line(self, text):
            self.lines.append(text)

    return StepLosses()


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
