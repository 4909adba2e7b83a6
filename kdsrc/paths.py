"""Where the pipeline writes: every result-path pattern, declared once.

The Snakemake rules use these patterns as they are (their ``{wildcards}`` are the rules'
wildcards), :mod:`kdsrc.plan` fills them for its runs and targets, and :mod:`kdsrc.dvcstages`
derives the DVC stage outputs from their folders. Wildcards: ``dataset``, ``teacher``,
``student``, ``method`` (a plan's method entry), ``seed``, ``table``, ``scheme`` (a teacher
cache's scheme folder).

Weights and caches are versioned by DVC, the small files (eval records, per-epoch logs,
metrics, tables, figures) by git (README "DVC").

A teacher's caches lie one folder per scheme under ``results/cache/{dataset}/{teacher}``:
``exact`` (every crop/flip variant) and ``views-K`` (K fixed views per image), see
:mod:`kdsrc.cache.layout`.
"""

from __future__ import annotations

RESULTS = "results"
#: every published number the tables and the teacher evaluations compare with
#: (kdsrc.report.published reads it)
PUBLISHED = "config/published.csv"

# -- teachers (the ``teachers`` stage) -------------------------------------------------------
TEACHER_MODEL = "results/teachers/{dataset}/{teacher}/model.pt"
#: where the weights came from: URL + sha256, or the pretraining run
TEACHER_SOURCE = "results/teachers/{dataset}/{teacher}/source.json"
#: a pretrained teacher's run folder (last.pt, final.pt, eval.json)
TEACHER_PRETRAIN_DIR = "results/teachers/{dataset}/{teacher}/pretrain"
#: a fine-tuned teacher (``source: finetune``): the weights it starts from and what they are
TEACHER_INIT = "results/teachers/{dataset}/{teacher}/init.pt"
TEACHER_INIT_SOURCE = "results/teachers/{dataset}/{teacher}/init.json"
#: the run folder of a fine-tune's initial weights pretrained in the workflow (``init: pretrain``)
TEACHER_INIT_DIR = "results/teachers/{dataset}/{teacher}/init_pretrain"
TEACHER_INIT_LOG = TEACHER_INIT_DIR + "/log.csv"
#: a fine-tuned teacher's run folder
TEACHER_FINETUNE_DIR = "results/teachers/{dataset}/{teacher}/finetune"
TEACHER_EVAL = "results/eval/teachers/{dataset}/{teacher}.json"
#: a pretrained teacher's per-epoch log
TEACHER_LOG = "results/eval/teachers/{dataset}/{teacher}.csv"
#: one folder per cache scheme (``exact``, ``views-K``: kdsrc.cache.layout)
TEACHER_CACHE = "results/cache/{dataset}/{teacher}/{scheme}"

# -- distillation (the ``runs`` stage) -------------------------------------------------------
#: Angular-KD's stage-1 views (they depend on teacher, method settings and seed, not student)
VIEWS = "results/views/{dataset}/{teacher}/{method}/seed{seed}.pt"
RUN_DIR = "results/runs/{dataset}/{teacher}/{student}/{method}/seed{seed}"
RUN_FINAL = RUN_DIR + "/final.pt"
RUN_EVAL = "results/eval/runs/{dataset}/{teacher}/{student}/{method}/seed{seed}.json"
RUN_LOG = "results/eval/runs/{dataset}/{teacher}/{student}/{method}/seed{seed}.csv"

# -- tables (the ``tables`` stage) -----------------------------------------------------------
TABLE_METRICS = "results/metrics/{table}.csv"
TABLE_TEX = "results/tables/{table}.tex"
TABLE_MD = "results/tables/{table}.md"
FIGURE_BARS = "results/figures/{table}_bars.png"
FIGURE_CURVES = "results/figures/{table}_curves.png"
#: every table's headline numbers (``dvc metrics``)
METRICS_JSON = "results/metrics.json"


def folder(pattern: str) -> str:
    """The folder that holds every path of ``pattern``: its fixed part up to the first
    wildcard's folder (``results/eval/runs`` for :data:`RUN_EVAL`)."""
    fixed = pattern.split("{", 1)[0]
    return fixed.rstrip("/") if fixed.endswith("/") else fixed.rsplit("/", 1)[0]


def fill(pattern: str, **wildcards) -> str:
    """``pattern`` with its wildcards replaced (every one must be given)."""
    return pattern.format(**wildcards)
