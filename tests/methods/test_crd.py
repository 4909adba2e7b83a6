"""CRD: NCE maths, negative sampling, memory bank, Z constants, settings errors, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdsrc.distillers import DistillContext, StepState, build_distiller
from kdsrc.distillers.crd import ContrastHead
from kdsrc.engine import Progress, RunPaths, train
from kdsrc.errors import ConfigError
from kdsrc.losses.crd import contrast_scores, l2_normalize, memory_update, nce_loss
from kdsrc.losses.dkd import dkd_loss
from kdsrc.losses.kd import kd_loss_from_probs
from kdsrc.models import build_model, feature_dims
from kdsrc_testutil import train_on_digits


def test_nce_loss_hand_computed():
    """N=4, K=2 → m·Pn = 0.5. Positive 0.5 → log(0.5/1.0); negatives 0.5, 1.5 →
    log(0.5/1.0), log(0.5/2.0). Loss = −(3 log 0.5 + log 0.5) = 4 log 2 (eps negligible)."""
    scores = torch.tensor([[0.5, 0.5, 1.5]])
    assert math.isclose(float(nce_loss(scores, num_data=4)), 4 * math.log(2), rel_tol=1e-6)
    # batch mean: a second identical row leaves it unchanged; a perfect row adds ~0
    two = torch.tensor([[0.5, 0.5, 1.5], [1e9, 0.0, 0.0]])
    assert math.isclose(float(nce_loss(two, num_data=4)), 2 * math.log(2), rel_tol=1e-6)


def test_contrast_scores_and_normalize():
    a = torch.tensor([[1.0, 0.0]])
    keys = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    got = contrast_scores(a, keys, temperature=0.5)
    assert torch.allclose(got, torch.tensor([[math.exp(2.0), 1.0, math.exp(-2.0)]]))
    v = l2_normalize(torch.tensor([[3.0, 4.0]]))
    assert torch.allclose(v, torch.tensor([[0.6, 0.8]]))


def _labels(n_per_class=(30, 20, 25, 40, 15)):
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]


@pytest.mark.parametrize("sampling", ["without_replacement", "with_replacement"])
@pytest.mark.parametrize("mode", ["exact", "relax"])
def test_negatives_come_from_other_classes_and_are_in_range(sampling, mode):
    labels = _labels()
    n, k = len(labels), 90  # largest class 40 → max K = 130 - 40 = 90
    head = ContrastHead(8, 8, labels, feat_dim=4, nce_k=k, mode=mode, sampling=sampling)
    index = torch.arange(n)
    torch.manual_seed(1)
    idx = head.sample(index)
    assert idx.shape == (n, k + 1) and idx.dtype == torch.int64
    assert idx.min() >= 0 and idx.max() < n
    neg = idx[:, 1:]
    assert (labels[neg] != labels[index][:, None]).all()
    if mode == "exact":
        assert torch.equal(idx[:, 0], index)
    else:
        assert torch.equal(labels[idx[:, 0]], labels[index])
    if sampling == "without_replacement":
        s = neg.sort(dim=1).values
        assert (s[:, 1:] != s[:, :-1]).all()  # no duplicates within a row
        # K = max for class 3 (40 samples): every other-class sample appears exactly once
        row = (labels == 3).nonzero()[0, 0]
        assert torch.equal(neg[row].sort().values, (labels != 3).nonzero().squeeze(1))
    # every other-class sample gets drawn (uniform coverage over many draws)
    seen = torch.zeros(n, dtype=torch.bool)
    seen[neg[labels[index] == 0].reshape(-1)] = True
    assert torch.equal(seen, labels != 0)


def test_sampling_is_deterministic_under_a_torch_seed():
    head = ContrastHead(8, 8, _labels(), feat_dim=4, nce_k=50)
    index = torch.tensor([0, 5, 7, 100])
    torch.manual_seed(123)
    a = head.sample(index)
    torch.manual_seed(123)
    b = head.sample(index)
    torch.manual_seed(124)
    c = head.sample(index)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_nce_k_larger_than_the_negatives_is_a_config_error():
    with pytest.raises(ConfigError, match=r"method\.nce_k.*maximum is 90"):
        ContrastHead(8, 8, _labels(), nce_k=91)
    ContrastHead(8, 8, _labels(), feat_dim=4, nce_k=90)
    with pytest.raises(ConfigError, match=r"method\.nce_mode"):
        ContrastHead(8, 8, _labels(), nce_k=5, mode="fuzzy")


def test_memory_update_rule():
    rows = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    vals = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    got = memory_update(rows, vals, momentum=0.5)
    assert torch.allclose(got, torch.tensor([[1 / math.sqrt(2), 1 / math.sqrt(2)], [0.0, 1.0]]))
    head = ContrastHead(8, 8, _labels(), feat_dim=4, nce_k=10, momentum=0.5)
    before_s, before_t = head.memory_s.clone(), head.memory_t.clone()
    index = torch.tensor([3, 9])
    v_s, v_t = l2_normalize(torch.randn(2, 4)), l2_normalize(torch.randn(2, 4))
    head.update(index, v_s, v_t)
    want_s = F.normalize(0.5 * before_s[index] + 0.5 * v_s, dim=1)
    assert torch.allclose(head.memory_s[index], want_s, atol=1e-6)
    assert torch.allclose(head.memory_t[index], F.normalize(0.5 * before_t[index] + 0.5 * v_t, dim=1),
                          atol=1e-6)
    other = torch.ones(len(before_s), dtype=torch.bool)
    other[index] = False
    assert torch.equal(head.memory_s[other], before_s[other])


def test_memory_init_and_z_set_once_then_frozen_and_saved():
    torch.manual_seed(0)
    head = ContrastHead(6, 5, _labels(), feat_dim=12, nce_k=20)
    bound = 1 / math.sqrt(12 / 3)
    assert head.memory_s.abs().max() <= bound and head.memory_s.abs().max() > 0.9 * bound
    assert torch.equal(head.z, torch.tensor([-1.0, -1.0]))
    index = torch.tensor([0, 1, 2, 3])
    idx = head.sample(index)
    mem_t, mem_s = head.memory_t.clone(), head.memory_s.clone()
    f_s, f_t = torch.randn(4, 6), torch.randn(4, 5)
    s_loss, t_loss = head(f_s, f_t, index, idx)
    v_s, v_t = head.embed(f_s, f_t)
    # scored against the memory *before* this call's update, Z = mean·N of the first scores
    raw_s = contrast_scores(v_s, mem_t[idx], temperature=0.07)
    raw_t = contrast_scores(v_t, mem_s[idx], temperature=0.07)
    z = torch.stack([raw_s.mean(), raw_t.mean()]) * head.num_data
    assert torch.allclose(head.z, z, rtol=1e-5)
    assert torch.allclose(s_loss, nce_loss(raw_s / z[0], num_data=head.num_data), rtol=1e-5)
    assert torch.allclose(t_loss, nce_loss(raw_t / z[1], num_data=head.num_data), rtol=1e-5)
    # then updated
    assert torch.allclose(head.memory_s[index], memory_update(mem_s[index], v_s), atol=1e-6)
    head(torch.randn(4, 6) * 5, torch.randn(4, 5) * 5, index)
    assert torch.allclose(head.z, z, rtol=1e-5)  # frozen
    sd = head.state_dict()
    assert {"memory_s", "memory_t", "z"} <= set(sd) and "labels" not in sd and "order" not in sd
    fresh = ContrastHead(6, 5, _labels(), feat_dim=12, nce_k=20)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.z, head.z) and torch.equal(fresh.memory_t, head.memory_t)


def _ctx(student, teacher, labels):
    return DistillContext(num_classes=int(labels.max()) + 1, num_train=len(labels), epochs=240,
                          device=torch.device("cpu"), train_labels=labels,
                          student_dims=feature_dims(student), teacher_dims=feature_dims(teacher))


class _Batch:
    def __init__(self, index):
        self.index = index


def test_distiller_terms_extra_params_and_errors():
    torch.manual_seed(0)
    labels = _labels()
    student, teacher = build_model("resnet8", num_classes=5), build_model("resnet8x4", num_classes=5)
    d = build_distiller("crd", student, teacher, {"nce_k": 64, "kd_weight": 1.0, "dkd_weight": 0.3},
                        _ctx(student, teacher, labels))
    # embeddings sized from each model's pooled feature; banks counted in extra_params
    assert d.contrast.embed_s.linear.in_features == 64 and d.contrast.embed_t.linear.in_features == 256
    embeds = (64 * 128 + 128) + (256 * 128 + 128)
    assert d.extra_param_count() == embeds + 2 * len(labels) * 128
    assert {id(p) for p in d.contrast.parameters()} <= {id(p) for p in d.trainable_parameters()}
    x, y, index = torch.randn(4, 3, 32, 32), labels[:4], torch.arange(4)
    logits, losses = d.forward_train(x, y, _Batch(index), StepState(epoch=10, step=1, epochs=240))
    assert set(losses) == {"loss_ce", "loss_crd", "loss_kd", "loss_dkd"}
    t_logits, _ = teacher(x)
    q = F.softmax(t_logits / 4, 1)
    assert torch.allclose(losses["loss_kd"], kd_loss_from_probs(logits, q), rtol=1e-4)
    assert torch.allclose(losses["loss_dkd"], 0.3 * 0.5 * dkd_loss(logits, q, y), rtol=1e-4)
    default = build_distiller("crd", student, teacher, {"nce_k": 64}, _ctx(student, teacher, labels))
    assert set(default.forward_train(x, y, _Batch(index), StepState(1, 1, 240))[1]) == \
        {"loss_ce", "loss_crd"}
    with pytest.raises(ConfigError, match=r"method\.nce_k: 16384 .* maximum is 90"):
        build_distiller("crd", student, teacher, {}, _ctx(student, teacher, labels))


def test_trains_two_epochs_on_digits_with_every_term_logged(tmp_path, digits_teacher):
    method = {"name": "crd", "nce_k": 256, "kd_weight": 1.0, "dkd_weight": 0.3}
    record, rows = train_on_digits(tmp_path, digits_teacher, method)
    paths = RunPaths.in_dir(tmp_path)
    cols = {"loss_ce", "loss_crd", "loss_kd", "loss_dkd"}
    assert len(rows) == 2
    for r in rows:
        assert cols == {k for k in r if k.startswith("loss_")}
        assert all(math.isfinite(float(r[c])) for c in cols)
        assert math.isclose(sum(float(r[c]) for c in cols), float(r["train_loss"]), rel_tol=1e-4)
    assert record["extra_params"] == 2 * (64 * 128 + 128) + 2 * 1438 * 128
    state = torch.load(paths.last, map_location="cpu", weights_only=True)["distiller"]
    assert float(state["contrast.z"].min()) > 0  # set during training, saved for resume
    with pytest.raises(ConfigError, match=r"method\.nce_k.*maximum is"):
        train({"dataset": "digits", "student": "resnet8", "method": {"name": "crd"},
               "teacher": {"name": "resnet8", "checkpoint": str(digits_teacher)},
               "solver": {"epochs": 1}}, RunPaths.in_dir(tmp_path / "big"), device="cpu",
              progress=Progress(enabled=False))
