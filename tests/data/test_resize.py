"""The 224-px path: random resized crops drawn as torchvision draws them, resampled on the device
exactly as F.interpolate resamples one crop, evaluation resize + centre crop, the loader."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdsrc.config import NORMALIZATIONS
from kdsrc.data import DeviceLoader, load_dataset
from kdsrc.data.resize import ResizeSpec, centre_resized, random_resized_boxes, resized_crops
from kdsrc.engine import Progress, RunPaths, train

MEAN = torch.tensor([0.5, 0.4, 0.3])
STD = torch.tensor([0.2, 0.25, 0.3])


def _images(n=6, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def test_boxes_follow_torchvisions_rules():
    g = torch.Generator().manual_seed(0)
    boxes = random_resized_boxes(4000, 32, 32, g)
    top, left, h, w = boxes.unbind(1)
    assert (h >= 1).all() and (w >= 1).all() and (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 32).all() and (left + w <= 32).all()
    area = (h * w).double() / 1024
    assert area.min() >= 0.05 and area.max() <= 1.0       # 0.08..1 up to the rounding of sides
    ratio = (w / h).double()
    assert ratio.min() > 0.6 and ratio.max() < 1.7        # 3/4..4/3 up to rounding of sides
    # the same generator state gives the same boxes; another does not
    again = random_resized_boxes(4000, 32, 32, torch.Generator().manual_seed(0))
    assert torch.equal(boxes, again)
    assert not torch.equal(boxes, random_resized_boxes(4000, 32, 32,
                                                       torch.Generator().manual_seed(1)))
    # the mean crop area of torchvision's sampler (a Monte Carlo estimate, same rules)
    import torchvision.transforms as T

    torch.manual_seed(0)
    ref = [T.RandomResizedCrop.get_params(torch.zeros(3, 32, 32), [0.08, 1.0], [3 / 4, 4 / 3])
           for _ in range(4000)]
    ref_area = sum(hh * ww for _, _, hh, ww in ref) / (4000 * 1024)
    assert abs(float(area.mean()) - ref_area) < 0.02


def test_resampling_equals_interpolating_each_crop():
    x = _images()
    boxes = torch.tensor([[0, 0, 32, 32], [3, 5, 10, 20], [10, 0, 22, 7], [31, 31, 1, 1],
                          [4, 4, 24, 24], [0, 9, 17, 23]])
    flip = torch.tensor([False, True, False, True, False, True])
    out = resized_crops(x, boxes, flip, 56, MEAN, STD)
    for i, (t, l, h, w) in enumerate(boxes.tolist()):
        crop = x[i:i + 1, :, t:t + h, l:l + w].float()
        ref = F.interpolate(crop, size=(56, 56), mode="bilinear", align_corners=False)
        ref = ref.flip(-1) if flip[i] else ref
        ref = (ref / 255 - MEAN.view(1, -1, 1, 1)) / STD.view(1, -1, 1, 1)
        torch.testing.assert_close(out[i:i + 1], ref, rtol=1e-5, atol=1e-4)


def test_evaluation_resize_and_centre_crop():
    import torchvision.transforms.v2.functional as TF

    x = _images(n=2)
    spec = ResizeSpec(size=224, crop_pct=0.875)
    assert spec.eval_resize == 256
    out = centre_resized(x, spec, MEAN, STD)
    ref = TF.center_crop(TF.resize(x.float(), [256, 256], antialias=False), [224, 224])
    ref = (ref / 255 - MEAN.view(1, -1, 1, 1)) / STD.view(1, -1, 1, 1)
    assert out.shape == (2, 3, 224, 224)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)


def test_loader_resizes_every_batch_and_replays_its_epoch():
    x, y = _images(n=10), torch.arange(10) % 3
    spec = ResizeSpec(size=64, crop_pct=0.9)
    loader = DeviceLoader(x, y, batch_size=4, mean=MEAN.tolist(), std=STD.tolist(), train=True,
                          seed=3, resize=spec)
    loader.set_epoch(2)
    first = [b.x for b in loader]
    assert [tuple(t.shape) for t in first] == [(4, 3, 64, 64), (4, 3, 64, 64), (2, 3, 64, 64)]
    b = next(iter(loader))
    assert b.dy is None and b.dx is None and b.flip is not None     # no cache corner
    assert all(torch.equal(a, c) for a, c in zip(first, (b.x for b in loader)))
    loader.set_epoch(3)
    assert not torch.equal(first[0], next(iter(loader)).x)
    test = DeviceLoader(x, y, batch_size=4, mean=MEAN.tolist(), std=STD.tolist(), train=False,
                        resize=spec)
    assert next(iter(test)).x.shape == (4, 3, 64, 64)
    with pytest.raises(Exception, match="cannot be combined with resizing"):
        loader.set_fixed_variants(torch.zeros(10, 2, 3, dtype=torch.int64))


def test_a_run_at_a_larger_size_with_a_recipe_normalisation(tmp_path):
    data = load_dataset("digits").head(192, 64)
    cfg = {"dataset": "digits", "student": "timm-resnet18", "method": "vanilla",
           "solver": {"epochs": 1, "batch_size": 64, "image_size": 48,
                      "normalize": "cifar100_rsd"}}
    rec = train(cfg, RunPaths.in_dir(tmp_path / "run"), device="cpu", arrays=data,
                progress=Progress(enabled=False))
    assert math.isfinite(rec["top1_last"]) and rec["cuda_graph"] == "off"
    assert rec["config"]["solver"]["image_size"] == 48
    assert NORMALIZATIONS["cifar100_rsd"][0] == (0.5071, 0.4865, 0.4409)
