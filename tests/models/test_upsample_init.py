"""solver.upsample (a forward pre-hook that resizes the 32-px pipeline's batch) and a
fine-tune's initial weights (all but the classifier, loaded strictly)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdsrc.config import resolve_run_config
from kdsrc.errors import CheckpointError, ConfigError
from kdsrc.models import build_model
from kdsrc.models.checkpoint import load_init_weights
from kdsrc.models.classifier import classifier_keys
from kdsrc.models.upsample import upsample_inputs, upsample_of


def test_upsampled_model_equals_the_model_on_the_resized_batch():
    torch.manual_seed(0)
    model = build_model("vit4_p8_64", num_classes=5).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        want = model(F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False))[0]
        upsample_inputs(model, 64)
        got = model(x)[0]
        same = model(torch.rand(3, 3, 64, 64))[0]     # a batch already at 64 px passes through
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert same.shape == (3, 5) and upsample_of(model) == 64
    with pytest.raises(ValueError, match="already upsamples to 64"):
        upsample_inputs(model, 128)


def test_input_size_check_knows_upsampling():
    raw = {"dataset": "digits", "student": "vit4_p8_64", "method": "vanilla"}
    with pytest.raises(ConfigError, match="takes 64-px images, this run gives it 32 px"):
        resolve_run_config(raw)
    assert resolve_run_config({**raw, "solver": {"upsample": 64}})["solver"]["upsample"] == 64
    with pytest.raises(ConfigError, match="solver.upsample"):
        resolve_run_config({**raw, "solver": {"upsample": 64, "image_size": 64}})
    kd = {"dataset": "digits", "student": "vit2_p4_32", "method": "kd",
          "teacher": {"name": "vit4_p8_64", "checkpoint": "t.pt"}}
    with pytest.raises(ConfigError, match="teacher: vit4_p8_64 takes 64-px images"):
        resolve_run_config(kd)
    cfg = resolve_run_config({**kd, "teacher": {**kd["teacher"], "upsample": 64}})
    assert cfg["teacher"]["upsample"] == 64
    # absent unless set: the teacher block of every existing run is unchanged
    assert "upsample" not in resolve_run_config(
        {**kd, "student": "resnet8", "teacher": {"name": "resnet20", "checkpoint": "t.pt"}}
    )["teacher"]


def test_init_weights_load_all_but_the_classifier(tmp_path):
    torch.manual_seed(0)
    upstream = build_model("vit2_p4_32", num_classes=1000)     # another task's head
    path = tmp_path / "init.pth"
    torch.save(upstream.state_dict(), path)
    torch.manual_seed(1)
    model = build_model("vit2_p4_32", num_classes=10)
    head = {k: v.clone() for k, v in model.state_dict().items() if k in classifier_keys(model)}
    assert classifier_keys(model) == {"head.weight", "head.bias"}
    n = load_init_weights(model, path)
    state = model.state_dict()
    assert n == len(state) - 2
    for k, v in upstream.state_dict().items():
        if k in head:
            torch.testing.assert_close(state[k], head[k], rtol=0, atol=0)   # kept fresh
        else:
            torch.testing.assert_close(state[k], v, rtol=0, atol=0)


def test_init_weights_of_another_model_fail_in_one_line(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(build_model("vit3_p8_64", num_classes=10).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"initial weights .*other.pth: key .* has shape"):
        load_init_weights(build_model("vit2_p4_32", num_classes=10), path)
    short = tmp_path / "short.pth"
    state = build_model("vit2_p4_32", num_classes=10).state_dict()
    state.pop("blocks.1.mlp.fc2.bias")
    torch.save(state, short)
    with pytest.raises(CheckpointError, match="'blocks.1.mlp.fc2.bias' is missing"):
        load_init_weights(build_model("vit2_p4_32", num_classes=10), short)
