"""CIFAR-10 through the same checked loader as CIFAR-100: real on-disk format (five training
batches), torchvision's checksums, verified download over loopback HTTP, nothing left behind."""

from __future__ import annotations

import pytest
import torch

from kdsrc.data import CIFAR10_MD5, CIFAR10_URL, load_cifar10, load_dataset
from kdsrc.dataset_facts import DATASET_FACTS
from kdsrc.errors import DataError

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


def _check(arrays, fake):
    assert arrays.name == "cifar10" and arrays.num_classes == 10
    assert torch.equal(arrays.train_x, torch.from_numpy(fake.train_x))   # batches 1..5 in order
    assert torch.equal(arrays.train_y, torch.from_numpy(fake.train_y))
    assert torch.equal(arrays.test_x, torch.from_numpy(fake.test_x))
    assert torch.equal(arrays.test_y, torch.from_numpy(fake.test_y))
    assert list(arrays.class_names) == fake.fine_names
    assert arrays.mean == (0.4914, 0.4822, 0.4465) and arrays.std == (0.2470, 0.2435, 0.2616)
    assert arrays.pad == 4 and arrays.flip is True and arrays.train_x.dtype == torch.uint8


def test_torchvisions_checksums_and_the_facts():
    from torchvision.datasets import CIFAR10

    assert CIFAR10_MD5["archive"] == CIFAR10.tgz_md5 and CIFAR10_URL == CIFAR10.url
    assert {f: m for f, m in CIFAR10.train_list + CIFAR10.test_list} == \
        {f: CIFAR10_MD5[f] for f in FILES[:6]}
    assert CIFAR10_MD5["batches.meta"] == CIFAR10.meta["md5"]
    facts = DATASET_FACTS["cifar10"]
    assert (facts.classes, facts.train_images, facts.test_images) == (10, 50_000, 10_000)


def test_load_from_disk(tmp_path, fake_cifar10):
    root = fake_cifar10.write_extracted(tmp_path / "root")
    _check(load_cifar10(root, checksums=fake_cifar10.md5s), fake_cifar10)
    with pytest.raises(DataError, match="checksum mismatch.*cifar-10-batches-py/data_batch_1"):
        load_cifar10(root)                       # torchvision's real md5s reject the fixture


def test_missing_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", root=tmp_path / "nowhere")
    msg = str(err.value)
    assert msg.startswith("CIFAR-10 not found") and str(tmp_path / "nowhere" / FOLDER) in msg
    assert "load_dataset('cifar10'" in msg and CIFAR10_URL in msg


def test_download_over_loopback(tmp_path, fake_cifar10, http_server, leftovers):
    http_server.files["/c10/" + ARCHIVE] = fake_cifar10.archive
    root = tmp_path / "root"
    url = http_server.url("/c10/" + ARCHIVE)
    _check(load_cifar10(root, download=True, url=url, checksums=fake_cifar10.md5s), fake_cifar10)
    assert leftovers(root) == sorted([ARCHIVE, FOLDER] + [f"{FOLDER}/{f}" for f in FILES])


def test_bad_download_leaves_nothing(tmp_path, fake_cifar10, http_server, leftovers):
    http_server.files["/c10/" + ARCHIVE] = fake_cifar10.archive[:-100]      # truncated
    root = tmp_path / "root"
    with pytest.raises(DataError, match="checksum mismatch for cifar-10-python.tar.gz"):
        load_cifar10(root, download=True, url=http_server.url("/c10/" + ARCHIVE),
                     checksums=fake_cifar10.md5s)
    assert leftovers(root) == []
    with pytest.raises(DataError, match="HTTP 404"):
        load_cifar10(root, download=True, url=http_server.url("/none/" + ARCHIVE),
                     checksums=fake_cifar10.md5s)
    assert leftovers(root) == []
