"""``python -m kdsrc.cache build|info|migrate``: build a teacher cache, describe one, or move the
caches of the layout before scheme folders into theirs (``results/cache/{d}/{t}/{scheme}``).

Bad input ends in one line ``kdsrc.cache: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import KdsrcError


def _pooled(value: str):
    v = value.lower()
    if v in ("auto",):
        return "auto"
    if v in ("yes", "true", "1"):
        return True
    if v in ("no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError("expected auto, yes or no")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdsrc.cache", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="run a teacher over every crop/flip variant of the training set")
    b.add_argument("--teacher", required=True, help="zoo name, e.g. resnet32x4")
    b.add_argument("--checkpoint", required=True)
    b.add_argument("--dataset", required=True)
    b.add_argument("--out", required=True, help="cache directory (created atomically)")
    b.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    b.add_argument("--pooled", type=_pooled, default="auto",
                   help="store pooled features: auto (within --pooled-budget-gb), yes, no")
    b.add_argument("--pooled-budget-gb", type=float, default=8.0, help="GiB (default 8)")
    b.add_argument("--views", type=int, default=None,
                   help="multi-view scheme: K fixed views per image instead of all variants")
    b.add_argument("--views-seed", type=int, default=0)
    b.add_argument("--batch-size", type=int, default=1024)
    b.add_argument("--device", default="auto")
    b.add_argument("--data-root", default="data")
    b.add_argument("--download", action="store_true")
    b.add_argument("--overwrite", action="store_true")
    i = sub.add_parser("info", help="print a cache's meta.json")
    i.add_argument("dir")
    m = sub.add_parser("migrate", help="move each cache folder of the old layout "
                       "(results/cache/{d}/{t}/meta.json) into its scheme folder "
                       "(results/cache/{d}/{t}/exact); then run `snakemake --touch`")
    m.add_argument("--results", default="results", help="the results folder (default results)")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "build":
            import torch

            from ..engine import Progress
            from .store import build_for_teacher

            build_for_teacher(args.teacher, args.checkpoint, args.dataset, args.out,
                              data_root=args.data_root, download=args.download,
                              device=args.device, batch_size=args.batch_size,
                              dtype=torch.float16 if args.dtype == "float16" else torch.float32,
                              store_pooled=args.pooled,
                              pooled_budget_bytes=int(args.pooled_budget_gb * 2**30),
                              views=args.views, views_seed=args.views_seed,
                              progress=Progress(), overwrite=args.overwrite)
        elif args.cmd == "migrate":
            from .layout import migrate_legacy

            moved = migrate_legacy(args.results)
            for old, new in moved:
                print(f"moved {old} -> {new}")
            if moved:
                print("now run `snakemake --touch` (with your usual --config) once: it records "
                      "the runs' new teacher.cache path, so nothing retrains")
            else:
                print(f"nothing to move: no cache of the old layout under {args.results}/cache")
        else:
            from .store import read_meta

            print(json.dumps(read_meta(args.dir), indent=2, sort_keys=True))
    except KdsrcError as e:
        print(f"kdsrc.cache: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
