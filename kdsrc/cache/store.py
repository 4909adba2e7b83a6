"""Building, validating and reading a teacher cache directory (format: see :mod:`kdsrc.cache`)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from ..data.arrays import DatasetArrays
from ..data.augment import augment, normalize_u8
from ..errors import CheckpointError, ConfigError
from .view_images import AUGMENT as VIEW_AUGMENT
from .variants import (VARIANT_INDEX_FORMULA, decode_variant, draw_fixed_variants, num_variants,
                       variant_code)

FORMAT = "kdsrc-teacher-cache/1"
META = "meta.json"
FILES = {"logits": "logits.npy", "pooled_feat": "pooled_feat.npy", "variants": "variants.npy",
         "images": "images.npy"}
DTYPES = {"float16": torch.float16, "float32": torch.float32}
#: default size budget for the pooled features: resnet32x4 on CIFAR-100 (4.1 GB fp16) fits,
#: ResNet50 (33 GB) does not
DEFAULT_POOLED_BUDGET = 8 * 2**30
#: host memory one build chunk may use for its outputs (float32, before the cast)
_CHUNK_BYTES = 64 * 2**20


# -- hashes --------------------------------------------------------------------------------------
def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def weights_sha256(model: nn.Module) -> str:
    """sha256 of a model's state dict: every entry's key, dtype, shape and raw bytes, in order.

    Independent of the file container (published ``{"model": ...}``, ours, DataParallel prefix),
    so it identifies the weights themselves.
    """
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        h.update(_tensor_bytes(value))
    return h.hexdigest()


def data_sha256(data: DatasetArrays) -> str:
    """sha256 of the training images and labels (what the cache was computed from)."""
    h = hashlib.sha256()
    h.update(f"{tuple(data.train_x.shape)}|{tuple(data.train_y.shape)}|".encode())
    h.update(_tensor_bytes(data.train_x))
    h.update(_tensor_bytes(data.train_y))
    return h.hexdigest()


# -- building ------------------------------------------------------------------------------------
def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _fmt_s(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _say(progress, text: str) -> None:
    if progress is not None:
        progress.line(text)


@torch.no_grad()
def build_teacher_cache(teacher: nn.Module, data: DatasetArrays, out_dir: str | Path, *,
                        device: str | torch.device = "cpu", batch_size: int = 1024,
                        dtype: torch.dtype = torch.float16, store_pooled: bool | str = "auto",
                        pooled_budget_bytes: int = DEFAULT_POOLED_BUDGET,
                        views: int | None = None, views_seed: int = 0,
                        view_images: torch.Tensor | None = None,
                        teacher_name: str | None = None, progress=None,
                        overwrite: bool = False) -> Path:
    """Run ``teacher`` (eval, no grad) once on every variant of every training image of ``data``
    and write the cache directory ``out_dir``; return its path.

    ``views=None``: the exact scheme, every one of the ``(2*pad+1)**2 * n_flip`` variants.
    ``views=K``: the multi-view scheme, K distinct variants per image drawn with ``views_seed``
    (:func:`kdsrc.cache.variants.draw_fixed_variants`), stored in ``variants.npy``.
    ``view_images``: the autoaugment scheme, K augmented copies of the training set
    (``K x N x C x H x W`` uint8, :func:`kdsrc.cache.view_images.draw_views`) run through the
    teacher as they are and stored in ``images.npy``.
    ``store_pooled``: True / False, or ``"auto"``: only if ``N * V * D * itemsize`` is within
    ``pooled_budget_bytes``. ``teacher_name`` is the zoo name recorded in meta.json (and checked
    when a run opens the cache; default: the model's class name). ``progress``: anything with
    ``.line(str)`` (an :class:`kdsrc.engine.Progress`); lines at most every ``progress.interval``
    seconds (default 30).

    The pixels are exactly the training loader's (:func:`kdsrc.data.augment.augment`, float32,
    contiguous). The outputs are written in chunks of images into memory-mapped ``.npy`` files of
    a temporary sibling directory, which is renamed to ``out_dir`` only when complete: an
    interrupted build leaves no directory at ``out_dir`` (and removes its temporary one unless
    the process is killed outright). An existing ``out_dir`` is an error unless ``overwrite``.
    The teacher is moved to ``device`` (and left there, in its original train/eval mode).
    """
    _check_build_args(dtype, store_pooled, batch_size)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ConfigError(f"teacher cache {out_dir} exists already (pass overwrite=True / "
                          "--overwrite to rebuild it)")
    dev = torch.device(device)
    name = teacher_name or type(teacher).__name__
    pad, flip = int(data.pad), bool(data.flip)
    n = data.num_train
    if view_images is not None:
        if views is not None:
            raise ConfigError("teacher cache: views (crop/flip views) and view_images (stored "
                              "augmented images) are two schemes: give one")
        if tuple(view_images.shape[1:]) != tuple(data.train_x.shape) or \
                view_images.dtype != torch.uint8:
            raise ConfigError(f"view_images: expected K x {tuple(data.train_x.shape)} uint8, "
                              f"got {tuple(view_images.shape)} {view_images.dtype}")
        scheme, variants = "autoaugment", None
        v_count = int(view_images.shape[0])
    elif views is None:
        scheme, variants = "exact", None
        v_count = num_variants(pad, flip)
    else:
        scheme = "views"
        variants = draw_fixed_variants(n, views, pad=pad, flip=flip, seed=views_seed)
        v_count = int(views)

    was_training = teacher.training
    teacher.eval()
    teacher.to(dev)
    forward = (_augmented_forward(teacher, data, dev) if view_images is None
               else _view_images_forward(teacher, data, view_images, dev))
    probe_logits, probe_pooled = forward(torch.zeros(1, dtype=torch.long, device=dev),
                                         torch.zeros(1, dtype=torch.long, device=dev))
    c = int(probe_logits.shape[1])
    d = int(probe_pooled.shape[1]) if probe_pooled is not None else None
    itemsize = torch.empty((), dtype=dtype).element_size()
    pooled_bytes = n * v_count * (d or 0) * itemsize
    if d is None:
        keep_pooled = False
    elif store_pooled == "auto":
        keep_pooled = pooled_bytes <= pooled_budget_bytes
    else:
        keep_pooled = bool(store_pooled)
    dtype_name = "float16" if dtype == torch.float16 else "float32"

    _say(progress, f"teacher cache: {name} on {data.name} ({scheme}): {n} images x {v_count} "
                   f"variants = {n * v_count} teacher forwards ({v_count} teacher epochs) on "
                   f"{dev}; logits {_fmt_bytes(n * v_count * c * itemsize)} {dtype_name}, pooled "
                   + (f"{_fmt_bytes(pooled_bytes)}" if keep_pooled else
                      ("not stored" + (f" ({_fmt_bytes(pooled_bytes)} > budget "
                                       f"{_fmt_bytes(pooled_budget_bytes)})"
                                       if d is not None and store_pooled == "auto" else ""))))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    t0 = time.perf_counter()
    try:
        _write_outputs(tmp, forward, n=n, v_count=v_count, c=c, d=d if keep_pooled else None,
                       dtype=dtype, variants=variants, pad=pad, flip=flip, dev=dev,
                       batch_size=batch_size, progress=progress, t0=t0)
        contents = ["logits"] + (["pooled_feat"] if keep_pooled else [])
        files = {k: FILES[k] for k in contents}
        if variants is not None:
            np.save(tmp / FILES["variants"], variants.numpy().astype(np.int16))
            files["variants"] = FILES["variants"]
        if view_images is not None:
            np.save(tmp / FILES["images"], view_images.numpy())
            files["images"] = FILES["images"]
        for f in files.values():
            _fsync(tmp / f)
        meta = _cache_meta(teacher, data, name=name, scheme=scheme, v_count=v_count, c=c,
                           d=d if keep_pooled else None, dtype_name=dtype_name, pad=pad,
                           flip=flip, variants=variants, views_seed=views_seed,
                           views=None if scheme == "exact" else v_count,
                           contents=contents, files=files, dev=dev,
                           build_s=time.perf_counter() - t0)
        with open(tmp / META, "w") as fh:
            fh.write(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        _fsync(tmp)
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        teacher.train(was_training)
    _say(progress, f"teacher cache: wrote {out_dir} in {_fmt_s(time.perf_counter() - t0)}")
    return out_dir


def _check_build_args(dtype: torch.dtype, store_pooled, batch_size) -> None:
    if dtype not in DTYPES.values():
        raise ConfigError(f"teacher cache dtype must be float16 or float32, got {dtype}")
    if store_pooled not in (True, False, "auto"):
        raise ConfigError(f"store_pooled: expected true, false or 'auto', got {store_pooled!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")


def _augmented_forward(teacher: nn.Module, data: DatasetArrays, dev: torch.device):
    """``forward(image indices, variant codes) -> (logits, pooled feature or None)`` on the
    training loader's exact pixels."""
    images = data.train_x.to(dev)
    mean = torch.tensor(data.mean, dtype=torch.float32, device=dev)
    std = torch.tensor(data.std, dtype=torch.float32, device=dev)
    pad, flip = int(data.pad), bool(data.flip)

    def forward(idx: torch.Tensor, codes: torch.Tensor):
        dy, dx, fl = decode_variant(codes, pad=pad, flip_enabled=flip)
        x = augment(images[idx], dy, dx, fl, pad=pad, mean=mean, std=std, check=False)
        logits, feats = teacher(x)
        return logits, feats.get("pooled_feat") if isinstance(feats, dict) else None

    return forward


def _view_images_forward(teacher: nn.Module, data: DatasetArrays, view_images: torch.Tensor,
                         dev: torch.device):
    """``forward(image indices, view indices)`` on the stored augmented views, normalised as
    the training loader normalises them."""
    mean = torch.tensor(data.mean, dtype=torch.float32, device=dev)
    std = torch.tensor(data.std, dtype=torch.float32, device=dev)

    def forward(idx: torch.Tensor, views: torch.Tensor):
        u8 = view_images[views.cpu(), idx.cpu()].to(dev)
        logits, feats = teacher(normalize_u8(u8, mean, std))
        return logits, feats.get("pooled_feat") if isinstance(feats, dict) else None

    return forward


def _write_outputs(tmp: Path, forward, *, n: int, v_count: int, c: int, d: int | None,
                   dtype: torch.dtype, variants, pad: int, flip: bool, dev: torch.device,
                   batch_size: int, progress, t0: float) -> None:
    """Every image's variants through the teacher, in chunks of images, into the memory-mapped
    logits (and pooled-feature, ``d`` not None) files of ``tmp``, with progress lines."""
    np_dtype = np.float16 if dtype == torch.float16 else np.float32
    logits_mm = np.lib.format.open_memmap(tmp / FILES["logits"], mode="w+", dtype=np_dtype,
                                          shape=(n, v_count, c))
    pooled_mm = (np.lib.format.open_memmap(tmp / FILES["pooled_feat"], mode="w+",
                                           dtype=np_dtype, shape=(n, v_count, d))
                 if d is not None else None)
    per_image = v_count * (c + (d or 0)) * 4
    chunk = max(1, min(n, _CHUNK_BYTES // per_image))
    all_codes = torch.arange(v_count, dtype=torch.long)
    interval = float(getattr(progress, "interval", 30.0))
    last_report = time.monotonic()
    total, done = n * v_count, 0
    for i0 in range(0, n, chunk):
        i1 = min(n, i0 + chunk)
        m = i1 - i0
        img = torch.arange(i0, i1, dtype=torch.long).repeat_interleave(v_count)
        if variants is None:    # exact: every variant; autoaugment: every stored view
            codes = all_codes.repeat(m)
        else:
            vv = variants[i0:i1]
            codes = variant_code(vv[..., 0], vv[..., 1], vv[..., 2], pad=pad,
                                 flip_enabled=flip).reshape(-1)
        buf_l = torch.empty(m * v_count, c, dtype=torch.float32)
        buf_p = torch.empty(m * v_count, d, dtype=torch.float32) if d is not None else None
        img, codes = img.to(dev), codes.to(dev)
        for s in range(0, m * v_count, batch_size):
            e = min(m * v_count, s + batch_size)
            lg, pf = forward(img[s:e], codes[s:e])
            buf_l[s:e] = lg.float().cpu()
            if buf_p is not None:
                buf_p[s:e] = pf.float().cpu()
        logits_mm[i0:i1] = buf_l.to(dtype).reshape(m, v_count, c).numpy()
        if pooled_mm is not None:
            pooled_mm[i0:i1] = buf_p.to(dtype).reshape(m, v_count, d).numpy()
        done += m * v_count
        now = time.monotonic()
        if progress is not None and (now - last_report >= interval or i1 == n):
            el = time.perf_counter() - t0
            rate = done / el if el > 0 else 0.0
            eta = (total - done) / rate if rate > 0 else 0.0
            _say(progress, f"teacher cache: {done}/{total} forwards ({100.0 * done / total:.1f}%),"
                           f" {rate:.0f} img/s, elapsed {_fmt_s(el)}, eta {_fmt_s(eta)}")
            last_report = now
    for mm in (logits_mm, pooled_mm):
        if mm is not None:
            mm.flush()


def _cache_meta(teacher: nn.Module, data: DatasetArrays, *, name: str, scheme: str,
                v_count: int, c: int, d: int | None, dtype_name: str, pad: int, flip: bool,
                variants, views_seed: int, views: int | None, contents: list[str],
                files: dict[str, str],
                dev: torch.device, build_s: float) -> dict[str, Any]:
    """``meta.json`` of a cache: what it was built from and how to read it."""
    import kdsrc

    return {
        "format": FORMAT,
        "teacher": name,
        "teacher_weights_sha256": weights_sha256(teacher),
        "dataset": data.name,
        "split": "train",
        "data_sha256": data_sha256(data),
        "num_samples": data.num_train,
        "num_variants": v_count,
        "num_classes": c,
        "pooled_dim": d,
        "dtype": dtype_name,
        "pad": pad,
        "flip": flip,
        "image_shape": list(data.image_shape),
        "mean": list(map(float, data.mean)),
        "std": list(map(float, data.std)),
        "scheme": scheme,
        "views": views,
        "views_seed": None if variants is None else int(views_seed),
        "variant_index": (VARIANT_INDEX_FORMULA if scheme == "exact" else
                          "slot k (0..K-1) of image i holds variants[i, k] = (dy, dx, flip)"
                          if scheme == "views" else
                          "slot k (0..K-1) of image i is images[k, i], its view k"),
        **({"augment": VIEW_AUGMENT} if scheme == "autoaugment" else {}),
        "contents": contents,
        "files": files,
        "kdsrc_version": kdsrc.__version__,
        "torch_version": torch.__version__,
        "device": str(dev),
        "build_s": round(build_s, 3),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """The finished ``tmp`` becomes ``out_dir`` (an old one is moved aside first, then dropped)."""
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / "cache")
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
    _fsync(out_dir.parent)


def build_for_teacher(teacher_name: str, checkpoint: str | Path, dataset: str,
                      out_dir: str | Path, *, data_root: str | Path = "data",
                      download: bool = False, device: str | torch.device = "auto", **kw) -> Path:
    """Load a zoo teacher from ``checkpoint`` and the named dataset, then build its cache
    (keyword arguments as :func:`build_teacher_cache`)."""
    from ..data import load_dataset
    from ..models import load_teacher

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    data = load_dataset(dataset, root=data_root, download=download)
    teacher = load_teacher(teacher_name, checkpoint, num_classes=data.num_classes)
    return build_teacher_cache(teacher, data, out_dir, device=device, teacher_name=teacher_name,
                               **kw)


# -- reading -------------------------------------------------------------------------------------
def read_meta(path: str | Path) -> dict[str, Any]:
    """The meta.json of a cache directory; CheckpointError if it is not a complete cache."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"teacher cache {path} does not exist or is not a directory")
    mp = path / META
    if not mp.is_file():
        raise CheckpointError(f"teacher cache {path} is incomplete: no {META} "
                              "(an interrupted build? rebuild it)")
    try:
        meta = json.loads(mp.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"teacher cache {path}: cannot read {META}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"teacher cache {path}: {META} is not a {FORMAT} description")
    return meta


def _load_npy(path: Path, shape: tuple[int, ...], dtype, what: str) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise CheckpointError(f"teacher cache {path.parent}: {path.name} is missing") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"teacher cache {path.parent}: {path.name} is corrupt: "
                              f"{str(e).splitlines()[0]}") from None
    if tuple(arr.shape) != tuple(shape) or arr.dtype != np.dtype(dtype):
        raise CheckpointError(f"teacher cache {path.parent}: {path.name} holds {arr.dtype} "
                              f"{tuple(arr.shape)}, meta.json says {np.dtype(dtype)} {tuple(shape)} "
                              f"({what})")
    return arr


class TeacherCache:
    """A teacher cache opened for lookups on ``device``.

    ``lookup(index, dy, dx, flip)`` returns the stored teacher logits (and pooled features if
    stored) of those training samples and augmentations, as float32 on the cache's device.
    Resident caches (``resident`` true) hold the arrays as tensors on the device; otherwise the
    ``.npy`` files stay memory-mapped on the host, and each lookup gathers the batch's rows there
    and copies them to the device.
    """

    def __init__(self, path: Path, meta: dict[str, Any], device: torch.device, logits, pooled,
                 variants: torch.Tensor | None, resident: bool,
                 view_images: torch.Tensor | None = None, rows: torch.Tensor | None = None):
        self.path = path
        self.meta = meta
        self.device = device
        self.resident = resident
        self.num_samples = int(meta["num_samples"])
        self.num_variants = int(meta["num_variants"])
        self.num_classes = int(meta["num_classes"])
        self.pooled_dim = meta.get("pooled_dim")
        self.pad = int(meta["pad"])
        self.flip = bool(meta["flip"])
        self.scheme = meta["scheme"]
        self.contents = frozenset(meta["contents"])
        #: multi-view scheme: ``N x K x 3`` int64 (dy, dx, flip) on the CPU; None when exact
        self.variants = variants
        #: autoaugment scheme: the K stored views, ``K x N x C x H x W`` uint8 on the CPU (the
        #: training data of a run that reads the cache)
        self.view_images = view_images
        self._logits = logits     # tensor [N*V, C] (resident) or np memmap [N*V, C]
        self._pooled = pooled
        #: restricted (:meth:`restrict`): the stored row of each of the run's training images,
        #: int64 on the device; the stored arrays stay whole (no copy of a large cache)
        self._rows = None if rows is None else rows.to(device)
        self._codes = None
        if variants is not None:
            self._codes = variant_code(variants[..., 0], variants[..., 1], variants[..., 2],
                                       pad=self.pad, flip_enabled=self.flip).to(device)

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, device: str | torch.device = "cpu", *,
             teacher: str | None = None, dataset: str | None = None,
             weights_sha256: str | None = None, data: DatasetArrays | None = None,
             needs: Iterable[str] | None = None, resident: bool | None = None,
             max_device_bytes: int | None = None) -> "TeacherCache":
        """Open and validate the cache at ``path``.

        Given ``teacher`` (zoo name), ``dataset`` (name), ``weights_sha256`` (of the run's
        teacher, :func:`weights_sha256`) and ``data`` (the run's arrays: size, pad, flip,
        normalisation, content hash), a mismatch is a ConfigError (built for another teacher or
        dataset) or a CheckpointError (built from other weights or other data, damaged files).
        ``needs``: what the caller will read (``"logits"``, ``"pooled_feat"``); missing is a
        ConfigError. ``resident``: None decides by size — on CUDA, resident when the arrays take
        at most ``max_device_bytes`` (default: half the free device memory); on the CPU,
        memory-mapped unless they take at most ``max_device_bytes`` (default 0).
        """
        path = Path(path)
        meta = read_meta(path)
        dev = torch.device(device)

        def mismatch(what: str, built, run, err=ConfigError):
            raise err(f"teacher cache {path} was built for {what} {built!r}, but the run has "
                      f"{run!r}; point teacher.cache at the right cache, rebuild it, or set "
                      "teacher_cache: off")

        if teacher is not None and meta["teacher"] != teacher:
            mismatch("teacher", meta["teacher"], teacher)
        if dataset is not None and meta["dataset"] != dataset:
            mismatch("dataset", meta["dataset"], dataset)
        if weights_sha256 is not None and meta["teacher_weights_sha256"] != weights_sha256:
            raise CheckpointError(
                f"teacher cache {path} was computed from other weights of {meta['teacher']} "
                f"(sha256 {meta['teacher_weights_sha256'][:12]}) than the run's teacher checkpoint "
                f"(sha256 {weights_sha256[:12]}); rebuild it or set teacher_cache: off")
        if data is not None:
            for key, run in (("num_samples", data.num_train), ("pad", int(data.pad)),
                             ("flip", bool(data.flip)), ("image_shape", list(data.image_shape)),
                             ("mean", list(map(float, data.mean))),
                             ("std", list(map(float, data.std)))):
                if meta[key] != run:
                    mismatch(f"{key} =", meta[key], run)
            if meta["data_sha256"] != data_sha256(data):
                raise CheckpointError(f"teacher cache {path} was computed from other training "
                                      f"images of {meta['dataset']} than the run's; rebuild it")
        missing = sorted(set(needs or ()) - set(meta["contents"]))
        if missing:
            raise ConfigError(f"teacher cache {path} holds {', '.join(meta['contents'])}, "
                              f"not {', '.join(missing)}")
        if meta["dtype"] not in DTYPES:
            raise CheckpointError(f"teacher cache {path}: unknown dtype {meta['dtype']!r}")
        n, v, c = int(meta["num_samples"]), int(meta["num_variants"]), int(meta["num_classes"])
        np_dtype = np.float16 if meta["dtype"] == "float16" else np.float32
        logits = _load_npy(path / meta["files"]["logits"], (n, v, c), np_dtype, "logits")
        pooled = None
        if "pooled_feat" in meta["contents"]:
            pooled = _load_npy(path / meta["files"]["pooled_feat"], (n, v, int(meta["pooled_dim"])),
                               np_dtype, "pooled features")
        variants = None
        if meta["scheme"] == "views":
            k = int(meta["views"])
            vv = _load_npy(path / meta["files"]["variants"], (n, k, 3), np.int16, "variants")
            variants = torch.from_numpy(np.array(vv, dtype=np.int64))
            side = 2 * int(meta["pad"])
            if (variants[..., :2].min() < 0 or variants[..., :2].max() > side
                    or variants[..., 2].min() < 0 or variants[..., 2].max() > int(meta["flip"])):
                raise CheckpointError(f"teacher cache {path}: variants.npy holds out-of-range draws")
        elif meta["scheme"] == "autoaugment":
            k = int(meta["views"])
            shape = (k, n, *map(int, meta["image_shape"]))
            view_images = torch.from_numpy(np.array(
                _load_npy(path / meta["files"]["images"], shape, np.uint8, "view images")))
        elif meta["scheme"] != "exact":
            raise CheckpointError(f"teacher cache {path}: unknown scheme {meta['scheme']!r}")

        if meta["scheme"] != "autoaugment":
            view_images = None
        nbytes = logits.nbytes + (pooled.nbytes if pooled is not None else 0)
        if resident is None:
            if max_device_bytes is None:
                if dev.type == "cuda":
                    free, _ = torch.cuda.mem_get_info(dev)
                    max_device_bytes = free // 2
                else:
                    max_device_bytes = 0
            resident = nbytes <= max_device_bytes
        flat_l = logits.reshape(n * v, c)
        flat_p = pooled.reshape(n * v, -1) if pooled is not None else None
        if resident:
            flat_l = _to_device(flat_l, dev)
            flat_p = _to_device(flat_p, dev) if flat_p is not None else None
        return cls(path, meta, dev, flat_l, flat_p, variants, bool(resident), view_images)

    # -- lookups -----------------------------------------------------------------------------
    def satisfies(self, needs: Iterable[str] | None) -> bool:
        """Whether the cache holds everything in ``needs`` (None: the method cannot use one)."""
        return needs is not None and set(needs) <= self.contents

    def restrict(self, rows: torch.Tensor) -> "TeacherCache":
        """The cache of the training images ``rows`` (ascending original indices) only: a run
        with a validation split indexes its smaller training set from 0. The logits and pooled
        features are read through a row map (a memory-mapped cache is not pulled into memory,
        a resident one is not held twice); the per-image views and variants, which the loader
        trains on, are taken at those rows."""
        rows = torch.as_tensor(rows, dtype=torch.int64).cpu()
        stored = rows if self._rows is None else self._rows.cpu()[rows]
        meta = {**self.meta, "num_samples": int(len(rows))}
        return TeacherCache(self.path, meta, self.device, self._logits, self._pooled,
                            None if self.variants is None else self.variants[rows],
                            self.resident,
                            None if self.view_images is None else self.view_images[:, rows],
                            rows=stored)

    def slots(self, index: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
              flip: torch.Tensor | None, view: torch.Tensor | None = None) -> torch.Tensor:
        """The stored slot (0..V-1) of each sample's augmentation, int64 on the cache's device.

        Exact scheme: the variant code. Multi-view scheme: the slot k with
        ``variants[index, k] == (dy, dx, flip)``; an augmentation that is not among the image's
        stored views is an error (the loader must draw from ``self.variants``).
        """
        dev = self.device
        if self.view_images is not None:
            if view is None:
                raise ConfigError(f"teacher cache {self.path} holds {self.num_variants} stored "
                                  "augmented views: train on them (DeviceLoader.set_view_images)")
            return view.to(dev).long()
        index = index.to(dev)
        code = variant_code(dy.to(dev), dx.to(dev), None if flip is None else flip.to(dev),
                            pad=self.pad, flip_enabled=self.flip)
        if self._codes is None:
            return code
        match = self._codes[index] == code[:, None]
        if not bool(match.any(dim=1).all()):
            raise ConfigError(f"teacher cache {self.path} holds {self.num_variants} fixed views "
                              "per image, and a batch has an augmentation outside them: train "
                              "with DeviceLoader(fixed_variants=cache.variants)")
        return match.int().argmax(dim=1)

    def lookup(self, index: torch.Tensor, dy: torch.Tensor | None, dx: torch.Tensor | None,
               flip: torch.Tensor | None, *, view: torch.Tensor | None = None,
               pooled: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(logits [B, C], pooled [B, D] or None)`` as float32 on the cache's device.
        ``view``: each sample's stored view (the autoaugment scheme; its batches carry no crop)."""
        stored = index.to(self.device).long()
        if self._rows is not None:
            stored = self._rows.index_select(0, stored)
        flat = stored * self.num_variants + self.slots(index, dy, dx, flip, view)
        want_pooled = pooled and self._pooled is not None
        if self.resident:
            logits = self._logits.index_select(0, flat).float()
            feat = self._pooled.index_select(0, flat).float() if want_pooled else None
            return logits, feat
        rows = flat.cpu().numpy()
        logits = torch.from_numpy(np.asarray(self._logits[rows])).to(self.device).float()
        feat = (torch.from_numpy(np.asarray(self._pooled[rows])).to(self.device).float()
                if want_pooled else None)
        return logits, feat

    def __repr__(self) -> str:
        return (f"TeacherCache({str(self.path)!r}, teacher={self.meta['teacher']!r}, "
                f"dataset={self.meta['dataset']!r}, scheme={self.scheme!r}, "
                f"N={self.num_samples}, V={self.num_variants}, contents={sorted(self.contents)}, "
                f"dtype={self.meta['dtype']}, device={self.device}, resident={self.resident})")


def _to_device(arr: np.ndarray, dev: torch.device) -> torch.Tensor:
    """Copy a (memory-mapped) array to ``dev`` in chunks, so the host never holds it twice."""
    dtype = torch.float16 if arr.dtype == np.float16 else torch.float32
    out = torch.empty(arr.shape, dtype=dtype, device=dev)
    rows = max(1, _CHUNK_BYTES // max(1, arr.itemsize * int(np.prod(arr.shape[1:]))))
    for i in range(0, arr.shape[0], rows):
        out[i:i + rows].copy_(torch.from_numpy(np.array(arr[i:i + rows])))  # a writable copy
    return out


def describe(meta: dict[str, Any]) -> str:
    """One line about a cache, for progress output."""
    views = (f", {meta['views']} fixed views/image" if meta.get("scheme") == "views" else
             f", {meta['views']} stored augmented views/image"
             if meta.get("scheme") == "autoaugment" else "")
    return (f"{meta['teacher']} on {meta['dataset']}, {meta['scheme']}{views}, "
            f"{'+'.join(meta['contents'])}, {meta['dtype']}")


def size_bytes(meta: dict[str, Any]) -> int:
    n, v = int(meta["num_samples"]), int(meta["num_variants"])
    item = 2 if meta["dtype"] == "float16" else 4
    images = n * v * math.prod(meta["image_shape"]) if meta.get("scheme") == "autoaugment" else 0
    return n * v * (int(meta["num_classes"]) + int(meta.get("pooled_dim") or 0)) * item + images
