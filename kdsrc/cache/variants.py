"""The variant index of the crop + flip augmentation, and the draws of fixed views.

A training sample's augmentation is ``(dy, dx, flip)``: the crop corner in the zero-padded image,
``0 <= dy, dx <= 2*pad``, and a flip bit (see :mod:`kdsrc.data.augment`). Its *variant code* is

    ``v = (dy * (2*pad + 1) + dx) * n_flip + flip``,   ``n_flip = 2`` if the dataset flips, else 1

(for a flip-less dataset the flip term is dropped: ``v = dy * (2*pad + 1) + dx``), so
``0 <= v < (2*pad + 1)**2 * n_flip`` = 162 for CIFAR (pad 4, flips), 81 for ``digits``.
"""

from __future__ import annotations

import hashlib

import torch

from ..errors import ConfigError

#: the formula, as written into a cache's meta.json
VARIANT_INDEX_FORMULA = ("(dy * (2*pad + 1) + dx) * n_flip + flip, n_flip = 2 if the dataset "
                         "flips else 1 (then the flip term is 0)")


def num_flips(flip: bool) -> int:
    return 2 if flip else 1


def num_variants(pad: int, flip: bool) -> int:
    """``(2*pad + 1)**2 * n_flip``: 162 for pad 4 with flips, 81 without."""
    return (2 * int(pad) + 1) ** 2 * num_flips(flip)


def variant_code(dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor | None, *, pad: int,
                 flip_enabled: bool) -> torch.Tensor:
    """The variant code (int64) of each ``(dy, dx, flip)``; see the module docstring."""
    side = 2 * int(pad) + 1
    code = torch.as_tensor(dy).long() * side + torch.as_tensor(dx).long()
    if flip_enabled:
        fl = torch.zeros_like(code) if flip is None else torch.as_tensor(flip, device=code.device).long()
        code = code * 2 + fl
    return code


def decode_variant(code: torch.Tensor, *, pad: int, flip_enabled: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`variant_code`: ``(dy, dx, flip)`` (int64, int64, bool)."""
    code = torch.as_tensor(code).long()
    side = 2 * int(pad) + 1
    if flip_enabled:
        fl = (code % 2).bool()
        code = code // 2
    else:
        fl = torch.zeros_like(code, dtype=torch.bool)
    return code // side, code % side, fl


def views_seed_int(seed: int) -> int:
    """Generator seed of the fixed views drawn with ``seed`` (63 bits of a sha256)."""
    digest = hashlib.sha256(f"kdsrc.cache.views:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def draw_fixed_variants(n: int, k: int, *, pad: int, flip: bool, seed: int) -> torch.Tensor:
    """``K`` distinct ``(dy, dx, flip)`` per image, ``N x K x 3`` int64 (flip as 0/1).

    Drawn without replacement from the image's ``num_variants(pad, flip)`` variants (uniformly:
    the first K of a random permutation), from a CPU generator seeded by :func:`views_seed_int`,
    so they are a pure function of ``(n, k, pad, flip, seed)``.
    """
    total = num_variants(pad, flip)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= total:
        raise ConfigError(f"views: expected an integer in 1..{total}, got {k!r}")
    g = torch.Generator(device="cpu")
    g.manual_seed(views_seed_int(seed))
    codes = torch.rand(n, total, generator=g).argsort(dim=1)[:, :k]
    dy, dx, fl = decode_variant(codes, pad=pad, flip_enabled=flip)
    return torch.stack([dy, dx, fl.long()], dim=2)
