"""The CIFAR zoo against the reference (mdistiller a08d46f).

Expected numbers are the reference zoo's (parameter counts, feature shapes, as mdistiller's
models give them) and fixtures derived from the reference implementation itself
(tests/fixtures/models/README.md): state-dict keys/shapes, initial weights and outputs.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from kdsrc.errors import ConfigError, UnknownNameError
from kdsrc.models import MODEL_NAMES, build_model, feature_dims, model_options
from kdsrc.models.registry import CIFAR_MODEL_NAMES

from .reference_fill import feature_summary, fill_model, init_sums, reference_input

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"

_RESNET_X1 = [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
_RESNET_X4 = [(32, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8)]
_WRN_X2 = [(16, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8)]
_VGG = [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4)]

# name: (parameters with num_classes=100, feats shapes C x H x W, pooled_feat size)
TABLE = {
    "resnet8": (83_892, _RESNET_X1, 64),
    "resnet14": (181_108, _RESNET_X1, 64),
    "resnet20": (278_324, _RESNET_X1, 64),
    "resnet32": (472_756, _RESNET_X1, 64),
    "resnet44": (667_188, _RESNET_X1, 64),
    "resnet56": (861_620, _RESNET_X1, 64),
    "resnet110": (1_736_564, _RESNET_X1, 64),
    "resnet8x4": (1_233_540, _RESNET_X4, 256),
    "resnet32x4": (7_433_860, _RESNET_X4, 256),
    "wrn_16_1": (180_916, _RESNET_X1, 64),
    "wrn_16_2": (703_284, _WRN_X2, 128),
    "wrn_40_1": (569_780, _RESNET_X1, 64),
    "wrn_40_2": (2_255_156, _WRN_X2, 128),
    "vgg8": (3_965_028, _VGG, 512),
    "vgg11": (9_277_284, _VGG, 512),
    "vgg13": (9_462_180, _VGG, 512),
    "vgg16": (14_774_436, _VGG, 512),
    "vgg19": (20_086_692, _VGG, 512),
    "MobileNetV2": (812_836, [(16, 16, 16), (12, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2)], 1280),
    "ShuffleV1": (949_258, [(24, 32, 32), (240, 16, 16), (480, 8, 8), (960, 4, 4)], 960),
    "ShuffleV2": (1_355_528, [(24, 32, 32), (116, 16, 16), (232, 8, 8), (464, 4, 4)], 1024),
    "ResNet18": (11_220_132, [(64, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)], 512),
    "ResNet50": (23_705_252, [(64, 32, 32), (256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4)], 2048),
}
SHUFFLENETS = {"ShuffleV1", "ShuffleV2"}


@pytest.fixture(scope="module")
def reference_shapes() -> dict:
    return json.loads((FIXTURES / "reference_state_dict_shapes.json").read_text())


@pytest.fixture(scope="module")
def reference_outputs() -> dict:
    return torch.load(FIXTURES / "reference_outputs.pt", weights_only=True)


@dataclass
class Built:
    """One model per name for the whole module: built once (seed 0), fingerprinted, then filled
    by the fixture rule and run once in eval mode on the reference input."""

    model: nn.Module
    init_sums: torch.Tensor
    shapes: dict
    logits: torch.Tensor
    feats: dict


@functools.lru_cache(maxsize=None)
def built(name: str) -> Built:
    with torch.random.fork_rng(devices=[]):  # seed without leaking into other tests
        torch.manual_seed(0)
        model = build_model(name)
    sums = init_sums(model)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    fill_model(model).eval()
    with torch.no_grad():
        logits, feats = model(reference_input())
    return Built(model, sums, shapes, logits, feats)


@pytest.fixture(scope="module", autouse=True)
def _free_built_models():
    yield
    built.cache_clear()  # ~100M parameters in all; do not keep them for the rest of the session


def test_names_are_the_reference_names():
    assert CIFAR_MODEL_NAMES == tuple(TABLE)
    assert len(CIFAR_MODEL_NAMES) == 23
    assert MODEL_NAMES[:23] == CIFAR_MODEL_NAMES     # the timm models follow (test_timm_zoo)


@pytest.mark.parametrize("name", CIFAR_MODEL_NAMES)
def test_shapes_and_parameter_count(name):
    params, feat_shapes, pooled = TABLE[name]
    b = built(name)
    assert sum(p.numel() for p in b.model.parameters()) == params
    assert set(b.feats) == {"feats", "preact_feats", "pooled_feat"}
    assert b.logits.shape == (2, 100)
    assert [tuple(f.shape) for f in b.feats["feats"]] == [(2, *s) for s in feat_shapes]
    assert [tuple(f.shape) for f in b.feats["preact_feats"]] == [(2, *s) for s in feat_shapes]
    assert tuple(b.feats["pooled_feat"].shape) == (2, pooled)
    # the stem entry is shared: preact_feats[0] is the (post-ReLU) stem output
    assert b.feats["preact_feats"][0] is b.feats["feats"][0]


@pytest.mark.parametrize("name", CIFAR_MODEL_NAMES)
def test_state_dict_keys_and_shapes_equal_reference(name, reference_shapes):
    ours = built(name).shapes
    assert ours == reference_shapes[name]
    assert list(ours) == list(reference_shapes[name])  # same order, too


@pytest.mark.parametrize("name", CIFAR_MODEL_NAMES)
def test_initialisation_equals_reference(name, reference_outputs):
    # Same construction and init order as the reference: same seed -> same initial weights.
    torch.testing.assert_close(
        built(name).init_sums, reference_outputs["models"][name]["init_sums"], rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("name", CIFAR_MODEL_NAMES)
def test_outputs_equal_reference(name, reference_outputs):
    expected = reference_outputs["models"][name]
    assert torch.equal(reference_outputs["input"], reference_input())
    b = built(name)
    close = dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b.logits, expected["logits"], **close)
    torch.testing.assert_close(b.feats["pooled_feat"], expected["pooled_feat"], **close)
    torch.testing.assert_close(feature_summary(b.feats["feats"]), expected["feats_summary"], **close)
    if name == "MobileNetV2":  # the reference has no preact_feats; ours are defined = feats
        assert "preact_summary" not in expected
        assert all(p is f for p, f in zip(b.feats["preact_feats"], b.feats["feats"]))
    else:
        torch.testing.assert_close(
            feature_summary(b.feats["preact_feats"]), expected["preact_summary"], **close
        )


@pytest.mark.parametrize("name", CIFAR_MODEL_NAMES)
def test_helper_methods(name):
    b = built(name)
    channels = [f.shape[1] for f in b.feats["feats"]]
    assert isinstance(b.model.get_feat_modules(), nn.ModuleList)
    stage_channels = list(b.model.get_stage_channels())
    if name.startswith("ResNet"):  # reference convention: stage outputs without the stem
        assert stage_channels == channels[1:]
    else:
        assert stage_channels == channels
    if name in SHUFFLENETS:
        with pytest.raises(NotImplementedError):
            b.model.get_bn_before_relu()
    else:
        bns = b.model.get_bn_before_relu()
        assert all(isinstance(bn, nn.BatchNorm2d) for bn in bns)
        # one BN per reported stage after the stem, sized like the matching pre-activation
        assert [bn.num_features for bn in bns] == channels[len(channels) - len(bns):]


def test_feature_dims_leaves_model_untouched():
    model = build_model("resnet8")
    model.train()
    model.layer1.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dims = feature_dims(model)
    assert dims["pooled_feat"] == 64 and dims["num_classes"] == 100
    assert model.training and not model.layer1.training and model.layer2.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_num_classes():
    logits, _ = build_model("wrn_16_1", num_classes=10)(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("resnet8", num_classes=0)


def test_unknown_model_name_lists_the_valid_names():
    with pytest.raises(UnknownNameError) as info:
        build_model("resnet9")
    message = str(info.value)
    assert message.startswith("unknown model 'resnet9'; valid models: ")
    assert all(name in message for name in MODEL_NAMES)
    assert "\n" not in message
    assert isinstance(info.value, ConfigError) and isinstance(info.value, KeyError)


def test_unknown_option_is_a_config_error():
    assert model_options("wrn_40_2") == ("double_bn_update",)
    assert model_options("resnet8") == ()
    with pytest.raises(ConfigError, match="'double_bn_update'"):
        build_model("resnet8", double_bn_update=True)


def test_mobilenetv2_prints_nothing(capsys):
    build_model("MobileNetV2")
    assert capsys.readouterr().out == ""


def test_vgg_pool3_only_for_64px_inputs():
    model = build_model("vgg8").eval()
    with torch.no_grad():
        _, feats64 = model(torch.randn(1, 3, 64, 64))
    assert feats64["feats"][4].shape[-1] == 4  # 64 -> 32 -> 16 -> 8 -> (pool3) 4
