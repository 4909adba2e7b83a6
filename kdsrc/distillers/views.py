"""Angular-KD's view branches and what is shared by distillation and stage-1 view pretraining.

* :class:`ViewGenerator` — the N "views" attached to the frozen teacher's pooled feature
  (reference ``View_Generator`` in ``mdistiller/models/teacher_aug.py``, re-implemented).
* :class:`AngularRecipe` — the angular-loss / ensemble hyperparameters of a resolved
  ``angularkd`` settings dict, with :meth:`AngularRecipe.aux_losses` (L_aux) and the ensemble.
* the pretrained-views file format (``{"views": state_dict, "meta": {...}}``) and its checks,
  :func:`teacher_fingerprint`, and the teacher-input augmentation of the July–December code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..losses import angular as A

#: per-view dropout probability, BN-affine init mean and std (reference lists; hence N <= 6)
DROPOUT_P = (0.15, 0.20, 0.25, 0.30, 0.35, 0.40)
BN_INIT_MEAN = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
BN_INIT_STD = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
MAX_VIEWS = len(DROPOUT_P)
VIEWS_FORMAT = "kdsrc-views/1"


class ViewGenerator(nn.Module):
    """N branches on a teacher feature ``f`` (``[B, D]``): view i is

    ``Dropout(p_i) → Linear(D→D) → BatchNorm1d(D)`` = view feature ``v_i``, then
    ``Linear(D→C)`` = view logits ``z_i``. ``forward(f) -> (v [B, N, D], z [B, N, C])``.

    Initialisation (reference ``View_Generator.__init__``), drawn from the global RNG:

    * generators: ``A ~ N(0, 1)`` of shape ``[D, D, N]``, ``Q = linalg.qr(A, mode="reduced")``
      (batched over the first axis: D matrices ``[D, N]``), ``W_i = Q[:, :, i]``. Every row of
      ``W_i`` is a unit vector and, for each output unit k, rows k of ``W_1..W_N`` are mutually
      orthogonal (``W_i`` itself is not an orthogonal matrix). Needs ``N <= D``. Biases keep
      PyTorch's default init.
    * BatchNorm affine: γ and β are each **one scalar** for all channels, drawn separately from
      ``N(μ_i, σ_i²)``, μ = 1.0, 0.9, …, σ = 0.1, 0.2, … (the reference's early stale-index bug,
      all views drawing from the last view's distribution, is not reproduced; fixed upstream in
      c9b7304).
    * classifiers: Xavier-uniform weight, zero bias.
    """

    def __init__(self, num_views: int, dim: int, num_classes: int):
        super().__init__()
        if not 2 <= num_views <= MAX_VIEWS:
            raise ConfigError(f"method.num_views: must be between 2 and {MAX_VIEWS} (the reference's "
                              f"per-view dropout/BN lists have {MAX_VIEWS} entries), got {num_views}")
        if num_views > dim:
            raise ConfigError(f"method.num_views: the QR initialisation needs num_views <= the "
                              f"teacher feature size {dim}, got {num_views}")
        self.num_views, self.dim, self.num_classes = int(num_views), int(dim), int(num_classes)
        self.dropout = nn.ModuleList(nn.Dropout(p=DROPOUT_P[i]) for i in range(num_views))
        self.generators = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_views))
        self.bn = nn.ModuleList(nn.BatchNorm1d(dim) for _ in range(num_views))
        self.classifiers = nn.ModuleList(nn.Linear(dim, num_classes) for _ in range(num_views))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        n, d = self.num_views, self.dim
        for i in range(n):
            nn.init.xavier_uniform_(self.classifiers[i].weight)
            nn.init.zeros_(self.classifiers[i].bias)
            gamma = torch.normal(BN_INIT_MEAN[i], BN_INIT_STD[i], size=(1,)).item()
            beta = torch.normal(BN_INIT_MEAN[i], BN_INIT_STD[i], size=(1,)).item()
            self.bn[i].weight.fill_(gamma)
            self.bn[i].bias.fill_(beta)
        q, _ = torch.linalg.qr(torch.randn(d, d, n), mode="reduced")          # [D, D, N]
        for i in range(n):
            self.generators[i].weight.copy_(q[:, :, i])

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, logits = [], []
        for drop, gen, bn, cls in zip(self.dropout, self.generators, self.bn, self.classifiers):
            v = bn(gen(drop(feat)))
            feats.append(v)
            logits.append(cls(v))
        return torch.stack(feats, dim=1), torch.stack(logits, dim=1)


@dataclass(frozen=True)
class AngularRecipe:
    """The angular-loss and ensemble hyperparameters (see :mod:`kdsrc.distillers.angularkd`)."""

    num_views: int = 5
    margin_feat: float = 0.2
    margin_logit: float = 0.2
    kappa: float = 0.07
    w_feat_inter: float = 0.1
    w_feat_intra: float = 1.0
    w_logit_inter: float = 1.0
    w_logit_intra: float = 1.0
    w_view_ce: float = 0.8
    angles: str = "official"
    angular_temperature: float = 4.0
    view_weight: float = 0.8
    teacher_weight: float = 1.0
    ensemble_norm: str = "l2"
    ensemble_temperature: float | str = 4.0     # a number, or "loss": the asking loss's T

    #: the fields that shape how views are *trained* (checked against a pretrained views file)
    TRAINING_KEYS = ("num_views", "margin_feat", "margin_logit", "kappa", "w_feat_inter",
                     "w_feat_intra", "w_logit_inter", "w_logit_intra", "w_view_ce", "angles",
                     "angular_temperature")

    @classmethod
    def from_settings(cls, s: dict[str, Any]) -> "AngularRecipe":
        return cls(**{k: s[k] for k in cls.__dataclass_fields__})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def weights(self, device=None) -> torch.Tensor:
        return A.ensemble_weights(self.num_views, view_weight=self.view_weight,
                                  teacher_weight=self.teacher_weight, norm=self.ensemble_norm,
                                  device=device)

    def ensemble_tau(self, asked: float | None) -> float:
        """The temperature the ensemble is formed at when a loss asks for ``asked``."""
        if self.ensemble_temperature == "loss":
            return float(asked if asked is not None else self.angular_temperature)
        return float(self.ensemble_temperature)

    def aux_losses(self, feat: torch.Tensor, logits_t: torch.Tensor, view_feats: torch.Tensor,
                   view_logits: torch.Tensor, target: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """L_aux as named, weighted terms; a term whose weight is 0 is a constant 0 (not computed)."""
        zero = view_feats.new_zeros(())
        T, ang = self.angular_temperature, self.angles
        out = {
            "loss_view_ce": (self.w_view_ce * A.view_ce_loss(view_logits, target)
                             if self.w_view_ce and target is not None else zero),
            "loss_feat_inter": (self.w_feat_inter * A.feature_inter_loss(
                feat, view_feats, margin=self.margin_feat, kappa=self.kappa, angles=ang)
                if self.w_feat_inter else zero),
            "loss_feat_intra": (self.w_feat_intra * A.feature_intra_loss(feat, view_feats, angles=ang)
                                if self.w_feat_intra else zero),
            "loss_logit_inter": (self.w_logit_inter * A.logit_inter_loss(
                logits_t, view_logits, temperature=T, margin=self.margin_logit, kappa=self.kappa,
                angles=ang) if self.w_logit_inter else zero),
            "loss_logit_intra": (self.w_logit_intra * A.logit_intra_loss(
                logits_t, view_logits, temperature=T, angles=ang) if self.w_logit_intra else zero),
        }
        return out


class ViewMeter:
    """Per-epoch view diagnostics, accumulated on the device (no host sync per step).

    In place, on tensors made at the first update (the sample count too): a CUDA-graphed step
    captures :meth:`update` once and keeps adding into them on every replay."""

    def __init__(self, num_views: int):
        self.num_views = num_views
        self._acc: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        for t in self._acc.values():
            t.zero_()

    @torch.no_grad()
    def update(self, feat, logits_t, view_feats, view_logits, ens_probs, target) -> None:
        vals = {
            "view_correct": (view_logits.argmax(dim=2) == target[:, None]).sum(dim=0).float(),
            "ens_correct": (ens_probs.argmax(dim=1) == target).sum().float(),
            "teacher_correct": (logits_t.argmax(dim=1) == target).sum().float(),
            "pair_angle": A.pairwise_view_angles(view_feats).sum(),
            "teacher_angle": A.view_teacher_angles(feat, view_feats).sum(),
        }
        if not self._acc:
            self._acc = {k: torch.zeros_like(v) for k, v in vals.items()}
            self._acc["seen"] = torch.zeros((), dtype=torch.float32, device=target.device)
        for k, v in vals.items():
            self._acc[k].add_(v)
        self._acc["seen"].add_(target.numel())

    def compute(self, reset: bool = True) -> dict[str, float]:
        a = self._acc
        seen = float(a["seen"]) if a else 0.0
        if not seen:
            return {}
        out = {f"view{i + 1}_top1": 100.0 * float(c) / seen
               for i, c in enumerate(a["view_correct"].tolist())}
        out["ensemble_top1"] = 100.0 * float(a["ens_correct"]) / seen
        out["teacher_top1"] = 100.0 * float(a["teacher_correct"]) / seen
        out["view_pair_angle_deg"] = float(a["pair_angle"]) / seen
        out["view_teacher_angle_deg"] = float(a["teacher_angle"]) / seen
        if reset:
            self.reset()
        return out


# -- the pretrained-views file ----------------------------------------------------------------
def teacher_fingerprint(model: nn.Module) -> str:
    """sha256 of the teacher's state dict (the teacher cache's ``weights_sha256``): pretrained
    views are only valid on the exact teacher they were trained on."""
    from ..cache.store import weights_sha256

    return weights_sha256(model)


def load_views_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``{"views": state_dict, "meta": {...}}`` written by ``kdsrc pretrain-views``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"method.views_checkpoint: {p} does not exist (write it with "
                          f"`kdsrc pretrain-views`)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torn or foreign file
        raise CheckpointError(f"cannot read views checkpoint {p}: {e}".splitlines()[0]) from None
    if not (isinstance(obj, dict) and isinstance(obj.get("meta"), dict)
            and obj["meta"].get("format") == VIEWS_FORMAT and isinstance(obj.get("views"), dict)):
        raise CheckpointError(f"{p} is not a kdsrc views checkpoint ({VIEWS_FORMAT})")
    return obj["views"], obj["meta"]


def check_views_meta(meta: dict[str, Any], path, *, recipe: AngularRecipe, dim: int,
                     num_classes: int, fingerprint: str, pretrain: dict[str, Any]) -> None:
    """A views file must match the run: teacher, geometry, and every setting that shaped it."""
    def bad(what: str) -> ConfigError:
        return ConfigError(f"method.views_checkpoint: {path} {what}; pretrain the views again "
                           f"with this run's settings (kdsrc pretrain-views)")

    if meta.get("teacher_fingerprint") != fingerprint:
        raise bad(f"was trained on another teacher ({meta.get('teacher')!r}, fingerprint "
                  f"{meta.get('teacher_fingerprint')} vs {fingerprint})")
    if (meta.get("dim"), meta.get("num_classes")) != (dim, num_classes):
        raise bad(f"has views for D={meta.get('dim')}, C={meta.get('num_classes')}, the run needs "
                  f"D={dim}, C={num_classes}")
    theirs = meta.get("recipe", {})
    for key in AngularRecipe.TRAINING_KEYS:
        if theirs.get(key) != getattr(recipe, key):
            raise bad(f"was trained with {key}={theirs.get(key)!r}, this run has "
                      f"{key}={getattr(recipe, key)!r}")
    for key, value in pretrain.items():
        if meta.get("pretrain", {}).get(key) != value:
            raise bad(f"was trained with {key}={meta.get('pretrain', {}).get(key)!r}, this run "
                      f"has {key}={value!r}")


# -- teacher input augmentation (July–December 2025 code) ------------------------------------
class TeacherInputAugment:
    """``RandomHorizontalFlip(0.5) → ColorJitter(0.2, 0.2, 0.2, 0.1) → RandomRotation(10)``
    applied, as in the reference ``CRD.py`` (c48ca91..1b90e97), to the already-normalised batch
    tensor: one random draw for the whole batch. As there, torchvision's tensor colour ops clamp
    float images to [0, 1], so the normalised pixels below 0 are clipped (reproduced, not fixed);
    rotation fills with 0 (the mean colour in normalised space)."""

    def __init__(self):
        import torchvision.transforms as T

        self.transform = T.Compose([
            T.RandomHorizontalFlip(p=0.5),
            T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1),
            T.RandomRotation(degrees=10),
        ])

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        return self.transform(x.float().clone()).to(dtype)


__all__ = ["ViewGenerator", "AngularRecipe", "ViewMeter", "teacher_fingerprint", "load_views_file",
           "check_views_meta", "TeacherInputAugment", "VIEWS_FORMAT", "MAX_VIEWS", "DROPOUT_P",
           "BN_INIT_MEAN", "BN_INIT_STD"]
