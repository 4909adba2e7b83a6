"""``crd``: contrastive representation distillation (mdistiller ``mdistiller/distillers/CRD.py``,
RepDistiller ``crd/``), with optional KD and DKD terms (RepDistiller's "CRD+KD", Angular-KD's
CRD+KD(+DKD) compositions).

Loss::

    ce_weight·CE + crd_weight·[NCE(s-anchor) + NCE(t-anchor)]
      + kd_weight·T²·KL(q ‖ p_s)                               (only if kd_weight ≠ 0)
      + dkd_weight·min(epoch/dkd_warmup, 1)·DKD(s, q)            (only if dkd_weight ≠ 0)

with ``q = t.probs(T)``, the teacher's (or Angular-KD ensemble's) probabilities. Reference
settings: mdistiller / RepDistiller "CRD" = defaults (CE 1, CRD 0.8, no KD); RepDistiller
"CRD+KD" = ``kd_weight: 1.0``; Angular-KD main config = ``kd_weight: 1.0`` with the view
ensemble plugged in as the teacher; Angular-KD + DKD = additionally ``dkd_weight: 0.3``
(β from its config: 8, or 6 for vgg13→vgg8 and wrn40_2→wrn40_1).

State (:class:`ContrastHead`, returned by ``extra_modules()``): the two embeddings
(``Linear(d → feat_dim)`` + l2norm, d from ``ctx.student_dims`` / ``ctx.teacher_dims``), the two
memory banks (buffers ``N x feat_dim``, init ``U(±1/sqrt(feat_dim/3))``), and ``z`` = the NCE
normalisation constants ``(Z_s, Z_t)``, −1 until the first scoring sets them to
``mean(exp scores)·N``; then frozen. Banks and ``z`` are persistent buffers, so ``last.pt``
resumes them.

Memory banks in ``extra_params``: **counted**, as mdistiller's ``get_extra_parameters`` does
(embeds + ``contrast.buffers()``; the DKD paper figure's 12.3M for resnet32x4→resnet8x4 is
consistent with that: 12,865,797 values / 2^20 = 12.27 — our reading, not stated there):
``extra_param_count() = embedding parameters + 2·N·feat_dim``. The ``z`` constants
are not counted (mdistiller counts its 5-value ``params`` buffer; a difference of 5).

Negative sampling (``nce_sampling``), on the device, vectorised, from torch's RNG:

* ``without_replacement`` (default): for each sample, uniform random keys for all N training
  samples, the sample's own class masked out, the K largest kept (``topk``). This is a uniform
  random K-subset of the other-class samples — the same distribution as the reference's
  per-sample ``np.random.choice(cls_negative[y], K, replace=False)`` in the DataLoader; only the
  random stream (torch on the device, not numpy in the workers) and the order of the negatives
  (irrelevant to the loss) differ. Cost O(B·N) per step.
* ``with_replacement``: K i.i.d. uniform draws from the other-class samples via a class-sorted
  index and per-sample random offsets; O(B·K), duplicates possible (for CIFAR-100 and K 16384
  about 15% of the draws repeat an index) — textbook NCE noise samples, not the reference.

The reference silently falls back to sampling with replacement when K exceeds the number of
other-class samples; here that is a ``ConfigError`` naming ``method.nce_k`` and the maximum.
``nce_mode``: ``exact`` (the positive is the sample itself, reference default) or ``relax``
(a random same-class sample, reference ``mode="relax"``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from ..losses.crd import contrast_scores, l2_normalize, memory_update, nce_loss
from ..losses.dkd import dkd_loss
from ..losses.kd import kd_loss_from_probs
from ..settings import Setting, check_all, choice, temperature, weight
from .base import DistillContext, Distiller, facts_of_labels
from .dkd import dkd_settings
from .registry import register

NCE_MODES = ("exact", "relax")
NCE_SAMPLING = ("without_replacement", "with_replacement")

#: the contrast head's settings (crd, tekap)
CONTRAST_SETTINGS = (
    Setting("feat_dim", 128, "size of the two embeddings", type="integer", low=1),
    Setting("nce_k", 16384, "negatives per sample, drawn from the other classes' training "
            "images (fewer than there are)", type="integer", low=1),
    Setting("nce_t", 0.07, "temperature of the NCE scores", above=0.0),
    Setting("nce_momentum", 0.5, "momentum of the memory-bank update", low=0.0, high=1.0),
    choice("nce_mode", "exact", NCE_MODES, "the positive: the sample itself (exact) or a random "
           "same-class sample (relax)"),
    choice("nce_sampling", "without_replacement", NCE_SAMPLING, "how negatives are drawn"),
)


def check_nce_k(settings: dict, facts) -> None:
    """K below the other-class training images of every sample (the dataset's declared facts)."""
    max_k = facts.fewest_other_class
    if settings["nce_k"] > max_k:
        raise ConfigError(
            f"method.nce_k: {settings['nce_k']} negatives per sample requested; expected an "
            f"integer from 1 to {max_k}: {facts.name} has {facts.train_images} training images and its largest "
            f"class leaves {max_k} of other classes; the maximum is {max_k} (the reference "
            "would silently sample with replacement)")


class Embed(nn.Module):
    """``l2norm(Linear(d_in → d_out)(x))`` (reference ``Embed``); output fp32."""

    def __init__(self, dim_in: int, dim_out: int = 128):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.linear(x.reshape(x.shape[0], -1)).float())


class ContrastHead(nn.Module):
    """CRD's trainable embeddings, memory banks, Z constants and negative sampler.

    ``memory_s`` holds student embeddings (the reference's ``memory_v1``), ``memory_t`` teacher
    embeddings (``memory_v2``). One step: ``idx = sample(index)``; ``v_s, v_t = embed(f_s, f_t)``;
    ``s, t = score(v_s, v_t, idx)``; losses ``nce(s) + nce(t)``; then ``update(index, v_s, v_t)``.
    ``forward`` does all of it.
    """

    def __init__(self, student_dim: int, teacher_dim: int, train_labels: torch.Tensor, *,
                 feat_dim: int = 128, nce_k: int = 16384, nce_t: float = 0.07,
                 momentum: float = 0.5, mode: str = "exact",
                 sampling: str = "without_replacement"):
        """Settings as :data:`CONTRAST_SETTINGS` declares and checks them; ``nce_k`` is checked
        again here against the labels actually given (a subset of a dataset, synthetic data)."""
        super().__init__()
        check_all(CONTRAST_SETTINGS, {"feat_dim": feat_dim, "nce_k": nce_k, "nce_t": nce_t,
                                      "nce_momentum": momentum, "nce_mode": mode,
                                      "nce_sampling": sampling},
                  prefix="method.", unknown="setting of the contrast head")
        if train_labels is None:
            raise ConfigError("CRD needs the training labels (DistillContext.train_labels) to "
                              "draw negatives from the other classes")
        labels = torch.as_tensor(train_labels).reshape(-1).to(torch.int64)
        n = int(labels.numel())
        counts = torch.bincount(labels.cpu())
        check_nce_k({"nce_k": nce_k}, facts_of_labels(labels, name="the training labels given"))
        self.num_data = n
        self.nce_k = int(nce_k)
        self.nce_t = float(nce_t)
        self.momentum = float(momentum)
        self.mode = mode
        self.sampling = sampling
        self.embed_s = Embed(student_dim, feat_dim)
        self.embed_t = Embed(teacher_dim, feat_dim)
        stdv = 1.0 / math.sqrt(feat_dim / 3.0)
        self.register_buffer("memory_s", torch.rand(n, feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("memory_t", torch.rand(n, feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("z", torch.full((2,), -1.0))
        # the sampler's index (derived from the labels; not saved)
        order = torch.argsort(labels.cpu(), stable=True)
        starts = torch.cumsum(counts, 0) - counts
        self.register_buffer("labels", labels.clone(), persistent=False)
        self.register_buffer("order", order.to(labels.device), persistent=False)
        self.register_buffer("class_start", starts.to(labels.device), persistent=False)
        self.register_buffer("class_count", counts.to(labels.device), persistent=False)

    def bank_size(self) -> int:
        """Values in the two memory banks (counted in ``extra_params``)."""
        return self.memory_s.numel() + self.memory_t.numel()

    # -- sampling ----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, index: torch.Tensor) -> torch.Tensor:
        """``B x (K+1)`` dataset indices: column 0 the positive, then K other-class negatives."""
        index = index.to(self.labels.device)
        y = self.labels[index]
        b, n, k = index.shape[0], self.num_data, self.nce_k
        dev = self.labels.device
        start, count = self.class_start[y], self.class_count[y]
        if self.mode == "exact":
            pos = index
        else:  # relax: a uniformly random sample of the same class
            off = (torch.rand(b, device=dev) * count).long().clamp_max(count - 1)
            pos = self.order[start + off]
        if self.sampling == "without_replacement":
            keys = torch.rand(b, n, device=dev)
            keys.masked_fill_(self.labels.unsqueeze(0) == y.unsqueeze(1), -1.0)
            neg = keys.topk(k, dim=1, sorted=False).indices
        else:
            others = (n - count).unsqueeze(1)
            r = (torch.rand(b, k, device=dev) * others).long().clamp_max(others - 1)
            r = r + count.unsqueeze(1) * (r >= start.unsqueeze(1))
            neg = self.order[r]
        return torch.cat([pos.unsqueeze(1), neg], dim=1)

    # -- scoring -----------------------------------------------------------------------------
    def embed(self, f_s: torch.Tensor, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed_s(f_s), self.embed_t(f_t)

    def score(self, v_s: torch.Tensor, v_t: torch.Tensor, idx: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Z-normalised scores ``(student-anchored, teacher-anchored)``, each ``B x (K+1)``.

        Sets ``z`` on the first call (``mean·N`` of that call's scores), as the reference.
        """
        b, d = v_s.shape[0], self.memory_s.shape[1]
        flat = idx.reshape(-1)
        keys_t = self.memory_t.index_select(0, flat).view(b, -1, d)
        keys_s = self.memory_s.index_select(0, flat).view(b, -1, d)
        with torch.autocast(device_type=v_s.device.type, enabled=False):
            raw_s = contrast_scores(v_s, keys_t, temperature=self.nce_t)
            raw_t = contrast_scores(v_t, keys_s, temperature=self.nce_t)
        with torch.no_grad():  # set once, then frozen (no host sync: a where on the device)
            first = torch.stack([raw_s.mean(), raw_t.mean()]) * float(self.num_data)
            self.z.copy_(torch.where(self.z < 0, first, self.z))
            z = self.z.clone()  # the graph keeps this copy; later in-place updates of z are safe
        return raw_s / z[0], raw_t / z[1]

    def nce(self, scores: torch.Tensor) -> torch.Tensor:
        return nce_loss(scores, num_data=self.num_data)

    @torch.no_grad()
    def update(self, index: torch.Tensor, v_s: torch.Tensor | None, v_t: torch.Tensor | None
               ) -> None:
        """Momentum update of the rows ``index`` of each bank (None leaves that bank alone)."""
        if v_s is not None:
            self.memory_s.index_copy_(0, index, memory_update(
                self.memory_s.index_select(0, index), v_s.detach(), momentum=self.momentum))
        if v_t is not None:
            self.memory_t.index_copy_(0, index, memory_update(
                self.memory_t.index_select(0, index), v_t.detach(), momentum=self.momentum))

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, index: torch.Tensor,
                idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One reference CRD call: ``(NCE student-anchored, NCE teacher-anchored)``, then the
        memory update (after scoring, as ``ContrastMemory.forward``)."""
        if idx is None:
            idx = self.sample(index)
        v_s, v_t = self.embed(f_s, f_t)
        s, t = self.score(v_s, v_t, idx)
        out = self.nce(s), self.nce(t)
        self.update(index, v_s, v_t)
        return out


def build_contrast_head(settings: dict, ctx: DistillContext) -> ContrastHead:
    """A :class:`ContrastHead` sized from ``ctx`` (pooled-feature dims) and the ``nce_*``
    settings."""
    s = settings
    if "pooled_feat" not in ctx.student_dims or "pooled_feat" not in ctx.teacher_dims:
        raise ConfigError("CRD needs the student's and teacher's pooled-feature sizes "
                          "(DistillContext.student_dims / teacher_dims)")
    return ContrastHead(int(ctx.student_dims["pooled_feat"]), int(ctx.teacher_dims["pooled_feat"]),
                        ctx.train_labels, feat_dim=s["feat_dim"], nce_k=s["nce_k"],
                        nce_t=s["nce_t"], momentum=s["nce_momentum"], mode=s["nce_mode"],
                        sampling=s["nce_sampling"])


@register
class CRD(Distiller):
    name = "crd"
    cost_factor = 41 / 11   # DKD paper's figure: CRD 41 ms, KD 11 ms per batch
    summary = ("CRD: CE + 0.8·NCE(128-d embeds, K=16384 other-class negatives, τ=0.07); "
               "optional KD/DKD terms")
    #: the contrast head reads the teacher's pooled feature, the optional KD/DKD terms its logits
    cache_needs = frozenset({"logits", "pooled_feat"})
    declared = (
        weight("ce_weight", 1.0, "weight of the cross-entropy"),
        weight("crd_weight", 0.8, "weight of the two NCE terms"),
        *CONTRAST_SETTINGS,
        weight("kd_weight", 0.0, "weight of an added T²·KL term (RepDistiller's CRD+KD: 1)"),
        temperature("kd_temperature", 4.0),
        weight("dkd_weight", 0.0, "weight of an added DKD term (Angular-KD + DKD: 0.3)"),
        *dkd_settings("dkd_"),
    )

    @classmethod
    def check_dataset(cls, settings, facts):
        check_nce_k(settings, facts)

    def __init__(self, student, teacher, settings, ctx):
        super().__init__(student, teacher, settings, ctx)
        self.contrast = build_contrast_head(self.settings, ctx)

    def extra_modules(self):
        return [self.contrast]

    def extra_param_count(self) -> int:
        return super().extra_param_count() + self.contrast.bank_size()

    def forward_train(self, x, y, batch, state):
        s = self.settings
        logits, feats = self.student(x)
        t = self.teacher_outputs(x, y, batch)
        s_loss, t_loss = self.contrast(feats["pooled_feat"], t.feats["pooled_feat"], batch.index)
        losses = {
            "loss_ce": s["ce_weight"] * self.ce(logits, y, batch),
            "loss_crd": s["crd_weight"] * (s_loss + t_loss),
        }
        if s["kd_weight"] != 0:
            losses["loss_kd"] = s["kd_weight"] * kd_loss_from_probs(
                logits, t.probs(s["kd_temperature"]), temperature=s["kd_temperature"])
        if s["dkd_weight"] != 0:
            w = state.ramp(s["dkd_warmup"])
            losses["loss_dkd"] = (w * s["dkd_weight"]) * dkd_loss(
                logits, t.probs(s["dkd_temperature"]), y, alpha=s["dkd_alpha"],
                beta=s["dkd_beta"], temperature=s["dkd_temperature"])
        return logits, losses
