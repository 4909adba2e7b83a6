"""One home for the result paths (kdsrc.paths): the rules, the plan and the DVC stages use its
patterns, and none spells a result path of its own."""

from __future__ import annotations

import re
from pathlib import Path

from kdsrc import dvcstages, paths
from kdsrc.plan import (eval_csv_path, eval_json_path, load_plan, run_dir, table_outputs,
                        teacher_cache_path, teacher_eval_path, teacher_model_path, views_path)

REPO = Path(__file__).resolve().parents[2]
LITERAL = re.compile(r"""["']results/""")


def test_no_rule_or_generic_module_spells_a_result_path():
    files = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk")),
             REPO / "kdsrc" / "plan.py", REPO / "kdsrc" / "dvcstages.py"]
    offenders = [f"{f.relative_to(REPO)}:{i}" for f in files
                 for i, line in enumerate(f.read_text().splitlines(), 1) if LITERAL.search(line)]
    assert not offenders, offenders


def test_the_plan_fills_the_patterns():
    plan = load_plan("quick")
    run = next(r for r in plan.runs if r.teacher != "none")
    d, t = run.dataset, run.teacher
    assert run_dir(run) == f"results/runs/{run.key}"
    assert eval_json_path(run) == f"results/eval/runs/{run.key}.json"
    assert eval_csv_path(run) == f"results/eval/runs/{run.key}.csv"
    assert views_path(run) == f"results/views/{d}/{t}/{run.method}/seed{run.seed}.pt"
    assert teacher_model_path(d, t) == f"results/teachers/{d}/{t}/model.pt"
    assert teacher_eval_path(d, t) == f"results/eval/teachers/{d}/{t}.json"
    assert teacher_cache_path(d, t) == f"results/cache/{d}/{t}/exact"
    assert teacher_cache_path(d, t, "views-5") == f"results/cache/{d}/{t}/views-5"
    assert table_outputs("T1") == ["results/tables/T1.tex", "results/tables/T1.md",
                                   "results/figures/T1_bars.png",
                                   "results/figures/T1_curves.png"]


def test_dvc_outputs_are_the_patterns_folders():
    outs = {folder for stage in dvcstages.STAGE_OUTS.values() for folder, _ in stage}
    assert outs == {paths.folder(p) for p in (
        paths.TEACHER_MODEL, paths.TEACHER_CACHE, paths.TEACHER_EVAL, paths.VIEWS,
        paths.RUN_DIR, paths.RUN_EVAL, paths.TABLE_METRICS, paths.TABLE_TEX,
        paths.FIGURE_BARS)}
    assert paths.folder(paths.RUN_LOG) == paths.folder(paths.RUN_EVAL) == "results/eval/runs"
    assert paths.folder(paths.TEACHER_CACHE) == "results/cache"
