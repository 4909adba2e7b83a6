"""The multi-view plan's steps on one device, on synthetic CIFAR-10-format data: what each costs
and that each runs there (the GPU check of the transformer branch's new paths).

1. the head-only fine-tune of the ViT-S teacher at 224 px (``upsample: 224``, AdamW, bf16);
2. the autoaugment-K teacher cache: making the K views (crop, flip, AutoAugment) and
   the teacher's forwards at 224 px on them;
3. KD of the small ViT on the cache, one stored view per epoch, with a validation split;
4. KD with the teacher online at 224 px on fresh crop + flip + AutoAugment.

Writes a JSON (``--out``) with samples/s of each training step and the cache's build rates; the
teacher is randomly initialised (its accuracy is not the point here).

    python benchmarks/multiview_check.py --device cuda --n-train 8192 --out $OUT/multiview.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdsrc.cache import build_teacher_cache  # noqa: E402
from kdsrc.cache.view_images import draw_views  # noqa: E402
from kdsrc.data import DatasetArrays  # noqa: E402
from kdsrc.dataset_facts import DATASET_FACTS  # noqa: E402
from kdsrc.engine import Progress, RunPaths, train  # noqa: E402
from kdsrc.engine.record import device_name, versions  # noqa: E402
from kdsrc.models import load_teacher  # noqa: E402
from kdsrc.models.upsample import upsample_inputs  # noqa: E402

TEACHER, STUDENT = "timm-vit_small_patch16_224", "vit6_p4_32"
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def synthetic_cifar10(n_train: int, n_test: int = 512, seed: int = 0) -> DatasetArrays:
    g = np.random.default_rng(seed)
    x = lambda n: torch.from_numpy(g.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8))  # noqa: E731
    y = lambda n: torch.from_numpy(g.integers(0, 10, n, dtype=np.int64))  # noqa: E731
    assert DATASET_FACTS["cifar10"].classes == 10
    return DatasetArrays(name="cifar10", train_x=x(n_train), train_y=y(n_train), test_x=x(n_test),
                         test_y=y(n_test), num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                         pad=4, flip=True)


def timed_run(cfg: dict, out: Path, data: DatasetArrays, device: str) -> dict:
    t0 = time.perf_counter()
    rec = train(cfg, RunPaths.in_dir(out), device=device, arrays=data, progress=Progress())
    return {"wall_s": round(time.perf_counter() - t0, 2), "samples_per_s": rec["samples_per_s"],
            "top1_last": rec["top1_last"], "teacher_cache_views": rec.get("teacher_cache_views"),
            "precision": rec.get("precision"), "step": rec.get("cuda_graph_note") or
            rec.get("notes")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n-train", type=int, default=8192)
    ap.add_argument("--views", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2, help="epochs of each KD run")
    ap.add_argument("--finetune-batch", type=int, default=512)
    ap.add_argument("--out", default="benchmarks/results/multiview-check.json")
    args = ap.parse_args(argv)

    data = synthetic_cifar10(args.n_train)
    fast = {"mode": "fast", "precision": "bf16"}
    res: dict = {"device": device_name(torch.device(args.device)), "versions": versions(),
                 "n_train": args.n_train, "views": args.views, "date":
                 time.strftime("%Y-%m-%d %H:%M:%S")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        out.write_text(json.dumps(res, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        res["finetune"] = timed_run(
            {"dataset": "cifar10", "student": TEACHER, "method": "vanilla", "seed": 0, **fast,
             "solver": {"epochs": 1, "batch_size": args.finetune_batch, "optimizer": "adamw",
                        "lr": 0.001, "weight_decay": 0.0001, "trainable": "head",
                        "upsample": 224, "lr_decay_epochs": []}},
            work / "teacher", data, args.device)
        save()
        ckpt = work / "teacher" / "final.pt"

        t0 = time.perf_counter()
        views = draw_views(data, args.views)
        views_s = time.perf_counter() - t0
        teacher = upsample_inputs(load_teacher(TEACHER, ckpt, num_classes=10), 224)
        t0 = time.perf_counter()
        cache = build_teacher_cache(teacher, data, work / f"autoaugment-{args.views}",
                                    device=args.device, batch_size=512, view_images=views,
                                    teacher_name=TEACHER)
        cache_s = time.perf_counter() - t0
        n = args.n_train * args.views
        res["cache"] = {"views_made_per_s": round(n / views_s, 1),
                        "teacher_forwards_per_s": round(n / cache_s, 1),
                        "views_s": round(views_s, 2), "teacher_s": round(cache_s, 2)}
        save()

        distill = {"epochs": args.epochs, "batch_size": 256, "optimizer": "adamw", "lr": 0.0005,
                   "weight_decay": 0.1, "lr_schedule": "cosine_after_warmup",
                   "warmup_epochs": 1 if args.epochs > 1 else 0, "warmup_lr": 0.00005, "label_smoothing": 0.1,
                   "lr_decay_epochs": []}
        kd = {"name": "kd", "ce_weight": 0.2, "kd_weight": 0.8, "temperature": 4.0}
        res["kd_cached_views"] = timed_run(
            {"dataset": "cifar10", "student": STUDENT, "method": kd, "seed": 0, **fast,
             "teacher_cache": "auto",
             "teacher": {"name": TEACHER, "checkpoint": str(ckpt), "cache": str(cache),
                         "upsample": 224},
             "solver": {**distill, "val_fraction": 0.1}}, work / "kd_views", data, args.device)
        save()
        res["kd_online"] = timed_run(
            {"dataset": "cifar10", "student": STUDENT, "method": kd, "seed": 0, **fast,
             "teacher_cache": "off",
             "teacher": {"name": TEACHER, "checkpoint": str(ckpt), "upsample": 224},
             "solver": {**distill, "autoaugment": "cifar10"}},
            work / "kd_online", data, args.device)
        save()
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
