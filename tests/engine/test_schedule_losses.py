import math

import pytest
import torch
import torch.nn.functional as F

from kdsrc.engine import learning_rate
from kdsrc.losses import kd_loss

SOLVER = {"lr": 0.05, "lr_decay_rate": 0.1, "lr_decay_epochs": [150, 180, 210],
          "warmup_epochs": 0}


@pytest.mark.parametrize("epoch, lr", [(1, 0.05), (150, 0.05), (151, 0.005), (180, 0.005),
                                       (181, 5e-4), (210, 5e-4), (211, 5e-5), (240, 5e-5)])
def test_step_schedule_matches_mdistiller(epoch, lr):
    assert math.isclose(learning_rate(epoch, SOLVER), lr, rel_tol=1e-12)


def test_linear_warmup():
    s = {**SOLVER, "warmup_epochs": 5}
    assert [round(learning_rate(e, s), 6) for e in (1, 3, 5, 6)] == [0.01, 0.03, 0.05, 0.05]


def test_ldrld_warmup_as_coded():
    """Measured on LDRLD's own function: 0.0025 @1, 0.0475 @19..150, 0.005 @151, 5e-4 @181."""
    s = {**SOLVER, "warmup_epochs": 20, "warmup_mode": "ldrld_as_coded"}
    got = {e: learning_rate(e, s) for e in (1, 19, 20, 150, 151, 181, 211)}
    want = {1: 0.0025, 19: 0.0475, 20: 0.0475, 150: 0.0475, 151: 0.005, 181: 5e-4, 211: 5e-5}
    assert all(math.isclose(got[e], want[e], rel_tol=1e-9) for e in want), got


def test_kd_zero_for_equal_logits():
    z = torch.randn(8, 100)
    assert kd_loss(z, z.clone()).abs().item() < 1e-6


def test_kd_matches_the_reference_formula():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 100, generator=g), torch.randn(16, 100, generator=g) * 3
    for T in (1.0, 4.0):
        ref = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="none").sum(1).mean()
        assert torch.allclose(kd_loss(s, t, temperature=T), ref * T * T, rtol=1e-5)


def test_kd_gradient_only_reaches_the_student():
    s = torch.randn(4, 10, requires_grad=True)
    t = torch.randn(4, 10, requires_grad=True)
    kd_loss(s, t.detach()).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_kd_from_probs_equals_kd_for_softmax_targets():
    from kdsrc.losses import kd_loss_from_probs

    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(8, 20, generator=g), torch.randn(8, 20, generator=g)
    assert torch.allclose(kd_loss_from_probs(s, F.softmax(t / 4, 1)), kd_loss(s, t), rtol=1e-5)
