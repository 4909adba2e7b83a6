"""Shared fixtures for the data tests: a fake CIFAR-100 in the real on-disk format and a loopback
HTTP server to download it from."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import pickle
import struct
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

N_TRAIN, N_TEST = 100, 20
FOLDER = "cifar-100-python"
ARCHIVE = "cifar-100-python.tar.gz"


# --- Python-2 style pickles -------------------------------------------------------------------
# The real CIFAR files were written by Python 2's cPickle: dict keys and label names are Python 2
# ``str`` objects (opcodes SHORT_BINSTRING / BINSTRING). Loaded with encoding="latin1" (torchvision)
# they become ``str`` ("data"), loaded with encoding="bytes" (the dataset page's ``unpickle``)
# ``bytes`` (b"data"). A Python 3 pickle of ``bytes`` keys would instead stay bytes under any
# encoding and torchvision could not read it, so the fixture writes Python-2 strings explicitly.

class Py2Str(bytes):
    """A bytes value pickled as a Python 2 ``str``."""


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler, so opcodes can be added
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2str(self, obj):
        data = bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[Py2Str] = save_py2str


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def s(text: str) -> Py2Str:
    return Py2Str(text.encode("latin1"))


# --- the fake dataset ---------------------------------------------------------------------------

def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def make_archive(files: dict[str, bytes], folder: str = FOLDER) -> bytes:
    """A deterministic ``.tar.gz`` with ``<folder>/<name>`` members (CIFAR-100's by default)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        d = tarfile.TarInfo(folder)
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, 1_230_000_000
        tar.addfile(d)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 1_230_000_000
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


@dataclass
class FakeCifar:
    files: dict[str, bytes]            # train, test, meta file contents
    archive: bytes                     # the .tar.gz
    md5s: dict[str, str]               # archive, train, test, meta
    train_x: np.ndarray                # N x 3 x 32 x 32 uint8
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    fine_names: list[str]
    extra: dict = field(default_factory=dict)
    folder: str = FOLDER

    def write_extracted(self, root: Path) -> Path:
        """Write ``root/<folder>/<every file>``; returns ``root``."""
        base = root / self.folder
        base.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (base / name).write_bytes(data)
        return root


def _split_dict(x: np.ndarray, fine: np.ndarray, coarse: np.ndarray, label: str) -> dict:
    return {
        s("filenames"): [s(f"fake_{i:05d}.png") for i in range(len(x))],
        s("batch_label"): s(label),
        s("fine_labels"): [int(v) for v in fine],
        s("coarse_labels"): [int(v) for v in coarse],
        s("data"): np.ascontiguousarray(x.reshape(len(x), 3 * 32 * 32)),
    }


@pytest.fixture(scope="session")
def fake_cifar() -> FakeCifar:
    rng = np.random.default_rng(1234)
    train_x = rng.integers(0, 256, (N_TRAIN, 3, 32, 32), dtype=np.uint8)
    test_x = rng.integers(0, 256, (N_TEST, 3, 32, 32), dtype=np.uint8)
    train_y = np.arange(N_TRAIN) % 100            # every class once
    test_y = rng.integers(0, 100, N_TEST)
    fine_names = [f"class_{i:02d}" for i in range(100)]
    coarse_names = [f"super_{i:02d}" for i in range(20)]
    files = {
        "train": py2_pickle(_split_dict(train_x, train_y, train_y // 5, "training batch 1 of 1")),
        "test": py2_pickle(_split_dict(test_x, test_y, test_y // 5, "testing batch 1 of 1")),
        "meta": py2_pickle({s("fine_label_names"): [s(n) for n in fine_names],
                            s("coarse_label_names"): [s(n) for n in coarse_names]}),
    }
    archive = make_archive(files)
    md5s = {name: md5_bytes(data) for name, data in files.items()}
    md5s["archive"] = md5_bytes(archive)
    return FakeCifar(files, archive, md5s, train_x, train_y.astype(np.int64), test_x,
                     test_y.astype(np.int64), fine_names)


CIFAR10_FOLDER = "cifar-10-batches-py"


@pytest.fixture(scope="session")
def fake_cifar10() -> FakeCifar:
    """A small CIFAR-10 in the real format: five training batches (b'data', b'labels', ...),
    ``test_batch`` and ``batches.meta`` (b'label_names'), Python-2 pickles like the real ones."""
    rng = np.random.default_rng(4321)
    per_batch = 10
    train_x = rng.integers(0, 256, (5 * per_batch, 3, 32, 32), dtype=np.uint8)
    test_x = rng.integers(0, 256, (N_TEST, 3, 32, 32), dtype=np.uint8)
    train_y = np.arange(5 * per_batch) % 10
    test_y = rng.integers(0, 10, N_TEST)
    names = [f"kind_{i}" for i in range(10)]

    def batch(x, y, label):
        return py2_pickle({s("batch_label"): s(label), s("labels"): [int(v) for v in y],
                           s("data"): np.ascontiguousarray(x.reshape(len(x), 3 * 32 * 32)),
                           s("filenames"): [s(f"img_{i:05d}.png") for i in range(len(x))]})

    files = {f"data_batch_{b + 1}": batch(train_x[b * per_batch:(b + 1) * per_batch],
                                          train_y[b * per_batch:(b + 1) * per_batch],
                                          f"training batch {b + 1} of 5") for b in range(5)}
    files["test_batch"] = batch(test_x, test_y, "testing batch 1 of 1")
    files["batches.meta"] = py2_pickle({s("label_names"): [s(n) for n in names],
                                        s("num_cases_per_batch"): per_batch, s("num_vis"): 3072})
    archive = make_archive(files, CIFAR10_FOLDER)
    md5s = {name: md5_bytes(data) for name, data in files.items()}
    md5s["archive"] = md5_bytes(archive)
    return FakeCifar(files, archive, md5s, train_x, train_y.astype(np.int64), test_x,
                     test_y.astype(np.int64), names, folder=CIFAR10_FOLDER)


# --- loopback HTTP server -----------------------------------------------------------------------

class _Server:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self, body: bool):
                owner.requests.append(self.path)
                data = owner.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_GET(self):
                self._reply(True)

            def do_HEAD(self):
                self._reply(False)

            def log_message(self, *args):  # keep the test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.closed = False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def http_server(monkeypatch):
    """A loopback HTTP server on a free port; put bytes in ``server.files[path]``."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    server = _Server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def archive_maker():
    """``make_archive(files)``: a ``.tar.gz`` of ``cifar-100-python/<name>`` members."""
    return make_archive


@pytest.fixture
def fake_cifar_dir(tmp_path, fake_cifar) -> Path:
    """A root folder holding the extracted fake CIFAR-100 (private to the test)."""
    return fake_cifar.write_extracted(tmp_path / "root")


def _leftovers(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def leftovers():
    """``leftovers(root)``: everything under ``root`` (relative names, sorted), for
    nothing-left-behind checks."""
    return _leftovers
