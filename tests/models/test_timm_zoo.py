"""The timm models: each at its input size on the CPU (batch 2) keeps the zoo's output contract,
its state dict is timm's own, and KD, DKD, CRD and RSD run on it unchanged."""

from __future__ import annotations

import copy

import pytest
import timm
import torch

from kdsrc.distillers import DistillContext, StepState, build_distiller
from kdsrc.models import MODEL_NAMES, build_model, feature_dims
from kdsrc.models.timm_zoo import SMALL_VITS, TIMM_MODELS, input_size

TIMM_NAMES = [n for n in TIMM_MODELS]
REQUIRED = ["timm-vit_small_patch16_224", "timm-deit_tiny_patch16_224",
            "timm-swin_tiny_patch4_window7_224", "timm-convnext_tiny", "timm-mixer_b16_224",
            "timm-resnet18", "timm-mobilenetv2_100", "vit6_p4_32"]


def test_the_required_models_are_in_the_zoo():
    assert set(REQUIRED) <= set(TIMM_NAMES) and set(TIMM_NAMES) <= set(MODEL_NAMES)
    assert all(n.startswith("timm-") or n == "vit6_p4_32" or n in SMALL_VITS
               for n in TIMM_NAMES)


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_contract_at_the_input_size(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7).eval()
    size = input_size(name)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits, feats = model(x)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    pooled = feats["pooled_feat"]
    assert pooled.ndim == 2 and pooled.shape[0] == 2
    # the pre-logit feature is exactly the classifier's input
    torch.testing.assert_close(model.get_classifier()(pooled), logits, rtol=0, atol=0)
    assert len(feats["feats"]) == 1 and feats["feats"][0].shape[0] == 2
    dims = feature_dims(model, size)
    assert dims["pooled_feat"] == pooled.shape[1] and dims["num_classes"] == 7


@pytest.mark.parametrize("name", ["timm-resnet18", "timm-deit_tiny_patch16_224"])
def test_state_dict_is_timms_own(name):
    ours = build_model(name, num_classes=10)
    theirs = timm.create_model(TIMM_MODELS[name][0], pretrained=False, num_classes=10)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval(), theirs.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], theirs(x))
    twin = copy.deepcopy(ours)          # the contract survives a copy (e.g. an EMA model)
    with torch.no_grad():
        torch.testing.assert_close(twin(x)[1]["pooled_feat"], ours(x)[1]["pooled_feat"])


def test_small_vit_student_matches_the_reference_configuration():
    m = build_model("vit6_p4_32", num_classes=10)
    assert len(m.blocks) == 6 and m.embed_dim == 192 and m.patch_embed.patch_size == (4, 4)
    assert m.blocks[0].attn.num_heads == 3 and m.blocks[0].mlp.fc1.out_features == 768
    assert m.blocks[0].norm1.eps == 1e-5
    drops = {n: mod.p for n, mod in m.named_modules() if isinstance(mod, torch.nn.Dropout)
             and mod.p > 0}
    assert drops == {**{f"blocks.{i}.attn.attn_drop": 0.1 for i in range(6)},
                     **{f"blocks.{i}.mlp.drop1": 0.2 for i in range(6)},
                     **{f"blocks.{i}.mlp.drop2": 0.2 for i in range(6)}}
    # the reference's count: patch conv 9,408 + cls 192 + pos 65x192 + 6 blocks x 444,864
    # + final norm 384 + head 1,930
    assert sum(p.numel() for p in m.parameters()) == 9408 + 192 + 12480 + 6 * 444864 + 384 + 1930


@pytest.mark.parametrize("method", ["kd", "dkd", "crd", "rsd"])
def test_methods_run_on_timm_models(method):
    """A ViT student under a CNN teacher (RSD's cross-architecture setting), one step."""
    torch.manual_seed(0)
    student = build_model("vit6_p4_32", num_classes=5)
    teacher = build_model("timm-resnet18", num_classes=5).eval()
    n = 64
    labels = torch.arange(n) % 5
    ctx = DistillContext(num_classes=5, num_train=n, epochs=1, device=torch.device("cpu"),
                         train_labels=labels, train_images=None, mean=(0.5,) * 3,
                         std=(0.25,) * 3, pad=4, flip=True, image_size=32,
                         student_dims=feature_dims(student, 32),
                         teacher_dims=feature_dims(teacher, 32), teacher_cache=None)
    settings = {"nce_k": 16} if method == "crd" else {}
    distiller = build_distiller(method, student, teacher, settings, ctx)
    batch = _Batch(torch.randn(4, 3, 32, 32), labels[:4], torch.arange(4))
    logits, losses = distiller.forward_train(batch.x, batch.y, batch,
                                             StepState(epoch=1, step=1, epochs=1))
    total = sum(losses.values())
    total.backward()
    assert logits.shape == (4, 5) and torch.isfinite(total)
    assert student.patch_embed.proj.weight.grad is not None


class _Batch:
    def __init__(self, x, y, index):
        self.x, self.y, self.index = x, y, index
        self.dy = self.dx = torch.zeros(len(y), dtype=torch.int64)
        self.flip = torch.zeros(len(y), dtype=torch.bool)
