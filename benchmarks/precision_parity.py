#!/usr/bin/env python
"""Accuracy parity of the fast mode: does bf16 + torch.compile + channels_last train as well as
the reference recipe in fp32?

Trains the same short run in two configurations, for several seeds each, on one device:

  reference  `mode: reference`, `precision: fp32`, contiguous memory, no compile;
  fast       `mode: fast`, `precision: bf16` (autocast on CUDA; fp32 elsewhere), channels_last,
             the CUDA graph and torch.compile as the fast mode chooses them on this device;
  graphed    (`--variants reference,graphed`, CUDA) the fast mode with `cuda_graph: on`.

and compares their test top-1 (best and last epoch). Bit-equality is not expected (bf16 rounds
every matmul): the fast mode is at parity when the difference of the seed means is within the
reference's own seed-to-seed spread (`--tolerance` sets a floor, default 0.5 points).

Method `vanilla` (the student alone), or `kd` when --teacher-checkpoint names a teacher. Data:
CIFAR-100 from --data-root when its files are there, else scikit-learn's digits in CIFAR's
32x32x3 format (10 classes; a real learning task that ships with the package). The LR schedule
is the recipe's, compressed to --epochs (decays at 62.5% / 75% / 87.5% as 150/180/210 of 240).

    python benchmarks/precision_parity.py                   # auto device, JSON in benchmarks/results/
    python benchmarks/precision_parity.py --epochs 30 --seeds 0,1,2 --data-root data
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from kdsrc.config import resolve_run_config, uses_channels_last, uses_compile  # noqa: E402
from kdsrc.data import load_dataset  # noqa: E402
from kdsrc.engine import Progress, RunPaths, resolve_device, train  # noqa: E402
from kdsrc.engine.record import device_name, versions  # noqa: E402
from kdsrc.errors import KdsrcError  # noqa: E402

VARIANTS = ("reference", "fast", "graphed")


def parity_data(data_root: str, n_train: int | None):
    try:
        data, source = load_dataset("cifar100", root=data_root, download=False), \
            f"CIFAR-100 from {data_root}"
    except KdsrcError:
        data, source = load_dataset("digits"), "digits (no CIFAR-100 under the data root)"
    if n_train and data.num_train > n_train:
        data = data.head(n_train)
    return data, source


def run_config(variant: str, data, args, seed: int) -> dict:
    e = args.epochs
    cfg = {"dataset": data.name, "student": args.student, "seed": seed,
           "solver": {"epochs": e, "batch_size": args.batch_size, "lr": args.lr,
                      "lr_decay_epochs": sorted({max(1, round(e * f)) for f in
                                                 (0.625, 0.75, 0.875)})}}
    if args.teacher_checkpoint:
        cfg.update(method="kd", teacher={"name": args.teacher,
                                         "checkpoint": args.teacher_checkpoint})
    else:
        cfg.update(method="vanilla", teacher=None)
    if variant == "reference":
        cfg.update(mode="reference", precision="fp32", channels_last="off", compile="off")
    elif variant == "fast":
        cfg.update(mode="fast", precision="bf16")
    else:  # the fast mode with its step captured as a CUDA graph
        cfg.update(mode="fast", precision="bf16", cuda_graph="on")
    return resolve_run_config(cfg)


def one_run(cfg: dict, device: torch.device, out: Path) -> dict:
    t0 = time.perf_counter()
    rec = train(cfg, RunPaths.in_dir(out), device=device, resume=False,
                progress=Progress(enabled=False))
    with open(out / "log.csv", newline="") as f:
        curve = [float(row["test_top1"]) for row in csv.DictReader(f)]
    return {"seed": cfg["seed"], "top1_best": rec["top1_best"], "top1_last": rec["top1_last"],
            "test_top1_per_epoch": curve, "wall_s": round(time.perf_counter() - t0, 2),
            "samples_per_s": rec.get("samples_per_s")}


def summarise(runs: list[dict], key: str) -> dict:
    vals = [r[key] for r in runs]
    return {"mean": round(statistics.fmean(vals), 3),
            "std": round(statistics.stdev(vals), 3) if len(vals) > 1 else 0.0, "values": vals}


def verdict(result: dict, tolerance: float, variant: str = "fast") -> dict:
    out = {}
    for key in ("top1_best", "top1_last"):
        ref, fast = result["reference"][key], result[variant][key]
        allowed = max(tolerance, 2 * ref["std"])
        delta = fast["mean"] - ref["mean"]
        out[key] = {"delta": round(delta, 3), "allowed": round(allowed, 3),
                    "at_parity": abs(delta) <= allowed}
    return out


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Writes a JSON (default benchmarks/results/"
                                        "precision-parity-<device>.json) and prints both "
                                        "configurations' accuracies and their difference.")
    ap.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    ap.add_argument("--student", default="resnet8x4", help="student model (resnet8x4)")
    ap.add_argument("--teacher", default="resnet32x4", help="teacher model, with a checkpoint")
    ap.add_argument("--teacher-checkpoint", help="teacher weights: method kd (default: vanilla)")
    ap.add_argument("--epochs", type=int, default=15, help="epochs per run (15)")
    ap.add_argument("--batch-size", type=int, default=64, help="batch size (64, the recipe's)")
    ap.add_argument("--lr", type=float, default=0.05, help="initial LR (0.05, the recipe's)")
    ap.add_argument("--seeds", default="0,1,2", help="seeds per configuration (0,1,2)")
    ap.add_argument("--n-train", type=int, help="use only the first N training images")
    ap.add_argument("--data-root", default="data", help="where CIFAR-100 is, if it is")
    ap.add_argument("--tolerance", type=float, default=0.5,
                    help="smallest allowed |difference| of mean top-1, points (0.5)")
    ap.add_argument("--variants", default="reference,fast",
                    help="configurations compared with the reference: fast, graphed (fast "
                         "mode with cuda_graph: on; CUDA only); default reference,fast")
    ap.add_argument("--out", help="JSON path")
    args = ap.parse_args(argv)
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "reference" not in args.variant_list:
        args.variant_list.insert(0, "reference")
    bad = [v for v in args.variant_list if v not in VARIANTS]
    if bad or len(args.variant_list) < 2:
        ap.error(f"--variants: reference and at least one of fast, graphed; got {args.variants!r}")
    try:
        args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--seeds: comma-separated integers, got {args.seeds!r}")
    if not args.seed_list or args.epochs < 1:
        ap.error("need at least one seed and one epoch")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
        data, source = parity_data(args.data_root, args.n_train)
    except KdsrcError as e:
        raise SystemExit(f"precision parity: {e}") from None
    out = Path(args.out or REPO / "benchmarks" / "results"
               / f"precision-parity-{device.type}.json")
    result: dict = {"device": device_name(device), "device_type": device.type, "data": source,
                    "n_train": data.num_train, "student": args.student,
                    "method": "kd" if args.teacher_checkpoint else "vanilla",
                    "epochs": args.epochs, "batch_size": args.batch_size,
                    "seeds": args.seed_list, "versions": versions(),
                    "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(f"device {result['device']}; data: {source}; {result['method']} {args.student}, "
          f"{args.epochs} epochs, seeds {args.seed_list}", flush=True)
    with tempfile.TemporaryDirectory(prefix="kdsrc-parity-") as tmp:
        for variant in args.variant_list:
            runs = []
            for seed in args.seed_list:
                cfg = run_config(variant, data, args, seed)
                try:
                    r = one_run(cfg, device, Path(tmp) / f"{variant}-{seed}")
                except KdsrcError as e:
                    raise SystemExit(f"precision parity: {variant} seed {seed}: {e}") from None
                runs.append(r)
                print(f"{variant} seed {seed}: top-1 best {r['top1_best']:.2f} last "
                      f"{r['top1_last']:.2f} ({r['wall_s']:.0f} s)", flush=True)
            result[variant] = {
                "config": {"mode": cfg["mode"], "precision": cfg["precision"],
                           "cuda_graph": cfg["cuda_graph"],
                           "channels_last": uses_channels_last(cfg),
                           "compile": uses_compile(cfg, device.type),
                           "autocast_bf16": cfg["precision"] == "bf16" and device.type == "cuda"},
                "top1_best": summarise(runs, "top1_best"),
                "top1_last": summarise(runs, "top1_last"), "runs": runs}
    compared = [v for v in args.variant_list if v != "reference"]
    verdicts = {v: verdict(result, args.tolerance, v) for v in compared}
    # "verdict": the fast mode's, as before; every compared variant's in "verdicts"
    result["verdict"] = verdicts[compared[0]]
    result["verdicts"] = verdicts
    for variant, vd in verdicts.items():
        for key, v in vd.items():
            ref, fast = result["reference"][key], result[variant][key]
            print(f"{key}: reference {ref['mean']:.2f} ± {ref['std']:.2f}, {variant} "
                  f"{fast['mean']:.2f} ± {fast['std']:.2f}; difference {v['delta']:+.2f} "
                  f"(allowed ±{v['allowed']:.2f}): "
                  f"{'at parity' if v['at_parity'] else 'NOT at parity'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if all(v["at_parity"] for vd in verdicts.values() for v in vd.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
