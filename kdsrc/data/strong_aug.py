"""MLKD's strong image on the device: crop + flip, RandAugment(n=2) and Cutout, batched.

Reference: Jin-Ying/Multi-Level-Logit-Distillation ``mdistiller/dataset/cifar100.py``
(``get_cifar100_train_transform_strong``), the same file in june6423/Angular-KD. The strong image of a
CIFAR image is::

    RandomCrop(32, padding=4) -> RandomHorizontalFlip() -> RandAugment(2, 10) -> ToTensor -> Normalize

where the (FixMatch-style) ``RandAugment.__call__`` picks ``n = 2`` operations uniformly *with
replacement* (``random.choices``) from 14, gives each a magnitude drawn uniformly from the op's
range (the ``m = 10`` argument is unused), applies them in order and always ends with
``Cutout(v)``, ``v ~ U[0, 0.5)`` (a square of side ``v·W`` filled with the colour (125, 123, 114)).

The operations and their ranges (PIL semantics reproduced below, on uint8 values)::

    AutoContrast      -            per channel, stretch [min, max] to [0, 255] (int truncation)
    Brightness        [0.05, 0.95] blend(black, img, v)
    Color             [0.05, 0.95] blend(grey(img), img, v)        grey = ITU-R 601-2 luma, integer
    Contrast          [0.05, 0.95] blend(mean grey level, img, v)
    Equalize          -            per-channel histogram equalisation (ImageOps.equalize)
    Identity          -
    Posterize         [4, 8]       keep int(v) high bits
    Rotate            [-30, 30]    degrees counter-clockwise about the centre, nearest, black fill
    Sharpness         [0.05, 0.95] blend(3x3 SMOOTH filter of img, img, v)   (v < 1: blur)
    ShearX / ShearY   [-0.3, 0.3]  affine (1, v, 0, 0, 1, 0) / (1, 0, 0, v, 1, 0), nearest, black fill
    Solarize          [0, 256]     invert pixels >= v
    TranslateX / Y    [-0.3, 0.3]  shift by v·W / v·H pixels (source = output + shift), black fill

Everything runs batched on the images' device, with no Python loop over samples: each of the n
slots computes every candidate operation for the whole batch and keeps, per sample, the one that
sample drew (``torch.where``), so no host synchronisation is needed. Per-channel point operations
go through per-(sample, channel) 256-entry lookup tables; the geometric ones through one gather
with the source index computed the way Pillow's ``ImagingTransformAffine`` does (16.16 fixed point
for rotate/shear, ``ImagingScaleAffine`` floating point for translations). The tests compare every
operation, Cutout and the whole chain with PIL (Pillow 13) on the CPU: pixel-exact. On a GPU,
float rounding (sin/cos, division) may move a rare pixel that sits on a rounding boundary.

Randomness: :func:`draw_strong` draws everything (op choices, magnitudes, Cutout size and
position, and -- for an independent crop -- crop corner and flip) from torch's *CPU* generator
(the global one unless a generator is passed), so a strong image is a deterministic function of
torch's CPU RNG state and identical on CPU and GPU. The reference draws from Python's ``random``
and NumPy inside unseeded DataLoader workers; the distributions are the same.

Quirk reproduced: ``CutoutAbs`` draws the square's centre with ``np.random.uniform(w)``, i.e.
``low = w, high = 1.0``, which is uniform on (1, w] rather than [0, w); the centre therefore
never falls in the first pixel column/row. ``CUTOUT_CENTRE_AS_CODED`` documents it here; the
rectangle is drawn by ``ImageDraw.rectangle`` with both corners inclusive.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .augment import crop_flip_u8, normalize_u8

#: (name, low, high) in the order of the reference ``augment_list()``
RANDAUGMENT_OPS: tuple[tuple[str, float, float], ...] = (
    ("AutoContrast", 0.0, 1.0),
    ("Brightness", 0.05, 0.95),
    ("Color", 0.05, 0.95),
    ("Contrast", 0.05, 0.95),
    ("Equalize", 0.0, 1.0),
    ("Identity", 0.0, 1.0),
    ("Posterize", 4.0, 8.0),
    ("Rotate", -30.0, 30.0),
    ("Sharpness", 0.05, 0.95),
    ("ShearX", -0.3, 0.3),
    ("ShearY", -0.3, 0.3),
    ("Solarize", 0.0, 256.0),
    ("TranslateX", -0.3, 0.3),
    ("TranslateY", -0.3, 0.3),
)
OP_INDEX = {name: i for i, (name, _, _) in enumerate(RANDAUGMENT_OPS)}
#: the Cutout fill colour of the reference (``CutoutAbs``); a 1-channel image uses the first value
CUTOUT_FILL = (125, 123, 114)
#: see the module docstring: the centre is ``w + (1 - w)·U`` (numpy's uniform(low=w, high=1))
CUTOUT_CENTRE_AS_CODED = True

_GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


@dataclass
class StrongDraws:
    """The random draws of one batch of strong images (CPU tensors, one row per sample)."""

    ops: torch.Tensor      # int64 B x n, index into RANDAUGMENT_OPS
    values: torch.Tensor   # float64 B x n, the ops' magnitudes
    cutout: torch.Tensor   # float64 B x 3: side as a fraction of W, centre uniforms (x, y) in [0, 1)
    dy: torch.Tensor | None = None    # int64 B, crop corner (independent crop only)
    dx: torch.Tensor | None = None
    flip: torch.Tensor | None = None  # bool B


def draw_strong(batch_size: int, *, n: int = 2, cutout_max: float = 0.5, pad: int | None = None,
                flip: bool = False, generator: torch.Generator | None = None) -> StrongDraws:
    """Draw the randomness of ``batch_size`` strong images from torch's CPU RNG.

    ``pad`` not None also draws an independent crop corner in ``[0, 2·pad]`` and (if ``flip``) a
    flip bit with p = 0.5, as the reference's own ``RandomCrop``/``RandomHorizontalFlip`` of the
    strong transform do.
    """
    b = int(batch_size)
    lo = torch.tensor([o[1] for o in RANDAUGMENT_OPS], dtype=torch.float64)
    hi = torch.tensor([o[2] for o in RANDAUGMENT_OPS], dtype=torch.float64)
    ops = torch.randint(0, len(RANDAUGMENT_OPS), (b, n), generator=generator, dtype=torch.int64)
    u = torch.rand(b, n, generator=generator, dtype=torch.float64)
    values = lo[ops] + (hi - lo)[ops] * u
    cut = torch.rand(b, 3, generator=generator, dtype=torch.float64)
    cut[:, 0] *= float(cutout_max)
    draws = StrongDraws(ops=ops, values=values, cutout=cut)
    if pad is not None:
        draws.dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, dtype=torch.int64)
        draws.dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, dtype=torch.int64)
        if flip:
            draws.flip = torch.rand(b, generator=generator) < 0.5
        else:
            draws.flip = torch.zeros(b, dtype=torch.bool)
    return draws


# -- helpers on float32 images holding integer values 0..255, B x C x H x W ------------------------

def _bshape(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _blend(degenerate: torch.Tensor, img: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """PIL ``Image.blend(degenerate, img, alpha)`` for 8-bit images: float32 interpolation, then
    truncation (clipped to [0, 255] when extrapolating)."""
    a = _bshape(alpha.to(torch.float32))
    return (degenerate + a * (img - degenerate)).clamp_(0, 255).floor_()


def _grey(img: torch.Tensor) -> torch.Tensor:
    """PIL ``convert("L")``: ``(19595 R + 38470 G + 7471 B + 0x8000) >> 16`` (B x 1 x H x W)."""
    if img.shape[1] != 3:
        return img[:, :1]
    r, g, b = img[:, 0:1].double(), img[:, 1:2].double(), img[:, 2:3].double()
    return torch.floor((r * 19595 + g * 38470 + b * 7471 + 32768) / 65536).float()


def _apply_lut(img: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """``img`` (B x C x H x W, integer values) through per-(sample, channel) tables B x C x 256."""
    b, c, h, w = img.shape
    idx = img.long().reshape(b, c, h * w)
    return lut.to(img.dtype).gather(2, idx).view(b, c, h, w)


def _autocontrast_lut(img: torch.Tensor) -> torch.Tensor:
    lo = img.amin(dim=(2, 3)).double()[..., None]
    hi = img.amax(dim=(2, 3)).double()[..., None]
    i = torch.arange(256, device=img.device, dtype=torch.float64)
    span = (hi - lo).clamp_min(1)
    scale = torch.full_like(span, 255.0) / span   # true division (255.0 / t uses a reciprocal)
    offset = -lo * scale
    lut = torch.trunc(i * scale + offset).clamp_(0, 255)
    return torch.where(hi > lo, lut, i.expand_as(lut))


def _histogram(img: torch.Tensor) -> torch.Tensor:
    b, c, h, w = img.shape
    hist = torch.zeros(b * c, 256, device=img.device, dtype=torch.int64)
    hist.scatter_add_(1, img.long().reshape(b * c, h * w),
                      torch.ones(b * c, h * w, device=img.device, dtype=torch.int64))
    return hist.view(b, c, 256)


def _equalize_lut(img: torch.Tensor) -> torch.Tensor:
    """``ImageOps.equalize``: ``step = (N - count of the highest level) // 255``; level i maps to
    ``(step // 2 + #pixels below i) // step``; identity when step is 0 (one level, or nearly)."""
    b, c, h, w = img.shape
    hist = _histogram(img)
    top = img.amax(dim=(2, 3)).long()[..., None]                       # B x C x 1
    h_last = hist.gather(2, top)
    step = (h * w - h_last) // 255                                      # B x C x 1
    below = torch.cumsum(hist, dim=2) - hist                            # exclusive cumsum
    safe = step.clamp_min(1)
    lut = torch.div(safe // 2 + below, safe, rounding_mode="floor").clamp_(max=255)
    ident = torch.arange(256, device=img.device, dtype=torch.int64).expand_as(lut)
    return torch.where(step > 0, lut, ident)


def _smooth(img: torch.Tensor) -> torch.Tensor:
    """``ImageFilter.SMOOTH`` (3x3 kernel 1 1 1 / 1 5 1 / 1 1 1, divisor 13, rounded; the one-pixel
    border is copied unchanged, as Pillow's 3x3 filter does)."""
    c = img.shape[1]
    k = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=img.device,
                     dtype=torch.float32) / 13.0
    inner = F.conv2d(img, k.expand(c, 1, 3, 3).contiguous(), groups=c)
    inner = (inner + 0.5).floor_().clamp_(0, 255)
    out = img.clone()
    out[:, :, 1:-1, 1:-1] = inner
    return out


def _affine_coefficients(ops: torch.Tensor, values: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Per-sample PIL affine data ``(a, b, c, d, e, f)`` (source = (a x + b y + c, d x + e y + f)),
    float64 B x 6; identity for non-geometric ops."""
    b = ops.shape[0]
    dev = values.device
    coef = torch.zeros(b, 6, dtype=torch.float64, device=dev)
    coef[:, 0] = 1.0
    coef[:, 4] = 1.0
    v = values.double()
    is_ = {name: ops == OP_INDEX[name] for name in _GEOMETRIC}
    # Image.rotate(angle): matrix of -radians(angle) about (w/2, h/2), entries rounded to 15 places
    ang = -torch.deg2rad(torch.remainder(v, 360.0))
    cos = torch.round(torch.cos(ang), decimals=15)
    sin = torch.round(torch.sin(ang), decimals=15)
    cx, cy = w / 2.0, h / 2.0
    rot = torch.stack([cos, sin, cos * -cx + sin * -cy + cx,
                       -sin, cos, -sin * -cx + cos * -cy + cy], dim=1)
    coef = torch.where(is_["Rotate"][:, None], rot, coef)
    coef[:, 1] = torch.where(is_["ShearX"], v, coef[:, 1])
    coef[:, 3] = torch.where(is_["ShearY"], v, coef[:, 3])
    coef[:, 2] = torch.where(is_["TranslateX"], v * w, coef[:, 2])
    coef[:, 5] = torch.where(is_["TranslateY"], v * h, coef[:, 5])
    return coef


def _affine_nearest(img: torch.Tensor, coef: torch.Tensor,
                    fill: torch.Tensor | None = None) -> torch.Tensor:
    """Pillow's nearest-neighbour ``Image.transform(size, AFFINE, coef)`` with black fill (or
    ``fill``, one value per channel), batched.

    Samples whose matrix has no shear/rotation part (``b == d == 0``) follow
    ``ImagingScaleAffine`` (double precision, ``COORD`` = floor, -1 below 0); the others
    ``affine_fixed`` (16.16 fixed point, ``FIX(v) = floor(v·65536 + 0.5)``, ``>> 16``).
    """
    bsz, c, h, w = img.shape
    dev = img.device
    a0, a1, a2, a3, a4, a5 = coef.unbind(1)
    xs = torch.arange(w, device=dev, dtype=torch.float64)
    ys = torch.arange(h, device=dev, dtype=torch.float64)
    # ImagingScaleAffine (used when a1 == a3 == 0)
    fx = (a2 + a0 * 0.5)[:, None] + xs[None, :] * a0[:, None]                  # B x W
    fy = (a5 + a4 * 0.5)[:, None] + ys[None, :] * a4[:, None]                  # B x H
    sx_scale = torch.where(fx < 0, -1.0, torch.trunc(fx)).long()[:, None, :].expand(bsz, h, w)
    sy_scale = torch.where(fy < 0, -1.0, torch.trunc(fy)).long()[:, :, None].expand(bsz, h, w)

    # affine_fixed
    def fix(v):
        return torch.floor(v * 65536.0 + 0.5).long()

    A0, A1, A3, A4 = fix(a0), fix(a1), fix(a3), fix(a4)
    A2 = fix(a2 + a0 * 0.5 + a1 * 0.5)
    A5 = fix(a5 + a3 * 0.5 + a4 * 0.5)
    xi = torch.arange(w, device=dev, dtype=torch.int64)[None, None, :]
    yi = torch.arange(h, device=dev, dtype=torch.int64)[None, :, None]
    xx = A2.view(-1, 1, 1) + xi * A0.view(-1, 1, 1) + yi * A1.view(-1, 1, 1)
    yy = A5.view(-1, 1, 1) + xi * A3.view(-1, 1, 1) + yi * A4.view(-1, 1, 1)
    sx_fixed = torch.div(xx, 65536, rounding_mode="floor")
    sy_fixed = torch.div(yy, 65536, rounding_mode="floor")

    scale_path = ((a1 == 0) & (a3 == 0)).view(-1, 1, 1)
    sx = torch.where(scale_path, sx_scale, sx_fixed)
    sy = torch.where(scale_path, sy_scale, sy_fixed)
    valid = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)                        # B x H x W
    src = (sy.clamp(0, h - 1) * w + sx.clamp(0, w - 1)).view(bsz, 1, h * w).expand(bsz, c, h * w)
    out = img.reshape(bsz, c, h * w).gather(2, src).view(bsz, c, h, w)
    if fill is None:
        return out * valid[:, None].to(out.dtype)
    return torch.where(valid[:, None], out, fill.to(out).view(1, c, 1, 1))


def randaugment_slot(img: torch.Tensor, ops: torch.Tensor, values: torch.Tensor,
                     fill: torch.Tensor | None = None) -> torch.Tensor:
    """Apply one RandAugment slot: sample i gets operation ``ops[i]`` with magnitude ``values[i]``.

    ``img`` is float32 B x C x H x W with integer values in [0, 255]; ``ops`` int64 B, ``values``
    float64 B, both on ``img``'s device. Returns the same kind of tensor. ``fill``: the colour
    the geometric ops leave where no source pixel maps (None: black, MLKD's).
    """
    bsz, c, h, w = img.shape
    op = ops.view(-1, 1, 1, 1)

    def sel(name: str, cand: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        return torch.where(op == OP_INDEX[name], cand, cur)

    # geometric ops (and identity for every other sample) in one gather
    out = _affine_nearest(img, _affine_coefficients(ops, values, h, w), fill)
    # per-channel lookup-table ops
    i256 = torch.arange(256, device=img.device, dtype=torch.float64)
    lut = i256.expand(bsz, c, 256)
    lut_ops = ops.view(-1, 1, 1)
    lut = torch.where(lut_ops == OP_INDEX["AutoContrast"], _autocontrast_lut(img), lut)
    lut = torch.where(lut_ops == OP_INDEX["Equalize"], _equalize_lut(img).double(), lut)
    bits = torch.clamp(torch.trunc(values), min=1).view(-1, 1, 1)             # Posterize: int(v)
    q = torch.pow(2.0, 8.0 - bits)
    lut = torch.where(lut_ops == OP_INDEX["Posterize"], torch.floor(i256 / q) * q, lut)
    thr = values.view(-1, 1, 1)                                               # Solarize
    lut = torch.where(lut_ops == OP_INDEX["Solarize"], torch.where(i256 < thr, i256, 255.0 - i256), lut)
    is_lut = ((ops == OP_INDEX["AutoContrast"]) | (ops == OP_INDEX["Equalize"])
              | (ops == OP_INDEX["Posterize"]) | (ops == OP_INDEX["Solarize"])).view(-1, 1, 1, 1)
    out = torch.where(is_lut, _apply_lut(img, lut), out)
    # ImageEnhance ops: blend(degenerate, img, v)
    grey = _grey(img)
    out = sel("Brightness", _blend(torch.zeros_like(img), img, values), out)
    out = sel("Color", _blend(grey.expand_as(img), img, values), out)
    mean = torch.floor(grey.double().mean(dim=(1, 2, 3)) + 0.5).float()
    out = sel("Contrast", _blend(_bshape(mean).expand_as(img), img, values), out)
    out = sel("Sharpness", _blend(_smooth(img), img, values), out)
    return out


def cutout_(img: torch.Tensor, cutout: torch.Tensor) -> torch.Tensor:
    """The reference ``Cutout(v)``: a ``v·W`` square (both corners inclusive, truncated to ints),
    filled with (125, 123, 114), in place on float32 B x C x H x W. ``cutout`` is B x 3 float64:
    ``v`` and the centre's two uniforms (see ``CUTOUT_CENTRE_AS_CODED``)."""
    bsz, c, h, w = img.shape
    v = cutout[:, 0] * w
    cx = w + (1.0 - w) * cutout[:, 1]
    cy = h + (1.0 - h) * cutout[:, 2]
    x0 = torch.trunc(torch.clamp(cx - v / 2.0, min=0))
    y0 = torch.trunc(torch.clamp(cy - v / 2.0, min=0))
    x1 = torch.trunc(torch.clamp(x0 + v, max=w))
    y1 = torch.trunc(torch.clamp(y0 + v, max=h))
    on = (v > 0).view(-1, 1, 1)
    xs = torch.arange(w, device=img.device, dtype=torch.float64)
    ys = torch.arange(h, device=img.device, dtype=torch.float64)
    inx = (xs[None, :] >= x0[:, None]) & (xs[None, :] <= x1[:, None])         # B x W
    iny = (ys[None, :] >= y0[:, None]) & (ys[None, :] <= y1[:, None])         # B x H
    box = (iny[:, :, None] & inx[:, None, :] & on)[:, None]                   # B x 1 x H x W
    fill = torch.tensor(CUTOUT_FILL if c == 3 else CUTOUT_FILL[:1] * c, dtype=img.dtype,
                        device=img.device).view(1, c, 1, 1)
    return torch.where(box, fill, img)


def randaugment_u8(images_u8: torch.Tensor, draws: StrongDraws) -> torch.Tensor:
    """RandAugment (all of ``draws.ops`` slots in order) then Cutout on a uint8 batch; uint8 out."""
    dev = images_u8.device
    ops = draws.ops.to(dev, non_blocking=True)
    values = draws.values.to(dev, non_blocking=True)
    x = images_u8.float()
    for s in range(ops.shape[1]):
        x = randaugment_slot(x, ops[:, s], values[:, s])
    x = cutout_(x, draws.cutout.to(dev, non_blocking=True))
    return x.to(torch.uint8)


def strong_image(images_u8: torch.Tensor, draws: StrongDraws, *, pad: int, mean, std,
                dy: torch.Tensor | None = None, dx: torch.Tensor | None = None,
                flip: torch.Tensor | None = None, dtype: torch.dtype = torch.float32,
                channels_last: bool = False) -> torch.Tensor:
    """The normalised strong image of uint8 ``images_u8`` (the *un*-augmented training images).

    Crop corner and flip come from ``draws`` when it has them (independent crop, as the
    reference), else from ``dy``/``dx``/``flip`` (e.g. the weak image's own draws). Then
    RandAugment + Cutout, then ``ToTensor`` + ``Normalize`` exactly as :func:`normalize_u8`.
    """
    if images_u8.dtype != torch.uint8:
        raise TypeError(f"strong_image expects uint8 images, got {images_u8.dtype}")
    dev = images_u8.device
    if draws.dy is not None:
        dy, dx, flip = (draws.dy.to(dev), draws.dx.to(dev),
                        None if draws.flip is None else draws.flip.to(dev))
    if dy is None or dx is None:
        raise ValueError("strong_image needs crop corners: from the draws or dy/dx")
    u8 = crop_flip_u8(images_u8, dy, dx, flip, pad=pad, check=False)
    u8 = randaugment_u8(u8, draws)
    u8 = u8.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return normalize_u8(u8, mean, std, dtype)


def pil_reference_op(img_u8_hwc, name: str, value: float):
    """One reference operation applied with PIL to an H x W x 3 uint8 numpy array (for tests).

    Mirrors the reference's op functions; returns a uint8 numpy array."""
    import numpy as np
    from PIL import Image, ImageEnhance, ImageOps

    img = Image.fromarray(img_u8_hwc)
    if name == "AutoContrast":
        out = ImageOps.autocontrast(img)
    elif name == "Brightness":
        out = ImageEnhance.Brightness(img).enhance(value)
    elif name == "Color":
        out = ImageEnhance.Color(img).enhance(value)
    elif name == "Contrast":
        out = ImageEnhance.Contrast(img).enhance(value)
    elif name == "Equalize":
        out = ImageOps.equalize(img)
    elif name == "Identity":
        out = img
    elif name == "Posterize":
        out = ImageOps.posterize(img, max(1, int(value)))
    elif name == "Rotate":
        out = img.rotate(value)
    elif name == "Sharpness":
        out = ImageEnhance.Sharpness(img).enhance(value)
    elif name == "ShearX":
        out = img.transform(img.size, Image.AFFINE, (1, value, 0, 0, 1, 0))
    elif name == "ShearY":
        out = img.transform(img.size, Image.AFFINE, (1, 0, 0, value, 1, 0))
    elif name == "Solarize":
        out = ImageOps.solarize(img, value)
    elif name == "TranslateX":
        out = img.transform(img.size, Image.AFFINE, (1, 0, value * img.size[0], 0, 1, 0))
    elif name == "TranslateY":
        out = img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, value * img.size[1]))
    else:
        raise KeyError(name)
    return np.asarray(out, dtype=np.uint8)


def pil_reference_cutout(img_u8_hwc, v: float, ux: float, uy: float):
    """The reference ``Cutout(v)`` with its two uniforms given (for tests)."""
    import numpy as np
    from PIL import Image, ImageDraw

    img = Image.fromarray(img_u8_hwc)
    if v <= 0:
        return np.asarray(img)
    w, h = img.size
    v = v * w
    x0 = w + (1.0 - w) * ux          # np.random.uniform(w): low=w, high=1.0
    y0 = h + (1.0 - h) * uy
    x0 = int(max(0, x0 - v / 2.0))
    y0 = int(max(0, y0 - v / 2.0))
    x1 = min(w, x0 + v)
    y1 = min(h, y0 + v)
    img = img.copy()
    ImageDraw.Draw(img).rectangle((x0, y0, x1, y1), CUTOUT_FILL)
    return np.asarray(img, dtype=np.uint8)


__all__ = ["RANDAUGMENT_OPS", "OP_INDEX", "CUTOUT_FILL", "StrongDraws", "draw_strong",
           "randaugment_slot", "randaugment_u8", "cutout_", "strong_image",
           "pil_reference_op", "pil_reference_cutout"]
