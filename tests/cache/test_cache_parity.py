"""fp32 parity of the teacher cache with the online teacher (CPU, digits, the session's resnet8
teacher): the KD loss of the same batches, a short KD training run step by step, the multi-view
scheme, and RSD reading cached pooled features.

The cache is built on a 24-image slice of the digits training set (81 variants each: 1,944
teacher forwards) to keep the file fast; training runs read the same slice through a patched
``load_dataset``.
"""

from __future__ import annotations

import pytest
import torch

import kdsrc.engine.loop as loop
from kdsrc.cache import TeacherCache, build_teacher_cache, read_meta
from kdsrc.data import DatasetArrays, DeviceLoader, load_dataset
from kdsrc.distillers import DistillContext, StepState, build_distiller
from kdsrc.engine import RunPaths, train
from kdsrc.models import build_model, feature_dims, load_teacher
from kdsrc_testutil import step_losses

N_TRAIN, N_TEST, BATCH = 24, 32, 8


@pytest.fixture(scope="module")
def subset() -> DatasetArrays:
    d = load_dataset("digits")
    return d.head(N_TRAIN, N_TEST)


@pytest.fixture(scope="module")
def teacher(digits_teacher):
    return load_teacher("resnet8", digits_teacher, num_classes=10)


@pytest.fixture(scope="module")
def exact_cache(tmp_path_factory, teacher, subset):
    out = tmp_path_factory.mktemp("cache") / "exact"
    lines = step_losses()
    build_teacher_cache(teacher, subset, out, device="cpu", dtype=torch.float32,
                        store_pooled=True, teacher_name="resnet8", batch_size=512, progress=lines)
    assert any("81 variants" in t for t in lines.lines) and "wrote" in lines.lines[-1]
    return out


@pytest.fixture(scope="module")
def views_cache(tmp_path_factory, teacher, subset):
    out = tmp_path_factory.mktemp("cache") / "views3"
    build_teacher_cache(teacher, subset, out, device="cpu", dtype=torch.float32,
                        teacher_name="resnet8", views=3, views_seed=11)
    return out


def _ctx(subset, student, teacher, cache=None):
    return DistillContext(num_classes=10, num_train=N_TRAIN, epochs=2, device=torch.device("cpu"),
                          mean=subset.mean, std=subset.std, pad=subset.pad, flip=subset.flip,
                          student_dims=feature_dims(student), teacher_dims=feature_dims(teacher),
                          teacher_cache=cache)


def _rel(a, b):
    a, b = float(torch.as_tensor(a).detach()), float(torch.as_tensor(b).detach())
    return abs(a - b) / max(abs(b), 1e-12)


def test_meta_of_the_digits_cache(exact_cache, subset):
    meta = read_meta(exact_cache)
    assert (meta["num_samples"], meta["num_variants"], meta["num_classes"]) == (N_TRAIN, 81, 10)
    assert meta["flip"] is False and meta["pad"] == 4 and meta["dtype"] == "float32"
    assert meta["contents"] == ["logits", "pooled_feat"] and meta["pooled_dim"] == 64


def test_kd_loss_with_cache_equals_online(exact_cache, teacher, subset):
    torch.manual_seed(0)
    student = build_model("resnet8", num_classes=10)
    cache = TeacherCache.open(exact_cache, "cpu", teacher="resnet8", dataset="digits", data=subset)
    online = build_distiller("kd", student, teacher, {}, _ctx(subset, student, teacher))
    cached = build_distiller("kd", student, teacher, {}, _ctx(subset, student, teacher, cache))
    online.train(), cached.train()
    calls = []
    hook = teacher.register_forward_hook(lambda *a: calls.append(1))
    loader = DeviceLoader.from_arrays(subset, "train", batch_size=BATCH, seed=5)
    n = 0
    try:
        for epoch in (1, 2):
            loader.set_epoch(epoch)
            for b in loader:
                st = StepState(epoch=epoch, step=n, epochs=2)
                before = len(calls)
                _, l_cache = cached.forward_train(b.x, b.y, b, st)
                assert len(calls) == before  # no teacher forward with the cache
                _, l_online = online.forward_train(b.x, b.y, b, st)
                assert len(calls) == before + 1
                for k in ("loss_ce", "loss_kd"):
                    assert _rel(l_cache[k], l_online[k]) < 1e-5, (k, l_cache[k], l_online[k])
                n += 1
    finally:
        hook.remove()
    assert n == 6


def test_short_kd_run_with_cache_matches_online(exact_cache, digits_teacher, subset, tmp_path,
                                                monkeypatch):
    monkeypatch.setattr(loop, "load_dataset", lambda *a, **k: subset)
    cfg = {"dataset": "digits", "student": "resnet8", "method": "kd",
           "teacher": {"name": "resnet8", "checkpoint": str(digits_teacher),
                       "cache": str(exact_cache)},
           "solver": {"epochs": 2, "batch_size": BATCH}, "seed": 2}
    runs = {}
    for mode in ("auto", "off"):
        prog = step_losses()
        record = train({**cfg, "teacher_cache": mode}, RunPaths.in_dir(tmp_path / mode),
                       device="cpu", progress=prog)
        runs[mode] = (record, prog)
    (rec_c, p_c), (rec_o, p_o) = runs["auto"], runs["off"]
    assert rec_c["teacher_cache_used"] is True and rec_o["teacher_cache_used"] is False
    assert rec_c["teacher_cache_views"] is None
    assert any(t.startswith("teacher cache: used") for t in p_c.lines)
    assert any(t.startswith("teacher cache: not used (teacher_cache: off)") for t in p_o.lines)
    assert len(p_c.losses) == len(p_o.losses) == 6
    for a, b in zip(p_c.losses, p_o.losses):
        assert _rel(a, b) < 1e-4, (p_c.losses, p_o.losses)


def test_method_without_cache_needs_runs_the_teacher(exact_cache, digits_teacher, subset,
                                                     tmp_path, monkeypatch):
    from kdsrc.distillers import METHODS
    from kdsrc.distillers.kd import KD

    class FeatureMapKD(KD):  # stands for a method that reads feature maps
        name = "kd_feature_maps"
        cache_needs = None

    monkeypatch.setitem(METHODS, FeatureMapKD.name, FeatureMapKD)
    monkeypatch.setattr(loop, "load_dataset", lambda *a, **k: subset)
    prog = step_losses()
    record = train({"dataset": "digits", "student": "resnet8", "method": FeatureMapKD.name,
                    "teacher": {"name": "resnet8", "checkpoint": str(digits_teacher),
                                "cache": str(exact_cache)},
                    "solver": {"epochs": 1, "batch_size": BATCH}}, RunPaths.in_dir(tmp_path),
                   device="cpu", progress=prog)
    assert record["teacher_cache_used"] is False
    assert any("teacher cache: not used" in t and "reads more" in t for t in prog.lines)


@pytest.mark.parametrize("solver, why", [
    ({"color_jitter": 0.4}, "augmented afresh"),
    ({"mixup_alpha": 0.8}, "mixup/cutmix"),
    ({"normalize": "imagenet"}, "normalize: imagenet"),
])
def test_a_recipe_the_cache_cannot_stand_for_runs_the_teacher(exact_cache, digits_teacher, subset,
                                                              tmp_path, monkeypatch, solver, why):
    """Per-image augmentation, mixing or another normalisation shows the teacher images no
    cache holds: the run asks the teacher online (and says why) instead of reading the
    outputs of other images."""
    monkeypatch.setattr(loop, "load_dataset", lambda *a, **k: subset)
    prog = step_losses()
    record = train({"dataset": "digits", "student": "resnet8", "method": "kd",
                    "teacher": {"name": "resnet8", "checkpoint": str(digits_teacher),
                                "cache": str(exact_cache)},
                    "solver": {"epochs": 1, "batch_size": BATCH, **solver}},
                   RunPaths.in_dir(tmp_path), device="cpu", progress=prog)
    assert record["teacher_cache_used"] is False
    assert any(t.startswith("teacher cache: not used") and why in t for t in prog.lines), \
        prog.lines


def test_multiview_lookups_equal_online_teacher(views_cache, teacher, subset):
    cache = TeacherCache.open(views_cache, "cpu", teacher="resnet8", dataset="digits", data=subset)
    assert cache.variants.shape == (N_TRAIN, 3, 3) and cache.num_variants == 3
    loader = DeviceLoader.from_arrays(subset, "train", batch_size=BATCH, seed=0,
                                      fixed_variants=cache.variants)
    allowed = {(i, *map(int, cache.variants[i, j])) for i in range(N_TRAIN) for j in range(3)}
    for epoch in (1, 2, 3):
        loader.set_epoch(epoch)
        for b in loader:
            assert {(int(i), int(a), int(c), int(f)) for i, a, c, f in
                    zip(b.index, b.dy, b.dx, b.flip)} <= allowed
            logits, pooled = cache.lookup(b.index, b.dy, b.dx, b.flip)
            with torch.no_grad():
                ref, feats = teacher(b.x)
            torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
            assert pooled is not None
            torch.testing.assert_close(pooled, feats["pooled_feat"], rtol=1e-5, atol=1e-5)


def test_multiview_run_trains_on_the_stored_views(views_cache, digits_teacher, subset, tmp_path,
                                                  monkeypatch):
    monkeypatch.setattr(loop, "load_dataset", lambda *a, **k: subset)
    seen = []
    orig = loop.DeviceLoader.__iter__

    def spy(self):
        for b in orig(self):
            if b.dy is not None:
                seen.extend(zip(b.index.tolist(), b.dy.tolist(), b.dx.tolist(), b.flip.tolist()))
            yield b

    monkeypatch.setattr(loop.DeviceLoader, "__iter__", spy)
    prog = step_losses()
    cfg = {"dataset": "digits", "student": "resnet8", "method": "kd",
           "teacher": {"name": "resnet8", "checkpoint": str(digits_teacher),
                       "cache": str(views_cache)},
           "solver": {"epochs": 2, "batch_size": BATCH}}
    record = train(cfg, RunPaths.in_dir(tmp_path), device="cpu", progress=prog)
    assert record["teacher_cache_used"] is True and record["teacher_cache_views"] == 3
    assert any("3 fixed views/image" in t for t in prog.lines)
    variants = TeacherCache.open(views_cache).variants
    allowed = {(i, *map(int, variants[i, j])) for i in range(N_TRAIN) for j in range(3)}
    assert len(seen) == 2 * N_TRAIN
    assert {(i, a, c, int(f)) for i, a, c, f in seen} <= allowed


def test_rsd_reads_cached_pooled_features(exact_cache, teacher, subset):
    torch.manual_seed(0)
    student = build_model("resnet8", num_classes=10)
    cache = TeacherCache.open(exact_cache, "cpu", data=subset)
    torch.manual_seed(1)
    online = build_distiller("rsd", student, teacher, {}, _ctx(subset, student, teacher))
    torch.manual_seed(1)
    cached = build_distiller("rsd", student, teacher, {}, _ctx(subset, student, teacher, cache))
    cached.load_state_dict(online.state_dict())
    loader = DeviceLoader.from_arrays(subset, "train", batch_size=BATCH, seed=3)
    loader.set_epoch(1)
    for b in loader:
        st = StepState(epoch=1, step=1, epochs=1)
        _, lc = cached.forward_train(b.x, b.y, b, st)
        _, lo = online.forward_train(b.x, b.y, b, st)
        for k in ("loss_ce", "loss_rsd"):
            assert _rel(lc[k], lo[k]) < 1e-5, (k, lc[k], lo[k])


@pytest.mark.parametrize("aug", ["off", "on"])
def test_angularkd_opens_the_cache_only_when_it_reads_it(exact_cache, digits_teacher, subset,
                                                         tmp_path, monkeypatch, aug):
    """With teacher_input_aug on, the teacher runs on augmented inputs: the engine must not open
    (nor record, nor restrict the data to) a cache that the run never reads."""
    from kdsrc.distillers import get_method

    settings = {"base": "kd", "views": "joint", "teacher_input_aug": aug}
    needs = get_method("angularkd").cache_needs_for(settings)
    assert needs == (None if aug == "on" else frozenset({"logits", "pooled_feat"}))
    assert get_method("angularkd").cache_needs_for({"base": "reviewkd"}) is None
    monkeypatch.setattr(loop, "load_dataset", lambda *a, **k: subset)
    prog = step_losses()
    record = train({"dataset": "digits", "student": "resnet8",
                    "method": {"name": "angularkd", **settings},
                    "teacher": {"name": "resnet8", "checkpoint": str(digits_teacher),
                                "cache": str(exact_cache)},
                    "solver": {"epochs": 1, "batch_size": BATCH}}, RunPaths.in_dir(tmp_path),
                   device="cpu", progress=prog)
    assert record["teacher_cache_used"] is (aug == "off")
    if aug == "on":
        assert any("teacher cache: not used" in t and "reads more" in t for t in prog.lines)
