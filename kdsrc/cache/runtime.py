"""Whether a training run uses a teacher cache, and opening it for the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from ..data.arrays import DatasetArrays
from .store import TeacherCache, describe, read_meta, weights_sha256


def open_run_cache(cfg: dict[str, Any], *, method: str, needs: Iterable[str] | None,
                   teacher: nn.Module | None, data: DatasetArrays, device: torch.device
                   ) -> tuple[TeacherCache | None, str]:
    """``(cache or None, reason)`` for a resolved run config.

    The cache is used when ``teacher_cache`` is ``auto``, the run has a teacher, ``teacher.cache``
    names an existing directory and that cache holds everything the method reads
    (``needs`` = the distiller's ``cache_needs_for(settings)``; None: the run cannot use one).
    A cache that exists but was built for another teacher, other weights or other data is an
    error (:meth:`TeacherCache.open`), never silently replaced by the online teacher.
    """
    if cfg.get("teacher_cache", "auto") == "off":
        return None, "teacher_cache: off"
    tcfg = cfg.get("teacher")
    if not tcfg or teacher is None:
        return None, "no teacher"
    path = tcfg.get("cache")
    if not path:
        return None, "teacher.cache not set"
    if needs is None:
        return None, (f"method {method!r} (with these settings) reads more of the teacher than "
                      "a cache holds")
    if not Path(path).exists():
        return None, f"{path} does not exist"
    meta = read_meta(path)
    missing = sorted(set(needs) - set(meta["contents"]))
    if missing:
        return None, (f"{path} holds {'+'.join(meta['contents'])}, method {method!r} also "
                      f"reads {'+'.join(missing)}")
    # a run with a validation split trains on some rows of the training set the cache was
    # built from: check the cache against the whole set, then read it at those rows
    cache = TeacherCache.open(path, device, teacher=tcfg["name"], dataset=cfg["dataset"],
                              weights_sha256=weights_sha256(teacher), data=data.whole or data,
                              needs=needs)
    if data.rows is not None:
        cache = cache.restrict(data.rows)
    where = "on the device" if cache.resident else "memory-mapped on the host"
    return cache, f"{path}: {describe(meta)}, {where}"
