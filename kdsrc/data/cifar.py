"""CIFAR-10 and CIFAR-100 through torchvision, with verified download and clear errors.

Each dataset is a :class:`CifarSpec` (URL, archive, folder, files and their md5s, normalisation);
the code below is the same for both. The files are read by ``torchvision.datasets.CIFAR10`` /
``CIFAR100`` itself, so its md5 checks of every file (CIFAR-100: ``train``, ``test``, ``meta``;
CIFAR-10: ``data_batch_1..5``, ``test_batch``, ``batches.meta``) stay in force. Downloading is done here rather than by torchvision
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
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from kdsrc.data.arrays import DatasetArrays
from kdsrc.errors import DataError

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_ARCHIVE = "cifar-100-python.tar.gz"
CIFAR100_FOLDER = "cifar-100-python"
#: torchvision's expected md5s (``torchvision.datasets.CIFAR100``); ``archive`` is ``tgz_md5``.
CIFAR100_MD5 = {
    "archive": "eb9058c3a382ffc7106e4002c42a8d85",
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
#: the crop padding of the 32-px recipe (both CIFARs)
CIFAR_PAD = 4

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
#: torchvision's expected md5s (``torchvision.datasets.CIFAR10``)
CIFAR10_MD5 = {
    "archive": "c58f30108f718f92721af3b95e74349a",
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
#: the training set's per-channel mean and std (the multi-view project's values)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class CifarSpec:
    """One CIFAR dataset in torchvision's layout."""

    name: str            # kdsrc's dataset name
    title: str           # for messages
    url: str
    archive: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    meta_key: str        # the class names' key in the meta file
    md5: Mapping[str, str]
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    torchvision_class: str

    @property
    def files(self) -> tuple[str, ...]:
        return self.train_files + self.test_files + (self.meta_file,)


CIFAR100 = CifarSpec("cifar100", "CIFAR-100", CIFAR100_URL, CIFAR100_ARCHIVE, CIFAR100_FOLDER,
                     ("train",), ("test",), "meta", "fine_label_names", CIFAR100_MD5, 100,
                     CIFAR100_MEAN, CIFAR100_STD, "CIFAR100")
CIFAR10 = CifarSpec("cifar10", "CIFAR-10", CIFAR10_URL, "cifar-10-python.tar.gz",
                    "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                    ("test_batch",), "batches.meta", "label_names", CIFAR10_MD5, 10,
                    CIFAR10_MEAN, CIFAR10_STD, "CIFAR10")
CIFAR_SPECS = {spec.name: spec for spec in (CIFAR10, CIFAR100)}


def _md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _resolve_checksums(spec: CifarSpec, checksums: Mapping[str, str] | None) -> dict[str, str]:
    sums = dict(spec.md5)
    for key, value in (checksums or {}).items():
        key = "archive" if key == spec.archive else key
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


def _first_bad_file(spec: CifarSpec, base: Path, sums: Mapping[str, str]) -> str | None:
    for name in spec.files:
        problem = _bad_file(base / name, sums[name])
        if problem:
            return problem
    return None


def _download_archive(spec: CifarSpec, url: str, folder: Path) -> Path:
    from torchvision.datasets.utils import download_url

    what = f"download of {spec.title} failed"
    try:
        download_url(url, str(folder), filename=spec.archive, md5=None)
    except urllib.error.HTTPError as e:
        raise DataError(f"{what}: {url} answered HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise DataError(f"{what}: {url}: {type(e).__name__}: {e}") from e
    path = folder / spec.archive
    if not path.is_file():
        raise DataError(f"{what}: {url} gave no file")
    return path


def _extract(spec: CifarSpec, archive: Path, dest: Path) -> None:
    prefix = spec.folder + "/"
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers()
                       if m.name == spec.folder or m.name.startswith(prefix)]
            if not members:
                raise DataError(f"{archive} has no {spec.folder}/ folder; not a {spec.title} "
                                f"archive")
            tar.extractall(dest, members=members, filter="data")
    except DataError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{archive} is corrupt or truncated ({type(e).__name__}: {e}); "
                        "delete it and download again") from e


def _fetch(spec: CifarSpec, root: Path, url: str, sums: Mapping[str, str]) -> None:
    """Download (unless a verified archive is already in ``root``), verify, extract, install."""
    root.mkdir(parents=True, exist_ok=True)
    kept = root / spec.archive
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.folder}-tmp-", dir=root))
    try:
        if kept.is_file() and _md5(kept) == sums["archive"]:
            archive, downloaded = kept, False
        else:
            archive, downloaded = _download_archive(spec, url, tmp), True
            actual = _md5(archive)
            if actual != sums["archive"]:
                raise DataError(f"checksum mismatch for {spec.archive} downloaded from {url}: "
                                f"md5 {actual}, expected {sums['archive']}; nothing was kept")
        out = tmp / "extract"
        out.mkdir()
        _extract(spec, archive, out)
        problem = _first_bad_file(spec, out / spec.folder, sums)
        if problem:
            problem = problem.replace(str(out / spec.folder), f"{spec.archive}:{spec.folder}")
            raise DataError(f"{problem} (archive from {url}); nothing was kept")
        target = root / spec.folder
        if target.exists() or target.is_symlink():
            os.replace(target, tmp / "old")  # the incomplete/corrupt copy goes with tmp
        os.replace(out / spec.folder, target)
        if downloaded:
            os.replace(archive, kept)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _missing_message(spec: CifarSpec, root: Path, missing: list[str], url: str,
                     sums: Mapping[str, str]) -> str:
    base = root / spec.folder
    return (f"{spec.title} not found: looked in {base} for {', '.join(spec.files)} "
            f"(missing: {', '.join(missing)}). Pass download=True (load_dataset({spec.name!r}, "
            f"root={str(root)!r}, download=True)) to fetch {url} (md5 {sums['archive']}), or "
            f"download that archive yourself and extract it into {root}.")


def _torchvision_class(spec: CifarSpec, url: str, sums: Mapping[str, str]):
    from torchvision import datasets

    base = getattr(datasets, spec.torchvision_class)
    return type(f"Checked{spec.torchvision_class}", (base,), {
        "url": url,
        "tgz_md5": sums["archive"],
        "train_list": [[f, sums[f]] for f in spec.train_files],
        "test_list": [[f, sums[f]] for f in spec.test_files],
        "meta": {"filename": spec.meta_file, "key": spec.meta_key, "md5": sums[spec.meta_file]},
    })


def load_cifar(spec: CifarSpec, root: str | Path = "data", download: bool = False,
               url: str | None = None, checksums: Mapping[str, str] | None = None
               ) -> DatasetArrays:
    """Load a CIFAR dataset from ``root/<spec.folder>`` (torchvision's layout).

    ``download=True`` fetches and verifies the archive first when the files are missing (or, when
    present, fail their checksums). ``url`` replaces the download URL; ``checksums`` replaces
    expected md5s, keys ``archive`` and the file names (the defaults are torchvision's).
    Raises :class:`DataError` for missing data, a failed download, a checksum mismatch or a corrupt
    archive.
    """
    root = Path(root).expanduser()
    url = url or spec.url
    sums = _resolve_checksums(spec, checksums)
    base = root / spec.folder
    missing = [n for n in spec.files if not (base / n).is_file()]
    if download and (missing or _first_bad_file(spec, base, sums)):
        _fetch(spec, root, url, sums)
        missing = []
    if missing:
        raise DataError(_missing_message(spec, root, missing, url, sums))

    cls = _torchvision_class(spec, url, sums)
    try:
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted" (or its metadata)
        problem = _first_bad_file(spec, base, sums) or str(e)
        raise DataError(f"{spec.title}: {problem}. Load with download=True to replace {base} "
                        f"with a fresh verified copy from {url}") from e
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
        # unreadable although the checksums matched (only possible with custom checksums)
        raise DataError(f"{spec.title} files in {base} cannot be read: {type(e).__name__}: {e}"
                        ) from e

    def images(ds) -> torch.Tensor:
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()

    def labels(ds) -> torch.Tensor:
        return torch.as_tensor(ds.targets, dtype=torch.int64)

    return DatasetArrays(
        name=spec.name,
        train_x=images(train), train_y=labels(train),
        test_x=images(test), test_y=labels(test),
        num_classes=spec.num_classes,
        mean=spec.mean, std=spec.std,
        pad=CIFAR_PAD, flip=True,
        class_names=tuple(train.classes),
        source=f"torchvision {spec.torchvision_class} at {base}",
    )


def load_cifar100(root: str | Path = "data", download: bool = False, url: str | None = None,
                  checksums: Mapping[str, str] | None = None) -> DatasetArrays:
    """CIFAR-100 (:func:`load_cifar`; checksum keys ``archive``, ``train``, ``test``, ``meta``)."""
    return load_cifar(CIFAR100, root, download, url, checksums)


def load_cifar10(root: str | Path = "data", download: bool = False, url: str | None = None,
                 checksums: Mapping[str, str] | None = None) -> DatasetArrays:
    """CIFAR-10 (:func:`load_cifar`; checksum keys ``archive``, ``data_batch_1`` … ``5``,
    ``test_batch``, ``batches.meta``)."""
    return load_cifar(CIFAR10, root, download, url, checksums)
