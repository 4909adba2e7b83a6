"""Every setting is declared once and checked when a plan loads, before any job: bad method,
solver and run settings fail naming the plan, the entry, the key, the value and what is allowed;
a `snakemake -n` of such a plan writes nothing; declaring a new setting retrains nothing."""

from __future__ import annotations

import copy
import json
import math
import subprocess
from pathlib import Path

import pytest
import yaml
from kdsrc_testutil import KDSRC
from repo_copy import SNAKEMAKE, copy_repo, run

from kdsrc.config import SOLVER, canonical, config_hash, resolve_run_config
from kdsrc.dataset_facts import DATASET_FACTS
from kdsrc.distillers import METHODS
from kdsrc.errors import ConfigError
from kdsrc.plan import Plan, load_plan
from kdsrc.settings import Setting

TINY = yaml.safe_load((Path(__file__).parent / "plans" / "tiny.yaml").read_text())
NAN, INF = float("nan"), float("inf")


def _with_method(entry: str, method: dict, *, solver: dict | None = None) -> dict:
    """The tiny plan with method entry ``entry`` (run on its pair) set to ``method``."""
    data = copy.deepcopy(TINY)
    data["methods"][entry] = {"method": method, **({"solver": solver} if solver else {})}
    data["runs"] = [{"pairs": ["same"], "methods": ["vanilla", entry]}]
    return data


def _reading_cache(scheme: str, method: dict, *, solver: dict | None = None) -> dict:
    """The tiny plan with an entry ``kdc`` whose runs read the teacher cache ``scheme``."""
    data = _with_method("kdc", method, solver=solver)
    data["methods"]["kdc"]["cache"] = scheme
    return data


# (plan, words the error must hold: the entry, the key, the value, what is allowed)
BAD_PLANS = {
    "kd negative temperature": (_with_method("kd", {"name": "kd", "temperature": -4}),
                                ["methods.kd", "method.temperature", "got -4", "> 0"]),
    "dkd zero temperature": (_with_method("dkd", {"name": "dkd", "temperature": 0}),
                             ["methods.dkd", "method.temperature", "got 0", "> 0"]),
    "ldrld k above the classes": (_with_method("ldrld", {"name": "ldrld", "k": 500}),
                                  ["methods.ldrld", "method.k", "got 500", "from 1 to 9"]),
    "crd K above the dataset": (_with_method("crd", {"name": "crd", "nce_k": 100000}),
                                ["methods.crd", "method.nce_k", "100000", "from 1 to 1292"]),
    "crd K just above the other-class images": (
        _with_method("crd", {"name": "crd", "nce_k": 1293}),
        ["methods.crd", "method.nce_k", "1293", "the maximum is 1292"]),
    "mlkd empty temperatures": (_with_method("mlkd", {"name": "mlkd", "temperatures": []}),
                                ["methods.mlkd", "method.temperatures", "got []", "at least 1"]),
    "mlkd negative temperature in a list": (
        _with_method("mlkd", {"name": "mlkd", "temperatures": [4.0, -2.0]}),
        ["method.temperatures", "got [4.0, -2.0]", "> 0"]),
    "negative loss weight": (_with_method("kd", {"name": "kd", "kd_weight": -0.5}),
                             ["methods.kd", "method.kd_weight", "got -0.5", ">= 0"]),
    "negative weight of a base": (
        _with_method("akd", {"name": "angularkd", "base": "crd", "views": "joint",
                             "base_settings": {"crd_weight": -1.0, "nce_k": 256}}),
        ["methods.akd", "method.base_settings (crd)", "method.crd_weight", "got -1.0", ">= 0"]),
    "K of a base above the dataset": (
        _with_method("akd", {"name": "angularkd", "base": "crd", "views": "joint"}),
        ["methods.akd", "method.nce_k", "16384", "the maximum is 1292"]),
    "unknown base method": (_with_method("akd", {"name": "angularkd", "base": "kdd"}),
                            ["methods.akd", "method.base", "got 'kdd'", "one of kd, crd"]),
    "NaN loss weight": (_with_method("kd", {"name": "kd", "ce_weight": NAN}),
                        ["methods.kd", "method.ce_weight", "nan", "not finite"]),
    "infinite temperature": (_with_method("kd", {"name": "kd", "temperature": INF}),
                             ["methods.kd", "method.temperature", "inf", "not finite"]),
    "tekap copies below -1": (_with_method("tekap", {"name": "tekap", "nce_k": 64,
                                                     "logit_copies": -3}),
                              ["methods.tekap", "method.logit_copies", "got -3", ">= 0"]),
    "a string for a number": (_with_method("dkd", {"name": "dkd", "beta": "eight"}),
                              ["methods.dkd", "method.beta", "got 'eight'", "a number >= 0"]),
    "a float for an integer": (_with_method("dkd", {"name": "dkd", "warmup": 2.5}),
                               ["methods.dkd", "method.warmup", "got 2.5", "an integer >= 0"]),
    "per-pair override": (
        {**_with_method("kd", {"name": "kd"}),
         "methods": {**TINY["methods"],
                     "kd": {"method": {"name": "kd"},
                            "overrides": {"resnet8->resnet8": {"method": {"temperature": -1}}}}}},
        ["methods.kd (resnet8->resnet8)", "method.temperature", "got -1"]),
    "batch size 0": ({**TINY, "solver": {"epochs": 1, "batch_size": 0}},
                     ["solver.batch_size", "0 is less than the minimum of 1"]),
    "negative learning rate": ({**TINY, "solver": {"epochs": 1, "lr": -0.1}},
                               ["solver.lr", "-0.1"]),
    "NaN learning rate": ({**TINY, "solver": {"epochs": 1, "lr": NAN}},
                          ["solver.lr", "nan", "not finite"]),
    "infinite weight decay in a method's solver": (
        _with_method("kd", {"name": "kd"}, solver={"weight_decay": INF}),
        ["methods.kd", "solver.weight_decay", "inf", "not finite"]),
    "decreasing decay epochs": ({**TINY, "solver": {"epochs": 4, "lr_decay_epochs": [3, 1]}},
                                ["solver.lr_decay_epochs", "got [3, 1]", "increasing"]),
    "teacher's solver": ({**TINY, "teachers": {"resnet8": {"source": "pretrain",
                                                           "solver": {"momentum": NAN}}}},
                         ["teachers.resnet8", "solver.momentum", "nan"]),
    # a cache asked for by name that its runs could not read: they would train on something
    # else (the stored views are their training data) or without it, after the cache was built
    "stored views with per-image augmentation": (
        _reading_cache("autoaugment-2", {"name": "kd"}, solver={"color_jitter": 0.4}),
        ["methods.kdc", "cache: autoaugment-2", "cannot read a teacher cache", "color_jitter"]),
    "a cache with mixup": (
        _reading_cache("exact", {"name": "kd"}, solver={"mixup_alpha": 0.8}),
        ["methods.kdc", "cache: exact", "mixup/cutmix"]),
    "a cache with another normalisation": (
        _reading_cache("autoaugment-2", {"name": "kd"}, solver={"normalize": "imagenet"}),
        ["methods.kdc", "normalize: imagenet", "dataset's statistics"]),
    "a cache for a method that reads more of the teacher": (
        _reading_cache("autoaugment-2", {"name": "reviewkd"}),
        ["methods.kdc", "cache: autoaugment-2", "method 'reviewkd'", "more of the teacher"]),
    "unknown mode": ({**TINY, "mode": "turbo"}, ["mode", "'turbo' is not allowed",
                                                  "reference, fast"]),
}


@pytest.mark.parametrize("case", sorted(BAD_PLANS))
def test_bad_plans_fail_at_load_naming_entry_key_value_and_allowed(case):
    data, words = BAD_PLANS[case]
    with pytest.raises(ConfigError) as e:
        Plan(copy.deepcopy(data), name="bad.yaml")
    msg = str(e.value)
    assert msg.startswith("bad.yaml"), msg
    for w in words:
        assert w in msg, f"{w!r} not in: {msg}"


def test_good_values_at_the_bounds_load():
    for method in ({"name": "ldrld", "k": 9}, {"name": "crd", "nce_k": 1292},
                   {"name": "kd", "kd_weight": 0, "ce_weight": 1},
                   {"name": "mlkd", "temperatures": [4], "strong_reuses_weak_at": []}):
        Plan(_with_method("m", method), name="ok.yaml")


def test_run_configs_are_checked_the_same_way_in_kdsrc_train(tmp_path):
    """`kdsrc train` resolves the same declarations: the error names the key, nothing is written."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": "digits", "student": "resnet8",
                                   "teacher": {"name": "resnet8", "checkpoint": "t.pt"},
                                   "method": {"name": "kd", "temperature": -4}}))
    out = tmp_path / "out"
    proc = subprocess.run(KDSRC + ["train", "--config", str(cfg), "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    assert "method.temperature: expected a number > 0, got -4" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_dataset_facts_match_the_data():
    """What the digits dataset declares statically is what loading it gives (CIFAR-100's are
    torchvision's: 500 / 100 images per class)."""
    import torch

    from kdsrc.data import load_dataset

    d = load_dataset("digits")
    f = DATASET_FACTS["digits"]
    assert (f.classes, f.train_images, f.test_images) == (d.num_classes, d.num_train, d.num_test)
    assert f.largest_class == int(torch.bincount(d.train_y).max())
    c = DATASET_FACTS["cifar100"]
    assert (c.classes, c.train_images, c.largest_class) == (100, 50_000, 500)


def test_every_declared_default_is_allowed_and_described():
    for cls in METHODS.values():
        names = [s.name for s in cls.declared]
        assert len(names) == len(set(names)), cls.name
        assert cls.defaults == {s.name: s.default for s in cls.declared}
        for s in cls.declared:
            assert s.meaning and s.allowed()
    # and kdsrc methods -v shows them with their ranges
    out = subprocess.run(KDSRC + ["methods", "-v"], capture_output=True, text=True,
                         check=True).stdout
    assert "temperature: 4.0  -- softmax temperature; allowed: a number > 0" in out
    assert "nce_k: 16384" in out and "an integer >= 1" in out


def test_schema_takes_solver_and_run_keys_from_their_declaration():
    from kdsrc.plan import SCHEMA_PATH, declared_schema

    schema = declared_schema(yaml.safe_load((Path(__file__).resolve().parents[2] /
                                             SCHEMA_PATH).read_text()))
    solver = schema["$defs"]["solver"]["properties"]
    assert list(solver) == [s.name for s in SOLVER]
    assert solver["batch_size"]["minimum"] == 1 and solver["epochs"]["default"] == 240
    assert schema["properties"]["mode"]["enum"] == ["reference", "fast"]
    assert schema["properties"]["dataset"]["enum"] == list(DATASET_FACTS)


# -- declaring a setting retrains nothing ----------------------------------------------------------
def _plan_state(name: str) -> dict:
    plan = load_plan(name)
    runs = {r.key: (r.config_hash, json.dumps(r.config, sort_keys=True)) for r in plan.runs}
    teachers = {t: json.dumps(plan.teacher_config(t), sort_keys=True)
                for t in plan.teachers_with("pretrain")}
    return {"runs": runs, "teachers": teachers}


def _declare(monkeypatch, cls, setting):
    monkeypatch.setattr(cls, "declared", (*cls.declared, setting))
    monkeypatch.setattr(cls, "defaults", {**cls.defaults, setting.name: setting.default})


@pytest.mark.parametrize("plan", ["quick", "paper"])
def test_declaring_new_settings_changes_no_hash_and_no_params(plan, monkeypatch):
    import kdsrc.config as config

    before = _plan_state(plan)
    # a new method setting (also reached through Angular-KD's base_settings), a new solver key
    for name in ("kd", "crd", "vanilla"):
        _declare(monkeypatch, METHODS[name],
                 Setting("new_knob", 1.5, "a setting added later", identity_at_default=False))
    monkeypatch.setattr(config, "SOLVER", (*config.SOLVER, Setting(
        "new_solver_knob", 0, "added later", type="integer", low=0, identity_at_default=False)))
    after = _plan_state(plan)
    assert after == before
    # the resolved config still carries it (the eval record shows it), and a value other than
    # the default is part of the run's identity
    base = {"dataset": "digits", "student": "resnet8", "teacher": "resnet8", "method": "kd"}
    full = resolve_run_config(base)
    assert full["method"]["new_knob"] == 1.5 and full["solver"]["new_solver_knob"] == 0
    assert "new_knob" not in canonical(full)["method"]
    assert resolve_run_config(canonical(full)) == full
    other = resolve_run_config({**base, "method": {"name": "kd", "new_knob": 2.0}})
    assert config_hash(other) != config_hash(full)


# -- through Snakemake: the dry run fails, nothing is written --------------------------------------
@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("bad") / "repo")


@pytest.mark.parametrize("case", ["kd negative temperature", "crd K above the dataset",
                                  "batch size 0"])
def test_snakemake_dry_run_of_a_bad_plan_writes_nothing(repo, case):
    data, words = BAD_PLANS[case]
    name = "bad_" + case.replace(" ", "_")
    (repo / "config" / "plans" / f"{name}.yaml").write_text(yaml.safe_dump(data))
    proc = run(SNAKEMAKE + ["-n", "--cores", "1", "--config", f"plan={name}"], repo, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"invalid plan: {name}.yaml" in out, out[-3000:]
    for w in words:
        assert w in out, f"{w!r} not in the dry run's output"
    assert "Traceback" not in out
    assert not (repo / "results").exists() and not (repo / "logs").exists()
    cache = repo / ".snakemake" / "kdsrc-plans"
    assert not list(cache.glob(f"{name}-*.json")) if cache.exists() else True


def test_nan_check_is_not_fooled_by_python_nan_comparisons():
    """NaN compares False with everything, so a range check alone would let it through."""
    s = Setting("x", 1.0, "a weight", low=0.0, high=2.0)
    for bad in (NAN, INF, -INF):
        with pytest.raises(ConfigError, match="not finite"):
            s.check(bad)
    assert s.check(2) == 2.0 and isinstance(s.check(2), float)
    assert math.isclose(Setting("t", 4.0, "t", above=0.0).check(0.5), 0.5)
