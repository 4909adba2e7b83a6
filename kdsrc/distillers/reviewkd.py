"""``reviewkd``: knowledge review (mdistiller ``mdistiller/distillers/ReviewKD.py``).

Loss: ``ce_weight·CE + reviewkd_weight·min(epoch/warmup, 1)·Σ_levels HCL(ABF_l, teacher_l)``
(+ ``kd_weight·T²·KL(q ‖ p_s)`` if ``kd_weight ≠ 0``).

Levels (as mdistiller): the student's ``feats[1:]`` (``preact_feats[1:]`` with ``stu_preact``)
plus ``pooled_feat`` as a ``D x 1 x 1`` map; the teacher's ``preact_feats[1:]`` plus
``pooled_feat`` (from ``teacher_outputs``, so an Angular-KD ensemble feature replaces the last
level, as in the Angular-KD repo). The student levels are fused deepest first by ABF modules
(1×1 conv+BN to ``mid`` channels; except at the deepest level, a 2-channel sigmoid attention
mixes it with the nearest-upsampled residual of the level below; nearest resize to the
teacher's size; 3×3 conv+BN to the teacher's channels).

Sizes: every channel count and spatial size comes from ``ctx.student_dims`` /
``ctx.teacher_dims`` (one dry forward), replacing mdistiller's hand-written
``REVIEWKD.{SHAPES, OUT_SHAPES, IN_CHANNELS, OUT_CHANNELS}`` (which exist in its cfg only for
resnet32x4→resnet8x4, others as comments); for the pairs that have such lists the derived
values are identical (e.g. vgg13→vgg8: in [128, 256, 512, 512, 512], shapes [1, 4, 4, 8, 16]).
``mid = min(max_mid_channel, student pooled dim)`` (mdistiller hard-codes 512 and ignores
``MAX_MID_CHANNEL``; same value by default).

Level alignment when the two lists differ in length (e.g. a VGG student, 5 levels, under a
ResNet teacher, 4 levels): both lists are cut to their deepest ``min(n_s, n_t)`` levels, so the
pooled levels always pair. (mdistiller would zip the student's deepest levels against the
teacher's *shallowest*, which never matches in shape; no shipped config has such a pair.)

Defaults: ``reviewkd_weight`` 5.0 is mdistiller's CIFAR YAML (``configs/cifar100/reviewkd.yaml``,
res32x4→res8x4); its ``cfg.py`` default is 1.0, and the Angular-KD repo's configs use 8.0.
``kd_weight`` 0 = upstream (no KD term); the Angular-KD repo's ReviewKD adds
``T²·KL(q ‖ p_s)`` with weight 1 (``kd_weight: 1.0``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..losses.kd import kd_loss_from_probs
from ..losses.reviewkd import hcl_loss
from .base import Distiller
from ..settings import Setting, flag, temperature, warmup, weight
from .registry import register

Shape = tuple[int, int, int]


class ABF(nn.Module):
    """Attention-based fusion block (reference ``ABF``; same parameter names and init)."""

    def __init__(self, in_channel: int, mid_channel: int, out_channel: int, fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channel, mid_channel, kernel_size=1, bias=False),
                                   nn.BatchNorm2d(mid_channel))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channel, out_channel, kernel_size=3, stride=1,
                                             padding=1, bias=False),
                                   nn.BatchNorm2d(out_channel))
        self.att_conv = (nn.Sequential(nn.Conv2d(mid_channel * 2, 2, kernel_size=1), nn.Sigmoid())
                         if fuse else None)
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None,
                out_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(output at out_size with the teacher's channels, residual for the next level)``."""
        h, w = x.shape[-2:]
        x = self.conv1(x)
        if self.att_conv is not None:
            residual = F.interpolate(residual, (h, w), mode="nearest")
            att = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * att[:, 0:1] + residual * att[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, tuple(out_size), mode="nearest")
        return self.conv2(x), x


def _as_levels(maps: Sequence[Shape], pooled: int) -> list[Shape]:
    return [tuple(int(v) for v in m) for m in maps[1:]] + [(int(pooled), 1, 1)]


class ReviewHead(nn.Module):
    """The ABF stack for one (student, teacher) geometry.

    ``student_levels`` / ``teacher_levels``: ``(C, H, W)`` per level, shallow to deep, pooled last.
    ``abfs[0]`` is the deepest level's block (state-dict layout of the reference).
    """

    def __init__(self, student_levels: Sequence[Shape], teacher_levels: Sequence[Shape], *,
                 max_mid_channel: int = 512):
        super().__init__()
        n = min(len(student_levels), len(teacher_levels))
        if n < 1:
            raise ConfigError("ReviewKD needs at least one feature level in student and teacher")
        self.student_levels = [tuple(v) for v in student_levels[-n:]]
        self.teacher_levels = [tuple(v) for v in teacher_levels[-n:]]
        in_ch = [c for c, _, _ in self.student_levels]
        out_ch = [c for c, _, _ in self.teacher_levels]
        self.mid_channel = min(int(max_mid_channel), in_ch[-1])
        blocks = [ABF(in_ch[i], self.mid_channel, out_ch[i], i < n - 1) for i in range(n)]
        self.abfs = nn.ModuleList(blocks[::-1])
        self.out_sizes = [(h, w) for _, h, w in self.teacher_levels]

    @property
    def num_levels(self) -> int:
        return len(self.abfs)

    def forward(self, student_maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Student maps (all levels, shallow to deep) → fused maps of the last ``num_levels``
        levels, shallow to deep, each shaped as the teacher's level."""
        x = list(student_maps)[-self.num_levels:][::-1]
        sizes = self.out_sizes[::-1]
        out, res = self.abfs[0](x[0], None, sizes[0])
        results = [out]
        for feat, abf, size in zip(x[1:], self.abfs[1:], sizes[1:]):
            out, res = abf(feat, res, size)
            results.insert(0, out)
        return results


@register
class ReviewKD(Distiller):
    name = "reviewkd"
    cost_factor = 26 / 11   # DKD paper's figure: ReviewKD 26 ms, KD 11 ms per batch
    summary = "ReviewKD: CE + 5·min(epoch/20,1)·HCL(ABF-fused student feats, teacher preact feats)"
    declared = (
        weight("ce_weight", 1.0, "weight of the cross-entropy"),
        weight("reviewkd_weight", 5.0, "weight of the HCL term"),
        warmup("warmup", 20),
        Setting("max_mid_channel", 512, "cap on the ABF fusion channels", type="integer", low=1),
        flag("stu_preact", False, "fuse the student's pre-activation features"),
        weight("kd_weight", 0.0, "weight of an added T²·KL term"),
        temperature("kd_temperature", 4.0),
    )

    def __init__(self, student, teacher, settings, ctx):
        super().__init__(student, teacher, settings, ctx)
        s = self.settings
        sd, td = ctx.student_dims, ctx.teacher_dims
        key = "preact_feats" if s["stu_preact"] else "feats"
        for who, dims, k in (("student", sd, key), ("teacher", td, "preact_feats")):
            if k not in dims or "pooled_feat" not in dims:
                raise ConfigError(f"ReviewKD needs the {who}'s {k} and pooled_feat sizes "
                                  f"(DistillContext.{who}_dims)")
        self.review = ReviewHead(_as_levels(sd[key], sd["pooled_feat"]),
                                 _as_levels(td["preact_feats"], td["pooled_feat"]),
                                 max_mid_channel=s["max_mid_channel"])

    def extra_modules(self):
        return [self.review]

    def student_maps(self, feats: dict) -> list[torch.Tensor]:
        maps = feats["preact_feats" if self.settings["stu_preact"] else "feats"]
        return list(maps[1:]) + [feats["pooled_feat"][:, :, None, None]]

    def teacher_maps(self, feats: dict) -> list[torch.Tensor]:
        maps = list(feats["preact_feats"][1:]) + [feats["pooled_feat"][:, :, None, None]]
        return maps[-self.review.num_levels:]

    def forward_train(self, x, y, batch, state):
        s = self.settings
        logits, feats = self.student(x)
        t = self.teacher_outputs(x, y, batch)
        fused = self.review(self.student_maps(feats))
        w = state.ramp(s["warmup"])
        losses = {
            "loss_ce": s["ce_weight"] * self.ce(logits, y, batch),
            "loss_reviewkd": (w * s["reviewkd_weight"])
            * hcl_loss(fused, self.teacher_maps(t.feats)),
        }
        if s["kd_weight"] != 0:
            losses["loss_kd"] = s["kd_weight"] * kd_loss_from_probs(
                logits, t.probs(s["kd_temperature"]), temperature=s["kd_temperature"])
        return logits, losses
