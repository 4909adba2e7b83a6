"""Published teacher checkpoints: download the archive, verify, extract one member.

The mdistiller release ``cifar_teachers.tar`` holds the six CIFAR-100 teachers as
``cifar_teachers/<name>_vanilla/ckpt_epoch_240.pth`` (``{"model": state_dict, ...}``). Known
sha256 sums are pinned in ``config/teacher_hashes.yaml``. A pinned mismatch is an error that
leaves nothing behind (not even the cached archive); a file with no pinned sum is accepted
once, loudly, and its sum goes into the teacher's ``source.json`` together with the line to pin.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import yaml

from .atomicio import atomic_write, atomic_write_json
from .errors import CheckpointError, ConfigError, DataError

CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def load_pins(path: str | Path) -> dict[str, dict[str, str]]:
    """``{"archives": {file: sha256}, "members": {member: sha256}, "files": {file: sha256}}``
    from teacher_hashes.yaml (``files``: checkpoints published one per file)."""
    p = Path(path)
    if not p.exists():
        return {"archives": {}, "members": {}, "files": {}}
    data = yaml.safe_load(p.read_text()) or {}
    pins = {section: dict(data.get(section) or {}) for section in ("archives", "members", "files")}
    for section, table in pins.items():
        for key, value in table.items():
            if value is not None and (not isinstance(value, str) or len(value) != 64):
                raise ConfigError(f"{p}: {section}.{key}: expected a sha256 (64 hex digits) or null")
    return pins


def _download(url: str, dest: Path, log: Callable[[str], None]) -> None:
    """Stream ``url`` into ``dest`` (a temp path), with progress lines; HTTP errors → DataError."""
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            done, last = 0, time.monotonic()
            with open(dest, "wb") as out:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    out.write(block)
                    done += len(block)
                    if time.monotonic() - last > 10:
                        pct = f" ({100 * done / total:.0f}%)" if total else ""
                        log(f"  downloaded {done / 1e6:.1f} MB{pct}")
                        last = time.monotonic()
            if total and done != total:
                raise DataError(f"download of {url} was cut short: {done} of {total} bytes")
    except urllib.error.HTTPError as e:
        raise DataError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(f"cannot download {url}: {reason}") from None


def _check_sum(kind: str, name: str, actual: str, pinned: str | None, pins_file: str,
               log: Callable[[str], None]) -> bool:
    """True if pinned and equal; False if unpinned (with a loud warning); raise on mismatch."""
    if pinned is None:
        log(f"WARNING: {kind} {name} has no pinned sha256 in {pins_file}; accepting it once.\n"
            f"WARNING: to pin it, add under `{kind}s:` in {pins_file}:\n"
            f"  {name}: {actual}")
        return False
    if actual != pinned:
        raise DataError(f"sha256 mismatch for {kind} {name}: got {actual}, pinned {pinned} "
                        f"in {pins_file}; the file was removed")
    return True


def ensure_archive(url: str, file_name: str, cache_dir: str | Path, pins: dict, *,
                   pins_file: str = "config/teacher_hashes.yaml",
                   log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
                   kind: str = "archive") -> tuple[Path, str, bool]:
    """Download the archive (``kind="file"``: a single checkpoint) once into ``cache_dir``
    (locked against parallel jobs).

    Returns (path, sha256, pinned). A cached file is re-verified each time (a pinned sum must
    still match; cheap next to training).
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / file_name
    section = "archives" if kind == "archive" else "files"
    pinned_sum = pins[section].get(file_name)
    with open(cache / f".{file_name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one download, other teacher jobs wait for it
        if not target.exists():
            log(f"downloading {url}")
            digest = ""

            def download(tmp: Path) -> None:
                nonlocal digest
                _download(url, tmp, log)
                digest = sha256_file(tmp)
                _check_sum(kind, file_name, digest, pinned_sum, pins_file, log)

            atomic_write(target, download, suffix=".part")
            return target, digest, pinned_sum is not None
        digest = sha256_file(target)
        try:
            pinned = _check_sum(kind, file_name, digest, pinned_sum, pins_file,
                                lambda m: None)
        except DataError:
            target.unlink(missing_ok=True)
            raise
        return target, digest, pinned


def fetch_teacher(*, model: str, url: str, archive_file: str, member: str, out_model: str | Path,
                  out_source: str | Path, cache_dir: str | Path, pins_file: str | Path,
                  num_classes: int = 100,
                  log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict:
    """Get ``member`` of the published archive into ``out_model`` (verified, strict-loadable).

    Writes ``out_source`` (JSON: url, archive + member sha256 and whether they were pinned).
    Nothing is left at ``out_model``/``out_source`` on any failure.
    """
    from .models import load_teacher

    pins = load_pins(pins_file)
    archive, archive_sum, archive_pinned = ensure_archive(
        url, archive_file, cache_dir, pins, pins_file=str(pins_file), log=log)
    out_model, out_source = Path(out_model), Path(out_source)
    source: dict = {}

    def extract(tmp: Path) -> None:
        """The member into ``tmp``, checked (sha256, strict load) before it becomes model.pt."""
        try:
            with tarfile.open(archive) as tar:
                try:
                    info = tar.getmember(member)
                except KeyError:
                    names = [m.name for m in tar.getmembers() if m.isfile()][:10]
                    raise DataError(f"{archive} has no member {member!r}; it holds e.g. "
                                    f"{', '.join(names)}") from None
                if not info.isfile():
                    raise DataError(f"{archive}: member {member!r} is not a regular file")
                src = tar.extractfile(info)
                with open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"{archive} is damaged or truncated ({e}); delete it and run "
                            "again to download it anew") from None
        member_sum = sha256_file(tmp)
        member_pinned = _check_sum("member", member, member_sum, pins["members"].get(member),
                                   str(pins_file), log)
        try:
            load_teacher(model, tmp, num_classes=num_classes)
        except CheckpointError as e:
            raise CheckpointError(f"{member} from {archive_file} does not load as {model}: {e}"
                                  ) from None
        source.update({"kind": "download", "model": model, "url": url, "archive": archive_file,
                       "archive_sha256": archive_sum, "archive_pinned": archive_pinned,
                       "member": member, "member_sha256": member_sum,
                       "member_pinned": member_pinned})

    atomic_write(out_model, extract, suffix=".pt")
    _write_source(source, out_model, out_source)
    log(f"{model}: {member} verified and extracted to {out_model}")
    return source


def _write_source(source: dict, out_model: Path, out_source: Path) -> None:
    """``source.json`` beside a just-written ``model.pt``; if it cannot be written, the model
    goes too (a teacher folder is complete or empty)."""
    try:
        atomic_write_json(source, out_source)
    except BaseException:
        out_model.unlink(missing_ok=True)
        raise


def fetch_teacher_file(*, model: str, url: str, file: str, out_model: str | Path,
                       out_source: str | Path, cache_dir: str | Path, pins_file: str | Path,
                       num_classes: int = 100,
                       log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict:
    """A teacher published as one checkpoint file (OFA-KD's CIFAR-100 release): downloaded once
    into ``cache_dir`` (sha256 pinned under ``files:`` in ``pins_file``, or accepted once,
    loudly), checked to load strictly as ``model``, then copied to ``out_model``; writes
    ``out_source``. Nothing is left at ``out_model``/``out_source`` on any failure."""
    from .models import load_teacher

    return _fetch_checked_file(
        model=model, url=url, file=file, out=out_model, out_source=out_source,
        cache_dir=cache_dir, pins_file=pins_file, log=log, failure="does not load as",
        check=lambda tmp: load_teacher(model, tmp, num_classes=num_classes))


def _fetch_checked_file(*, model: str, url: str, file: str, out: str | Path,
                        out_source: str | Path, cache_dir: str | Path, pins_file: str | Path,
                        log: Callable[[str], None], failure: str,
                        check: Callable[[Path], object]) -> dict:
    """One checkpoint file by URL: the verified download (``files:`` pins), then ``check`` on
    the copy (a CheckpointError there names the file, the URL, ``failure`` and ``model``), then
    the copy at ``out`` and ``out_source`` beside it; nothing is left at either on any failure."""
    pins = load_pins(pins_file)
    path, digest, pinned = ensure_archive(url, file, cache_dir, pins, pins_file=str(pins_file),
                                          log=log, kind="file")
    out = Path(out)

    def copy(tmp: Path) -> None:
        shutil.copyfile(path, tmp)
        try:
            check(tmp)
        except CheckpointError as e:
            raise CheckpointError(f"{file} from {url} {failure} {model}: {e}") from None

    atomic_write(out, copy, suffix=".pt")
    source = {"kind": "download", "model": model, "url": url, "file": file,
              "file_sha256": digest, "file_pinned": pinned}
    _write_source(source, out, Path(out_source))
    log(f"{model}: {file} verified and copied to {out}")
    return source


def write_pretrain_source(run_dir: str | Path, out_model: str | Path, out_source: str | Path,
                          config_hash: str) -> dict:
    """Publish a pretraining run's final.pt as the teacher's model.pt (+ source.json)."""
    source = {"kind": "pretrain", "run_dir": str(run_dir), "config_hash": config_hash,
              "sha256": _publish_final(run_dir, out_model)}
    atomic_write_json(source, out_source)
    return source


def _publish_final(run_dir: str | Path, out: str | Path) -> str:
    """Copy a run's final.pt to ``out`` (atomically); its sha256."""
    final = Path(run_dir) / "final.pt"
    atomic_write(out, lambda tmp: shutil.copyfile(final, tmp), suffix=".pt")
    return sha256_file(out)



def fetch_init_file(*, model: str, url: str, file: str, out_init: str | Path,
                    out_source: str | Path, cache_dir: str | Path, pins_file: str | Path,
                    num_classes: int,
                    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict:
    """The pretrained weights a ``source: finetune`` teacher starts from (timm's ImageNet ViT-S
    for the multi-view project), through the same verified download as a published teacher
    (sha256 pinned under ``files:`` in ``pins_file``, or accepted once, loudly): checked to
    load into ``model`` (all but the classifier, :func:`kdsrc.models.checkpoint.load_init_weights`),
    then copied to ``out_init``. Nothing is left at ``out_init``/``out_source`` on any failure."""
    from .models import build_model
    from .models.checkpoint import load_init_weights

    return _fetch_checked_file(
        model=model, url=url, file=file, out=out_init, out_source=out_source,
        cache_dir=cache_dir, pins_file=pins_file, log=log, failure="cannot start",
        check=lambda tmp: load_init_weights(build_model(model, num_classes=num_classes), tmp))


def write_finetune_source(run_dir: str | Path, init_source: str | Path, out_model: str | Path,
                          out_source: str | Path, config_hash: str) -> dict:
    """Publish a fine-tune run's final.pt as the teacher's model.pt; its ``source.json`` says
    what the fine-tune started from (the initial weights' own source) and how it trained."""
    import json

    sha = _publish_final(run_dir, out_model)
    source = {"kind": "finetune", "run_dir": str(run_dir), "config_hash": config_hash,
              "init": json.loads(Path(init_source).read_text()), "sha256": sha}
    _write_source(source, Path(out_model), Path(out_source))
    return source


def write_init_source(run_dir: str | Path, out_init: str | Path, out_source: str | Path,
                      config_hash: str) -> dict:
    """Publish an in-workflow pretraining's final.pt as a fine-tune's initial weights."""
    source = {"kind": "pretrain", "run_dir": str(run_dir), "config_hash": config_hash,
              "sha256": _publish_final(run_dir, out_init)}
    _write_source(source, Path(out_init), Path(out_source))
    return source
