"""dvc.yaml is generated from the rules: no Snakemake file can be missing from a stage's deps."""

from __future__ import annotations

import pytest
import yaml
from repo_copy import REPO, SNAKEMAKE, job_stats, run

from kdsrc.dvcstages import STAGE_RULES, render, rule_scripts


def test_dvc_yaml_is_up_to_date(monkeypatch):
    monkeypatch.chdir(REPO)
    assert (REPO / "dvc.yaml").read_text() == render(), "run `kdsrc dvc-yaml`"


def test_run_bodies_are_recognised(monkeypatch):
    monkeypatch.chdir(REPO)
    scripts = rule_scripts()
    assert scripts["collect"] is None and scripts["summary"] is None
    assert scripts["plot"] == "workflow_scripts/plot.py"
    assert scripts["distill"] == "workflow_scripts/distill.py"


@pytest.mark.parametrize("plan", ["quick", "paper"])
@pytest.mark.parametrize("stage", sorted(STAGE_RULES))
def test_every_rule_a_stage_runs_has_its_script_in_the_deps(monkeypatch, plan, stage):
    monkeypatch.chdir(REPO)
    out = run(SNAKEMAKE + ["-n", "--forceall", stage, "--config", f"plan={plan}"], REPO)
    rules = set(job_stats(out.stdout + out.stderr)) - {"total", stage}
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"]
    scripts = rule_scripts()
    upstream = {r for s, rs in STAGE_RULES.items() if s != stage for r in rs}
    for rule in rules:
        if rule in upstream:
            continue  # produced by an earlier stage, whose outputs are this stage's deps
        assert rule in scripts, f"{rule} has neither script: nor run: in rules/"
        if scripts[rule] is None:  # a run: body: its code is the rule file and kdsrc
            continue
        assert scripts[rule] in deps, f"{rule}'s script {scripts[rule]} not in {stage} deps"
    for must in ("Snakefile", "rules", "kdsrc", "config/plans", "config/schema"):
        assert must in deps
