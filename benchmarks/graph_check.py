#!/usr/bin/env python
"""Which methods of the paper plan capture their step as a CUDA graph, and does the graph train
as the same step run eagerly?

For every method entry of the paper plan (its resnet32x4 -> resnet8x4 settings; a views file
the benchmark has no is replaced by joint views), trains the same short run twice on one CUDA
device, in fp32 and contiguous memory so that only the capture differs:

  static  kdsrc's capturable step (static buffers, LR and epoch in device tensors), eager;
  graph   the same step captured as CUDA graphs (full and last partial batch) and replayed.

and reports, per method, whether it was captured (or why not: ``kdsrc methods -v``), the
largest relative difference of the per-step losses, the final test top-1 of both, and the
step time of each. Methods that draw random numbers on the GPU (CRD's negatives, TeKAP's
noise) may get other draws inside a graph: their losses differ after the first captured step,
which is why top-1 is reported beside the difference.

Data: synthetic images in CIFAR-100's format (N small, CRD's K reduced to fit); the teacher
has random weights (the check is about the step, not the accuracy).

    python benchmarks/graph_check.py --out benchmarks/results/graph-check-cuda.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from kdsrc.config import resolve_run_config  # noqa: E402
from kdsrc.distillers import get_method  # noqa: E402
from kdsrc.engine import RunPaths, train  # noqa: E402
from kdsrc.engine.progress import StepRecorder  # noqa: E402
from kdsrc.engine.record import device_name, versions  # noqa: E402
from kdsrc.errors import KdsrcError  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from throughput import (STUDENT, TEACHER, benchmark_data, plan_in,  # noqa: E402
                        teacher_checkpoint)


#: checked first (the methods the part-2a targets name)
FIRST = ("kd", "dkd", "crd", "angularkd_crd")


def method_config(method: str, ckpt: str, args) -> dict:
    cfg = plan_in("paper", REPO / "config").run_config(TEACHER, STUDENT, method, 0)
    cfg = json.loads(json.dumps(cfg))
    m = cfg["method"]
    if m["name"] in ("crd", "tekap"):
        m["nce_k"] = args.nce_k
    if m.get("base") == "crd":
        m.setdefault("base_settings", {})["nce_k"] = args.nce_k
    if get_method(m["name"]).needs_pretrained_views({k: v for k, v in m.items() if k != "name"}):
        m["views"] = "joint"
    cfg["teacher"] = {"name": TEACHER, "checkpoint": ckpt}
    cfg["solver"] = dict(cfg["solver"], epochs=args.epochs, lr_decay_epochs=[args.epochs - 1],
                         batch_size=args.batch_size,
                         warmup_epochs=min(cfg["solver"].get("warmup_epochs", 0), args.epochs))
    cfg.update(mode="fast", precision="fp32", channels_last="off", compile="off",
               teacher_cache="off")
    return resolve_run_config(cfg)


def one(cfg, data, device, out: Path, kind: str) -> dict:
    rec_prog = StepRecorder()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    rec = train(cfg, RunPaths.in_dir(out), device=device, progress=rec_prog, arrays=data,
                step_kind=kind, resume=False)
    sync()
    return {"losses": rec_prog.losses, "top1_last": rec["top1_last"],
            "cuda_graph": rec["cuda_graph"], "wall_s": round(time.perf_counter() - t0, 2),
            "samples_per_s": rec["samples_per_s"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="all", help="paper-plan method entries, or all")
    ap.add_argument("--n-train", type=int, default=1200)
    ap.add_argument("--nce-k", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--deterministic", action="store_true",
                    help="deterministic cuDNN algorithms and no TF32 (what is left of the "
                         "difference is the capture's own)")
    ap.add_argument("--add", action="store_true",
                    help="keep the methods already in the output JSON; check the others")
    ap.add_argument("--device", default="cuda",
                    help="cuda (default); cpu compares the ordinary step with the static one "
                         "instead (a dry run of this script: no graph on a CPU)")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/graph-check-<device>.json)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("graph check: needs CUDA (or --device cpu for a dry run)")
    first, second = ("static", "graph") if device.type == "cuda" else ("ordinary", "static")
    plan = plan_in("paper", REPO / "config")
    names = sorted({r.method for r in plan.runs if r.teacher == TEACHER and r.student == STUDENT},
                   key=lambda m: (m not in FIRST, FIRST.index(m) if m in FIRST else 0, m))
    if args.methods != "all":
        names = [m.strip() for m in args.methods.split(",") if m.strip()]
    result = {"device": device_name(device), "versions": versions(),
              "deterministic": args.deterministic,
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "n_train": args.n_train,
              "epochs": args.epochs, "batch_size": args.batch_size, "methods": {}}
    out = Path(args.out or REPO / "benchmarks" / "results" / f"graph-check-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.add and out.exists():
        # --add: keep the methods an earlier call checked, check the others
        result["methods"] = json.loads(out.read_text()).get("methods", {})
        names = [n for n in names if n not in result["methods"]]
    with tempfile.TemporaryDirectory(prefix="kdsrc-graph-") as tmp:
        work = Path(tmp)
        data, _ = benchmark_data("data", args.n_train)
        ckpt, _ = teacher_checkpoint(None, work)
        for name in names:
            entry: dict = {}
            try:
                cfg = method_config(name, ckpt, args)
                settings = {k: v for k, v in cfg["method"].items() if k != "name"}
                blocker = get_method(cfg["method"]["name"]).capture_blocker_for(settings)
                if blocker:
                    entry = {"captured": False, "why_not": blocker}
                else:
                    torch.manual_seed(0)
                    static = one(cfg, data, device, work / name / first, first)
                    graph = one(cfg, data, device, work / name / second, second)
                    # the same eager run again: how far apart two eager runs drift (atomics in
                    # cuDNN's weight gradients, TF32) -- the scale of the graph's difference
                    again = one(cfg, data, device, work / name / "again", first)

                    def rel(xs, ys):
                        return [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(xs, ys)]

                    diffs = rel(graph["losses"], static["losses"])
                    noise = rel(again["losses"], static["losses"])
                    first_diff = next((i for i, d in enumerate(diffs) if d > 1e-6), None)
                    entry = {"compared": [first, second],
                             "captured": graph["cuda_graph"] == "on",
                             "steps": len(graph["losses"]),
                             "max_rel_loss_diff": max(diffs) if diffs else None,
                             f"max_rel_loss_diff_{first}_twice": max(noise) if noise else None,
                             "first_step_differing": first_diff,
                             "all_finite": all(map(lambda v: v == v and abs(v) != float("inf"),
                                                   graph["losses"])),
                             "top1_last": {first: static["top1_last"],
                                           second: graph["top1_last"]},
                             "samples_per_s": {first: static["samples_per_s"],
                                               second: graph["samples_per_s"]}}
            except KdsrcError as e:
                entry = {"error": str(e)}
            except Exception as e:  # noqa: BLE001 -- a check reports every method's failure
                entry = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            result["methods"][name] = entry
            print(f"{name}: {json.dumps(entry)}", flush=True)
            out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
