"""The transformer recipes' image augmentations, on the device, between the crop and the
normalisation (RSD's timm loader order: crop, flip, RandAugment or colour jitter, ToTensor,
Normalize, random erasing; mixup comes in the training step).

* **RandAugment**, timm's ``rand-m{M}-mstd{S}-inc1`` (RSD's ViT recipe ``rand-m9-mstd0.5-inc1``):
  per image, ``n`` (2) ops drawn with replacement from timm's 15 "increasing" ops, each applied
  with p = 0.5 at magnitude ``N(M, S)`` clipped to [0, 10], mapped to its argument as timm's
  ``LEVEL_TO_ARG`` does (a random sign for rotate/shear/translate/enhance). The ops run batched
  on uint8 values through :mod:`kdsrc.data.strong_aug`'s Pillow-exact kernels (MLKD's); three
  more are lookup tables here (Invert, timm's Posterize with 0 bits kept, SolarizeAdd). Departure:
  rotate/shear/translate resample nearest (timm picks bilinear or bicubic at random); the fill is
  timm's, the mean colour ``round(255·mean)``. Draws from torch's CPU generator (saved in every
  resume file), not Python's ``random``.
* **AutoAugment**, torchvision's ``AutoAugment(CIFAR10 policy)`` (the multi-view project's), per
  image on its uint8 tensor (torchvision's own implementation, on the device; one policy draw per
  image, as with the reference's per-image PIL transform).
* **Colour jitter** (brightness, contrast, saturation ``v``; hue 0), torchvision's
  ``ColorJitter`` per image. As in timm 0.6.5, it is not applied when RandAugment is on.
* **Random erasing**, timm's ``RandomErasing(mode="pixel")`` on the normalised batch.

kornia's batched RandAugment is not used: its op set, magnitude scale and per-op probability are
not timm's (no ``mstd`` noise, no "increasing" variants), so it would not reproduce RSD's recipe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .strong_aug import OP_INDEX, randaugment_slot

#: timm's _RAND_INCREASING_TRANSFORMS, in its order
TIMM_INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                       "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing",
                       "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing",
                       "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
#: timm op -> the strong_aug kernel that runs it (None: a lookup table of this module)
_KERNEL = {"AutoContrast": "AutoContrast", "Equalize": "Equalize", "Invert": None,
           "Rotate": "Rotate", "PosterizeIncreasing": None, "SolarizeIncreasing": "Solarize",
           "SolarizeAdd": None, "ColorIncreasing": "Color", "ContrastIncreasing": "Contrast",
           "BrightnessIncreasing": "Brightness", "SharpnessIncreasing": "Sharpness",
           "ShearX": "ShearX", "ShearY": "ShearY", "TranslateXRel": "TranslateX",
           "TranslateYRel": "TranslateY"}


@dataclass(frozen=True)
class RandAugmentSpec:
    """A timm RandAugment config string, parsed (only the increasing op set is supported)."""

    magnitude: float = 10.0
    magnitude_std: float = 0.0
    num_layers: int = 2
    prob: float = 0.5

    @classmethod
    def parse(cls, text: str) -> "RandAugmentSpec":
        parts = text.split("-")
        if parts[0] != "rand":
            raise ConfigError(f"randaugment: expected a timm config like rand-m9-mstd0.5-inc1, "
                              f"got {text!r}")
        kw: dict = {}
        inc = False
        for part in parts[1:]:
            m = re.fullmatch(r"([a-z]+)(\d.*)", part)
            if m is None:
                raise ConfigError(f"randaugment: cannot read {part!r} in {text!r}")
            key, val = m.groups()
            try:
                if key == "m":
                    kw["magnitude"] = float(val)
                elif key == "mstd":
                    kw["magnitude_std"] = float(val)
                elif key == "n":
                    kw["num_layers"] = int(val)
                elif key == "inc":
                    inc = bool(int(val))
                else:
                    raise ConfigError(f"randaugment: {key!r} in {text!r} is not supported "
                                      f"(m, mstd, n, inc)")
            except ValueError:
                raise ConfigError(f"randaugment: cannot read {part!r} in {text!r}") from None
        if not inc:
            raise ConfigError(f"randaugment: only timm's increasing op set (inc1) is "
                              f"implemented, got {text!r}")
        if not 0 <= kw.get("magnitude", 10.0) <= 10 or kw.get("num_layers", 2) < 1:
            raise ConfigError(f"randaugment: magnitude 0..10 and n >= 1, got {text!r}")
        return cls(**kw)


def draw_randaugment(batch: int, spec: RandAugmentSpec,
                     generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Per image and layer: op index (into :data:`TIMM_INCREASING_OPS`), applied (p = 0.5),
    magnitude ``N(m, mstd)`` clipped to [0, 10], sign (+1 / -1); CPU tensors."""
    n = spec.num_layers
    ops = torch.randint(0, len(TIMM_INCREASING_OPS), (batch, n), generator=generator)
    applied = torch.rand(batch, n, generator=generator, dtype=torch.float64) <= spec.prob
    mag = torch.full((batch, n), float(spec.magnitude), dtype=torch.float64)
    if spec.magnitude_std > 0:
        mag = mag + spec.magnitude_std * torch.randn(batch, n, generator=generator,
                                                     dtype=torch.float64)
    mag = mag.clamp(0.0, 10.0)
    sign = torch.where(torch.rand(batch, n, generator=generator, dtype=torch.float64) > 0.5,
                       -1.0, 1.0).to(torch.float64)
    return {"ops": ops, "applied": applied, "magnitude": mag, "sign": sign}


def _argument(name: str, mag: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """timm's LEVEL_TO_ARG for the increasing ops (float64, per sample)."""
    level = mag / 10.0
    if name == "Rotate":
        return level * 30.0 * sign
    if name in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                "SharpnessIncreasing"):
        return torch.clamp(1.0 + level * 0.9 * sign, min=0.1)
    if name in ("ShearX", "ShearY"):
        return level * 0.3 * sign
    if name in ("TranslateXRel", "TranslateYRel"):
        return level * 0.45 * sign
    if name == "PosterizeIncreasing":
        return 4.0 - torch.trunc(level * 4.0)
    if name == "SolarizeIncreasing":
        return 256.0 - torch.trunc(level * 256.0)
    if name == "SolarizeAdd":
        return torch.clamp(torch.trunc(level * 110.0), max=128.0)
    return torch.zeros_like(mag)


def randaugment_timm(images: torch.Tensor, draws: dict[str, torch.Tensor],
                     fill: tuple[int, ...]) -> torch.Tensor:
    """timm's RandAugment on float32 ``B x C x H x W`` holding integer values 0..255."""
    dev = images.device
    x = images
    i256 = torch.arange(256, device=dev, dtype=torch.float64)
    fill_t = torch.tensor(fill, dtype=torch.float32, device=dev)
    for layer in range(draws["ops"].shape[1]):
        ops = draws["ops"][:, layer]
        applied = draws["applied"][:, layer]
        kernel_ops = torch.full_like(ops, OP_INDEX["Identity"])
        values = torch.zeros(len(ops), dtype=torch.float64)
        lut = i256.expand(len(ops), 256).clone()
        for i, name in enumerate(TIMM_INCREASING_OPS):
            chosen = (ops == i) & applied
            if not bool(chosen.any()):
                continue
            arg = _argument(name, draws["magnitude"][:, layer], draws["sign"][:, layer])
            if _KERNEL[name] is not None:
                kernel_ops[chosen] = OP_INDEX[_KERNEL[name]]
                values[chosen] = arg[chosen]
            elif name == "Invert":
                lut[chosen] = 255.0 - i256
            elif name == "PosterizeIncreasing":     # keep `bits` high bits; 0 bits: black
                q = torch.pow(2.0, 8.0 - arg[chosen])[:, None]
                lut[chosen] = torch.where(arg[chosen][:, None] >= 8, i256,
                                          torch.floor(i256 / q) * q)
            else:                                    # SolarizeAdd: +add below 128
                lut[chosen] = torch.where(i256 < 128, torch.clamp(i256 + arg[chosen][:, None],
                                                                  max=255.0), i256)
        x = randaugment_slot(x, kernel_ops.to(dev), values.to(dev), fill=fill_t)
        table = lut.to(dev)[:, None, :].expand(-1, x.shape[1], -1)
        idx = x.long().reshape(x.shape[0], x.shape[1], -1)
        x = table.to(x.dtype).gather(2, idx).view_as(x)
    return x


def autoaugment_cifar10(images_u8: torch.Tensor) -> torch.Tensor:
    """torchvision's AutoAugment (CIFAR-10 policy), one policy draw per image; uint8 in and out.

    The images equal those of calling torchvision's transform on each image in turn: its draws
    (sub-policy, whether each operation applies, the sign of its magnitude) are made in its
    order from the global generator, and its own operations run on the images. Each operation
    runs once on all the images that drew it with the same magnitude (at most a few dozen
    calls per batch instead of several per image: on a GPU, per-image calls are bound by their
    kernel launches)."""
    from torchvision.transforms import v2

    aa = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    if not all(hasattr(aa, a) for a in _TORCHVISION_AUTOAUGMENT):  # another torchvision layout
        return torch.stack([aa(img) for img in images_u8])
    h, w = images_u8.shape[-2:]
    spaces = {tid: (fn(10, h, w), signed) for tid, (fn, signed) in
              aa._AUGMENTATION_SPACE.items()}
    draws = [_autoaugment_draw(aa._policies, spaces) for _ in range(len(images_u8))]
    out = images_u8.clone()
    for stage in range(max((len(d) for d in draws), default=0)):
        groups: dict[tuple[str, float], list[int]] = {}
        for i, d in enumerate(draws):
            if stage < len(d) and d[stage] is not None:
                groups.setdefault(d[stage], []).append(i)
        for (tid, magnitude), rows in groups.items():
            idx = torch.tensor(rows, device=out.device)
            out[idx] = aa._apply_image_or_video_transform(
                out[idx], tid, magnitude, interpolation=aa.interpolation, fill=aa._fill)
    return out


#: what :func:`autoaugment_cifar10` reads of torchvision's v2.AutoAugment (torchvision 0.15+)
_TORCHVISION_AUTOAUGMENT = ("_policies", "_AUGMENTATION_SPACE", "_apply_image_or_video_transform",
                            "_fill", "interpolation")


def _autoaugment_draw(policies, spaces) -> list[tuple[str, float] | None]:
    """One image's draws, as torchvision's AutoAugment.forward makes them: a sub-policy, then
    for each of its operations whether it applies and, if it applies and is signed, the sign;
    ``(operation, magnitude)`` per step, None where it does not apply."""
    policy = policies[int(torch.randint(len(policies), ()))]
    steps: list[tuple[str, float] | None] = []
    for tid, probability, magnitude_idx in policy:
        if not torch.rand(()) <= probability:
            steps.append(None)
            continue
        magnitudes, signed = spaces[tid]
        magnitude = 0.0
        if magnitudes is not None:
            magnitude = float(magnitudes[magnitude_idx])
            if signed and torch.rand(()) <= 0.5:
                magnitude *= -1
        steps.append((tid, magnitude))
    return steps


def colour_jitter(images_u8: torch.Tensor, strength: float) -> torch.Tensor:
    """torchvision's ``ColorJitter(strength, strength, strength)`` per image; uint8 in and out."""
    from torchvision.transforms import v2

    cj = v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength)
    return torch.stack([cj(img) for img in images_u8])


@dataclass
class PixelAugment:
    """What a training loader applies between the crop and the normalisation (uint8 values),
    and random erasing after it; built from a run's solver keys (:func:`from_solver`)."""

    randaugment: RandAugmentSpec | None = None
    autoaugment: bool = False
    jitter: float = 0.0
    erasing: float = 0.0
    fill: tuple[int, ...] = (128, 128, 128)

    @classmethod
    def from_solver(cls, solver: dict, mean) -> "PixelAugment | None":
        ra = solver["randaugment"]
        out = cls(randaugment=RandAugmentSpec.parse(ra) if ra != "off" else None,
                  autoaugment=solver["autoaugment"] == "cifar10",
                  jitter=solver["color_jitter"], erasing=solver["random_erasing"],
                  fill=tuple(min(255, round(255 * m)) for m in mean))
        return out if out.active else None

    @property
    def active(self) -> bool:
        return bool(self.randaugment or self.autoaugment or self.jitter or self.erasing)

    @property
    def on_pixels(self) -> bool:
        return bool(self.randaugment or self.autoaugment or self.jitter)

    def pixels(self, images_u8: torch.Tensor) -> torch.Tensor:
        """RandAugment or AutoAugment, then colour jitter unless RandAugment ran (timm 0.6.5)."""
        x = images_u8
        if self.autoaugment:
            x = autoaugment_cifar10(x)
        if self.randaugment is not None:
            draws = draw_randaugment(len(x), self.randaugment)
            x = randaugment_timm(x.float(), draws, self.fill).to(torch.uint8)
        elif self.jitter:
            x = colour_jitter(x, self.jitter)
        return x

    def erase(self, x: torch.Tensor) -> torch.Tensor:
        """timm's RandomErasing (per image, ``mode="pixel"``: normal noise) on a normalised
        batch."""
        if not self.erasing:
            return x
        from timm.data.random_erasing import RandomErasing

        return RandomErasing(probability=self.erasing, mode="pixel", device=x.device)(x)
