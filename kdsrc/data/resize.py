"""The 224-px path: 32-px uint8 images stay on the device, each batch is resized there.

Training (RSD's timm loader, ``transforms_imagenet_train``): a random resized crop — scale
0.08–1 of the area, aspect ratio 3/4–4/3 (log-uniform), torchvision's ``get_params`` with its 10
attempts and its centre-crop fallback, drawn for every sample at once — resampled to
``size x size``, then a horizontal flip with p = 0.5. Evaluation (``transforms_imagenet_eval``):
resize to ``floor(size / crop_pct)`` and take the centre ``size x size``.

Departures from the reference, on purpose: the resampling is bilinear always (timm's training
loader picks bilinear or bicubic at random per image, its eval uses the model's interpolation,
bicubic for most); resampling a crop of a 32-px image up to 224 px never minifies, so
antialiasing changes nothing. Crops of different sizes are resampled in one batched gather:
bilinear interpolation inside each box with the box's own edge clamping, i.e. exactly
``F.interpolate(crop, size, mode="bilinear", align_corners=False)`` of the cropped image (a test
checks the two agree; ``torchvision.ops.roi_align`` would read pixels outside the box at its
edges).

The draws are a pure function of ``(seed, epoch)`` like the 32-px loader's (their own generator,
seeded apart from the permutation's), so a resumed run replays its epoch.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)
ATTEMPTS = 10


@dataclass(frozen=True)
class ResizeSpec:
    """Resize each batch to ``size`` px: random resized crop + flip (train), resize to
    ``floor(size / crop_pct)`` + centre crop (evaluation)."""

    size: int
    crop_pct: float = 0.875
    scale: tuple[float, float] = SCALE
    ratio: tuple[float, float] = RATIO

    @property
    def eval_resize(self) -> int:
        return int(math.floor(self.size / self.crop_pct))


def crop_seed(seed: int, epoch: int) -> int:
    digest = hashlib.sha256(f"kdsrc.resize:{int(seed)}:{int(epoch)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def random_resized_boxes(n: int, height: int, width: int, generator: torch.Generator, *,
                         scale=SCALE, ratio=RATIO) -> torch.Tensor:
    """``n x 4`` int64 ``(top, left, h, w)``: torchvision's ``RandomResizedCrop.get_params`` for
    ``n`` images at once (the first of 10 attempts whose box fits, else the centre crop of the
    ratio clamped to the bounds), on the CPU."""
    area = float(height * width)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    target = area * torch.empty(n, ATTEMPTS, dtype=torch.float64).uniform_(
        scale[0], scale[1], generator=generator)
    aspect = torch.exp(torch.empty(n, ATTEMPTS, dtype=torch.float64).uniform_(
        log_ratio[0], log_ratio[1], generator=generator))
    w = torch.round(torch.sqrt(target * aspect)).to(torch.int64)
    h = torch.round(torch.sqrt(target / aspect)).to(torch.int64)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(fits.any(1), fits.to(torch.int8).argmax(1), torch.full((n,), -1))
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    # the fallback: the whole image, cropped to the nearest allowed ratio
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    rows = torch.arange(n)
    hh = torch.where(first >= 0, h[rows, first.clamp(min=0)], torch.full((n,), fh))
    ww = torch.where(first >= 0, w[rows, first.clamp(min=0)], torch.full((n,), fw))
    top = torch.where(first >= 0, (u[:, 0] * (height - hh + 1)).floor().to(torch.int64),
                      torch.full((n,), (height - fh) // 2))
    left = torch.where(first >= 0, (u[:, 1] * (width - ww + 1)).floor().to(torch.int64),
                       torch.full((n,), (width - fw) // 2))
    return torch.stack([top, left, hh, ww], 1)


def _taps(start: torch.Tensor, length: torch.Tensor, size: int):
    """Per box and output pixel: the two source indices and the weight of the second, for
    resampling ``[start, start + length)`` to ``size`` pixels as F.interpolate does (bilinear,
    half-pixel centres, clamped to the box)."""
    k = torch.arange(size, device=start.device, dtype=torch.float32)
    src = ((k + 0.5)[None, :] * (length[:, None].float() / size) - 0.5).clamp(min=0.0)
    lo = src.floor()
    weight = src - lo
    lo = lo.to(torch.int64)
    hi = torch.minimum(lo + 1, length[:, None] - 1)
    return start[:, None] + lo, start[:, None] + hi, weight


def resized_crops(images_u8: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int,
                  mean: torch.Tensor, std: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Each image's box resampled (bilinear) to ``size x size``, flipped where ``flip``,
    normalised: ``B x C x size x size`` of ``dtype`` on the images' device."""
    x = images_u8.to(torch.float32)
    b = boxes.to(device=x.device, dtype=torch.int64)
    y0, y1, wy = _taps(b[:, 0], b[:, 2], size)
    x0, x1, wx = _taps(b[:, 1], b[:, 3], size)
    fl = flip.to(x.device).view(-1, 1)
    # a flip mirrors the output columns: read them in reverse
    x0, x1, wx = (torch.where(fl, t.flip(1), t) for t in (x0, x1, wx))
    n = torch.arange(len(b), device=x.device)[:, None, None]

    def at(rows, cols):          # B x S x S x C
        return x.permute(0, 2, 3, 1)[n, rows[:, :, None], cols[:, None, :]]

    wy4, wx4 = wy[:, :, None, None], wx[:, None, :, None]
    top = at(y0, x0) * (1 - wx4) + at(y0, x1) * wx4
    bottom = at(y1, x0) * (1 - wx4) + at(y1, x1) * wx4
    out = (top * (1 - wy4) + bottom * wy4).permute(0, 3, 1, 2)
    return ((out / 255.0 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)).to(dtype)


def centre_resized(images_u8: torch.Tensor, spec: ResizeSpec, mean: torch.Tensor,
                   std: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Evaluation: resize to ``spec.eval_resize`` (bilinear), centre ``spec.size`` crop,
    normalised."""
    r, s = spec.eval_resize, spec.size
    x = F.interpolate(images_u8.to(torch.float32), size=(r, r), mode="bilinear",
                      align_corners=False)
    top = int(round((r - s) / 2.0))   # torchvision's center_crop offsets
    x = x[..., top:top + s, top:top + s]
    return ((x / 255.0 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)).to(dtype)
