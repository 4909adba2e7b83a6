"""The autoaugment-K teacher cache: K augmented copies of the training set made once (crop,
flip, AutoAugment), stored as uint8 with the teacher's outputs on them; a run trains on one
stored view per epoch and reads the teacher from the cache, also with a validation split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdsrc.cache import TeacherCache, build_teacher_cache, read_meta
from kdsrc.cache.layout import stored_views, stored_views_folder
from kdsrc.cache.view_images import draw_view, draw_views
from kdsrc.data import DeviceLoader, normalize_u8
from kdsrc.data.loader import epoch_view
from kdsrc.errors import ConfigError
from pixel_cache import PixelTeacher, fake_data


def test_views_are_seeded_per_index_and_leave_the_global_generator_alone():
    data = fake_data(n=5)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    views = draw_views(data, 3)
    assert torch.equal(torch.get_rng_state(), before)
    assert views.shape == (3, *data.train_x.shape) and views.dtype == torch.uint8
    # view k is the same whatever K is, and the same every time
    assert torch.equal(views[0], draw_view(data, 0)) and torch.equal(views[2], draw_view(data, 2))
    assert torch.equal(draw_views(data, 1)[0], views[0])
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[0], data.train_x)


def test_the_cache_stores_the_views_and_the_teacher_outputs_on_them(tmp_path):
    data = fake_data(n=4)
    views = draw_views(data, 3)
    out = build_teacher_cache(PixelTeacher(), data, tmp_path / "autoaugment-3",
                              dtype=torch.float32, view_images=views, teacher_name="pix")
    meta = read_meta(out)
    assert (meta["scheme"], meta["views"], meta["num_variants"]) == ("autoaugment", 3, 3)
    assert "AutoAugment" in meta["augment"] and meta["files"]["images"] == "images.npy"
    assert np.array_equal(np.load(out / "images.npy"), views.numpy())
    cache = TeacherCache.open(out, teacher="pix", data=data)
    assert torch.equal(cache.view_images, views)
    index = torch.tensor([3, 0, 2, 1])
    view = torch.tensor([2, 0, 1, 2])
    logits, pooled = cache.lookup(index, None, None, None, view=view)
    want = normalize_u8(views[view, index], data.mean, data.std)
    torch.testing.assert_close(logits, want.flatten(1), rtol=0, atol=0)
    torch.testing.assert_close(pooled, want.sum(dim=3).flatten(1), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="stored augmented views"):
        cache.lookup(index, torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long),
                     None)
    # a validation split: the run's training set is some rows of the cache's
    rows = torch.tensor([0, 2, 3])
    sub = cache.restrict(rows)
    assert sub.num_samples == 3 and torch.equal(sub.view_images, views[:, rows])
    got, _ = sub.lookup(torch.tensor([0, 1, 2]), None, None, None, view=torch.tensor([1, 1, 0]))
    want, _ = cache.lookup(rows, None, None, None, view=torch.tensor([1, 1, 0]))
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # resident or memory-mapped, a restricted cache reads the stored arrays through its row map
    # (no copy of them), and restricting twice composes the maps
    for resident in (True, False):
        whole = TeacherCache.open(out, teacher="pix", data=data, resident=resident)
        sub = whole.restrict(rows)
        assert sub._logits is whole._logits and sub._pooled is whole._pooled
        twice = sub.restrict(torch.tensor([0, 2]))
        got, got_pooled = twice.lookup(torch.tensor([1, 0]), None, None, None,
                                       view=torch.tensor([2, 1]))
        want, want_pooled = whole.lookup(torch.tensor([3, 0]), None, None, None,
                                         view=torch.tensor([2, 1]))
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        torch.testing.assert_close(got_pooled, want_pooled, rtol=0, atol=0)
        assert torch.equal(twice.view_images, views[:, torch.tensor([0, 3])])


def test_the_loader_trains_on_one_stored_view_per_epoch():
    data = fake_data(n=7)
    views = draw_views(data, 3)
    loader = DeviceLoader.from_arrays(data, "train", batch_size=3, seed=5)
    loader.set_view_images(views)
    seen = set()
    for epoch in range(12):
        loader.set_epoch(epoch)
        batches = list(loader)
        v = epoch_view(5, epoch, 3)
        seen.add(v)
        assert sorted(torch.cat([b.index for b in batches]).tolist()) == list(range(7))
        for b in batches:
            assert torch.equal(b.view, torch.full_like(b.index, v))
            torch.testing.assert_close(b.x, normalize_u8(views[v, b.index], data.mean, data.std),
                                       rtol=0, atol=0)
    assert len(seen) > 1      # the view changes between epochs
    from kdsrc.data.recipe_aug import PixelAugment

    augmenting = DeviceLoader.from_arrays(data, "train", batch_size=3,
                                          pixel_augment=PixelAugment(autoaugment=True))
    with pytest.raises(ConfigError, match="no further augmentation"):
        augmenting.set_view_images(views)


def test_folder_names(tmp_path):
    assert stored_views("autoaugment-5") == 5 and stored_views("views-5") is None
    assert stored_views_folder({"teacher": {"cache": "results/cache/d/t/autoaugment-1"}})
    assert not stored_views_folder({"teacher": {"cache": "results/cache/d/t/exact"}})
    assert not stored_views_folder({"teacher": None})
    # a stored-views cache moved to a folder of another name is still one (its meta.json)
    renamed = tmp_path / "my-views"
    renamed.mkdir()
    (renamed / "meta.json").write_text('{"scheme": "autoaugment", "views": 2}')
    assert stored_views_folder({"teacher": {"cache": str(renamed)}})
    (renamed / "meta.json").write_text('{"scheme": "views", "views": 2}')
    assert not stored_views_folder({"teacher": {"cache": str(renamed)}})


def test_a_run_trains_on_the_stored_views_with_a_validation_split(tmp_path, digits_teacher):
    from kdsrc.data import load_dataset
    from kdsrc.engine import Progress, RunPaths, train
    from kdsrc.models import load_teacher

    data = load_dataset("digits", root=tmp_path / "data")
    teacher = load_teacher("resnet8", digits_teacher, num_classes=10)
    cache = build_teacher_cache(teacher, data, tmp_path / "autoaugment-2",
                                view_images=draw_views(data, 2), teacher_name="resnet8")
    lines: list[str] = []
    progress = Progress(enabled=False)
    progress.line = lines.append
    cfg = {"dataset": "digits", "student": "resnet8", "seed": 0,
           "method": {"name": "kd"}, "teacher_cache": "auto",
           "teacher": {"name": "resnet8", "checkpoint": str(digits_teacher),
                       "cache": str(cache)},
           "solver": {"epochs": 2, "lr_decay_epochs": [], "val_fraction": 0.1}}
    record = train(cfg, RunPaths.in_dir(tmp_path / "run"), device="cpu",
                   data_root=tmp_path / "data", progress=progress)
    assert record["teacher_cache_views"] == 2
    assert any(line.startswith("teacher cache: used") for line in lines)
    # a method that cannot read the cache cannot train on its views: an error, not a fallback
    crd = {**cfg, "method": {"name": "reviewkd"}}     # reads feature maps: no cache
    with pytest.raises(ConfigError, match="holds the augmented views this run trains on"):
        train(crd, RunPaths.in_dir(tmp_path / "crd"), device="cpu",
              data_root=tmp_path / "data", progress=Progress(enabled=False))
