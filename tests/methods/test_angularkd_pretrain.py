"""Angular-KD stage 1 (``kdsrc pretrain-views``) and distillation from the frozen pretrained views."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess

import pytest
import torch
from kdsrc_testutil import KDSRC, digits_setup

from kdsrc.cli import main
from kdsrc.distillers.views import VIEWS_FORMAT, load_views_file
from kdsrc.engine import Progress, RunPaths, train
from kdsrc.errors import ConfigError, StaleResumeError

QUIET = Progress(enabled=False)
SETS = ["--set", "base=kd", "--set", "pretrain_epochs=1", "--set", "pretrain_milestones=[]"]


@pytest.fixture(scope="module")
def views_file(tmp_path_factory, digits_teacher):
    out = tmp_path_factory.mktemp("views") / "views.pt"
    code = main(["pretrain-views", "--teacher", "resnet8", "--teacher-checkpoint",
                 str(digits_teacher), "--dataset", "digits", "--out", str(out), "--device", "cpu",
                 "--quiet", *SETS])
    assert code == 0
    return out


def _config(digits_teacher, views_file, **method):
    return {"dataset": "digits", "student": "resnet8",
            "teacher": {"name": "resnet8", "checkpoint": str(digits_teacher)},
            "method": {"name": "angularkd", "base": "kd", "views_checkpoint": str(views_file),
                       "pretrain_epochs": 1, "pretrain_milestones": [], **method},
            "solver": {"epochs": 1}, "seed": 0}


def test_cli_help():
    out = subprocess.run([*KDSRC, "pretrain-views", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0
    for flag in ("--teacher", "--teacher-checkpoint", "--dataset", "--out", "--set"):
        assert flag in out.stdout


def test_pretrain_writes_views_and_meta(views_file, capsys):
    state, meta = load_views_file(views_file)
    assert meta["format"] == VIEWS_FORMAT and meta["teacher"] == "resnet8"
    assert (meta["num_views"], meta["dim"], meta["num_classes"]) == (5, 64, 10)
    assert meta["pretrain"] == {"pretrain_epochs": 1, "pretrain_lr": 0.1, "pretrain_milestones": []}
    assert meta["recipe"]["angles"] == "official" and meta["recipe"]["ensemble_norm"] == "l2"
    assert len(meta["history"]) == 1
    row = meta["history"][0]
    for key in ("loss_view_ce", "loss_feat_inter", "loss_feat_intra", "loss_logit_inter",
                "loss_logit_intra", "train_ensemble_top1", "train_view_pair_angle_deg",
                "test_ensemble_top1", "test_teacher_top1", "test_view1_top1"):
        assert key in row, key
    assert 0.0 <= meta["test"]["ensemble_top1"] <= 100.0
    assert "generators.0.weight" in state and "bn.4.running_mean" in state
    assert not views_file.with_name(views_file.name + ".partial").exists()


def test_distillation_from_frozen_pretrained_views(tmp_path, digits_teacher, views_file):
    before, _ = load_views_file(views_file)
    paths = RunPaths.in_dir(tmp_path)
    # official preset on the KD base: views pretrained + frozen (in train mode, as the reference)
    record = train(_config(digits_teacher, views_file), paths, device="cpu", progress=QUIET)
    after = {k[len("views."):]: v for k, v in
             torch.load(paths.last, weights_only=True)["distiller"].items() if k.startswith("views.")}
    params = [k for k in before if not k.startswith("bn.") or k.endswith(("weight", "bias"))]
    for k in params:
        assert torch.equal(before[k], after[k]), f"frozen view weight {k} changed"
    # train mode: the BN running statistics still move, as in the reference
    assert not torch.equal(before["bn.0.running_mean"], after["bn.0.running_mean"])
    assert record["switches"]["views_checkpoint"] == str(views_file)
    with open(paths.log_csv) as f:
        row = next(csv.DictReader(f))
    assert float(row["loss_view_ce"]) > 0 and "ensemble_top1" in row
    # only the student is optimised
    n_opt = len(torch.load(paths.last, weights_only=True)["optimizer"]["param_groups"][0]["params"])
    from kdsrc.models import build_model
    assert n_opt == len(list(build_model("resnet8", num_classes=10).parameters()))
    # the resume file records the views file by content: other views under the same setting
    # (stage 1 rerun) are refused, a copy of the file resumes
    from kdsrc.teachers import sha256_file

    last = torch.load(paths.last, weights_only=True)
    assert last["sources"]["method.views_checkpoint"] == sha256_file(views_file)
    same = tmp_path / "same_views.pt"
    shutil.copy(views_file, same)
    train(_config(digits_teacher, same), paths, device="cpu", progress=QUIET)
    raw = torch.load(views_file, weights_only=True)
    raw["views"]["generators.0.weight"] = raw["views"]["generators.0.weight"] + 1
    other = tmp_path / "other_views.pt"
    torch.save(raw, other)
    with pytest.raises(ConfigError, match=r"another file of method.views_checkpoint \(sha256\)"):
        train(_config(digits_teacher, other), paths, device="cpu", progress=QUIET)


def test_views_file_must_match_the_run(tmp_path, digits_teacher, views_file):
    paths = RunPaths.in_dir(tmp_path / "a")
    with pytest.raises(ConfigError, match="angles"):
        train(_config(digits_teacher, views_file, angles="exact"), paths, device="cpu",
              progress=QUIET)
    with pytest.raises(ConfigError, match="pretrain_epochs"):
        train(_config(digits_teacher, views_file, pretrain_epochs=30), paths, device="cpu",
              progress=QUIET)
    other = tmp_path / "other_teacher.pt"
    sd = torch.load(digits_teacher, weights_only=True)
    sd["model"] = {k: (v + 0.01 if v.is_floating_point() else v) for k, v in sd["model"].items()}
    torch.save(sd, other)
    cfg = _config(digits_teacher, views_file)
    cfg["teacher"]["checkpoint"] = str(other)
    with pytest.raises(ConfigError, match="another teacher"):
        train(cfg, paths, device="cpu", progress=QUIET)


def test_cli_errors_are_one_line(tmp_path, capsys, digits_teacher):
    code = main(["pretrain-views", "--teacher", "resnet8", "--teacher-checkpoint",
                 str(digits_teacher), "--dataset", "digits", "--out", str(tmp_path / "v.pt"),
                 "--device", "cpu", "--quiet", "--set", "base=kd", "--set", "angles=cosine"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("kdsrc: error: method.angles")


def test_frozen_views_mode_eval(digits_teacher, views_file):
    from kdsrc.distillers import build_distiller

    student, teacher, _, ctx = digits_setup(digits_teacher)
    settings = {"base": "kd", "views_checkpoint": str(views_file), "pretrain_epochs": 1,
                "pretrain_milestones": []}
    d = build_distiller("angularkd", student, teacher, {**settings, "frozen_views_mode": "eval"}, ctx)
    d.train()
    assert d.student.training and not d.views.training
    assert all(not p.requires_grad for p in d.views.parameters())
    assert [id(p) for p in d.trainable_parameters()] == [id(p) for p in student.parameters()]
    d2 = build_distiller("angularkd", student, teacher, settings, ctx)
    d2.train()
    assert d2.views.training                      # the reference keeps frozen views in train mode
    # finetune: start from the file, keep training jointly (README "Example 2" on the CRD path)
    d3 = build_distiller("angularkd", student, teacher, {**settings, "views": "finetune"}, ctx)
    state, _ = load_views_file(views_file)
    assert torch.equal(d3.views.generators[0].weight.detach(), state["generators.0.weight"])
    assert all(p.requires_grad for p in d3.views.parameters())
    assert len(d3.trainable_parameters()) == len(list(student.parameters())) + 30


@pytest.mark.slow   # four stage-1 epochs
def test_pretraining_resumes_to_the_same_views(tmp_path, digits_teacher):
    from kdsrc.distillers.angularkd_stage1 import pretrain_views

    settings = {"base": "kd", "pretrain_epochs": 2, "pretrain_milestones": [1], "num_views": 2}
    kw = dict(device="cpu", progress=QUIET)
    full = tmp_path / "full.pt"
    pretrain_views("resnet8", digits_teacher, "digits", settings, full, **kw)

    class Kill(Progress):
        def line(self, text):
            if text.startswith("views epoch 2/2"):
                raise KeyboardInterrupt

    cut = tmp_path / "cut.pt"
    with pytest.raises(KeyboardInterrupt):
        pretrain_views("resnet8", digits_teacher, "digits", settings, cut, device="cpu",
                       progress=Kill(enabled=False))
    assert cut.with_name("cut.pt.partial").exists() and not cut.exists()
    stale = tmp_path / "stale.pt"
    shutil.copy(cut.with_name("cut.pt.partial"), stale.with_name("stale.pt.partial"))
    other = {**settings, "pretrain_lr": 0.05}
    with pytest.raises(StaleResumeError, match="another pretraining"):
        pretrain_views("resnet8", digits_teacher, "digits", other, cut, **kw)
    meta = pretrain_views("resnet8", digits_teacher, "digits", settings, cut, **kw)
    a, _ = load_views_file(full)
    b, _ = load_views_file(cut)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["epoch"] for r in meta["history"]] == [1, 2]
    assert not cut.with_name("cut.pt.partial").exists()
    # the workflow's choice: the partial file of other settings is replaced, training restarts
    text = io.StringIO()
    meta = pretrain_views("resnet8", digits_teacher, "digits", other, stale, device="cpu",
                          progress=Progress(text), stale_resume="restart")
    assert "not resuming: " in text.getvalue() and "another pretraining" in text.getvalue()
    assert [r["epoch"] for r in meta["history"]] == [1, 2] and meta["pretrain"]["pretrain_lr"] == 0.05


def test_a_non_finite_loss_stops_stage_1_at_the_end_of_its_epoch(tmp_path, digits_teacher,
                                                                  monkeypatch):
    """The views' losses add up on the device (no read per step); a NaN is found when the
    epoch ends, named by step and term, before that epoch's resume file or any views file."""
    from kdsrc.distillers import angularkd_stage1
    from kdsrc.distillers.views import AngularRecipe
    from kdsrc.errors import NonFiniteLossError

    real = AngularRecipe.aux_losses
    calls = {"n": 0}

    def poisoned(self, *a, **k):
        out = real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 3:
            out["loss_feat_intra"] = out["loss_feat_intra"] * float("nan")
        return out

    monkeypatch.setattr(AngularRecipe, "aux_losses", poisoned)
    out = tmp_path / "views.pt"
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 3 of .*: loss_feat_intra"):
        angularkd_stage1.pretrain_views(
            "resnet8", digits_teacher, "digits",
            {"base": "kd", "pretrain_epochs": 1, "pretrain_milestones": [], "num_views": 2},
            out, device="cpu", progress=QUIET)
    assert calls["n"] > 3                      # the epoch ran on: no read per step
    assert not any(tmp_path.iterdir())
