# Config loading, target lists and input functions. Every Python helper of the workflow lives
# here; the plan itself is read and validated by kdsrc.plan (the single source of truth).
import json

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from kdsrc import paths
from kdsrc.cache.layout import SCHEME_PATTERN, legacy_caches
from kdsrc.errors import KdsrcError
from kdsrc.plan import (
    NO_TEACHER,
    eval_csv_path,
    eval_json_path,
    load_plan,
    run_dir,
    table_outputs,
    teacher_cache_path,
    teacher_eval_path,
    teacher_log_path,
    teacher_model_path,
    views_path,
)

validate(config, "../config/schema/config.schema.yaml")
try:
    # resolved runs cached per (plan, kdsrc sources): a cache hit skips importing the methods
    PLAN = load_plan(config["plan"], mode=config.get("mode", "plan"),
                     cache_dir=".snakemake/kdsrc-plans")
except KdsrcError as e:
    raise WorkflowError(f"invalid plan: {e}") from None

if legacy_caches(paths.RESULTS):
    # before scheme folders: their runs' teacher.cache changed, move (never rebuild) the caches
    raise WorkflowError(
        "teacher caches of the layout before scheme folders: "
        + ", ".join(str(p) for p in legacy_caches(paths.RESULTS))
        + ". Run `python -m kdsrc.cache migrate`, then `snakemake --touch` once with the same "
        "--config (nothing retrains; README \"Teacher cache\")")

DATASET = PLAN.dataset
JOBS_PER_GPU = config["jobs_per_gpu"]
RUNS_PER_GPU = config["runs_per_gpu"]


def _alternatives(names):
    # a regex that matches exactly these names ("(?!)" matches nothing)
    return "|".join(sorted(names)) or "(?!)"


DOWNLOAD_TEACHERS = _alternatives(PLAN.teachers_with("download"))
PRETRAIN_TEACHERS = _alternatives(PLAN.teachers_with("pretrain"))
FINETUNE_TEACHERS = _alternatives(PLAN.teachers_with("finetune"))
INIT_URL_TEACHERS = _alternatives(PLAN.inits_with("url"))
INIT_PRETRAIN_TEACHERS = _alternatives(PLAN.inits_with("pretrain"))


wildcard_constraints:
    dataset="[a-z0-9]+",
    teacher="[A-Za-z0-9_-]+",   # model names: the CIFAR zoo's and timm-<model>
    student="[A-Za-z0-9_-]+",
    method="[A-Za-z0-9_]+",
    seed=r"\d+",
    table="[A-Za-z0-9_]+",
    scheme=SCHEME_PATTERN,


# -- targets ---------------------------------------------------------------------------------
def teacher_targets():
    out = []
    for t in PLAN.teachers_used():
        out.append(teacher_model_path(DATASET, t))
        out.append(teacher_eval_path(DATASET, t))
        if PLAN.caches_teachers:
            out.append(teacher_cache_path(DATASET, t))
    # caches of other schemes that runs read (a method entry's `cache`)
    out += sorted({r.config["teacher"]["cache"] for r in PLAN.runs
                   if r.teacher != NO_TEACHER and r.config["teacher"].get("cache")} - set(out))
    return out


def run_targets():
    return [p for r in PLAN.runs for p in (eval_json_path(r), eval_csv_path(r))]


def table_targets():
    out = []
    for table in PLAN.tables:
        out += table_outputs(table)
    return out + [paths.METRICS_JSON]


# -- input functions -------------------------------------------------------------------------
def _run(wildcards):
    return PLAN.run(wildcards.teacher, wildcards.student, wildcards.method, wildcards.seed)


def teacher_source(wildcards):
    return PLAN.teachers[wildcards.teacher]


def teacher_pretrain_config(wildcards):
    return json.dumps(PLAN.teacher_config(wildcards.teacher), sort_keys=True)


def init_pretrain_config(wildcards):
    return json.dumps(PLAN.init_config(wildcards.teacher), sort_keys=True)


def run_inputs(run):
    """What a run reads: its teacher (and cache), its stage-1 views."""
    inputs = {}
    if run.teacher != NO_TEACHER:
        inputs["teacher"] = teacher_model_path(run.dataset, run.teacher)
        if run.config["teacher"].get("cache"):
            inputs["cache"] = run.config["teacher"]["cache"]
    if run.needs_pretrained_views:
        inputs["views"] = views_path(run)
    return inputs


def distill_inputs(wildcards):
    return run_inputs(_run(wildcards))


def group_inputs(group):
    """Every input of a group's members (they share the teacher), each once."""
    return sorted({path for run in group for path in run_inputs(run).values()})


def group_outputs(group):
    """Exactly the members' distill outputs (and no wildcards: Snakemake then prefers the group
    rule over distill for these files)."""
    return [p for run in group
            for p in (paths.fill(paths.RUN_FINAL, **run.wildcards), eval_json_path(run),
                      eval_csv_path(run))]


def distill_requests():
    """What `--set-resources` (a profile's `set-resources`, e.g. profiles/slurm) asks for a
    `distill` job; a group of runs (distill_group_<n>) asks for the same. A profile cannot name
    the group rules, which exist only for the plan and K at hand, so without this they would get
    its defaults (on SLURM a 1-hour limit for up to 24 hours of training). The group is one
    process on one GPU, as a distill job is. Empty where nothing is set."""
    settings = workflow.resource_settings.overwrite_resources.get("distill") or {}
    # values are snakemake Resource objects (their `raw`) or plain numbers and strings
    return {name: getattr(value, "raw", value) for name, value in settings.items()}


def group_members(group):
    """The members as the group script reads them (a param: a changed member reruns the group)."""
    return json.dumps([{"config": run.config, "ckpt_dir": run_dir(run),
                        "eval": eval_json_path(run), "log_csv": eval_csv_path(run),
                        "method": run.method} for run in group], sort_keys=True)


def distill_config(wildcards):
    """The run config as JSON (a param: a changed config reruns the job)."""
    return json.dumps(_run(wildcards).config, sort_keys=True)


def distill_ckpt_dir(wildcards):
    return run_dir(_run(wildcards))


def views_config(wildcards):
    return json.dumps(PLAN.stage_one_config(_run_for_views(wildcards)), sort_keys=True)


def _run_for_views(wildcards):
    # views depend on (teacher, method settings, seed), not on the student: any run of the
    # plan with that teacher/method/seed carries the settings
    for r in PLAN.runs:
        if (r.teacher, r.method, str(r.seed)) == (wildcards.teacher, wildcards.method,
                                                   wildcards.seed):
            return r
    raise WorkflowError(f"no run of {wildcards.method} with teacher {wildcards.teacher}")


def table_spec(wildcards):
    return json.dumps(PLAN.table_spec(wildcards.table))


def table_records(wildcards):
    return sorted(eval_json_path(r) for r in PLAN.table_runs(wildcards.table))


def table_logs(wildcards):
    return sorted(eval_csv_path(r) for r in PLAN.table_runs(wildcards.table))


def table_teacher_records(wildcards):
    return [teacher_eval_path(DATASET, t) for t in PLAN.table_teachers(wildcards.table)]


def table_teacher_logs(wildcards):
    return [teacher_log_path(DATASET, t)
            for t in PLAN.table_teachers(wildcards.table)
            if PLAN.teachers[t]["source"] == "pretrain"]
