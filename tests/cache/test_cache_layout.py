"""One folder per cache scheme, and the move of caches made before scheme folders."""

from __future__ import annotations

import os

import pytest

from kdsrc.cache import build_teacher_cache
from kdsrc.cache.__main__ import main
from kdsrc.cache.layout import (legacy_caches, migrate_legacy, scheme_folder, scheme_views)
from kdsrc.errors import CheckpointError, ConfigError
from pixel_cache import PixelTeacher, fake_data


def test_scheme_folder_names_round_trip():
    assert scheme_folder(None) == "exact" and scheme_folder(5) == "views-5"
    assert scheme_views("exact") is None and scheme_views("views-5") == 5
    for bad in ("views-0", "views5", "exact2", ""):
        with pytest.raises(ConfigError, match="expected exact or views-K"):
            scheme_views(bad)
    with pytest.raises(ConfigError):
        scheme_folder(0)


def _legacy(results, teacher, **kw):
    """A cache written where the layout before scheme folders put it: the teacher's folder."""
    folder = results / "cache" / "fake" / teacher
    folder.parent.mkdir(parents=True, exist_ok=True)
    return build_teacher_cache(PixelTeacher(), fake_data(n=2), folder, teacher_name=teacher, **kw)


def test_migration_moves_each_cache_into_its_scheme_folder(tmp_path):
    results = tmp_path / "results"
    exact = _legacy(results, "t1")
    _legacy(results, "t2", views=3)
    files = sorted(p.name for p in exact.iterdir())
    os.utime(exact, ns=(1_000_000_000, 1_000_000_000))
    assert legacy_caches(results) == [results / "cache/fake/t1", results / "cache/fake/t2"]

    moved = migrate_legacy(results)
    assert moved == [(results / "cache/fake/t1", results / "cache/fake/t1/exact"),
                     (results / "cache/fake/t2", results / "cache/fake/t2/views-3")]
    new = results / "cache/fake/t1/exact"
    assert sorted(p.name for p in new.iterdir()) == files
    assert new.stat().st_mtime_ns == 1_000_000_000    # the output's time is kept: no rerun
    assert sorted(p.name for p in (results / "cache/fake/t1").iterdir()) == ["exact"]
    assert legacy_caches(results) == [] and migrate_legacy(results) == []   # idempotent


def test_migration_never_overwrites_a_scheme_folder(tmp_path):
    results = tmp_path / "results"
    old = _legacy(results, "t1")
    (old / "exact").mkdir()
    with pytest.raises(CheckpointError, match="which exists"):
        migrate_legacy(results)
    assert (old / "meta.json").exists()


def test_migrate_command(tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["migrate", "--results", str(results)]) == 0
    assert "nothing to move" in capsys.readouterr().out
    _legacy(results, "t1")
    assert main(["migrate", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "t1/exact" in out and "snakemake --touch" in out


def test_the_workflow_stops_on_a_cache_of_the_old_layout(tmp_path):
    """Before any job: a run whose cache moved would otherwise rebuild the cache and retrain."""
    from repo_copy import SNAKEMAKE, copy_repo, run

    repo = copy_repo(tmp_path / "repo")
    _legacy(repo / "results", "resnet20")
    proc = run(SNAKEMAKE + ["-n", "--cores", "1", "--config", "plan=quick"], repo, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert "results/cache/fake/resnet20" in out and "python -m kdsrc.cache migrate" in out
    assert "snakemake --touch" in out
    migrate_legacy(repo / "results")
    proc = run(SNAKEMAKE + ["-n", "--cores", "1", "--config", "plan=quick"], repo, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
