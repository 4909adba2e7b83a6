"""Safe checkpoint reading and strict teacher loading (kdsrc.models.checkpoint)."""

from __future__ import annotations

import argparse
import os
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from kdsrc.errors import CheckpointError
from kdsrc.models import build_model, load_state_dict_file, load_teacher

from .reference_fill import fill_model


class Payload:
    """Pickles to ``os.system(<touch marker>)``: runs a command if ever unpickled fully."""

    def __init__(self, marker):
        self.marker = os.fspath(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class CustomMetadata:
    """A harmless but non-allow-listed class."""


def _weights(name="resnet8", num_classes=100) -> OrderedDict:
    return fill_model(build_model(name, num_classes=num_classes)).state_dict()


def _published(state) -> dict:
    """The layout of RepDistiller's train_teacher.py checkpoints (plus the options namespace)."""
    model = build_model("resnet8")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return {
        "model": state,
        "epoch": 240,
        "accuracy": np.float64(79.4),
        "best_acc": np.float32(79.42),
        "step": np.int64(187_680),
        "dtype": np.dtype("float32"),
        "optimizer": optimizer.state_dict(),
        "opt": argparse.Namespace(model="resnet8", learning_rate=0.05, lr_decay_epochs=[150, 180, 210]),
    }


def _assert_same_weights(model: nn.Module, state) -> None:
    loaded = model.state_dict()
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def _error(path, name="resnet8", **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        load_teacher(name, path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_published_format_loads_strictly_and_frozen(tmp_path):
    state = _weights()
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save(_published(state), path)
    teacher = load_teacher("resnet8", path)
    _assert_same_weights(teacher, state)
    assert not teacher.training
    assert not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())


def test_legacy_pickle_with_numpy1_scalar_names(tmp_path):
    # Files from 2019 (PyTorch < 1.6, NumPy 1) are plain pickles naming numpy.core.multiarray.
    state = _weights()
    path = tmp_path / "legacy.pth"
    torch.save(
        {"model": state, "accuracy": np.float64(79.4)},
        path,
        _use_new_zipfile_serialization=False,
        pickle_protocol=2,
    )
    raw = path.read_bytes()
    for module in (b"numpy._core.multiarray", b"numpy.core.multiarray"):
        raw = raw.replace(module + b"\nscalar", b"numpy.core.multiarray\nscalar")
    assert b"numpy.core.multiarray\nscalar" in raw
    path.write_bytes(raw)
    _assert_same_weights(load_teacher("resnet8", path), state)


def test_our_format_with_metadata(tmp_path):
    state = _weights("wrn_16_1")
    path = tmp_path / "model.pt"
    torch.save({"model": state, "meta": {"source": "pretrain", "top1": 71.2, "seed": 0}}, path)
    _assert_same_weights(load_teacher("wrn_16_1", path), state)


def test_bare_state_dict(tmp_path):
    state = _weights()
    path = tmp_path / "bare.pt"
    torch.save(state, path)
    _assert_same_weights(load_teacher("resnet8", path), state)
    assert list(load_state_dict_file(path)) == list(state)


def test_data_parallel_prefix_is_stripped(tmp_path):
    model = fill_model(build_model("resnet8"))
    path = tmp_path / "dp.pt"
    torch.save({"model": nn.DataParallel(model).state_dict()}, path)
    state = load_state_dict_file(path)
    assert list(state) == list(model.state_dict())
    _assert_same_weights(load_teacher("resnet8", path), model.state_dict())


def test_missing_num_batches_tracked_in_a_versioned_state_dict_is_named(tmp_path):
    state = _weights()  # carries torch's _metadata (BatchNorm version 2): the key is required
    del state["bn1.num_batches_tracked"]
    path = tmp_path / "partial.pt"
    torch.save({"model": state}, path)
    assert _error(path).endswith("key 'bn1.num_batches_tracked' is missing from the file")


def test_missing_num_batches_tracked_from_old_files_is_tolerated(tmp_path):
    # PyTorch < 0.4.1 had no num_batches_tracked; torch fills it in for unversioned dicts.
    state = {k: v for k, v in _weights().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pt"
    torch.save({"model": state}, path)
    teacher = load_teacher("resnet8", path)
    assert torch.equal(teacher.fc.weight, state["fc.weight"])


def test_disallowed_global_is_rejected_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": _weights(), "epoch": 1, "extra": Payload(marker)}, path)
    message = _error(path)
    assert "evil.pt" in message and "system" in message and "allow-list" in message
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        load_state_dict_file(path)
    assert not marker.exists()


def test_custom_class_is_rejected(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save({"model": _weights(), "meta": CustomMetadata()}, path)
    message = _error(path)
    assert "CustomMetadata" in message and "not on the allow-list" in message


def test_wrong_architecture_names_first_missing_key(tmp_path):
    path = tmp_path / "resnet8.pt"
    torch.save({"model": _weights("resnet8")}, path)
    message = _error(path, "resnet14")
    assert message == (
        f"checkpoint {path} does not fit resnet14: key 'layer1.1.conv1.weight' is missing from the file"
    )


def test_wrong_shape_names_key_and_both_shapes(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"model": _weights("resnet8", num_classes=10)}, path)
    assert _error(path) == (
        f"checkpoint {path} does not fit resnet8: key 'fc.weight' has shape (10, 64) "
        "in the file but (100, 64) in the model"
    )


def test_unexpected_key_is_named(tmp_path):
    state = _weights()
    state["projector.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pt"
    torch.save({"model": state}, path)
    assert _error(path).endswith("key 'projector.weight' in the file is not in the model")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    assert _error(path) == f"checkpoint {path} does not exist"
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict_file(path)


def test_directory(tmp_path):
    assert "is a directory" in _error(tmp_path)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "is empty"),
        (b"<html>404 Not Found</html>" * 20, "is not a torch file"),
        (b"\x80\x02garbage that is not a pickle", "is corrupt"),
    ],
)
def test_garbage_files(tmp_path, content, reason):
    path = tmp_path / "garbage.pth"
    path.write_bytes(content)
    message = _error(path)
    assert str(path) in message and reason in message


def test_truncated_download(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"model": _weights()}, path)
    path.write_bytes(path.read_bytes()[:4000])
    assert "damaged zip archive" in _error(path)


@pytest.mark.parametrize(
    "payload, reason",
    [
        ({"epoch": 240, "accuracy": 79.4}, "found keys 'epoch', 'accuracy'"),
        ({"model": {"conv1.weight": [1.0, 2.0]}}, "entry 'conv1.weight'"),
        ([torch.zeros(1)], "found a list"),
        ({}, "found an empty dict"),
    ],
)
def test_no_state_dict(tmp_path, payload, reason):
    path = tmp_path / "odd.pt"
    torch.save(payload, path)
    message = _error(path)
    assert message.startswith(f"no state dict found in checkpoint {path}") and reason in message
