"""Angular-KD maths: the four angular losses, the ensemble, the view generator's init (CPU, fast)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdsrc.distillers.views import BN_INIT_MEAN, BN_INIT_STD, DROPOUT_P, ViewGenerator
from kdsrc.losses import angular as A


def _near_views(b=6, n=5, d=16, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(b, d, generator=g)
    v = f[:, None, :] + noise * f.norm(dim=1)[:, None, None] * torch.randn(b, n, d, generator=g)
    return f, v


# -- independent, loop-based transcription of the reference algorithm (per sample, per pair) ----
def _ref_pull(sim_rows, n, margin, kappa):
    # sim_rows[b][i] = list over columns c of the similarity of view (b, i) with teacher c
    losses = []
    for b, rows in enumerate(sim_rows):
        for row in rows:
            row = [1.0 if (c == b and s >= 1 - margin) else s for c, s in enumerate(row)]
            logits = torch.tensor(row) / kappa
            losses.append(-F.log_softmax(logits, dim=0)[b])
    return torch.stack(losses).mean() / n


def _ref_div(vec, anchor, margin):
    # vec[b][i], anchor[b]: 1-D tensors already normalised as the variant wants
    b_n, n = len(vec), len(vec[0])
    total = 0.0
    for b in range(b_n):
        if min(float(anchor[b] @ vec[b][i]) for i in range(n)) > 1 - margin:
            for i in range(n):
                for j in range(n):
                    if i != j:
                        total += math.log1p(math.exp(float(vec[b][i] @ vec[b][j])))
    return total / (n * (n - 1) * b_n)


def _ref_intra(res):
    b_n, n = len(res), len(res[0])
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                m = sum(float(F.normalize(res[b][i], dim=0) @ F.normalize(res[b][j], dim=0))
                        for b in range(b_n)) / b_n
                total += math.log1p(math.exp(m))
    return total / (n * (n - 1))


def test_official_losses_match_loop_transcription():
    f, v = _near_views(b=4, n=3, d=6, noise=0.05)
    b, n, _ = v.shape
    m, k = 0.2, 0.07
    f_hat = F.normalize(f, dim=1)
    v_hat = F.normalize(v, dim=2)
    v_viewaxis = F.normalize(v, dim=1)              # the reference's dim=1 normalisation
    sims = [[[float(v_hat[bb, i] @ f_hat[c]) for c in range(b)] for i in range(n)] for bb in range(b)]
    expect = _ref_pull(sims, n, m, k) + _ref_div(v_viewaxis, f_hat, m)
    assert A.feature_inter_loss(f, v, angles="official").item() == pytest.approx(float(expect), rel=1e-5)
    assert A.feature_intra_loss(f, v).item() == pytest.approx(
        _ref_intra([[f[bb] - v[bb, i] for i in range(n)] for bb in range(b)]), rel=1e-5)

    zt = 3 * torch.randn(b, 5)
    z = zt[:, None, :] + 0.3 * torch.randn(b, n, 5)
    T = 4.0
    p, pt = F.softmax(z / T, dim=2), F.softmax(zt / T, dim=1)
    sims = [[[float(p[bb, i] @ pt[c]) for c in range(b)] for i in range(n)] for bb in range(b)]
    expect = _ref_pull(sims, n, m, k) + _ref_div(p, pt, m)
    assert A.logit_inter_loss(zt, z, temperature=T, angles="official").item() == pytest.approx(
        float(expect), rel=1e-5)
    assert A.logit_intra_loss(zt, z, temperature=T).item() == pytest.approx(
        _ref_intra([[pt[bb] - p[bb, i] for i in range(n)] for bb in range(b)]), rel=1e-5)


def test_official_feature_diversity_normalises_the_view_axis_by_hand():
    """B=1, N=2, D=2, v1=(3,0), v2=(4,0), f=(1,0), margin 0.5.

    official: column d=0 over the views (3,4)/5 -> ṽ1=(0.6,0), ṽ2=(0.8,0); gate min(0.6,0.8)>0.5
    open; L = 2·softplus(0.48)/(2·1·1). exact: v̂1=v̂2=(1,0), cos 1 -> softplus(1).
    """
    f = torch.tensor([[1.0, 0.0]])
    v = torch.tensor([[[3.0, 0.0], [4.0, 0.0]]])
    official = A.feature_inter_diversity(f, v, margin=0.5, angles="official")
    exact = A.feature_inter_diversity(f, v, margin=0.5, angles="exact")
    assert official.item() == pytest.approx(math.log1p(math.exp(0.48)), rel=1e-6)
    assert exact.item() == pytest.approx(math.log1p(math.exp(1.0)), rel=1e-6)
    # with the default margin 0.2 the official gate (min 0.6 > 0.8) is closed: no diversity term
    assert A.feature_inter_diversity(f, v, angles="official").item() == 0.0


def test_exact_losses_are_invariant_to_feature_scale():
    f, v = _near_views()
    for fn in (A.feature_inter_loss, A.feature_inter_pull, A.feature_inter_diversity):
        kw = {"angles": "exact"} if fn is not A.feature_inter_pull else {}
        base = fn(f, v, **kw)
        assert base.item() > 0
        assert fn(3.7 * f, 3.7 * v, **kw).item() == pytest.approx(base.item(), rel=1e-5)
        # true cosines: any positive scale per vector leaves the inter-angle losses unchanged
        per_vec = torch.rand(v.shape[0], v.shape[1], 1) * 5 + 0.1
        assert fn(f * 2.0, v * per_vec, **kw).item() == pytest.approx(base.item(), rel=1e-5)
    intra = A.feature_intra_loss(f, v, angles="exact")
    assert A.feature_intra_loss(3.7 * f, 3.7 * v, angles="exact").item() == pytest.approx(
        intra.item(), rel=1e-5)
    # the official diversity term mixes the views' norms (view-axis normalisation)
    per_view = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])[None, :, None]
    assert A.feature_inter_diversity(f, v * per_view, angles="official").item() != pytest.approx(
        A.feature_inter_diversity(f, v, angles="official").item(), rel=1e-3)


def test_exact_logit_angles_use_cosines_of_probability_vectors():
    """Views identical to a diffuse teacher: the cosine is 1 (gate open), the raw dot product of
    two near-uniform distributions is ≈ 1/C (gate closed)."""
    zt = 0.1 * torch.randn(8, 10)
    z = zt[:, None, :].repeat(1, 5, 1)
    exact = A.logit_inter_loss(zt, z, angles="exact")
    official = A.logit_inter_loss(zt, z, angles="official")
    p, pt = F.normalize(F.softmax(z / 4, 2), dim=2), F.normalize(F.softmax(zt / 4, 1), dim=1)
    assert torch.allclose(torch.einsum("bc,bnc->bn", pt, p), torch.ones(8, 5), atol=1e-5)
    pull_exact = A._margin_pull(p.reshape(40, 10) @ pt.t(), 5, 0.2, 0.07)
    # exact: pull + gated diversity, every pair cosine 1 -> softplus(1) per pair, all samples gated
    assert exact.item() == pytest.approx(pull_exact.item() + math.log1p(math.e), rel=1e-5)
    q = F.softmax(z / 4, 2)
    pull_official = A._margin_pull(q.reshape(40, 10) @ F.softmax(zt / 4, 1).t(), 5, 0.2, 0.07)
    assert official.item() == pytest.approx(pull_official.item(), rel=1e-5)   # no diversity term


def test_one_sgd_step_on_diversity_terms_widens_the_views():
    f, v0 = _near_views(b=8, n=5, d=16, noise=0.05)
    v = v0.clone().requires_grad_(True)
    before = A.pairwise_view_angles(v.detach()).mean()
    loss = A.feature_inter_diversity(f, v, angles="exact") + A.feature_intra_loss(f, v)
    assert loss.item() > 0
    loss.backward()
    with torch.no_grad():
        v -= 0.5 * v.grad
    after = A.pairwise_view_angles(v.detach()).mean()
    assert after > before + 0.1, (before, after)


def test_one_sgd_step_on_view_branches_widens_the_views():
    torch.manual_seed(0)
    gen = ViewGenerator(5, 16, 10)
    f = torch.randn(32, 16)
    opt = torch.optim.SGD(gen.parameters(), lr=0.1)
    gen.eval()   # no dropout noise: compare like with like
    with torch.no_grad():
        before = A.pairwise_view_angles(gen(f)[0]).mean()
    gen.train()
    v, _ = gen(f)
    (A.feature_inter_diversity(f, v, angles="exact", margin=2.0) + A.feature_intra_loss(f, v)).backward()
    opt.step()
    gen.eval()
    with torch.no_grad():
        after = A.pairwise_view_angles(gen(f)[0]).mean()
    assert after > before, (before, after)


def test_view_generator_init():
    torch.manual_seed(1)
    gen = ViewGenerator(5, 24, 7)
    w = torch.stack([g.weight.detach() for g in gen.generators])           # [N, D, D]
    assert torch.allclose(w.norm(dim=2), torch.ones(5, 24), atol=1e-5)     # unit rows
    for k in range(24):                                                    # rows k orthonormal
        gram = w[:, k, :] @ w[:, k, :].t()
        assert torch.allclose(gram, torch.eye(5), atol=1e-5)
    # W_i itself is not orthogonal
    assert not torch.allclose(w[0] @ w[0].t(), torch.eye(24), atol=1e-2)
    for i in range(5):
        assert gen.dropout[i].p == DROPOUT_P[i]
        for t in (gen.bn[i].weight, gen.bn[i].bias):                       # one scalar each
            assert torch.all(t == t[0])
        assert gen.bn[i].weight[0] != gen.bn[i].bias[0]
        assert torch.all(gen.classifiers[i].bias == 0)
        bound = math.sqrt(6.0 / (24 + 7))                                  # Xavier uniform
        assert gen.classifiers[i].weight.abs().max() <= bound
    v, z = gen(torch.randn(4, 24))
    assert v.shape == (4, 5, 24) and z.shape == (4, 5, 7)


def test_view_generator_bn_scalars_follow_the_reference_distributions():
    torch.manual_seed(2)
    draws = torch.tensor([[[g.bn[i].weight[0].item(), g.bn[i].bias[0].item()] for i in range(6)]
                          for g in (ViewGenerator(6, 6, 2) for _ in range(300))])   # [300, 6, 2]
    mean, std = draws.mean(0), draws.std(0)
    for i in range(6):
        tol = 5 * BN_INIT_STD[i] / math.sqrt(300)
        assert abs(mean[i, 0] - BN_INIT_MEAN[i]) < tol and abs(mean[i, 1] - BN_INIT_MEAN[i]) < tol
        assert std[i, 0] == pytest.approx(BN_INIT_STD[i], rel=0.25)


def test_view_generator_rejects_bad_sizes():
    from kdsrc.errors import ConfigError

    with pytest.raises(ConfigError, match="num_views"):
        ViewGenerator(7, 64, 10)
    with pytest.raises(ConfigError, match="num_views"):
        ViewGenerator(5, 4, 10)


def test_ensemble_weights_l1_l2():
    w2 = A.ensemble_weights(5, norm="l2")
    assert torch.allclose(w2[:5], torch.full((5,), 0.3904), atol=1e-4)
    assert w2[5].item() == pytest.approx(0.4880, abs=1e-4)
    assert w2.sum().item() == pytest.approx(2.44, abs=1e-3)
    w1 = A.ensemble_weights(5, norm="l1")
    assert w1.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(w1, torch.tensor([0.16] * 5 + [0.2]), atol=1e-6)
    zt, z = torch.randn(3, 10), torch.randn(3, 5, 10)
    for w in (w1, w2):
        q = A.ensemble_probs(zt, z, weights=w, temperature=4.0)
        assert torch.allclose(q.sum(1), torch.full((3,), w.sum().item()), atol=1e-5)
        expect = sum(w[i] * F.softmax(z[:, i] / 4, 1) for i in range(5)) + w[5] * F.softmax(zt / 4, 1)
        assert torch.allclose(q, expect, atol=1e-6)
    f, v = torch.randn(3, 8), torch.randn(3, 5, 8)
    fe = A.ensemble_features(f, v, weights=w2)
    assert torch.allclose(fe, sum(w2[i] * v[:, i] for i in range(5)) + w2[5] * f, atol=1e-5)


def test_view_ce_is_summed_over_views():
    z, y = torch.randn(6, 5, 10), torch.randint(0, 10, (6,))
    expect = sum(F.cross_entropy(z[:, i], y) for i in range(5))
    assert A.view_ce_loss(z, y).item() == pytest.approx(expect.item(), rel=1e-6)


def test_angle_diagnostics():
    v = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    assert A.pairwise_view_angles(v).item() == pytest.approx((90 + 180 + 90) / 3, rel=1e-5)
    assert A.view_teacher_angles(torch.tensor([[1.0, 0.0]]), v).item() == pytest.approx(90.0, rel=1e-5)
