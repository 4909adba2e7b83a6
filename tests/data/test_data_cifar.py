"""CIFAR-100 loading: real on-disk format, checksums, verified download, nothing left behind."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
import torch

from kdsrc.data import CIFAR100_MD5, DATASET_NAMES, load_cifar100, load_dataset
from kdsrc.data.cifar import CIFAR100_URL
from kdsrc.errors import DataError, UnknownNameError

ARCHIVE = "cifar-100-python.tar.gz"


def _check_round_trip(arrays, fake):
    assert arrays.name == "cifar100"
    assert arrays.num_classes == 100
    assert arrays.num_train == len(fake.train_x) and arrays.num_test == len(fake.test_x)
    for x in (arrays.train_x, arrays.test_x):
        assert x.dtype == torch.uint8 and x.is_contiguous() and x.device.type == "cpu"
    assert arrays.train_y.dtype == torch.int64 and arrays.test_y.dtype == torch.int64
    assert torch.equal(arrays.train_x, torch.from_numpy(fake.train_x))
    assert torch.equal(arrays.test_x, torch.from_numpy(fake.test_x))
    assert torch.equal(arrays.train_y, torch.from_numpy(fake.train_y))
    assert torch.equal(arrays.test_y, torch.from_numpy(fake.test_y))
    assert list(arrays.class_names) == fake.fine_names
    assert arrays.mean == (0.5071, 0.4867, 0.4408)
    assert arrays.std == (0.2675, 0.2565, 0.2761)
    assert arrays.pad == 4 and arrays.flip is True


def test_fixture_is_in_the_real_format(fake_cifar_dir):
    """Keys are Python-2 strings: str under latin1 (torchvision), bytes under encoding='bytes'."""
    base = fake_cifar_dir / "cifar-100-python"
    with open(base / "train", "rb") as f:
        as_bytes = pickle.load(f, encoding="bytes")
    assert set(as_bytes) == {b"filenames", b"batch_label", b"fine_labels", b"coarse_labels", b"data"}
    assert as_bytes[b"data"].dtype == np.uint8 and as_bytes[b"data"].shape == (100, 3072)
    with open(base / "meta", "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    assert "fine_label_names" in meta and meta["fine_label_names"][0] == "class_00"


def test_load_from_disk_with_fixture_checksums(fake_cifar_dir, fake_cifar):
    arrays = load_cifar100(fake_cifar_dir, checksums=fake_cifar.md5s)
    _check_round_trip(arrays, fake_cifar)
    # the first training image is row 0 of b'data' as R plane, G plane, B plane
    row = fake_cifar.train_x[0].reshape(-1)
    assert torch.equal(arrays.train_x[0].reshape(-1), torch.from_numpy(row))


def test_real_checksums_reject_the_fixture(fake_cifar_dir):
    with pytest.raises(DataError) as err:
        load_cifar100(fake_cifar_dir)
    msg = str(err.value)
    assert "checksum mismatch" in msg and "cifar-100-python/train" in msg
    assert CIFAR100_MD5["train"] in msg


def test_corrupt_meta_is_named(fake_cifar_dir, fake_cifar):
    sums = dict(fake_cifar.md5s, meta="0" * 32)
    with pytest.raises(DataError, match=r"cifar-100-python/meta"):
        load_cifar100(fake_cifar_dir, checksums=sums)


def test_missing_data_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("cifar100", root=tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar-100-python") in msg
    assert "download=True" in msg and CIFAR100_URL in msg


def test_unknown_dataset_name():
    with pytest.raises(UnknownNameError) as err:
        load_dataset("imagenet-1k")
    assert "cifar100" in str(err.value) and "digits" in str(err.value)
    assert DATASET_NAMES == ("cifar100", "cifar10", "digits")


def test_unknown_checksum_key(tmp_path):
    with pytest.raises(ValueError, match="unknown checksum key"):
        load_cifar100(tmp_path, checksums={"trian": "0" * 32})


# --- download over a loopback server ----------------------------------------------------------

def test_download_good_archive(tmp_path, fake_cifar, http_server, leftovers):
    http_server.files["/good/" + ARCHIVE] = fake_cifar.archive
    root = tmp_path / "root"
    url = http_server.url("/good/" + ARCHIVE)
    arrays = load_cifar100(root, download=True, url=url, checksums=fake_cifar.md5s)
    _check_round_trip(arrays, fake_cifar)
    assert leftovers(root) == sorted([ARCHIVE, "cifar-100-python", "cifar-100-python/meta",
                                      "cifar-100-python/test", "cifar-100-python/train"])
    # present and verified: no second download
    n = len(http_server.requests)
    load_cifar100(root, download=True, url=url, checksums=fake_cifar.md5s)
    assert len(http_server.requests) == n


def test_download_repairs_a_corrupt_file(tmp_path, fake_cifar, http_server):
    http_server.files["/good/" + ARCHIVE] = fake_cifar.archive
    root = fake_cifar.write_extracted(tmp_path / "root")
    (root / "cifar-100-python" / "test").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cifar-100-python/test"):
        load_cifar100(root, checksums=fake_cifar.md5s)
    arrays = load_cifar100(root, download=True, url=http_server.url("/good/" + ARCHIVE),
                           checksums=fake_cifar.md5s)
    _check_round_trip(arrays, fake_cifar)


def test_download_archive_md5_mismatch_leaves_nothing(tmp_path, fake_cifar, http_server, leftovers,
                                                     archive_maker):
    # a valid archive with a swapped file: only the archive md5 can tell before extraction
    tampered = dict(fake_cifar.files, test=fake_cifar.files["train"])
    http_server.files["/bad/" + ARCHIVE] = archive_maker(tampered)
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        load_cifar100(root, download=True, url=http_server.url("/bad/" + ARCHIVE),
                      checksums=fake_cifar.md5s)
    msg = str(err.value)
    assert "checksum mismatch" in msg and ARCHIVE in msg and fake_cifar.md5s["archive"] in msg
    assert leftovers(root) == []


@pytest.mark.parametrize("own_md5", [False, True], ids=["md5-check", "extraction"])
def test_download_truncated_archive(tmp_path, fake_cifar, http_server, leftovers, own_md5):
    truncated = fake_cifar.archive[: len(fake_cifar.archive) // 2]
    http_server.files["/trunc/" + ARCHIVE] = truncated
    sums = dict(fake_cifar.md5s)
    if own_md5:  # the archive check passes, so extraction itself must detect the damage
        sums["archive"] = hashlib.md5(truncated).hexdigest()
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        load_cifar100(root, download=True, url=http_server.url("/trunc/" + ARCHIVE), checksums=sums)
    msg = str(err.value)
    assert ARCHIVE in msg
    assert ("corrupt or truncated" in msg) if own_md5 else ("checksum mismatch" in msg)
    assert leftovers(root) == []


def test_download_extracted_file_mismatch_leaves_nothing(tmp_path, fake_cifar, http_server, leftovers):
    http_server.files["/good/" + ARCHIVE] = fake_cifar.archive
    root = tmp_path / "root"
    sums = dict(fake_cifar.md5s, train="f" * 32)
    with pytest.raises(DataError, match=r"checksum mismatch for .*cifar-100-python/train"):
        load_cifar100(root, download=True, url=http_server.url("/good/" + ARCHIVE), checksums=sums)
    assert leftovers(root) == []


def test_download_404_names_the_url(tmp_path, fake_cifar, http_server, leftovers):
    url = http_server.url("/missing/" + ARCHIVE)
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        load_cifar100(root, download=True, url=url, checksums=fake_cifar.md5s)
    assert url in str(err.value) and "404" in str(err.value)
    assert leftovers(root) == []


def test_download_refused_connection(tmp_path, fake_cifar, http_server, leftovers):
    url = http_server.url("/x/" + ARCHIVE)
    http_server.close()  # nothing listens on the port any more
    root = tmp_path / "root"
    with pytest.raises(DataError, match="download of CIFAR-100 failed"):
        load_cifar100(root, download=True, url=url, checksums=fake_cifar.md5s)
    assert leftovers(root) == []
