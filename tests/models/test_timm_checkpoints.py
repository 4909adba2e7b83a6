"""Teachers saved by timm 0.6.5 (RSD's and OFA-KD's CIFAR-100 teachers) load strictly into the
timm models: a checkpoint with the real key names and shapes of timm 0.6.5 (fixture), in timm's
CheckpointSaver layout; a tampered and a truncated file fail with one clear line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from kdsrc.errors import CheckpointError
from kdsrc.models import load_teacher

KEYS = json.loads((Path(__file__).resolve().parents[1] / "fixtures/models/timm065_keys.json")
                  .read_text())


def _old_checkpoint(arch: str, path: Path, *, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in KEYS[arch].items():
        if key.endswith("relative_position_index"):
            state[key] = torch.zeros(shape, dtype=torch.int64)
        else:
            state[key] = 0.02 * torch.randn(shape, generator=g)
    # timm's CheckpointSaver: the weights under "state_dict", beside the training options
    torch.save({"epoch": 299, "arch": arch, "state_dict": state, "version": 2,
                "args": argparse.Namespace(model=arch, lr=5e-4)}, path)
    return state


@pytest.mark.parametrize("arch", sorted(KEYS))
def test_a_timm_065_teacher_loads_strictly(arch, tmp_path):
    path = tmp_path / f"{arch}_cifar100.pth"
    state = _old_checkpoint(arch, path)
    model = load_teacher(f"timm-{arch}", path, num_classes=100)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    ours = model.state_dict()
    moved = ({"head.weight": "head.fc.weight", "head.bias": "head.fc.bias"}
             if arch.startswith("swin") else {})
    for key, value in state.items():
        if "relative_position_index" in key or key.endswith("attn_mask"):
            continue                                   # buffers the model rebuilds itself
        target = moved.get(key, key)
        if arch.startswith("swin") and ".downsample." in key:   # patch merging: a stage on
            stage = int(key.split(".")[1])
            target = key.replace(f"layers.{stage}.downsample", f"layers.{stage + 1}.downsample")
        assert torch.equal(ours[target], value), key
    with torch.no_grad():
        logits, feats = model(torch.zeros(1, 3, 224, 224))
    assert logits.shape == (1, 100) and torch.isfinite(logits).all()


def test_tampered_and_truncated_files_fail_cleanly(tmp_path):
    arch = "swin_tiny_patch4_window7_224"
    path = tmp_path / "t.pth"
    state = _old_checkpoint(arch, path)
    state["layers.2.blocks.0.mlp.fc1.weight"] = torch.zeros(3, 3)        # a wrong shape
    torch.save({"state_dict": state}, tmp_path / "tampered.pth")
    with pytest.raises(CheckpointError, match=r"does not fit timm-swin_tiny_patch4_window7_224: "
                                              r"key 'layers.2.blocks.0.mlp.fc1.weight' has shape"):
        load_teacher(f"timm-{arch}", tmp_path / "tampered.pth")
    data = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="cut.pth"):
        load_teacher(f"timm-{arch}", tmp_path / "cut.pth")
    torch.save({"state_dict": state, "evil": torch.nn.Linear(1, 1)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="rejected"):
        load_teacher(f"timm-{arch}", tmp_path / "evil.pth")


def test_a_224_teacher_is_evaluated_at_its_size(tmp_path):
    """evaluate_teacher's path: the plan's image size and normalisation; without them, a
    fixed-size model is a clear error before any work."""
    from kdsrc.engine import evaluate_checkpoint
    from kdsrc.errors import ConfigError
    from kdsrc.models import build_model

    path = tmp_path / "deit.pth"
    torch.save({"state_dict": build_model("timm-deit_tiny_patch16_224", num_classes=10)
                .state_dict()}, path)
    res = evaluate_checkpoint("timm-deit_tiny_patch16_224", path, "digits", device="cpu",
                              solver={"image_size": 224, "normalize": "cifar100_rsd"})
    assert res["num_test"] == 359 and 0.0 <= res["top1"] <= 100.0
    with pytest.raises(ConfigError, match="model: timm-deit_tiny_patch16_224 takes 224-px"):
        evaluate_checkpoint("timm-deit_tiny_patch16_224", path, "digits", device="cpu")
