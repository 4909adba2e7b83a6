"""Teacher cache format on a tiny fake dataset: variant indexing (exhaustive), atomic builds,
meta validation, fp16 size, fixed views. A fake 'teacher' returns its input pixels as logits,
so every stored entry can be checked against the exact augmented image."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from kdsrc.cache import (TeacherCache, build_teacher_cache, decode_variant, draw_fixed_variants,
                         num_variants, open_run_cache, read_meta, variant_code, weights_sha256)
from kdsrc.data import DeviceLoader, augment
from kdsrc.errors import CheckpointError, ConfigError
from pixel_cache import PAD, H, PixelTeacher, fake_data

def all_variants(n: int, flip: bool):
    """Every (index, dy, dx, flip) of an n-image dataset, as flat tensors."""
    side = 2 * PAD + 1
    flips = (0, 1) if flip else (0,)
    rows = [(i, dy, dx, f) for i in range(n) for dy in range(side) for dx in range(side)
            for f in flips]
    t = torch.tensor(rows, dtype=torch.int64)
    return t[:, 0], t[:, 1], t[:, 2], t[:, 3].bool()


def test_variant_code_formula_and_inverse():
    assert num_variants(4, True) == 162 and num_variants(4, False) == 81
    side = 2 * PAD + 1
    for flip in (True, False):
        _, dy, dx, fl = all_variants(1, flip)
        code = variant_code(dy, dx, fl, pad=PAD, flip_enabled=flip)
        expect = (dy * side + dx) * 2 + fl.long() if flip else dy * side + dx
        assert torch.equal(code, expect)
        assert sorted(code.tolist()) == list(range(num_variants(PAD, flip)))
        ddy, ddx, dfl = decode_variant(code, pad=PAD, flip_enabled=flip)
        assert torch.equal(ddy, dy) and torch.equal(ddx, dx) and torch.equal(dfl, fl)


@pytest.mark.parametrize("flip", [True, False])
def test_every_variant_maps_to_its_stored_entry(tmp_path, flip):
    data = fake_data(flip=flip)
    teacher = PixelTeacher()
    out = build_teacher_cache(teacher, data, tmp_path / "c", dtype=torch.float32, batch_size=7,
                              teacher_name="pix")
    meta = read_meta(out)
    v_count = num_variants(PAD, flip)
    assert (meta["num_samples"], meta["num_variants"], meta["num_classes"], meta["pooled_dim"]) \
        == (3, v_count, 3 * H * H, 3 * H)
    assert meta["flip"] is flip and meta["pad"] == PAD and meta["scheme"] == "exact"
    assert meta["contents"] == ["logits", "pooled_feat"]
    idx, dy, dx, fl = all_variants(3, flip)
    x = augment(data.train_x[idx], dy, dx, fl, pad=PAD, mean=data.mean, std=data.std)
    # the raw arrays: entry (i, v) with v = (dy*(2p+1) + dx)*n_flip + flip
    raw = np.load(out / "logits.npy")
    raw_p = np.load(out / "pooled_feat.npy")
    side = 2 * PAD + 1
    v = (dy * side + dx) * 2 + fl.long() if flip else dy * side + dx
    assert torch.equal(torch.from_numpy(raw[idx.numpy(), v.numpy()]), x.flatten(1))
    assert torch.equal(torch.from_numpy(raw_p[idx.numpy(), v.numpy()]), x.sum(3).flatten(1))
    # and the lookups, resident and memory-mapped, in a shuffled order
    perm = torch.randperm(idx.numel(), generator=torch.Generator().manual_seed(1))
    for resident in (True, False):
        cache = TeacherCache.open(out, "cpu", resident=resident)
        assert cache.resident is resident
        logits, pooled = cache.lookup(idx[perm], dy[perm], dx[perm], None if not flip else fl[perm])
        assert logits.dtype == torch.float32
        assert torch.equal(logits, x[perm].flatten(1))
        assert torch.equal(pooled, x[perm].sum(3).flatten(1))
        assert cache.lookup(idx, dy, dx, fl, pooled=False)[1] is None


def test_lookup_matches_the_loader_batches(tmp_path):
    data = fake_data(n=5)
    teacher = PixelTeacher()
    out = build_teacher_cache(teacher, data, tmp_path / "c", dtype=torch.float32)
    cache = TeacherCache.open(out, "cpu")
    loader = DeviceLoader.from_arrays(data, "train", batch_size=2, seed=4)
    for epoch in (1, 2, 3):
        loader.set_epoch(epoch)
        for b in loader:
            logits, _ = cache.lookup(b.index, b.dy, b.dx, b.flip)
            assert torch.equal(logits, b.x.flatten(1))


def test_fp16_is_the_default_and_its_size(tmp_path):
    data = fake_data(n=4)
    out = build_teacher_cache(PixelTeacher(), data, tmp_path / "c")
    meta = read_meta(out)
    assert meta["dtype"] == "float16"
    n, v, c, d = 4, num_variants(PAD, True), 3 * H * H, 3 * H
    arr = np.load(out / "logits.npy", mmap_mode="r")
    assert arr.dtype == np.float16 and arr.shape == (n, v, c)
    header = os.path.getsize(out / "logits.npy") - n * v * c * 2
    assert 0 < header <= 4096
    assert os.path.getsize(out / "pooled_feat.npy") - n * v * d * 2 <= 4096
    cache = TeacherCache.open(out, "cpu")
    idx, dy, dx, fl = all_variants(n, True)
    logits, _ = cache.lookup(idx, dy, dx, fl)
    x = augment(data.train_x[idx], dy, dx, fl, pad=PAD, mean=data.mean, std=data.std)
    assert torch.equal(logits, x.flatten(1).half().float())


def test_pooled_budget(tmp_path):
    data = fake_data(n=2)
    out = build_teacher_cache(PixelTeacher(), data, tmp_path / "a", pooled_budget_bytes=10)
    meta = read_meta(out)
    assert meta["contents"] == ["logits"] and meta["pooled_dim"] is None
    assert not (out / "pooled_feat.npy").exists()
    cache = TeacherCache.open(out, "cpu")
    assert cache.lookup(torch.tensor([0]), torch.tensor([0]), torch.tensor([0]),
                        torch.tensor([False]))[1] is None
    assert cache.satisfies({"logits"}) and not cache.satisfies({"logits", "pooled_feat"})
    assert not cache.satisfies(None)
    with pytest.raises(ConfigError, match="not pooled_feat"):
        TeacherCache.open(out, "cpu", needs={"pooled_feat"})
    out2 = build_teacher_cache(PixelTeacher(), data, tmp_path / "b", store_pooled=False)
    assert read_meta(out2)["contents"] == ["logits"]


def test_interrupted_build_leaves_nothing(tmp_path):
    data = fake_data(n=6)
    teacher = PixelTeacher()
    teacher.fail_at = 4  # the probe forward, then two batches, then the kill
    with pytest.raises(KeyboardInterrupt):
        build_teacher_cache(teacher, data, tmp_path / "c", batch_size=8)
    assert list(tmp_path.iterdir()) == []


def test_existing_cache_needs_overwrite(tmp_path):
    data = fake_data(n=2)
    out = build_teacher_cache(PixelTeacher(), data, tmp_path / "c", dtype=torch.float32)
    with pytest.raises(ConfigError, match="exists already"):
        build_teacher_cache(PixelTeacher(2.0), data, out)
    build_teacher_cache(PixelTeacher(2.0), data, out, dtype=torch.float32, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    cache = TeacherCache.open(out, "cpu")
    idx, dy, dx, fl = all_variants(2, True)
    x = augment(data.train_x[idx], dy, dx, fl, pad=PAD, mean=data.mean, std=data.std)
    assert torch.equal(cache.lookup(idx, dy, dx, fl)[0], 2 * x.flatten(1))


def test_directory_without_meta_is_not_a_cache(tmp_path):
    (tmp_path / "half").mkdir()
    np.save(tmp_path / "half" / "logits.npy", np.zeros((2, 50, 3), np.float16))
    with pytest.raises(CheckpointError, match="incomplete"):
        TeacherCache.open(tmp_path / "half")
    with pytest.raises(CheckpointError, match="does not exist"):
        TeacherCache.open(tmp_path / "nothing")


def test_meta_validation(tmp_path):
    data = fake_data(n=2, name="fake")
    teacher = PixelTeacher()
    out = build_teacher_cache(teacher, data, tmp_path / "c", teacher_name="resnet8")
    meta = read_meta(out)
    assert meta["teacher"] == "resnet8" and meta["dataset"] == "fake"
    assert meta["teacher_weights_sha256"] == weights_sha256(teacher)
    assert meta["kdsrc_version"] and meta["variant_index"].startswith("(dy * (2*pad + 1) + dx)")
    TeacherCache.open(out, teacher="resnet8", dataset="fake", data=data,
                      weights_sha256=weights_sha256(teacher))
    with pytest.raises(ConfigError, match="teacher 'resnet8'.*'resnet20'"):
        TeacherCache.open(out, teacher="resnet20")
    with pytest.raises(ConfigError, match="dataset 'fake'.*'cifar100'"):
        TeacherCache.open(out, dataset="cifar100")
    with pytest.raises(CheckpointError, match="other weights"):
        TeacherCache.open(out, weights_sha256=weights_sha256(PixelTeacher(3.0)))
    with pytest.raises(CheckpointError, match="other training images"):
        TeacherCache.open(out, data=fake_data(n=2, seed=9))
    with pytest.raises(ConfigError, match="num_samples"):
        TeacherCache.open(out, data=fake_data(n=3))
    with pytest.raises(ConfigError, match="flip"):
        TeacherCache.open(out, data=fake_data(n=2, flip=False))
    # a damaged array file
    with open(out / "logits.npy", "r+b") as f:
        f.truncate(200)
    with pytest.raises(CheckpointError, match="logits.npy"):
        TeacherCache.open(out)
    (out / "meta.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(CheckpointError, match="not a kdsrc-teacher-cache"):
        TeacherCache.open(out)


def test_open_run_cache_decisions(tmp_path):
    data = fake_data(n=2, name="fake")
    teacher = PixelTeacher()
    out = build_teacher_cache(teacher, data, tmp_path / "c", teacher_name="resnet8",
                              store_pooled=False)
    cfg = {"dataset": "fake", "teacher": {"name": "resnet8", "checkpoint": "x", "cache": str(out)},
           "teacher_cache": "auto"}
    kw = dict(method="m", teacher=teacher, data=data, device=torch.device("cpu"))
    cache, why = open_run_cache(cfg, needs=frozenset({"logits"}), **kw)
    assert cache is not None and "fake" in why
    assert open_run_cache({**cfg, "teacher_cache": "off"}, needs={"logits"}, **kw)[0] is None
    assert open_run_cache(cfg, needs=None, **kw)[0] is None
    none, why = open_run_cache(cfg, needs={"logits", "pooled_feat"}, **kw)
    assert none is None and "pooled_feat" in why
    missing = {**cfg, "teacher": {**cfg["teacher"], "cache": str(tmp_path / "nope")}}
    none, why = open_run_cache(missing, needs={"logits"}, **kw)
    assert none is None and "does not exist" in why
    assert open_run_cache({**cfg, "teacher": {**cfg["teacher"], "cache": None}},
                          needs={"logits"}, **kw)[0] is None
    with pytest.raises(ConfigError, match="teacher"):
        open_run_cache({**cfg, "teacher": {**cfg["teacher"], "name": "resnet20"}},
                       needs={"logits"}, **kw)


def test_fixed_view_draws_are_distinct_and_seeded():
    v = draw_fixed_variants(50, 5, pad=4, flip=True, seed=3)
    assert v.shape == (50, 5, 3) and v.dtype == torch.int64
    assert torch.equal(v, draw_fixed_variants(50, 5, pad=4, flip=True, seed=3))
    assert not torch.equal(v, draw_fixed_variants(50, 5, pad=4, flip=True, seed=4))
    codes = variant_code(v[..., 0], v[..., 1], v[..., 2], pad=4, flip_enabled=True)
    assert all(len(set(row.tolist())) == 5 for row in codes)
    assert int(v[..., :2].max()) <= 8 and set(v[..., 2].unique().tolist()) <= {0, 1}
    assert int(draw_fixed_variants(50, 3, pad=4, flip=False, seed=0)[..., 2].max()) == 0
    with pytest.raises(ConfigError, match="views"):
        draw_fixed_variants(2, 163, pad=4, flip=True, seed=0)


def test_fixed_views_cache_and_loader(tmp_path):
    data = fake_data(n=6)
    k = 3
    out = build_teacher_cache(PixelTeacher(), data, tmp_path / "v", dtype=torch.float32,
                              views=k, views_seed=7)
    meta = read_meta(out)
    assert meta["scheme"] == "views" and meta["views"] == k and meta["num_variants"] == k
    cache = TeacherCache.open(out)
    assert torch.equal(cache.variants, draw_fixed_variants(6, k, pad=PAD, flip=True, seed=7))
    loader = DeviceLoader.from_arrays(data, "train", batch_size=4, seed=1,
                                      fixed_variants=cache.variants)
    allowed = {(i, *map(int, cache.variants[i, j])) for i in range(6) for j in range(k)}
    seen = set()
    for epoch in range(1, 9):
        loader.set_epoch(epoch)
        for b in loader:
            got = {(int(i), int(a), int(c), int(f))
                   for i, a, c, f in zip(b.index, b.dy, b.dx, b.flip)}
            assert got <= allowed
            seen |= got
            assert torch.equal(b.x, augment(data.train_x[b.index], b.dy, b.dx, b.flip, pad=PAD,
                                            mean=data.mean, std=data.std))
            logits, pooled = cache.lookup(b.index, b.dy, b.dx, b.flip)
            assert torch.equal(logits, b.x.flatten(1))
            assert torch.equal(pooled, b.x.sum(3).flatten(1))
    assert len(seen) > 6  # more than one view per image over the epochs
    # permutation unchanged by the fixed views; an augmentation outside them is refused
    plain = DeviceLoader.from_arrays(data, "train", batch_size=4, seed=1)
    assert torch.equal(plain.draws(3).perm, loader.draws(3).perm)
    d = plain.draws(1)
    outside = [j for j in range(6)
               if (int(d.perm[j]), int(d.dy[j]), int(d.dx[j]), int(d.flip[j])) not in allowed]
    j = outside[0]
    with pytest.raises(ConfigError, match="fixed views"):
        cache.lookup(d.perm[j:j + 1], d.dy[j:j + 1], d.dx[j:j + 1], d.flip[j:j + 1])
    with pytest.raises(ValueError, match="N x K x 3"):
        loader.set_fixed_variants(cache.variants[:2])
    with pytest.raises(ValueError, match="out of range"):
        loader.set_fixed_variants(cache.variants + 10)


def test_command_line_info_and_errors(tmp_path, capsys):
    from kdsrc.cache.__main__ import main

    out = build_teacher_cache(PixelTeacher(), fake_data(n=2), tmp_path / "c", teacher_name="pix")
    assert main(["info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["teacher"] == "pix"
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["build", "--teacher", "resnet8", "--checkpoint", str(tmp_path / "no.pt"),
                 "--dataset", "digits", "--out", str(tmp_path / "d"), "--device", "cpu"]) == 2
    assert "no.pt" in capsys.readouterr().err and not (tmp_path / "d").exists()
