"""WRN pre-activation features and the reference's double BatchNorm update (``double_bn_update``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdsrc.models import build_model

from .reference_fill import feature_summary, fill_model, reference_input

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"
REAPPLIED = ("block2.layer.0.bn1", "block3.layer.0.bn1", "bn1")


def _train_step(double: bool):
    model = fill_model(build_model("wrn_16_2", double_bn_update=double)).train()
    logits, feats = model(reference_input())
    return model, logits.detach(), feats


def _bns(model):
    return {name: model.get_submodule(name) for name in REAPPLIED}


@pytest.fixture(scope="module")
def reference_train() -> dict:
    return torch.load(FIXTURES / "reference_outputs.pt", weights_only=True)["wrn_16_2_train"]


def test_default_updates_each_bn_once_with_identical_outputs():
    single, logits_single, feats_single = _train_step(double=False)
    double, logits_double, feats_double = _train_step(double=True)

    for bn in _bns(single).values():
        assert bn.num_batches_tracked.item() == 1
    for bn in _bns(double).values():
        assert bn.num_batches_tracked.item() == 2
    # every other BN ran once in both variants
    others = [m for n, m in single.named_modules() if n not in REAPPLIED and hasattr(m, "num_batches_tracked")]
    assert others and all(m.num_batches_tracked.item() == 1 for m in others)

    assert torch.equal(logits_single, logits_double)
    for key in ("feats", "preact_feats"):
        for a, b in zip(feats_single[key], feats_double[key]):
            assert torch.equal(a, b)
    assert torch.equal(feats_single["pooled_feat"], feats_double["pooled_feat"])


def test_default_running_stats_are_one_momentum_step():
    model, _, feats = _train_step(double=False)
    fresh = fill_model(build_model("wrn_16_2"))
    # the input each re-applied BN sees: f1, f2 and f3
    for name, f in zip(REAPPLIED, feats["feats"][1:]):
        bn, init = model.get_submodule(name), fresh.get_submodule(name)
        batch_mean = f.detach().mean(dim=(0, 2, 3))
        batch_var = f.detach().var(dim=(0, 2, 3), unbiased=True)
        m = bn.momentum
        torch.testing.assert_close(bn.running_mean, (1 - m) * init.running_mean + m * batch_mean)
        torch.testing.assert_close(bn.running_var, (1 - m) * init.running_var + m * batch_var)


def test_double_update_reproduces_reference(reference_train):
    model, logits, feats = _train_step(double=True)
    torch.testing.assert_close(logits, reference_train["logits"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        feature_summary(feats["preact_feats"]), reference_train["preact_summary"], rtol=1e-4, atol=1e-5
    )
    for name, bn in _bns(model).items():
        stored = reference_train["bn_buffers"][name]
        assert bn.num_batches_tracked.item() == stored["num_batches_tracked"].item() == 2
        torch.testing.assert_close(bn.running_mean, stored["running_mean"], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(bn.running_var, stored["running_var"], rtol=1e-4, atol=1e-6)


def test_default_train_outputs_equal_reference(reference_train):
    _, logits, feats = _train_step(double=False)
    torch.testing.assert_close(logits, reference_train["logits"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        feature_summary(feats["preact_feats"]), reference_train["preact_summary"], rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("double", [False, True])
def test_eval_mode_touches_no_statistics(double):
    model = fill_model(build_model("wrn_16_2", double_bn_update=double)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model(reference_input())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_preact_gradients_flow_through_bn_affine():
    # preact features feed distillation losses: the functional path must stay differentiable
    model, _, feats = _train_step(double=False)
    feats["preact_feats"][3].sum().backward()
    assert model.bn1.weight.grad is not None and model.bn1.weight.grad.abs().sum() > 0
