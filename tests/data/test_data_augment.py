"""The batched on-device augmentation equals torchvision's PIL pipeline exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from kdsrc.data import ReferenceDataset, augment, reference_transform
from kdsrc.data.augment import crop_flip_u8, normalize_u8

MEAN = (0.5071, 0.4867, 0.4408)
STD = (0.2675, 0.2565, 0.2761)
PAD = 4


def _pil(img_u8: torch.Tensor) -> Image.Image:
    return Image.fromarray(img_u8.permute(1, 2, 0).numpy())


def _torchvision_functional(img_u8, dy, dx, flip, pad=PAD, mean=MEAN, std=STD):
    """pad with fill 0 -> crop at (dy, dx) -> hflip -> to_tensor -> normalize, on a PIL image."""
    img = _pil(img_u8)
    h, w = img.height, img.width
    img = TF.pad(img, pad, fill=0)
    img = TF.crop(img, int(dy), int(dx), h, w)
    if flip:
        img = TF.hflip(img)
    return TF.normalize(TF.to_tensor(img), mean, std)


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (64, 3, 32, 32), generator=g, dtype=torch.uint8)


def test_equals_torchvision_functional_for_given_draws(images):
    g = torch.Generator().manual_seed(1)
    n = len(images)
    dy = torch.randint(0, 2 * PAD + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * PAD + 1, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    # make sure the corners and both flip states are covered
    dy[:4] = torch.tensor([0, 0, 8, 8]); dx[:4] = torch.tensor([0, 8, 0, 8])
    flip[:2] = torch.tensor([True, False])
    out = augment(images, dy, dx, flip, pad=PAD, mean=MEAN, std=STD)
    assert out.shape == images.shape and out.dtype == torch.float32
    for i in range(n):
        ref = _torchvision_functional(images[i], dy[i], dx[i], bool(flip[i]))
        assert torch.equal(out[i], ref), f"image {i} (dy={int(dy[i])}, dx={int(dx[i])}, flip={bool(flip[i])})"


@pytest.mark.parametrize("dy,dx", [(dy, dx) for dy in range(9) for dx in range(9)])
def test_every_offset_matches(images, dy, dx):
    img = images[:2]
    for f in (False, True):
        out = augment(img, torch.full((2,), dy), torch.full((2,), dx), torch.full((2,), f),
                      pad=PAD, mean=MEAN, std=STD)
        for i in range(2):
            assert torch.equal(out[i], _torchvision_functional(img[i], dy, dx, f))


def test_equals_the_randomcrop_class_path(images):
    """reference_transform (RandomCrop -> RandomHorizontalFlip -> ToTensor -> Normalize) with the
    global torch RNG seeded; the same draws replayed (RandomCrop.get_params draws the row, then the
    column; RandomHorizontalFlip draws torch.rand(1) < p) and fed to augment give the same tensor."""
    tf = reference_transform(MEAN, STD, pad=PAD, flip=True, train=True)
    for i in range(16):
        torch.manual_seed(100 + i)
        ref = tf(_pil(images[i]))
        torch.manual_seed(100 + i)
        dy = torch.randint(0, 2 * PAD + 1, size=(1,)).item()
        dx = torch.randint(0, 2 * PAD + 1, size=(1,)).item()
        flip = bool(torch.rand(1) < 0.5)
        out = augment(images[i:i + 1], torch.tensor([dy]), torch.tensor([dx]), torch.tensor([flip]),
                      pad=PAD, mean=MEAN, std=STD)[0]
        assert torch.equal(out, ref)


def test_eval_transform_is_normalisation_only(images):
    tf = reference_transform(MEAN, STD, pad=PAD, flip=True, train=False)
    for i in range(4):
        assert torch.equal(normalize_u8(images[i:i + 1], MEAN, STD)[0], tf(_pil(images[i])))
    # pad == centre crop, no flip: same as no augmentation
    n = len(images)
    centre = augment(images, torch.full((n,), PAD), torch.full((n,), PAD), None, pad=PAD, mean=MEAN, std=STD)
    assert torch.equal(centre, normalize_u8(images, MEAN, STD))


def test_padding_is_zero_before_normalisation():
    img = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    out = augment(img, torch.tensor([0]), torch.tensor([0]), torch.tensor([False]),
                  pad=PAD, mean=MEAN, std=STD)
    expected_pad = (-torch.tensor(MEAN) / torch.tensor(STD)).view(3, 1, 1)
    assert torch.allclose(out[0, :, :PAD, :], expected_pad.expand(3, PAD, 32), atol=1e-6)
    assert torch.allclose(out[0, :, PAD:, PAD:], ((1 - torch.tensor(MEAN)) / torch.tensor(STD)).view(3, 1, 1)
                          .expand(3, 32 - PAD, 32 - PAD), atol=1e-6)


def test_flip_mirrors_the_crop(images):
    n = len(images)
    dy = torch.randint(0, 9, (n,), generator=torch.Generator().manual_seed(3))
    dx = torch.randint(0, 9, (n,), generator=torch.Generator().manual_seed(4))
    plain = crop_flip_u8(images, dy, dx, None, pad=PAD)
    flipped = crop_flip_u8(images, dy, dx, torch.ones(n, dtype=torch.bool), pad=PAD)
    assert torch.equal(flipped, plain.flip(-1))
    assert torch.equal(crop_flip_u8(images, dy, dx, torch.zeros(n, dtype=torch.bool), pad=PAD), plain)


def test_non_square_and_other_channel_counts():
    g = torch.Generator().manual_seed(5)
    img = torch.randint(0, 256, (3, 3, 20, 28), generator=g, dtype=torch.uint8)
    dy, dx, fl = torch.tensor([0, 3, 6]), torch.tensor([6, 1, 0]), torch.tensor([True, False, True])
    out = augment(img, dy, dx, fl, pad=3, mean=MEAN, std=STD)
    for i in range(3):
        ref = _torchvision_functional(img[i], dy[i], dx[i], bool(fl[i]), pad=3)
        assert torch.equal(out[i], ref)


def test_layout_and_dtype_options(images):
    n = len(images)
    dy = torch.randint(0, 9, (n,), generator=torch.Generator().manual_seed(6))
    dx = torch.randint(0, 9, (n,), generator=torch.Generator().manual_seed(7))
    fl = torch.rand(n, generator=torch.Generator().manual_seed(8)) < 0.5
    base = augment(images, dy, dx, fl, pad=PAD, mean=MEAN, std=STD)
    assert base.is_contiguous()
    cl = augment(images, dy, dx, fl, pad=PAD, mean=MEAN, std=STD, channels_last=True)
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, base)
    bf = augment(images, dy, dx, fl, pad=PAD, mean=MEAN, std=STD, dtype=torch.bfloat16)
    assert bf.dtype == torch.bfloat16 and torch.equal(bf, base.to(torch.bfloat16))


def test_bad_inputs_are_refused(images):
    one = torch.zeros(2, dtype=torch.long)
    with pytest.raises(TypeError):
        augment(images[:2].float(), one, one, None, pad=PAD, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="offsets"):
        augment(images[:2], one - 1, one, None, pad=PAD, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="offsets"):
        augment(images[:2], one, one + 9, None, pad=PAD, mean=MEAN, std=STD)
    with pytest.raises(ValueError):
        augment(images[:2], one, one, None, pad=PAD, mean=MEAN[:2], std=STD)


def test_reference_dataset_serves_pil_images_with_index(images):
    labels = torch.arange(len(images)) % 10
    ds = ReferenceDataset(images, labels)
    img, label, index = ds[5]
    assert isinstance(img, Image.Image) and img.size == (32, 32) and img.mode == "RGB"
    assert np.array_equal(np.asarray(img), images[5].permute(1, 2, 0).numpy())
    assert (label, index) == (5, 5) and len(ds) == len(images)
    tf = reference_transform(MEAN, STD, train=False)
    loader = torch.utils.data.DataLoader(ReferenceDataset(images, labels, tf), batch_size=16, shuffle=False)
    x, y, idx = next(iter(loader))
    assert torch.equal(x, normalize_u8(images[:16], MEAN, STD))
    assert torch.equal(y, labels[:16]) and torch.equal(idx, torch.arange(16))


def test_reference_transform_respects_flip_and_pad():
    from torchvision import transforms as T

    kinds = lambda tf: [type(t) for t in tf.transforms]  # noqa: E731
    assert kinds(reference_transform(MEAN, STD, pad=4, flip=True, train=True)) == [
        T.RandomCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    assert kinds(reference_transform(MEAN, STD, pad=4, flip=False, train=True)) == [
        T.RandomCrop, T.ToTensor, T.Normalize]
    assert kinds(reference_transform(MEAN, STD, pad=4, flip=True, train=False)) == [T.ToTensor, T.Normalize]
    crop = reference_transform(MEAN, STD, pad=4, flip=True).transforms[0]
    assert crop.size == (32, 32) and crop.padding == 4 and crop.fill == 0 and crop.padding_mode == "constant"
