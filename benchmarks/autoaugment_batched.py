"""AutoAugment (CIFAR-10 policy) on a batch of uint8 images: torchvision's transform called image
by image (what kdsrc did before) against ``kdsrc.data.recipe_aug.autoaugment_cifar10`` (the same
draws, each operation run once per group of images), side by side on one device, same seed.

Checks that both give the same images (exactly), then times each over ``--repeats`` batches and
writes images/s and their ratio to a JSON:

    python benchmarks/autoaugment_batched.py --device cpu --threads 1
    python benchmarks/autoaugment_batched.py --device cuda --out $OUT/autoaugment-cuda.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdsrc.data.recipe_aug import autoaugment_cifar10  # noqa: E402
from kdsrc.engine.record import device_name, versions  # noqa: E402


def per_image(images: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms import v2

    aa = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    return torch.stack([aa(img) for img in images])


def rate(fn, images: torch.Tensor, repeats: int, seed: int) -> tuple[float, torch.Tensor]:
    """Images per second of ``fn`` over ``repeats`` batches (after one warm-up batch), and its
    output on the first batch of ``seed``."""
    torch.manual_seed(seed)
    first = fn(images)
    if images.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn(images)
    if images.is_cuda:
        torch.cuda.synchronize()
    return repeats * len(images) / (time.perf_counter() - start), first


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--batch", type=int, default=256, help="images per batch (default 256)")
    ap.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    ap.add_argument("--repeats", type=int, default=10, help="timed batches (default 10)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", default=None, help="JSON file (default: "
                    "benchmarks/results/autoaugment-<device type>.json)")
    args = ap.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.size < 8:
        ap.error("--batch and --repeats must be >= 1, --size >= 8")
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here")
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8,
                           generator=gen).to(dev)
    old, old_out = rate(per_image, images, args.repeats, seed=1)
    new, new_out = rate(autoaugment_cifar10, images, args.repeats, seed=1)
    equal = bool(torch.equal(old_out, new_out))
    result = {"device": device_name(dev), "versions": versions(),
              "threads": torch.get_num_threads(), "batch": args.batch, "size": args.size,
              "repeats": args.repeats, "per_image_images_per_s": round(old, 1),
              "batched_images_per_s": round(new, 1), "ratio": round(new / old, 2),
              "same_images": equal, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    out = Path(args.out or Path(__file__).parent / "results" / f"autoaugment-{dev.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['device']}: per image {old:,.0f} images/s, batched {new:,.0f} images/s "
          f"({new / old:.2f}x); same images: {equal} -> {out}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
