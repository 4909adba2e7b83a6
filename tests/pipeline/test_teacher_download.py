"""Teacher download against a loopback HTTP server, in the real archive layout."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest
import torch
import yaml

from kdsrc.errors import CheckpointError, DataError
from kdsrc.models import build_model, load_teacher
from kdsrc.teachers import fetch_teacher

MEMBER = "cifar_teachers/resnet8_vanilla/ckpt_epoch_240.pth"


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(scope="module")
def archive_bytes() -> tuple[bytes, bytes]:
    """(tar bytes, member bytes): a published-format checkpoint inside cifar_teachers.tar."""
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save({"model": build_model("resnet8", num_classes=100).state_dict(), "epoch": 240,
                "accuracy": 42.0}, buf)
    member = buf.getvalue()
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w") as tar:
        info = tarfile.TarInfo(MEMBER)
        info.size = len(member)
        tar.addfile(info, io.BytesIO(member))
    return tbuf.getvalue(), member


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))

    class Quiet(handler.func):
        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(Quiet, directory=str(root)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _pins(path: Path, archive=None, member=None) -> Path:
    path.write_text(yaml.safe_dump({"archives": {"cifar_teachers.tar": archive},
                                    "members": {MEMBER: member}}))
    return path


def _fetch(tmp_path, url, pins, log=None):
    out = tmp_path / "results" / "teachers" / "cifar100" / "resnet8"
    logs = []
    src = fetch_teacher(model="resnet8", url=url, archive_file="cifar_teachers.tar",
                        member=MEMBER, out_model=out / "model.pt", out_source=out / "source.json",
                        cache_dir=tmp_path / "cache", pins_file=pins,
                        log=log or logs.append)
    return out, src, logs


def test_good_archive_unpinned_is_accepted_loudly(tmp_path, server, archive_bytes):
    root, url = server
    tar, member = archive_bytes
    (root / "cifar_teachers.tar").write_bytes(tar)
    out, src, logs = _fetch(tmp_path, f"{url}/cifar_teachers.tar", _pins(tmp_path / "p.yaml"))
    assert (out / "model.pt").read_bytes() == member
    assert src["member_sha256"] == _sha(member) and src["archive_sha256"] == _sha(tar)
    assert not src["member_pinned"] and not src["archive_pinned"]
    text = "\n".join(logs)
    assert "WARNING" in text and f"{MEMBER}: {_sha(member)}" in text
    assert load_teacher("resnet8", out / "model.pt", num_classes=100) is not None


def test_pinned_sums_pass(tmp_path, server, archive_bytes):
    root, url = server
    tar, member = archive_bytes
    (root / "cifar_teachers.tar").write_bytes(tar)
    out, src, logs = _fetch(tmp_path, f"{url}/cifar_teachers.tar",
                            _pins(tmp_path / "p.yaml", _sha(tar), _sha(member)))
    assert src["member_pinned"] and src["archive_pinned"]
    assert not any("WARNING" in m for m in logs)


@pytest.mark.parametrize("which", ["archive", "member"])
def test_pinned_mismatch_leaves_nothing(tmp_path, server, archive_bytes, which):
    root, url = server
    tar, member = archive_bytes
    (root / "cifar_teachers.tar").write_bytes(tar)
    bad = "0" * 64
    pins = _pins(tmp_path / "p.yaml", bad if which == "archive" else None,
                 bad if which == "member" else None)
    with pytest.raises(DataError, match="sha256 mismatch"):
        _fetch(tmp_path, f"{url}/cifar_teachers.tar", pins)
    out = tmp_path / "results" / "teachers" / "cifar100" / "resnet8"
    leftovers = [p for p in out.rglob("*")] if out.exists() else []
    assert leftovers == []
    cache = tmp_path / "cache"
    assert not list(cache.glob("*.part"))
    if which == "archive":  # a wrong archive is not kept for the next teacher either
        assert not (cache / "cifar_teachers.tar").exists()


def test_truncated_archive(tmp_path, server, archive_bytes):
    root, url = server
    tar, _ = archive_bytes
    (root / "cifar_teachers.tar").write_bytes(tar[: len(tar) // 3])
    with pytest.raises(DataError, match="damaged or truncated|no member"):
        _fetch(tmp_path, f"{url}/cifar_teachers.tar", _pins(tmp_path / "p.yaml"))
    out = tmp_path / "results" / "teachers" / "cifar100" / "resnet8"
    assert not (out / "model.pt").exists() and not (out / "source.json").exists()


def test_http_404_names_the_url(tmp_path, server):
    _, url = server
    with pytest.raises(DataError, match="HTTP 404") as e:
        _fetch(tmp_path, f"{url}/missing.tar", _pins(tmp_path / "p.yaml"))
    assert "missing.tar" in str(e.value)
    assert not any((tmp_path / "cache").glob("*.tar"))


# -- a teacher published as a file of its own (OFA-KD's CIFAR-100 release) ---------------------

def _fetch_file(tmp_path, url, pins, log=None):
    from kdsrc.teachers import fetch_teacher_file

    out = tmp_path / "results" / "teachers" / "cifar100" / "resnet8"
    logs = []
    src = fetch_teacher_file(model="resnet8", url=url, file="resnet8_cifar100.pth",
                             out_model=out / "model.pt", out_source=out / "source.json",
                             cache_dir=tmp_path / "cache", pins_file=pins,
                             log=log or logs.append)
    return out, src, logs


@pytest.fixture(scope="module")
def file_bytes() -> bytes:
    """A checkpoint in timm's CheckpointSaver layout ({"state_dict": ..., "epoch": ...})."""
    torch.manual_seed(1)
    buf = io.BytesIO()
    torch.save({"state_dict": build_model("resnet8", num_classes=100).state_dict(),
                "epoch": 299, "arch": "resnet8"}, buf)
    return buf.getvalue()


def test_a_file_checkpoint_unpinned_is_accepted_loudly_then_pinned(tmp_path, server, file_bytes):
    root, url = server
    (root / "resnet8_cifar100.pth").write_bytes(file_bytes)
    pins = tmp_path / "p.yaml"
    pins.write_text(yaml.safe_dump({"files": {"resnet8_cifar100.pth": None}}))
    out, src, logs = _fetch_file(tmp_path, f"{url}/resnet8_cifar100.pth", pins)
    assert (out / "model.pt").read_bytes() == file_bytes
    assert src["file_sha256"] == _sha(file_bytes) and not src["file_pinned"]
    assert "WARNING" in "\n".join(logs) and _sha(file_bytes) in "\n".join(logs)
    pins.write_text(yaml.safe_dump({"files": {"resnet8_cifar100.pth": _sha(file_bytes)}}))
    (out / "model.pt").unlink()
    out, src, logs = _fetch_file(tmp_path, f"{url}/resnet8_cifar100.pth", pins)
    assert src["file_pinned"] and not any("WARNING" in m for m in logs)


def test_a_tampered_or_truncated_file_leaves_nothing(tmp_path, server, file_bytes):
    root, url = server
    (root / "resnet8_cifar100.pth").write_bytes(file_bytes)
    pins = tmp_path / "p.yaml"
    pins.write_text(yaml.safe_dump({"files": {"resnet8_cifar100.pth": "0" * 64}}))
    with pytest.raises(DataError, match="sha256 mismatch"):
        _fetch_file(tmp_path, f"{url}/resnet8_cifar100.pth", pins)
    out = tmp_path / "results" / "teachers" / "cifar100" / "resnet8"
    assert not (out / "model.pt").exists() and not (tmp_path / "cache/resnet8_cifar100.pth").exists()
    (root / "resnet8_cifar100.pth").write_bytes(file_bytes[: len(file_bytes) // 2])
    pins.write_text(yaml.safe_dump({"files": {}}))
    with pytest.raises(CheckpointError, match="does not load as resnet8"):
        _fetch_file(tmp_path / "t", f"{url}/resnet8_cifar100.pth", pins)
    out = tmp_path / "t" / "results" / "teachers" / "cifar100" / "resnet8"
    assert not (out / "model.pt").exists() and not (out / "source.json").exists()


# -- a fine-tuned teacher's initial weights (source: finetune, init: {url, file}) -------------
def _fetch_init(tmp_path, url, pins, log=None):
    from kdsrc.teachers import fetch_init_file

    out = tmp_path / "results" / "teachers" / "cifar10" / "vit2_p4_32"
    logs = []
    src = fetch_init_file(model="vit2_p4_32", url=url, file="vit2_in1k.bin",
                          out_init=out / "init.pt", out_source=out / "init.json",
                          cache_dir=tmp_path / "cache", pins_file=pins, num_classes=10,
                          log=log or logs.append)
    return out, src, logs


@pytest.fixture(scope="module")
def init_bytes() -> bytes:
    """Upstream weights as timm publishes them: a bare state dict with a 1000-class head."""
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(build_model("vit2_p4_32", num_classes=1000).state_dict(), buf)
    return buf.getvalue()


def test_init_weights_accepted_once_then_pinned_and_they_start_the_model(tmp_path, server,
                                                                         init_bytes):
    from kdsrc.models.checkpoint import load_init_weights

    root, url = server
    (root / "vit2_in1k.bin").write_bytes(init_bytes)
    pins = tmp_path / "p.yaml"
    pins.write_text(yaml.safe_dump({"files": {}}))
    out, src, logs = _fetch_init(tmp_path, f"{url}/vit2_in1k.bin", pins)
    assert (out / "init.pt").read_bytes() == init_bytes
    assert src["file_sha256"] == _sha(init_bytes) and not src["file_pinned"]
    assert "WARNING" in "\n".join(logs) and f"vit2_in1k.bin: {_sha(init_bytes)}" in "\n".join(logs)
    assert (out / "init.json").exists()
    model = build_model("vit2_p4_32", num_classes=10)
    assert load_init_weights(model, out / "init.pt") == len(model.state_dict()) - 2
    pins.write_text(yaml.safe_dump({"files": {"vit2_in1k.bin": _sha(init_bytes)}}))
    _, src, logs = _fetch_init(tmp_path / "again", f"{url}/vit2_in1k.bin", pins)
    assert src["file_pinned"] and not any("WARNING" in m for m in logs)


def test_tampered_or_truncated_init_weights_leave_nothing(tmp_path, server, init_bytes):
    root, url = server
    (root / "vit2_in1k.bin").write_bytes(init_bytes)
    pins = tmp_path / "p.yaml"
    pins.write_text(yaml.safe_dump({"files": {"vit2_in1k.bin": "0" * 64}}))
    with pytest.raises(DataError, match="sha256 mismatch"):
        _fetch_init(tmp_path, f"{url}/vit2_in1k.bin", pins)
    out = tmp_path / "results" / "teachers" / "cifar10" / "vit2_p4_32"
    assert not (out / "init.pt").exists() and not (tmp_path / "cache/vit2_in1k.bin").exists()
    (root / "vit2_in1k.bin").write_bytes(init_bytes[: len(init_bytes) // 2])
    pins.write_text(yaml.safe_dump({"files": {}}))
    with pytest.raises(CheckpointError, match="cannot start vit2_p4_32"):
        _fetch_init(tmp_path / "t", f"{url}/vit2_in1k.bin", pins)
    out = tmp_path / "t" / "results" / "teachers" / "cifar10" / "vit2_p4_32"
    assert not (out / "init.pt").exists() and not (out / "init.json").exists()
    # weights of another model: the first mismatching key, in one line
    buf = io.BytesIO()
    torch.save(build_model("vit3_p8_64", num_classes=1000).state_dict(), buf)
    (root / "vit2_in1k.bin").write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="cannot start vit2_p4_32: initial weights .* key"):
        _fetch_init(tmp_path / "u", f"{url}/vit2_in1k.bin", pins)
