"""TeKAP: perturbation statistics, the number of KL/CRD terms per variant, memory quirk, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import kdsrc.distillers.tekap as tekap_mod
from kdsrc.distillers import DistillContext, StepState, build_distiller
from kdsrc.errors import ConfigError
from kdsrc.losses.crd import memory_update
from kdsrc.losses.kd import kd_loss_from_probs
from kdsrc.losses.tekap import perturb, perturbed_probs, tekap_logit_loss
from kdsrc.models import build_model, feature_dims
from kdsrc_testutil import train_on_digits


def test_perturbation_statistics():
    torch.manual_seed(0)
    x = torch.full((400, 500), 5.0)
    p = perturb(x, keep=0.9, noise_scale=0.1)
    assert abs(float(p.mean()) - 4.5) < 1e-3 and abs(float(p.std()) - 0.1) < 1e-3
    p = perturb(x, keep=0.9, noise_scale=0.01)  # official feature noise
    assert abs(float(p.mean()) - 4.5) < 1e-4 and abs(float(p.std()) - 0.01) < 1e-4
    # fresh noise every call
    assert not torch.equal(perturb(x), perturb(x))


def test_perturbed_probs_equal_softmax_of_perturbed_logits():
    """softmax(0.9·log q + 0.1·ε/T) with q = softmax(z/T) is softmax((0.9 z + 0.1 ε)/T)."""
    z = torch.randn(6, 100) * 5
    for T in (1.0, 4.0):
        g = torch.Generator().manual_seed(3)
        got = perturbed_probs(F.softmax(z / T, 1), temperature=T, generator=g)
        eps = torch.randn(6, 100, generator=torch.Generator().manual_seed(3))
        want = F.softmax((0.9 * z + 0.1 * eps) / T, dim=1)
        assert torch.allclose(got, want, atol=1e-6), T


def test_logit_loss_formula():
    s, z = torch.randn(8, 10), torch.randn(8, 10) * 3
    q = F.softmax(z / 4, 1)
    noisy = [F.softmax((0.9 * z + 0.1 * torch.randn(8, 10)) / 4, 1) for _ in range(3)]
    log_p = F.log_softmax(s / 4, 1)

    def kl(t):
        return F.kl_div(log_p, t, reduction="sum") * 16 / 8

    want = kl(q) + 0.8 * (kl(noisy[0]) + kl(noisy[1]) + kl(noisy[2]))
    assert torch.allclose(tekap_logit_loss(s, q, noisy), want, rtol=1e-5)


def _labels(n=120, c=4):
    return torch.arange(n) % c


class _Batch:
    def __init__(self, index):
        self.index = index


def _build(**settings):
    torch.manual_seed(0)
    labels = _labels()
    student, teacher = build_model("resnet8", num_classes=4), build_model("resnet8", num_classes=4)
    ctx = DistillContext(num_classes=4, num_train=len(labels), epochs=240, device=torch.device("cpu"),
                         train_labels=labels, student_dims=feature_dims(student),
                         teacher_dims=feature_dims(teacher))
    settings.setdefault("nce_k", 32)
    return build_distiller("tekap", student, teacher, settings, ctx)


def _step(d, epoch=30):
    torch.manual_seed(1)
    x, index = torch.randn(4, 3, 32, 32), torch.tensor([0, 5, 10, 15])
    return d.forward_train(x, _labels()[index], _Batch(index), StepState(epoch, 1, 240))


@pytest.mark.parametrize("variant, level, n_kl, n_scores, n_updates, keys", [
    ("official", "both", 4, 2, 2, {"loss_ce", "loss_kd", "loss_kd_noisy", "loss_crd", "loss_crd_noisy"}),
    ("official", "logit", 4, 0, 0, {"loss_ce", "loss_kd", "loss_kd_noisy"}),
    ("official", "feature", 0, 2, 2, {"loss_ce", "loss_crd", "loss_crd_noisy"}),
    ("angularkd", "both", 4, 4, 4, {"loss_ce", "loss_kd", "loss_kd_noisy", "loss_crd", "loss_crd_noisy"}),
    ("angularkd", "feature", 0, 4, 4, {"loss_ce", "loss_crd", "loss_crd_noisy"}),
])
def test_number_of_terms_matches_the_variant(monkeypatch, variant, level, n_kl, n_scores,
                                              n_updates, keys):
    d = _build(variant=variant, level=level)
    calls = {"kl": 0, "score": 0, "update": 0}

    def counting(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapper

    monkeypatch.setattr(tekap_mod, "kd_loss_from_probs", counting("kl", kd_loss_from_probs))
    if d.contrast is not None:
        monkeypatch.setattr(d.contrast, "score", counting("score", d.contrast.score))
        monkeypatch.setattr(d.contrast, "update", counting("update", d.contrast.update))
    _, losses = _step(d)
    assert set(losses) == keys
    assert calls == {"kl": n_kl, "score": n_scores, "update": n_updates}
    sum(losses.values()).backward()  # several scorings per step: no in-place clash (Z, banks)
    assert (d.contrast is None) == (level == "logit")
    assert d.extra_param_count() == (0 if level == "logit" else
                                     2 * (64 * 128 + 128) + 2 * 120 * 128)


@pytest.mark.parametrize("variant, feat_copies", [("official", 1), ("angularkd", 3)])
def test_noise_free_copies_reduce_to_weighted_clean_terms(variant, feat_copies):
    """keep 1, noise 0, memory not sequential: every perturbed term equals the clean one, so the
    noisy columns are (copies × noisy weight) × the clean ones."""
    d = _build(variant=variant, keep=1.0, logit_noise=0.0, feat_noise=0.0,
               sequential_memory=False)
    _, losses = _step(d)
    assert torch.allclose(losses["loss_kd_noisy"], 3 * 0.8 * losses["loss_kd"], rtol=1e-5)
    assert torch.allclose(losses["loss_crd_noisy"], feat_copies * losses["loss_crd"], rtol=1e-5)


def test_official_reuses_the_student_anchored_term():
    """Sequential memory: the noisy call's teacher-anchored term sees the updated memory, while
    its student-anchored term is the clean call's (counted twice); with noise 0 and keep 1 the
    noisy CRD therefore differs from the clean one only in the teacher-anchored term."""
    d = _build(variant="official", level="feature", keep=1.0, feat_noise=0.0)
    head = d.contrast
    captured = []
    orig_nce = head.nce

    def nce(scores):
        out = orig_nce(scores)
        captured.append(out)
        return out

    head.nce = nce
    _, losses = _step(d)
    # official: nce called for s1, t1, then only t2 (s-term reused)
    assert len(captured) == 3
    s1, t1, t2 = captured
    assert torch.allclose(losses["loss_crd_noisy"], 0.8 * (s1 + t2), rtol=1e-6)
    assert not torch.allclose(t1, t2)  # memory was updated between the calls


@pytest.mark.parametrize("variant, sequential, n_student_updates", [
    ("official", True, 2), ("angularkd", True, 4), ("official", False, 1), ("angularkd", False, 1)])
def test_memory_update_count(variant, sequential, n_student_updates):
    d = _build(variant=variant, level="feature", sequential_memory=sequential)
    index = torch.tensor([0, 5, 10, 15])
    before = d.contrast.memory_s[index].clone()
    torch.manual_seed(1)
    x = torch.randn(4, 3, 32, 32)
    d.forward_train(x, _labels()[index], _Batch(index), StepState(1, 1, 240))
    with torch.no_grad():
        v_s = d.contrast.embed_s(d.student(x)[1]["pooled_feat"])
    want = before
    for _ in range(n_student_updates):
        want = memory_update(want, v_s)
    assert torch.allclose(d.contrast.memory_s[index], want, atol=1e-5)


def test_variant_recipes_and_bad_settings():
    off, ak = _build(variant="official"), _build(variant="angularkd")
    assert (off.logit_copies, off.feat_copies, off.feat_noise) == (3, 1, 0.01)
    assert (ak.logit_copies, ak.feat_copies, ak.feat_noise) == (3, 3, 0.1)
    assert _build(variant="official", feat_copies=2, feat_noise=0.5).feat_copies == 2
    for key, value in (("variant", "paper"), ("level", "pixels"), ("noisy_loss", "mse"),
                       ("feat_copies", -3)):
        with pytest.raises(ConfigError, match=rf"method\.{key}"):
            _build(**{key: value})


def test_dkd_noisy_terms_ramp():
    d = _build(variant="angularkd", level="logit", noisy_loss="dkd", logit_noisy_weight=1.0)
    with torch.no_grad():
        _, a = _step(d, epoch=2)
        _, b = _step(d, epoch=20)
    assert set(a) == {"loss_ce", "loss_kd", "loss_dkd_noisy"}
    assert math.isclose(float(a["loss_dkd_noisy"]), 0.1 * float(b["loss_dkd_noisy"]), rel_tol=1e-5)


@pytest.mark.parametrize("variant", ["official", "angularkd"])
def test_trains_two_epochs_on_digits_with_every_term_logged(tmp_path, digits_teacher, variant):
    record, rows = train_on_digits(tmp_path, digits_teacher,
                                   {"name": "tekap", "variant": variant, "nce_k": 256})
    cols = {"loss_ce", "loss_kd", "loss_kd_noisy", "loss_crd", "loss_crd_noisy"}
    assert len(rows) == 2
    for r in rows:
        assert cols == {k for k in r if k.startswith("loss_")}
        assert all(math.isfinite(float(r[c])) for c in cols)
        assert math.isclose(sum(float(r[c]) for c in cols), float(r["train_loss"]), rel_tol=1e-4)
    assert record["switches"]["variant"] == variant
