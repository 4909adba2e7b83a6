"""Bad plans fail before any job starts, naming the key and what is allowed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from kdsrc.errors import ConfigError
from kdsrc.plan import Plan, load_plan

REPO = Path(__file__).resolve().parents[2]

TINY = yaml.safe_load((Path(__file__).parent / "plans" / "tiny.yaml").read_text())


def _plan(**changes):
    data = copy.deepcopy(TINY)
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[p]
        if value is ...:
            del node[last]
        else:
            node[last] = value
    return Plan(data, name="bad.yaml")


def test_tiny_plan_is_valid():
    plan = Plan(copy.deepcopy(TINY), name="tiny.yaml")
    keys = [r.key for r in plan.runs]
    assert keys == ["digits/none/resnet8/vanilla/seed0", "digits/resnet8/resnet8/kd/seed0"]
    assert plan.runs[1].config["teacher"]["checkpoint"] == "results/teachers/digits/resnet8/model.pt"


@pytest.mark.parametrize("changes, needle", [
    ({"colour": "red"}, "Additional properties are not allowed ('colour' was unexpected); allowed keys"),
    ({"teacher_cache": True}, "teacher_cache: this plan key is now cache_teachers"),
    ({"dataset": "mnist"}, "dataset: 'mnist' is not allowed; allowed values: cifar100, cifar10, digits"),
    ({"seeds": ...}, "'seeds' is a required property"),
    ({"seeds": [0, 0]}, "seeds: [0, 0] has non-unique elements"),
    ({"seeds": ["a"]}, "seeds.0: 'a' is not of type 'integer'"),
    ({"solver": {"epochs": 0}}, "solver.epochs: 0 is less than the minimum of 1"),
    ({"solver": {"epoch": 3}}, "solver: Additional properties are not allowed ('epoch' was unexpected)"),
    ({"teachers__resnet8__source": "steal"}, "teachers.resnet8.source: 'steal' is not allowed; allowed values: download, pretrain"),
    ({"teachers__resnet8": {"source": "download"}}, "teachers.resnet8: needs exactly one of: member or url + file"),
    ({"tables__T1__kind": "pie"}, "tables.T1.kind: 'pie' is not allowed"),
    ({"tables__T1__metric": "top2"}, "tables.T1.metric: 'top2' is not allowed"),
    ({"runs": [{"pairs": ["same"], "methods": ["kdd"]}]}, "runs.0.methods: 'kdd' is not a method entry; entries: kd, vanilla"),
    ({"runs": [{"pairs": ["odd"], "methods": ["kd"]}]}, "unknown pair group 'odd'; groups: same"),
    ({"pairs__same": [["resnet99", "resnet8"]]}, "teacher 'resnet99' is not in teachers"),
    ({"methods__kd": {"method": {"name": "kd", "temprature": 2}}}, "methods.kd: method.temprature: unknown setting for method 'kd'"),
    ({"methods__kd": {"method": {"name": "kdd"}}}, "unknown method 'kdd'"),
    ({"teachers": {"resnet8": {"source": "download", "member": "x.pth"}}}, "teacher_archive: required"),
])
def test_bad_plans(changes, needle):
    with pytest.raises(ConfigError) as e:
        _plan(**changes)
    assert needle in str(e.value), str(e.value)
    assert str(e.value).startswith("bad.yaml")


def test_missing_plan_lists_the_plans(tmp_path):
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "one.yaml").write_text("{}")
    with pytest.raises(ConfigError, match="plans: one"):
        load_plan("two", config_dir=tmp_path)


def test_table_needing_an_unscheduled_run():
    data = copy.deepcopy(TINY)
    data["runs"] = [{"pairs": ["same"], "methods": ["kd"]}]
    with pytest.raises(ConfigError, match="needs vanilla on none->resnet8"):
        Plan(data, name="bad.yaml").table_runs("T1")


def _copy_config(tmp_path) -> Path:
    import shutil

    cfg = tmp_path / "config"
    shutil.copytree(REPO / "config", cfg)
    return cfg


def test_resolved_plan_cache_rebuilds_the_same_plan_without_the_methods(tmp_path):
    import json
    import subprocess
    import sys

    cfg = _copy_config(tmp_path)
    cache = tmp_path / "cache"
    fresh = load_plan("quick", config_dir=cfg)
    first = load_plan("quick", config_dir=cfg, cache_dir=cache)
    files = list(cache.glob("quick-*.json"))
    assert len(files) == 1
    again = load_plan("quick", config_dir=cfg, cache_dir=cache)
    for plan in (first, again):
        assert [(r.key, r.config, r.needs_pretrained_views) for r in plan.runs] == \
            [(r.key, r.config, r.needs_pretrained_views) for r in fresh.runs]
        assert [json.dumps(r.config, sort_keys=True) for r in plan.runs] == \
            [json.dumps(r.config, sort_keys=True) for r in fresh.runs]
        assert plan.teacher_config("resnet20") == fresh.teacher_config("resnet20")
        assert plan.run("resnet20", "resnet8", "kd", 1).config_hash == \
            fresh.run("resnet20", "resnet8", "kd", 1).config_hash
    assert sum(r.needs_pretrained_views for r in again.runs) == 6
    # a hit needs neither the methods nor torch (what makes a dry run fast)
    code = ("import sys; from kdsrc.plan import load_plan; "
            f"p = load_plan('quick', config_dir={str(cfg)!r}, cache_dir={str(cache)!r}); "
            "print(len(p.runs), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO).stdout.split()
    assert out == ["36", "False"]


def test_resolved_plan_cache_follows_edits_and_survives_damage(tmp_path):
    cfg = _copy_config(tmp_path)
    cache = tmp_path / "cache"
    load_plan("quick", config_dir=cfg, cache_dir=cache)
    (old,) = cache.glob("quick-*.json")
    plan_file = cfg / "plans" / "quick.yaml"
    plan_file.write_text(plan_file.read_text().replace("seeds: [0, 1]", "seeds: [0, 1, 2]"))
    edited = load_plan("quick", config_dir=cfg, cache_dir=cache)
    assert len(edited.runs) == 54 and not old.exists()      # new key, old entry removed
    (new,) = cache.glob("quick-*.json")
    new.write_text("{not json")
    assert len(load_plan("quick", config_dir=cfg, cache_dir=cache).runs) == 54
    assert "runs" in json.loads(new.read_text())              # rewritten
    # a bad plan is still an error with a cache present
    plan_file.write_text(plan_file.read_text().replace("seeds: [0, 1, 2]", "seeds: zero"))
    with pytest.raises(ConfigError, match="seeds"):
        load_plan("quick", config_dir=cfg, cache_dir=cache)
