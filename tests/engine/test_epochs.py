"""The shared epoch machinery (kdsrc.engine.epochs): one loop for every training in kdsrc."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from kdsrc.engine.epochs import ResumeFile, RunProgress, resume_from, run_epochs
from kdsrc.engine.meter import EpochTotals
from kdsrc.engine.progress import Progress
from kdsrc.errors import CheckpointError, ConfigError, NonFiniteLossError

ROOT = Path(__file__).resolve().parents[2]


class _Loader:
    """What begin_epoch needs of a loader: an epoch to set, a length."""

    def __init__(self):
        self.epochs_set = []

    def set_epoch(self, epoch):
        self.epochs_set.append(epoch)

    def __len__(self):
        return 4


class _Work:
    """A one-parameter 'model': each epoch adds the LR to it; epoch 3 may go non-finite."""

    where = "toy: "

    def __init__(self, nan_at=None):
        self.w = torch.zeros(())
        self.nan_at = nan_at
        self.logged = 0

    def train_epoch(self, epoch, lr):
        self.w += lr
        yield
        bad = (2, "loss_x", float("nan")) if epoch == self.nan_at else None
        return EpochTotals(seen=8, loss_sums={"loss_x": 8.0 * epoch}, total_sum=8.0 * epoch,
                           correct=4, first_bad=bad)

    def epoch_row(self, epoch, lr, totals):
        return {"epoch": epoch, "lr": lr, "loss_x": totals.loss_sums["loss_x"] / totals.seen,
                "test_top1": float(10 * epoch % 7)}

    def summary(self, row, done):
        return f"toy epoch {row['epoch']}"

    def epoch_logged(self, done):
        self.logged += 1

    def finished(self, done):
        return False

    def states(self):
        return {"w": self.w.clone()}

    def load_states(self, state):
        self.w = state["w"].clone()


def _resume(tmp_path, value="a"):
    return ResumeFile(tmp_path / "last.pt", "toy/1", "key", value,
                      lambda old: f"another toy ({old})")


def _run(work, resume, epochs, done=None):
    solver = {"lr": 1.0, "lr_decay_epochs": [2], "lr_decay_rate": 0.5}
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return run_epochs(work, epochs=epochs, solver=solver, optimizer=opt, loader=_Loader(),
                      resume=resume, done=done or RunProgress(), progress=Progress(enabled=False))


def test_epochs_run_log_and_save_after_each(tmp_path):
    work = _Work()
    done = _run(work, _resume(tmp_path), 3)
    assert [r["epoch"] for r in done.history] == [1, 2, 3]
    assert [r["lr"] for r in done.history] == [1.0, 1.0, 0.5]   # the solver's step schedule
    assert done.best["epoch"] == 2 and done.best["top1"] == 6.0   # 20 % 7 beats 10 % 7, 30 % 7
    assert work.logged == 3 and done.samples == 24
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["format"] == "toy/1" and state["key"] == "a" and state["epoch"] == 3
    assert float(state["w"]) == 2.5 and len(state["history"]) == 3


def test_an_interrupted_training_resumes_to_the_same_end(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = _Work()
    _run(whole, _resume(tmp_path / "a"), 3)
    first = _Work()
    _run(first, _resume(tmp_path / "b"), 2)          # "killed" after epoch 2
    again = _Work()
    done = resume_from(_resume(tmp_path / "b"), again, "test_top1", Progress(enabled=False))
    assert done.next_epoch == 3 and float(again.w) == 2.0
    done = _run(again, _resume(tmp_path / "b"), 3, done)
    assert float(again.w) == float(whole.w) and [r["epoch"] for r in done.history] == [1, 2, 3]


def test_a_non_finite_epoch_stops_before_its_state_is_saved(tmp_path):
    work = _Work(nan_at=2)
    with pytest.raises(NonFiniteLossError, match=r"^toy: non-finite loss at epoch 2, step 2 of 4: "
                                                 r"loss_x = nan"):
        _run(work, _resume(tmp_path), 3)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1


def test_foreign_and_torn_resume_files_fail_cleanly(tmp_path):
    _run(_Work(), _resume(tmp_path, "a"), 1)
    with pytest.raises(ConfigError, match=r"written by another toy \(a\); delete it or pass "
                                          r"--no-resume"):
        resume_from(_resume(tmp_path, "b"), _Work(), None, Progress(enabled=False))
    with pytest.raises(CheckpointError, match="is not a kdsrc resume file"):
        ResumeFile(tmp_path / "last.pt", "other/1", "key", "a", str).load()
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read resume file"):
        _resume(tmp_path).load()


def test_nothing_to_train_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="solver.epochs: nothing was trained"):
        _run(_Work(), _resume(tmp_path), 0)


def test_every_training_loop_is_the_shared_one():
    """No second epoch loop: the only ``for epoch in range(...)`` in kdsrc is run_epochs'."""
    loops = []
    for path in sorted((ROOT / "kdsrc").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.For) and isinstance(node.target, ast.Name)
                    and node.target.id == "epoch"):
                loops.append(path.relative_to(ROOT).as_posix())
    assert loops == ["kdsrc/engine/epochs.py"]
