"""Generate ``dvc.yaml`` from the Snakemake rules, so the two DAG descriptions never drift.

DVC has three coarse stages — ``teachers``, ``runs``, ``tables`` — each running the Snakemake
target of the same name. A stage's deps are derived from the rules that target can schedule:
the Snakefile and every rule file (they define the DAG, and hold the ``run:`` bodies), the
``script:`` of each such rule, ``kdsrc/`` (what scripts and bodies call), the plans and schemas,
and the upstream stage's outputs.
``kdsrc dvc-yaml`` writes the file; ``kdsrc dvc-yaml --check`` (and a test) fails on drift.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from . import paths
from .errors import ConfigError

#: which Snakemake rules each DVC stage (= Snakemake target) runs; checked against the DAG
STAGE_RULES = {
    "teachers": ["fetch_teachers", "pretrain_teacher", "evaluate_teacher", "teacher_cache"],
    "runs": ["pretrain_views", "distill", "distill_group"],
    "tables": ["collect", "render_table", "plot", "summary"],
}
#: outputs: (folder, cached by DVC) — weights and caches in the DVC cache, small files in git;
#: the folders of the result-path patterns (kdsrc.paths)
STAGE_OUTS = {
    "teachers": [(paths.folder(paths.TEACHER_MODEL), True),
                 (paths.folder(paths.TEACHER_CACHE), True),
                 (paths.folder(paths.TEACHER_EVAL), False)],
    "runs": [(paths.folder(paths.VIEWS), True), (paths.folder(paths.RUN_DIR), True),
             (paths.folder(paths.RUN_EVAL), False)],
    "tables": [(paths.folder(paths.TABLE_METRICS), False), (paths.folder(paths.TABLE_TEX), False),
               (paths.folder(paths.FIGURE_BARS), False)],
}
STAGE_UPSTREAM = {"teachers": [], "runs": [folder for folder, cached in STAGE_OUTS["teachers"]
                                           if cached],
                  "tables": [folder for stage in ("teachers", "runs")
                             for folder, cached in STAGE_OUTS[stage] if not cached]}
COMMON_DEPS = ["Snakefile", "rules", "kdsrc", "config/plans", "config/schema",
               "profiles/default"]
STAGE_EXTRA_DEPS = {"teachers": ["config/teacher_hashes.yaml", paths.PUBLISHED], "runs": [],
                    "tables": [paths.PUBLISHED]}
METRICS = paths.METRICS_JSON

_RULE = re.compile(r"^rule (\w+):", re.M)
#: a rule defined in a loop (one per group: ``rule:`` + ``name: f"distill_group_{_n}"``) counts
#: under its name's fixed part
_NAMED_RULE = re.compile(r'^    rule:\s*\n\s+name:\s*\n?\s*f"(\w+?)_\{', re.M)
_SCRIPT = re.compile(r'script:\s*\n?\s*"([^"]+)"')
_RUN = re.compile(r"^    run:\s*$", re.M)


def rule_scripts(rules_dir: str | Path = "rules") -> dict[str, str | None]:
    """``{rule: script path relative to the repo}`` from the ``rules/*.smk`` files; ``None``
    for a rule whose body is a ``run:`` block (its code is the rule file and kdsrc)."""
    out: dict[str, str | None] = {}
    for smk in sorted(Path(rules_dir).glob("*.smk")):
        text = smk.read_text()
        starts = sorted([(m.start(), m.group(1)) for m in _RULE.finditer(text)]
                        + [(m.start(), m.group(1)) for m in _NAMED_RULE.finditer(text)])
        starts += [(len(text), "")]
        for (start, name), (end, _) in zip(starts, starts[1:]):
            m = _SCRIPT.search(text[start:end])
            if m:
                out[name] = str((smk.parent / m.group(1)).resolve().relative_to(Path.cwd()))
            elif _RUN.search(text[start:end]):
                out[name] = None
    return out


def stages(rules_dir: str | Path = "rules") -> dict:
    scripts = rule_scripts(rules_dir)
    result = {}
    for stage, rules in STAGE_RULES.items():
        missing = [r for r in rules if r not in scripts]
        if missing:
            raise ConfigError(f"rules {missing} of stage {stage} have neither script: nor run: "
                              f"in {rules_dir}")
        deps = COMMON_DEPS + sorted({scripts[r] for r in rules if scripts[r]}) + \
            STAGE_EXTRA_DEPS[stage] + STAGE_UPSTREAM[stage]
        outs = [{path: {"persist": True, **({} if cached else {"cache": False})}}
                for path, cached in STAGE_OUTS[stage]]
        # Snakemake creates only the folders the plan needs (no cache, no views in some
        # plans); DVC wants every declared out to exist after the stage ran
        dirs = " ".join(path for path, _ in STAGE_OUTS[stage])
        # tables: rebuild from the eval records only; Snakemake's `code` trigger would otherwise
        # retrain every run whose script is newer than its results (any fresh checkout)
        triggers = " --rerun-triggers mtime params input" if stage == "tables" else ""
        entry = {"cmd": f"snakemake {stage}{triggers} && mkdir -p {dirs}", "deps": deps,
                 "params": [{"config/config.yaml": ["plan", "mode"]}], "outs": outs}
        if stage == "tables":
            entry["metrics"] = [{METRICS: {"cache": False}}]
        result[stage] = entry
    return result


def render(rules_dir: str | Path = "rules") -> str:
    doc = {
        "stages": stages(rules_dir),
        "plots": [{paths.folder(paths.RUN_EVAL): {"x": "epoch", "y": "test_top1",
                                         "title": "Test top-1 per epoch (per run)"}}],
    }
    header = ("# GENERATED by `kdsrc dvc-yaml` from rules/*.smk — do not edit by hand.\n"
              "# Three coarse stages, each running the Snakemake target of the same name;\n"
              "# persist: true keeps outputs (else dvc repro deletes them and Snakemake retrains).\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=100)


def write(path: str | Path = "dvc.yaml", *, check: bool = False) -> bool:
    """Write (or with ``check`` compare) dvc.yaml; return True when it is up to date."""
    text = render()
    p = Path(path)
    current = p.read_text() if p.exists() else ""
    if check:
        return current == text
    if current != text:
        p.write_text(text)
    return True
