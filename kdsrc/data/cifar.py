"""CIFAR-100 through torchvision, with verified download and clear errors.

The files are read by ``torchvision.datasets.CIFAR100`` itself, so its md5 checks of every file
(``train``, ``test``, ``meta``) stay in force. Downloading is done here rather than by torchvision
so that a failure leaves nothing behind: the archive is fetched into a private temporary folder
under ``root``, its md5 checked, extracted there (members of ``cifar-100-python/`` only, with the
tarfile ``data`` filter), each extracted file's md5 checked, and only then is the folder moved into
place (and the verified archive kept next to it, as torchvision does). Any failure raises
:class:`~kdsrc.errors.DataError` naming the URL or file and removes the temporary folder.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import zlib
from pathlib import Path
from typing import Mapping

import torch

from kdsrc.data.arrays import DatasetArrays
from kdsrc.errors import DataError

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_ARCHIVE = "cifar-100-python.tar.gz"
CIFAR100_FOLDER = "cifar-100-python"
CIFAR100_FILES = ("train", "test", "meta")
#: torchvision's expected md5s (``torchvision.datasets.CIFAR100``); ``archive`` is ``tgz_md5``.
CIFAR100_MD5 = {
    "archive": "eb9058c3a382ffc7106e4002c42a8d85",
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
CIFAR100_PAD = 4


def _md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _resolve_checksums(checksums: Mapping[str, str] | None) -> dict[str, str]:
    sums = dict(CIFAR100_MD5)
    for key, value in (checksums or {}).items():
        key = "archive" if key == CIFAR100_ARCHIVE else key
        if key not in sums:
            raise ValueError(f"unknown checksum key {key!r}; valid keys: {', '.join(sorted(sums))}")
        sums[key] = str(value).lower()
    return sums


def _bad_file(path: Path, expected: str) -> str | None:
    """None if ``path`` has md5 ``expected``, else a description of the problem."""
    if not path.is_file():
        return f"{path} is missing"
    actual = _md5(path)
    if actual != expected:
        return f"checksum mismatch for {path}: md5 {actual}, expected {expected}"
    return None


def _first_bad_file(base: Path, sums: Mapping[str, str]) -> str | None:
    for name in CIFAR100_FILES:
        problem = _bad_file(base / name, sums[name])
        if problem:
            return problem
    return None


def _download_archive(url: str, folder: Path) -> Path:
    from torchvision.datasets.utils import download_url

    try:
        download_url(url, str(folder), filename=CIFAR100_ARCHIVE, md5=None)
    except urllib.error.HTTPError as e:
        raise DataError(f"download of CIFAR-100 failed: {url} answered HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise DataError(f"download of CIFAR-100 failed: {url}: {type(e).__name__}: {e}") from e
    path = folder / CIFAR100_ARCHIVE
    if not path.is_file():
        raise DataError(f"download of CIFAR-100 failed: {url} gave no file")
    return path


def _extract(archive: Path, dest: Path) -> None:
    prefix = CIFAR100_FOLDER + "/"
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers()
                       if m.name == CIFAR100_FOLDER or m.name.startswith(prefix)]
            if not members:
                raise DataError(f"{archive} has no {CIFAR100_FOLDER}/ folder; not a CIFAR-100 archive")
            tar.extractall(dest, members=members, filter="data")
    except DataError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{archive} is corrupt or truncated ({type(e).__name__}: {e}); "
                        "delete it and download again") from e


def _fetch(root: Path, url: str, sums: Mapping[str, str]) -> None:
    """Download (unless a verified archive is already in ``root``), verify, extract, install."""
    root.mkdir(parents=True, exist_ok=True)
    kept = root / CIFAR100_ARCHIVE
    tmp = Path(tempfile.mkdtemp(prefix=".cifar-100-tmp-", dir=root))
    try:
        if kept.is_file() and _md5(kept) == sums["archive"]:
            archive, downloaded = kept, False
        else:
            archive, downloaded = _download_archive(url, tmp), True
            actual = _md5(archive)
            if actual != sums["archive"]:
                raise DataError(f"checksum mismatch for {CIFAR100_ARCHIVE} downloaded from {url}: "
                                f"md5 {actual}, expected {sums['archive']}; nothing was kept")
        out = tmp / "extract"
        out.mkdir()
        _extract(archive, out)
        problem = _first_bad_file(out / CIFAR100_FOLDER, sums)
        if problem:
            problem = problem.replace(str(out / CIFAR100_FOLDER), f"{CIFAR100_ARCHIVE}:{CIFAR100_FOLDER}")
            raise DataError(f"{problem} (archive from {url}); nothing was kept")
        target = root / CIFAR100_FOLDER
        if target.exists() or target.is_symlink():
            os.replace(target, tmp / "old")  # the incomplete/corrupt copy goes with tmp
        os.replace(out / CIFAR100_FOLDER, target)
        if downloaded:
            os.replace(archive, kept)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _missing_message(root: Path, missing: list[str], url: str, sums: Mapping[str, str]) -> str:
    base = root / CIFAR100_FOLDER
    return (f"CIFAR-100 not found: looked in {base} for {', '.join(CIFAR100_FILES)} "
            f"(missing: {', '.join(missing)}). Pass download=True (load_dataset('cifar100', "
            f"root={str(root)!r}, download=True)) to fetch {url} (md5 {sums['archive']}), or "
            f"download that archive yourself and extract it into {root}.")


def _torchvision_class(url: str, sums: Mapping[str, str]):
    from torchvision import datasets

    return type("CheckedCIFAR100", (datasets.CIFAR100,), {
        "url": url,
        "tgz_md5": sums["archive"],
        "train_list": [["train", sums["train"]]],
        "test_list": [["test", sums["test"]]],
        "meta": {"filename": "meta", "key": "fine_label_names", "md5": sums["meta"]},
    })


def load_cifar100(root: str | Path = "data", download: bool = False, url: str | None = None,
                  checksums: Mapping[str, str] | None = None) -> DatasetArrays:
    """Load CIFAR-100 from ``root/cifar-100-python`` (torchvision's layout).

    ``download=True`` fetches and verifies the archive first when the files are missing (or, when
    present, fail their checksums). ``url`` replaces the download URL; ``checksums`` replaces
    expected md5s, keys ``archive``, ``train``, ``test``, ``meta`` (the defaults are torchvision's).
    Raises :class:`DataError` for missing data, a failed download, a checksum mismatch or a corrupt
    archive.
    """
    root = Path(root).expanduser()
    url = url or CIFAR100_URL
    sums = _resolve_checksums(checksums)
    base = root / CIFAR100_FOLDER
    missing = [n for n in CIFAR100_FILES if not (base / n).is_file()]
    if download and (missing or _first_bad_file(base, sums)):
        _fetch(root, url, sums)
        missing = []
    if missing:
        raise DataError(_missing_message(root, missing, url, sums))

    cls = _torchvision_class(url, sums)
    try:
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted" (or its metadata)
        problem = _first_bad_file(base, sums) or str(e)
        raise DataError(f"CIFAR-100: {problem}. Load with download=True to replace {base} "
                        f"with a fresh verified copy from {url}") from e
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
        # unreadable although the checksums matched (only possible with custom checksums)
        raise DataError(f"CIFAR-100 files in {base} cannot be read: {type(e).__name__}: {e}") from e

    def images(ds) -> torch.Tensor:
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()

    def labels(ds) -> torch.Tensor:
        return torch.as_tensor(ds.targets, dtype=torch.int64)

    return DatasetArrays(
        name="cifar100",
        train_x=images(train), train_y=labels(train),
        test_x=images(test), test_y=labels(test),
        num_classes=100,
        mean=CIFAR100_MEAN, std=CIFAR100_STD,
        pad=CIFAR100_PAD, flip=True,
        class_names=tuple(train.classes),
        source=f"torchvision CIFAR100 at {base}",
    )
