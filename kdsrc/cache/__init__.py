"""Precomputed teacher outputs: computed once per teacher, read by every student that uses it.

Two schemes share one format.

**exact** (the fast mode's teacher cache, README "Benchmarks"). The pad-``p`` crop + flip augmentation has
``V = (2p+1)**2 * n_flip`` variants per image (162 for CIFAR, 81 for ``digits``, which does not
flip). :func:`build_teacher_cache` runs the frozen teacher once on every variant of every training
image (``V`` teacher epochs) with the training loader's own pixels (:func:`kdsrc.data.augment`);
a run then reads the stored outputs at ``(index, variant)`` instead of running the teacher, and
gets the online teacher's targets up to the storage dtype (exactly, with float32).
Variant index: ``v = (dy * (2p+1) + dx) * n_flip + flip`` (flip term 0 without flips), see
:mod:`kdsrc.cache.variants`.

**views** (the "precomputed multi-view teacher logits" baseline: K augmented views per image
made once, the teacher's logits stored with them).
``build_teacher_cache(..., views=K, views_seed=s)`` draws K distinct ``(dy, dx, flip)`` per
image (fixed by ``s``), stores them as ``variants`` ``[N, K, 3]`` and the teacher outputs for
those K views only. A run that uses such a cache trains on those K views only: the engine hands
``cache.variants`` to ``DeviceLoader(fixed_variants=...)``, which draws, per sample and epoch,
one of the image's K stored views (uniformly, from a generator seeded by ``(seed, epoch)``)
instead of a fresh crop/flip, and the lookup finds the slot whose stored view it is. K lives
in the cache (meta ``views``): the plan chooses the scheme by the cache it points
``teacher.cache`` at (e.g. ``results/cache/{d}/{t}/views-5``: one folder per scheme,
:mod:`kdsrc.cache.layout`), and the eval record says it
(``teacher_cache_views``). ``teacher_cache: off`` ignores the cache and trains with fresh
augmentation and the online teacher.

Directory format (``kdsrc-teacher-cache/1``), written to a temporary sibling and renamed into
place when complete (a directory without ``meta.json`` is never a cache)::

    meta.json          format, teacher (zoo name), teacher_weights_sha256 (of the state dict,
                       see weights_sha256), dataset, split, data_sha256 (training images + labels),
                       num_samples N, num_variants V (or K), num_classes C, pooled_dim D or null,
                       dtype (float16 | float32), pad, flip, image_shape, mean, std,
                       scheme (exact | views), views, views_seed, variant_index (the formula),
                       contents (["logits"] or ["logits", "pooled_feat"]), files,
                       kdsrc_version, torch_version, device, build_s, created
    logits.npy         [N, V, C] dtype, row-major: entry (i, v) is image i under variant v
    pooled_feat.npy    [N, V, D] dtype, only where it fits the size budget (``store_pooled``)
    variants.npy       [N, K, 3] int16 (dy, dx, flip), views scheme only

The arrays are plain NumPy ``.npy`` files, memory-mappable (``np.load(mmap_mode="r")``).
Sizes: CIFAR-100, 50,000 x 162 x 100 fp16 logits = 1.6 GB; resnet32x4 pooled (D=256) 4.1 GB
(inside the default 8 GiB budget); ResNet50 pooled (D=2048) 33 GB (not stored by default).

Which methods may read a cache: a distiller declares ``cache_needs`` (a frozenset of
``"logits"`` / ``"pooled_feat"``), and :meth:`kdsrc.distillers.Distiller.teacher_outputs`
answers from the cache when the run has one that holds all of it; methods that read feature
maps leave ``cache_needs = None`` and always run the teacher. Where the settings decide (Angular-KD
with ``teacher_input_aug: on`` runs the teacher on augmented inputs), ``cache_needs_for(settings)``
says so, and the engine does not open a cache the run would not read.

Build from the command line::

    python -m kdsrc.cache build --teacher resnet32x4 --dataset cifar100 \\
        --checkpoint results/teachers/cifar100/resnet32x4/model.pt \\
        --out results/cache/cifar100/resnet32x4/exact
    python -m kdsrc.cache info results/cache/cifar100/resnet32x4/exact
"""

from .runtime import open_run_cache
from .store import (DEFAULT_POOLED_BUDGET, FORMAT, TeacherCache, build_for_teacher,
                    build_teacher_cache, data_sha256, describe, read_meta, size_bytes,
                    weights_sha256)
from .variants import (VARIANT_INDEX_FORMULA, decode_variant, draw_fixed_variants, num_variants,
                       variant_code)

__all__ = [
    "FORMAT", "DEFAULT_POOLED_BUDGET", "TeacherCache", "build_teacher_cache", "build_for_teacher",
    "open_run_cache", "read_meta", "describe", "size_bytes", "weights_sha256", "data_sha256",
    "VARIANT_INDEX_FORMULA", "variant_code", "decode_variant", "num_variants",
    "draw_fixed_variants",
]
