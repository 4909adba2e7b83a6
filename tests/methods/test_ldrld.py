"""LDRLD: ADW weights, the loss against direct transcriptions of the official code, switches, training."""

from __future__ import annotations

import math
from itertools import combinations

import pytest
import torch
import torch.nn.functional as F

from kdsrc.distillers import DistillContext, StepState, build_distiller
from kdsrc.errors import ConfigError
from kdsrc.losses.ldrld import adw_weight, ldrld_group_weights, ldrld_groups, ldrld_loss
from kdsrc.models import build_model, feature_dims
from kdsrc_testutil import train_on_digits


def official_ldrld(student_logits, teacher_logits, T, k, gamma=0.05):
    """The official ``selective_softmax_loss`` written as a plain loop over its 22 groups
    (``calculate_recursion_combinations`` is a recursion over the same list)."""
    b = student_logits.shape[0]
    top = student_logits.topk(k, 1, True, True).indices
    groups = list(combinations(range(k), 2)) + [tuple(range(k))]
    total = 0.0
    for comb in groups:
        idx = top[:, list(comb)]
        if len(comb) == 2:
            t1, t2 = comb[0] + 1, comb[1] + 1
            w = 1.0 / (1.50 + abs(t1 - t2)) * 2.0 * math.exp(-gamma * (t1 + t2))
        else:
            w = 1.0
        mask = torch.ones_like(teacher_logits).scatter_(1, idx, 0).bool()
        pt = F.softmax(teacher_logits / T - 1000.0 * mask, dim=1)
        ls = F.log_softmax(student_logits / T - 1000.0 * mask, dim=1)
        total = total + w * F.kl_div(ls, pt, reduction="sum") * T ** 2 / b
    ldr = total / len(groups)
    not_mask = torch.zeros_like(teacher_logits).scatter_(1, top, 1).bool()
    pt = F.softmax(teacher_logits / T - 1000.0 * not_mask, dim=1)
    ls = F.log_softmax(student_logits / T - 1000.0 * not_mask, dim=1)
    rntk = F.kl_div(ls, pt, reduction="sum") * T ** 2 / b
    return ldr, rntk


def direct_per_sample(zs, zt, T, k, rank):
    """Sample by sample, class sets as Python sets, restricted softmaxes by hand (no masking)."""
    b, c = zs.shape
    groups = list(combinations(range(k), 2)) + [tuple(range(k))]
    ldr = rntk = 0.0
    for i in range(b):
        order = sorted(range(c), key=lambda j: -float(rank[i, j]))[:k]
        for g in groups:
            s = [order[r] for r in g]
            pt = F.softmax(zt[i, s] / T, dim=0)
            ps = F.softmax(zs[i, s] / T, dim=0)
            w = adw_weight(g[0], g[1]) if len(g) == 2 else 1.0
            ldr += w * float((pt * (pt.log() - ps.log())).sum()) * T * T / b
        rest = [j for j in range(c) if j not in order]
        pt = F.softmax(zt[i, rest] / T, dim=0)
        ps = F.softmax(zs[i, rest] / T, dim=0)
        rntk += float((pt * (pt.log() - ps.log())).sum()) * T * T / b
    return ldr / len(groups), rntk


def _logits(seed, b=6, c=10, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, c, generator=g, dtype=torch.float64) * scale,
            torch.randn(b, c, generator=g, dtype=torch.float64) * scale)


def test_adw_weights_are_the_table():
    w = dict(zip(ldrld_groups(7), ldrld_group_weights(7).tolist()))
    assert len(w) == 22 and w[tuple(range(7))] == 1.0
    for pair, ref in {(0, 1): 0.689, (1, 2): 0.623, (2, 3): 0.564, (0, 2): 0.468, (0, 6): 0.179}.items():
        assert w[pair] == pytest.approx(ref, abs=5e-4), pair
    assert sum(v for g, v in w.items() if len(g) == 2) == pytest.approx(7.72, abs=5e-3)
    assert adw_weight(0, 1) == pytest.approx(2 / 2.5 * math.exp(-0.15))


def test_tiny_case_by_hand():
    """C = 4, k = 2: the pair (0,1) and the full group, which is the same pair; as coded
    (``len(comb) == 2``) both get the ADW weight w(0,1) = 0.8·e^-0.15. RNTK over the other 2 classes."""
    zs = torch.tensor([[2.0, 0.0, 1.0, -1.0]], dtype=torch.float64)
    zt = torch.tensor([[0.5, 1.5, 1.0, -1.0]], dtype=torch.float64)
    T = 2.0

    def kl(a, b):
        pa, pb = F.softmax(a / T, 0), F.softmax(b / T, 0)
        return float((pa * (pa.log() - pb.log())).sum()) * T * T

    # student top-2 = classes 0 (rank 0) and 2 (rank 1); the pair group and the full group coincide
    pair = kl(zt[0, [0, 2]], zs[0, [0, 2]])
    w01 = 0.8 * math.exp(-0.15)
    expect_ldr = (w01 * pair + w01 * pair) / 2
    expect_rntk = kl(zt[0, [1, 3]], zs[0, [1, 3]])
    ldr, rntk = ldrld_loss(zs, F.softmax(zt / T, 1), temperature=T, k=2)
    assert pair > 0.05 and expect_rntk > 0.05
    assert float(ldr) == pytest.approx(expect_ldr, rel=1e-5)
    assert float(rntk) == pytest.approx(expect_rntk, rel=1e-5)


@pytest.mark.parametrize("seed,k,T", [(0, 7, 4.0), (1, 3, 2.0), (2, 7, 1.0), (3, 5, 6.0)])
def test_matches_the_official_code_and_a_direct_loop(seed, k, T):
    zs, zt = _logits(seed)
    ldr, rntk = ldrld_loss(zs, F.softmax(zt / T, 1), temperature=T, k=k)
    o_ldr, o_rntk = official_ldrld(zs.float(), zt.float(), T, k)
    d_ldr, d_rntk = direct_per_sample(zs, zt, T, k, zs)
    assert float(ldr) == pytest.approx(float(o_ldr), rel=1e-4, abs=1e-6)
    assert float(rntk) == pytest.approx(float(o_rntk), rel=1e-4, abs=1e-6)
    assert float(ldr) == pytest.approx(d_ldr, rel=1e-4, abs=1e-6)
    assert float(rntk) == pytest.approx(d_rntk, rel=1e-4, abs=1e-6)


def test_zero_for_identical_logits_and_gradient_flows():
    zs, _ = _logits(4)
    ldr, rntk = ldrld_loss(zs, F.softmax(zs / 4.0, 1), temperature=4.0, k=7)
    assert abs(float(ldr)) < 1e-6 and abs(float(rntk)) < 1e-6
    zs2, zt2 = _logits(5)
    zs2.requires_grad_(True)
    ldr, rntk = ldrld_loss(zs2, F.softmax(zt2 / 4.0, 1), temperature=4.0, k=7)
    (ldr + rntk).backward()
    assert torch.isfinite(zs2.grad).all() and zs2.grad.abs().sum() > 0


def test_rank_by_teacher_changes_the_groups():
    zs = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]], dtype=torch.float64)
    zt = torch.tensor([[0.0, 2.5, 1.0, 4.0, 3.5, 0.5]], dtype=torch.float64)
    q = F.softmax(zt / 4.0, 1)
    by_student = ldrld_loss(zs, q, temperature=4.0, k=2)
    by_teacher = ldrld_loss(zs, q, temperature=4.0, k=2, rank_scores=q)
    assert float(by_student[0]) != pytest.approx(float(by_teacher[0]), rel=1e-3)
    assert float(by_teacher[0]) == pytest.approx(direct_per_sample(zs, zt, 4.0, 2, zt)[0], rel=1e-4)
    # the distiller's switch does the same
    student, teacher = build_model("resnet8", num_classes=10), build_model("resnet8", num_classes=10)
    ctx = DistillContext(num_classes=10, num_train=8, epochs=1, device=torch.device("cpu"),
                         student_dims=feature_dims(student, 32), teacher_dims=feature_dims(teacher, 32))
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    with torch.no_grad():
        a = build_distiller("ldrld", student, teacher, {}, ctx).forward_train(
            x, y, None, StepState(1, 1, 1))[1]
        b = build_distiller("ldrld", student, teacher, {"rank_by": "teacher"}, ctx).forward_train(
            x, y, None, StepState(1, 1, 1))[1]
    assert float(a["loss_ldr"]) != pytest.approx(float(b["loss_ldr"]), rel=1e-4)


def test_teacher_probabilities_need_not_sum_to_one():
    zs, zt = _logits(6)
    q = F.softmax(zt / 4.0, 1)
    a = ldrld_loss(zs, q, temperature=4.0, k=7)
    b = ldrld_loss(zs, 2.44 * q, temperature=4.0, k=7)
    assert float(a[0]) == pytest.approx(float(b[0]), rel=1e-5)
    assert float(a[1]) == pytest.approx(float(b[1]), rel=1e-5)


def _distiller(settings, num_classes=10):
    student = build_model("resnet8", num_classes=num_classes)
    teacher = build_model("resnet8", num_classes=num_classes)
    ctx = DistillContext(num_classes=num_classes, num_train=8, epochs=1, device=torch.device("cpu"),
                         student_dims=feature_dims(student, 32), teacher_dims=feature_dims(teacher, 32))
    return build_distiller("ldrld", student, teacher, settings, ctx)


def test_defaults_are_the_readme_command():
    d = _distiller({})
    assert d.settings == {"ce_weight": 1.0, "alpha": 10.5, "beta": 7.0, "temperature": 4.0, "k": 7,
                          "adw_gamma": 0.05, "rank_by": "student", "ce_scaling": "as_coded"}


def test_ce_scaling_quirk():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    d = _distiller({"ce_weight": 2.0})
    with torch.no_grad():
        coded = d.forward_train(x, y, None, StepState(1, 1, 1))[1]
        d.settings["ce_scaling"] = "clean"
        clean = d.forward_train(x, y, None, StepState(1, 1, 1))[1]
    assert float(coded["loss_ce"]) == pytest.approx(2 * float(clean["loss_ce"]), rel=1e-5)
    assert float(coded["loss_ldr"]) == pytest.approx(2 * float(clean["loss_ldr"]), rel=1e-5)
    assert float(coded["loss_rntk"]) == pytest.approx(2 * float(clean["loss_rntk"]), rel=1e-5)
    assert set(coded) == {"loss_ce", "loss_ldr", "loss_rntk"}


@pytest.mark.parametrize("settings,key", [({"k": 10}, "method.k"), ({"k": 12}, "method.k"),
                                          ({"k": 0}, "method.k"), ({"rank_by": "both"}, "method.rank_by"),
                                          ({"ce_scaling": "x"}, "method.ce_scaling"),
                                          ({"temperature": 0.0}, "method.temperature"),
                                          ({"alpha": -1.0}, "method.alpha")])
def test_bad_settings_name_the_key(settings, key):
    with pytest.raises(ConfigError, match=key):
        _distiller(settings)


def test_trains_two_epochs_on_digits_with_every_term_logged(tmp_path, digits_teacher):
    record, rows = train_on_digits(tmp_path, digits_teacher, {"name": "ldrld"},
                                   solver={"warmup_epochs": 2, "warmup_mode": "ldrld_as_coded"})
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for r in rows:
        for col in ("loss_ce", "loss_ldr", "loss_rntk", "train_loss", "test_top1"):
            assert math.isfinite(float(r[col])), col
        assert float(r["loss_ldr"]) > 0 and float(r["loss_rntk"]) > 0
        total = float(r["loss_ce"]) + float(r["loss_ldr"]) + float(r["loss_rntk"])
        assert total == pytest.approx(float(r["train_loss"]), rel=1e-4)
    assert float(rows[0]["lr"]) == pytest.approx(0.025)   # warm-up epoch 1 of 2, as coded
    assert record["switches"]["k"] == 7 and record["method"] == "ldrld"
