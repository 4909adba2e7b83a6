"""``kdsrc`` command line: train and evaluate runs, list models and methods.

Bad input (unknown model or method, missing key, wrong type, unreadable checkpoint, missing
data) ends in one line ``kdsrc: error: ...`` and exit status 2, never a bare traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import KdsrcError

EPILOG_TRAIN = """\
examples:
  kdsrc train --config config/examples/digits_teacher.yaml --out runs/teacher
  kdsrc train --config config/examples/digits_kd.yaml --out runs/kd \\
      --set teacher.checkpoint=runs/teacher/final.pt --set solver.epochs=4

The run config is a YAML mapping: dataset, student, method (name + settings), teacher
(none, or {name, checkpoint, cache, upsample}), solver ({solver_keys}), seed, mode,
precision, cuda_graph (auto: the whole step as a CUDA graph in fast mode on CUDA; on; off).
Every key not given takes the reference recipe's value (see README, "Run configs").
Outputs: DIR/last.pt (rolling resume checkpoint), DIR/final.pt ({"model": state_dict}),
DIR/eval.json (eval record) and DIR/log.csv (per-epoch log), unless --eval-json / --log-csv
put those two elsewhere. Running the same command again resumes from DIR/last.pt.
"""


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import apply_overrides, load_config_file
    from .engine import Progress, RunPaths, train

    raw = apply_overrides(load_config_file(args.config), args.set or [])
    base = RunPaths.in_dir(args.out)
    paths = RunPaths(base.ckpt_dir, Path(args.eval_json) if args.eval_json else base.eval_json,
                     Path(args.log_csv) if args.log_csv else base.log_csv)
    record = train(raw, paths, device=args.device, data_root=args.data_root,
                   download=args.download, resume=not args.no_resume,
                   progress=Progress(enabled=not args.quiet))
    print(f"top1_best {record['top1_best']:.2f} (epoch {record['epoch_best']}), "
          f"top1_last {record['top1_last']:.2f}; eval record: {paths.eval_json}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .engine import atomic_write_json, evaluate_checkpoint

    res = evaluate_checkpoint(args.model, args.checkpoint, args.dataset, data_root=args.data_root,
                              download=args.download, device=args.device)
    print(f"{args.model} on {args.dataset}: top1 {res['top1']:.2f}  top5 {res['top5']:.2f}  "
          f"loss {res['loss']:.4f}  ({res['num_test']} test images)")
    if args.out:
        atomic_write_json(res, args.out)
    return 0


def _train_epilog() -> str:
    """The train command's epilog, its solver keys read from their one declaration."""
    import textwrap

    from .config import SOLVER

    keys = ", ".join(s.name for s in SOLVER)
    text = EPILOG_TRAIN.replace("{solver_keys}", keys)
    head, _, rest = text.partition("The run config is")
    para, _, tail = ("The run config is" + rest).partition("\nEvery key")
    return head + textwrap.fill(para, 92) + "\nEvery key" + tail


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import MODEL_NAMES
    from .models.timm_zoo import SMALL_VITS, TIMM_MODELS, input_size

    for name in MODEL_NAMES:
        family = ("CIFAR zoo" if name not in TIMM_MODELS else
                  "timm VisionTransformer, the multi-view student" if name == "vit6_p4_32" else
                  "timm VisionTransformer, small (the quick_vit plan)" if name in SMALL_VITS
                  else f"timm {TIMM_MODELS[name][0]}")
        print(f"{name:36s} {input_size(name):4d} px  {family}")
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from .distillers import METHODS

    for name, cls in sorted(METHODS.items()):
        print(f"{name:12s} {cls.summary}")
        if args.verbose:
            blocker = cls.capture_blocker_for(None)
            print(f"    cuda_graph: {'captured' if blocker is None else 'eager: ' + blocker}")
            for setting in cls.declared:
                print(f"    {setting.name}: {setting.default!r}  -- {setting.meaning}; "
                      f"allowed: {setting.allowed()}")
    return 0


def _cmd_pretrain_views(args: argparse.Namespace) -> int:
    from .engine import Progress
    from .distillers.angularkd_stage1 import pretrain_views, settings_from_assignments

    meta = pretrain_views(args.teacher, args.teacher_checkpoint, args.dataset,
                          settings_from_assignments(args.set or []), args.out, seed=args.seed,
                          device=args.device, data_root=args.data_root, download=args.download,
                          resume=not args.no_resume, progress=Progress(enabled=not args.quiet))
    test = meta["test"]
    print(f"views of {args.teacher} on {args.dataset}: ensemble top1 {test['ensemble_top1']:.2f} "
          f"(teacher {test['teacher_top1']:.2f}); written to {args.out}")
    return 0


def _cmd_dvc_yaml(args: argparse.Namespace) -> int:
    from .dvcstages import write

    if args.check:
        if write(args.path, check=True):
            print(f"{args.path} is up to date with rules/")
            return 0
        print(f"{args.path} is out of date: run `kdsrc dvc-yaml`", file=sys.stderr)
        return 1
    write(args.path)
    print(f"wrote {args.path}")
    return 0


def _cmd_plan_cost(args: argparse.Namespace) -> int:
    from .plan import load_plan
    from .plancost import estimate, format_estimate, load_measured, load_speeds

    plan = load_plan(args.plan)
    measured = load_measured(args.measured) if args.measured else None
    speeds = load_speeds(args.measured) if args.measured else None
    print(format_estimate(estimate(plan, measured, speeds=speeds, mode=args.mode),
                          gpus=args.gpus))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kdsrc",
        description="Knowledge-distillation library of the KD reproducibility pipeline: train "
                    "and evaluate teacher/student runs. The Snakemake workflow calls the same "
                    "code; use this CLI for single runs.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train one run from a run config (resumable)",
                       description="Train one run (teacher pretraining with method vanilla, or "
                                   "a distillation) from a run config file.",
                       epilog=_train_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--config", required=True, metavar="FILE", help="run config (YAML or JSON)")
    t.add_argument("--out", required=True, metavar="DIR",
                   help="checkpoint folder (last.pt, final.pt; eval.json and log.csv by default)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, dotted, value parsed as YAML "
                        "(e.g. solver.epochs=8); repeatable")
    t.add_argument("--eval-json", metavar="FILE", help="where to write the eval record")
    t.add_argument("--log-csv", metavar="FILE", help="where to write the per-epoch log")
    t.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    t.add_argument("--data-root", default="data", metavar="DIR",
                   help="dataset folder (default: data)")
    t.add_argument("--download", action="store_true",
                   help="download the dataset if missing (checksum verified)")
    t.add_argument("--no-resume", action="store_true", help="ignore DIR/last.pt and start over")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on a test set",
                       description="Top-1/top-5 of a checkpoint (the published {'model': "
                                   "state_dict} format or kdsrc's final.pt) on a test split.")
    e.add_argument("--model", required=True, help="architecture name (see `kdsrc models`)")
    e.add_argument("--checkpoint", required=True, metavar="FILE")
    e.add_argument("--dataset", default="cifar100", help="cifar100 (default), cifar10 or digits")
    e.add_argument("--data-root", default="data", metavar="DIR")
    e.add_argument("--download", action="store_true")
    e.add_argument("--device", default="auto")
    e.add_argument("--out", metavar="FILE", help="also write the result as JSON")
    e.set_defaults(func=_cmd_eval)

    m = sub.add_parser("models", help="list the model zoo: name, input size, family (the 32-px "
                       "CIFAR zoo, or the timm model a timm-<model> name builds)")
    m.set_defaults(func=_cmd_models)
    me = sub.add_parser("methods", help="list distillation methods")
    me.add_argument("-v", "--verbose", action="store_true", help="show each method's settings: default, meaning and allowed values")
    me.set_defaults(func=_cmd_methods)

    pv = sub.add_parser(
        "pretrain-views", help="Angular-KD stage 1: train the view branches on a frozen teacher",
        description="Train Angular-KD's view branches on a frozen teacher with the angular\n"
                    "losses only (no student): the stage-1 file that method angularkd reads\n"
                    "with views: pretrained (method.views_checkpoint). Recipe: SGD, momentum\n"
                    "0.9, wd 5e-4, batch 64, lr pretrain_lr (0.1) x0.1 at pretrain_milestones\n"
                    "([10, 20]), pretrain_epochs (30) epochs. Resumable (OUT.partial).",
        epilog="example:\n  kdsrc pretrain-views --teacher resnet32x4 --teacher-checkpoint "
               "results/teachers/cifar100/resnet32x4/model.pt \\\n      --dataset cifar100 "
               "--out views.pt --set base=crd --set angles=exact\n\n--set takes angularkd "
               "settings (see `kdsrc methods -v`); the distillation must use the same view "
               "settings and pretrain_* values, which it checks.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    pv.add_argument("--teacher", required=True, metavar="NAME", help="teacher architecture")
    pv.add_argument("--teacher-checkpoint", required=True, metavar="FILE", help="teacher weights")
    pv.add_argument("--dataset", required=True, help="cifar100, cifar10 or digits")
    pv.add_argument("--out", required=True, metavar="FILE", help="the views file to write")
    pv.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="an angularkd setting, value parsed as YAML (e.g. num_views=5, "
                         "angles=exact, pretrain_epochs=30); repeatable")
    pv.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    pv.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    pv.add_argument("--data-root", default="data", metavar="DIR")
    pv.add_argument("--download", action="store_true")
    pv.add_argument("--no-resume", action="store_true", help="ignore OUT.partial, start over")
    pv.add_argument("--quiet", action="store_true", help="no progress output")
    pv.set_defaults(func=_cmd_pretrain_views)
    pc = sub.add_parser("plan-cost", help="jobs per rule and estimated device-hours of a plan",
                        description="Print, before anything runs, how many jobs each rule of a "
                                    "plan has and the estimated device-hours, scaled by compute "
                                    "per sample from a measured (or the published) throughput.")
    pc.add_argument("plan", nargs="?", default="paper", help="plan name or file (default paper)")
    pc.add_argument("--measured", metavar="JSON",
                    help="throughput anchor from benchmarks/throughput.py --out")
    pc.add_argument("--gpus", type=int, default=4, help="devices for the wall-clock line")
    pc.add_argument("--mode", choices=("reference", "fast"),
                    help="cost every run in this mode (default: each run's own)")
    pc.set_defaults(func=_cmd_plan_cost)

    dv = sub.add_parser("dvc-yaml", help="generate dvc.yaml from the Snakemake rules",
                        description="Write dvc.yaml (stages teachers, runs, tables) from rules/; "
                                    "run from the repository root.")
    dv.add_argument("--check", action="store_true",
                    help="do not write; exit 1 if dvc.yaml differs from what the rules imply")
    dv.add_argument("--path", default="dvc.yaml")
    dv.set_defaults(func=_cmd_dvc_yaml)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KdsrcError as e:
        print(f"kdsrc: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kdsrc: interrupted (run the same command again to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
