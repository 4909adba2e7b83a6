"""Angular-KD wrapper: preset resolution, the teacher hook, and the KD plug-in end to end (digits)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kdsrc.config import resolve_run_config
from kdsrc.distillers import METHODS, build_distiller
from kdsrc.distillers.angularkd import (AUX_TERMS, BASES, PLUGIN_BASE_SETTINGS, AngularKD,
                                       preset_switches)
from kdsrc.engine import RunPaths
from kdsrc.errors import ConfigError
from kdsrc.losses import angular as A
from kdsrc.models import build_model
from kdsrc_testutil import (DROP_MARGIN, TEACHER_FLOOR, assert_decreased, assert_learned,
                            digits_setup, train_on_digits)

REGISTERED_BASES = [b for b in BASES if b in METHODS]
VIEW_COLUMNS = [f"view{i}_top1" for i in range(1, 6)] + [
    "ensemble_top1", "teacher_top1", "view_pair_angle_deg", "view_teacher_angle_deg"]


# -- preset resolution --------------------------------------------------------------------------
@pytest.mark.parametrize("base", REGISTERED_BASES)
def test_presets_resolve_per_base(base):
    off = AngularKD.finalize_settings({"base": base})        # preset official by default
    assert off["preset"] == "official"
    assert off["views"] == ("joint" if base in ("crd", "dkd") else "pretrained")
    assert (off["angles"], off["ensemble_norm"], off["teacher_input_aug"]) == ("official", "l2", "off")
    assert off["ensemble_temperature"] == ("loss" if base == "mlkd" else 4.0)
    clean = AngularKD.finalize_settings({"base": base, "preset": "clean"})
    assert (clean["views"], clean["angles"], clean["ensemble_norm"], clean["ensemble_temperature"]) \
        == ("joint", "exact", "l1", "loss")
    none = AngularKD.finalize_settings({"base": base, "preset": "none"})
    assert {k: none[k] for k in preset_switches("none", base)} == preset_switches("none", base)
    base_defaults = METHODS[base].defaults
    for preset in ("official", "clean"):
        for key, value in PLUGIN_BASE_SETTINGS[preset].get(base, {}).items():
            assert key in base_defaults, f"{base} lost setting {key} that preset {preset} sets"
            resolved = AngularKD.finalize_settings({"base": base, "preset": preset})
            assert resolved["base_settings"][key] == value
    # the whole base block is resolved (visible in the record), and resolution is idempotent
    assert set(off["base_settings"]) == set(base_defaults)
    assert AngularKD.finalize_settings(off) == off
    assert AngularKD.finalize_settings(clean) == clean


def test_explicit_settings_win_over_the_preset():
    s = AngularKD.finalize_settings({"base": "kd", "preset": "clean", "angles": "official",
                                     "ensemble_temperature": 2.0, "teacher_input_aug": True,
                                     "base_settings": {"kd_weight": 0.5}})
    assert (s["angles"], s["ensemble_norm"], s["ensemble_temperature"]) == ("official", "l1", 2.0)
    assert s["teacher_input_aug"] == "on"
    assert s["base_settings"]["kd_weight"] == 0.5
    # the KD plug-in as the reference codes it: 0.1·CE + 1.0·T²KL (KD_WEIGHT 0.9 not applied)
    kd = AngularKD.finalize_settings({"base": "kd"})["base_settings"]
    assert (kd["ce_weight"], kd["kd_weight"], kd["temperature"]) == (0.1, 1.0, 4.0)
    assert AngularKD.finalize_settings({"base": "kd", "preset": "none"})["base_settings"][
        "kd_weight"] == 0.9
    assert AngularKD.finalize_settings({"base": "kd", "teacher_input_aug": False})[
        "teacher_input_aug"] == "off"
    assert AngularKD.finalize_settings({"base": "kd", "base_settings": {"temperature": 2.0}})[
        "angular_temperature"] == 2.0


@pytest.mark.parametrize("settings, needle", [
    ({"base": "vanilla"}, "method.base"),
    ({"base": "kd", "preset": "paper"}, "method.preset"),
    ({"base": "kd", "views": "frozen"}, "method.views"),
    ({"base": "kd", "angles": "cosine"}, "method.angles"),
    ({"base": "kd", "ensemble_norm": "l3"}, "method.ensemble_norm"),
    ({"base": "kd", "teacher_input_aug": "maybe"}, "method.teacher_input_aug"),
    ({"base": "kd", "ensemble_temperature": "four"}, "method.ensemble_temperature"),
    ({"base": "kd", "num_views": 7}, "method.num_views"),
    ({"base": "kd", "kappa": 0.0}, "method.kappa"),
    ({"base": "kd", "base_settings": {"beta": 8.0}}, "method.base_settings"),
    ({"base": "kd", "bogus": 1}, "method.bogus"),
])
def test_bad_settings_are_config_errors(settings, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        AngularKD.finalize_settings(settings)


def test_run_config_resolution_and_plan_hook():
    cfg = resolve_run_config({"dataset": "digits", "student": "resnet8",
                              "teacher": {"name": "resnet8", "checkpoint": "t.pt"},
                              "method": {"name": "angularkd", "base": "kd"}})
    method = {k: v for k, v in cfg["method"].items() if k != "name"}
    assert AngularKD.needs_pretrained_views(method)             # official preset on kd
    assert not AngularKD.needs_pretrained_views({**method, "views": "joint"})
    # what the record's `switches` holds resolves to the concrete values, whether or not the
    # config resolution already called finalize_settings
    assert AngularKD.finalize_settings(method)["views"] == "pretrained"
    with pytest.raises(ConfigError, match=r"method\.base_settings"):
        AngularKD.finalize_settings({**method, "base_settings": {"kd_weight": "x"}})


# -- the wrapper on one batch -------------------------------------------------------------------
def _build(digits_teacher, **settings):
    student, teacher, loader, ctx = digits_setup(digits_teacher, epochs=2)
    torch.manual_seed(0)
    d = build_distiller("angularkd", student, teacher, settings, ctx)
    loader.set_epoch(1)
    return d, next(iter(loader)), teacher


def test_teacher_hook_returns_the_ensemble(digits_teacher):
    d, batch, teacher = _build(digits_teacher, base="kd", views="joint", ensemble_norm="l1")
    d.train()
    assert d.base.teacher_transform == d._augment
    d._pending = None
    t = d.base.teacher_outputs(batch.x, batch.y, batch)
    aux = d._pending
    assert set(aux) == set(AUX_TERMS)
    with torch.no_grad():
        logits_t, feats = teacher(batch.x)
    assert torch.equal(t.logits, logits_t)
    q = t.probs(1.0)                                  # official ensemble T: 4.0 whatever is asked
    assert torch.allclose(q.sum(1), torch.ones(32), atol=1e-5)     # l1: a distribution
    assert torch.allclose(q, t.probs(4.0))
    assert not torch.allclose(q, torch.softmax(logits_t / 4, 1), atol=1e-3)
    assert t.feats["pooled_feat"].shape == feats["pooled_feat"].shape
    assert not torch.allclose(t.feats["pooled_feat"], feats["pooled_feat"])
    assert t.feats["preact_feats"][0] is not None                   # other maps unchanged
    for a, b in zip(t.feats["feats"], feats["feats"]):
        assert torch.equal(a, b)
    # gradients of the base's targets and of L_aux reach the views (joint training)
    (q.sum() + t.feats["pooled_feat"].sum() + sum(aux.values())).backward()
    assert all(p.grad is not None for p in d.views.parameters())
    # the student is held once in the state dict (by the base)
    keys = d.state_dict().keys()
    assert any(k.startswith("base.student.") for k in keys)
    assert not any(k.startswith("student.") for k in keys)
    assert any(k.startswith("views.generators.0") for k in keys)


def test_loss_temperature_ensemble(digits_teacher):
    d, batch, _ = _build(digits_teacher, base="kd", views="joint", ensemble_temperature="loss")
    d.train()
    d._pending = None
    t = d.base.teacher_outputs(batch.x, batch.y, batch)
    assert not torch.allclose(t.probs(1.0), t.probs(4.0))
    w = A.ensemble_weights(5, norm="l2")
    assert t.probs(2.0).sum(1).mean().item() == pytest.approx(w.sum().item(), rel=1e-5)


def test_teacher_input_augmentation(digits_teacher):
    d, batch, teacher = _build(digits_teacher, base="kd", views="joint", teacher_input_aug="on")
    d.train()
    d._pending = None
    torch.manual_seed(3)
    t = d.base.teacher_outputs(batch.x, batch.y, batch)
    with torch.no_grad():
        plain, _ = teacher(batch.x)
    assert t.logits.shape == plain.shape and not torch.allclose(t.logits, plain)
    assert d.base.cache_needs is None           # the augmentation needs the live teacher


def test_pretrained_views_need_a_checkpoint(digits_teacher, tmp_path):
    with pytest.raises(ConfigError, match="views_checkpoint"):
        _build(digits_teacher, base="kd")                # official preset: pretrained views
    with pytest.raises(ConfigError, match="does not exist"):
        _build(digits_teacher, base="kd", views_checkpoint=str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match="views_checkpoint"):
        _build(digits_teacher, base="kd", views="joint", views_checkpoint=str(tmp_path / "x.pt"))


# -- end to end -------------------------------------------------------------------------------
def test_kd_plugin_trains_two_epochs_with_every_term_logged(tmp_path, digits_teacher):
    record, rows = train_on_digits(tmp_path, digits_teacher,
                                   {"name": "angularkd", "base": "kd", "views": "joint"}, seed=1)
    paths = RunPaths.in_dir(tmp_path)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    terms = ["loss_ce", "loss_kd", *AUX_TERMS]
    for r in rows:
        for col in terms + VIEW_COLUMNS:
            assert math.isfinite(float(r[col])), col
        assert math.isclose(sum(float(r[c]) for c in terms), float(r["train_loss"]), rel_tol=1e-4)
        assert 0.0 < float(r["view_pair_angle_deg"]) < 180.0
        assert 0.0 <= float(r["ensemble_top1"]) <= 100.0
    # the teacher (trained on digits) is far better than chance on the training batches
    assert_learned(float(rows[-1]["teacher_top1"]), TEACHER_FLOOR, "teacher top-1 on batches")
    # views are trained jointly: they learn to classify (view CE falls by far more than the
    # ~0.01 it moves at learning rate 0)
    assert_decreased(float(rows[0]["loss_view_ce"]), float(rows[-1]["loss_view_ce"]),
                     DROP_MARGIN, "view CE")
    views_params = 5 * ((64 * 64 + 64) + 2 * 64 + (64 * 10 + 10))
    assert record["extra_params"] == views_params
    assert record["switches"]["base"] == "kd" and record["switches"]["views"] == "joint"
    assert AngularKD.finalize_settings(record["switches"])["angles"] == "official"
    state = torch.load(paths.last, weights_only=True)
    # the optimizer holds the student's and the 30 view tensors (joint training)
    n_student = len(list(build_model("resnet8", num_classes=10).parameters()))
    assert len(state["optimizer"]["param_groups"][0]["params"]) == n_student + 30
    assert json.loads(paths.eval_json.read_text())["method"] == "angularkd"
