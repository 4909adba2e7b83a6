"""Where a teacher's caches lie: one folder per scheme under the teacher's cache folder.

``results/cache/{dataset}/{teacher}/{scheme}`` (:data:`kdsrc.paths.TEACHER_CACHE`), the scheme
folder named by :func:`scheme_folder`: ``exact`` (every crop/flip variant) or ``views-K`` (K fixed
views per image, drawn with views seed 0), or ``autoaugment-K`` (K stored augmented copies of
the training set, :func:`stored_views`). A teacher may have several at once; each is built by
its own job and read by the runs that name it.

Before scheme folders, the exact cache was the teacher's folder itself (``results/cache/{d}/{t}`` with
``meta.json`` in it). :func:`legacy_caches` finds such folders (the workflow stops on them
before any job runs) and :func:`migrate_legacy` moves each into its scheme folder; after the
move, ``snakemake --touch`` records the runs' new ``teacher.cache`` path, so nothing is
retrained (README "Teacher cache").
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import CheckpointError, ConfigError

_VIEWS = re.compile(r"views-([1-9][0-9]*)")
_STORED = re.compile(r"autoaugment-([1-9][0-9]*)")
#: a Snakemake wildcard constraint matching every scheme folder name
SCHEME_PATTERN = r"exact|views-[1-9][0-9]*|autoaugment-[1-9][0-9]*"
META = "meta.json"


def scheme_folder(views: int | None) -> str:
    """``exact`` (``views=None``) or ``views-K``."""
    if views is None:
        return "exact"
    if int(views) < 1:
        raise ConfigError(f"views: expected a positive number of views, got {views!r}")
    return f"views-{int(views)}"


def scheme_views(folder: str) -> int | None:
    """The inverse of :func:`scheme_folder`: None for ``exact``, K for ``views-K``."""
    if folder == "exact":
        return None
    m = _VIEWS.fullmatch(folder)
    if m is None:
        raise ConfigError(f"teacher cache scheme {folder!r}: expected exact or views-K")
    return int(m.group(1))


def stored_views(folder: str) -> int | None:
    """K for ``autoaugment-K`` (K stored augmented views per image, the multi-view project's
    scheme: :mod:`kdsrc.cache.view_images`), else None."""
    m = _STORED.fullmatch(folder)
    return None if m is None else int(m.group(1))


def stored_views_folder(cfg: dict) -> bool:
    """Whether a run config's ``teacher.cache`` holds stored augmented views (an
    ``autoaugment-K`` folder, or a folder of another name whose meta.json says so): they are
    the run's training data, so a run must read it and never fall back."""
    path = (cfg.get("teacher") or {}).get("cache")
    if not path:
        return False
    if stored_views(Path(path).name) is not None:
        return True
    try:
        return json.loads((Path(path) / META).read_text()).get("scheme") == "autoaugment"
    except (OSError, ValueError, AttributeError):
        return False    # no cache there (yet), or not one: nothing it could be trained on


def legacy_caches(results: str | Path = "results") -> list[Path]:
    """Teacher cache folders in the layout before scheme folders: ``cache/{d}/{t}/meta.json``."""
    root = Path(results) / "cache"
    return sorted(p.parent for p in root.glob(f"*/*/{META}"))


def migrate_legacy(results: str | Path = "results") -> list[tuple[Path, Path]]:
    """Move every legacy cache folder into its scheme folder; ``[(old, new), ...]``.

    Each move is two renames on one file system (the folder to a temporary sibling, then into
    place), so a cache is never half moved and never copied; the folder's modification time is
    kept. An existing scheme folder is never overwritten (an error names it)."""
    from .store import read_meta

    moved = []
    for old in legacy_caches(results):
        meta = read_meta(old)
        new = old / scheme_folder(meta.get("views") if meta.get("scheme") == "views" else None)
        if new.exists():
            raise CheckpointError(f"{old}: cannot move the cache into {new}, which exists; "
                                  f"remove one of them")
        stat = old.stat()
        tmp = old.with_name(f".{old.name}.migrating")
        if tmp.exists():
            raise CheckpointError(f"{tmp} exists (an interrupted migration?): move its "
                                  f"contents into {new} by hand")
        old.rename(tmp)
        old.mkdir()
        tmp.rename(new)
        os.utime(new, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        moved.append((old, new))
    return moved
