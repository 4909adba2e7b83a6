import pytest

from kdsrc.config import (apply_overrides, config_hash, resolve_run_config, uses_channels_last,
                          uses_compile)
from kdsrc.errors import ConfigError, UnknownNameError

BASE = {"dataset": "digits", "student": "resnet8", "method": "vanilla"}


def test_defaults_are_the_reference_recipe():
    cfg = resolve_run_config(BASE)
    s = cfg["solver"]
    assert (s["epochs"], s["batch_size"], s["lr"], s["momentum"], s["weight_decay"]) == \
        (240, 64, 0.05, 0.9, 5e-4)
    assert s["lr_decay_epochs"] == [150, 180, 210] and s["lr_decay_rate"] == 0.1
    assert cfg["teacher"] is None and cfg["mode"] == "reference" and cfg["precision"] == "fp32"


@pytest.mark.parametrize("student", ["ShuffleV1", "ShuffleV2", "MobileNetV2"])
def test_low_lr_students(student):
    assert resolve_run_config({**BASE, "student": student})["solver"]["lr"] == 0.01


def test_explicit_lr_wins():
    cfg = resolve_run_config({**BASE, "student": "ShuffleV2", "solver": {"lr": 0.02}})
    assert cfg["solver"]["lr"] == 0.02


def test_kd_defaults_and_override():
    cfg = resolve_run_config({**BASE, "method": {"name": "kd", "temperature": 2},
                              "teacher": {"name": "resnet20", "checkpoint": "t.pt"}})
    assert cfg["method"] == {"name": "kd", "ce_weight": 0.1, "kd_weight": 0.9, "temperature": 2.0}


@pytest.mark.parametrize("raw, needle", [
    ({"student": "resnet8", "method": "vanilla"}, "dataset: missing"),
    ({**BASE, "student": "resnet9"}, "unknown model 'resnet9'"),
    ({**BASE, "method": "kdd"}, "unknown method 'kdd'"),
    ({**BASE, "dataset": "mnist"}, "unknown dataset 'mnist'"),
    ({**BASE, "solver": {"epochs": "ten"}}, "solver.epochs: expected an integer"),
    ({**BASE, "solver": {"lr": "fast"}}, "solver.lr: expected a number"),
    ({**BASE, "solver": {"epoch": 3}}, "solver.epoch: unknown key"),
    ({**BASE, "seed": -1}, "seed"),
    ({**BASE, "mode": "turbo"}, "mode: expected one of reference, fast"),
    ({**BASE, "colour": 1}, "colour: unknown key"),
    ({**BASE, "channels_last": True}, "channels_last: expected one of auto, on, off"),
    ({**BASE, "compile": "max"}, "compile: expected one of auto, on, off"),
    ({**BASE, "method": {"name": "kd", "temprature": 4}, "teacher": "resnet8"},
     "method.temprature: unknown setting"),
    ({**BASE, "method": {"name": "kd", "temperature": "hot"}, "teacher": "resnet8"},
     "method.temperature: expected a number"),
    ({**BASE, "method": "kd"}, "needs a teacher"),
    ({**BASE, "teacher": {"name": "resnet8", "path": "x"}}, "teacher.path: unknown key"),
])
def test_bad_configs_name_the_key(raw, needle):
    with pytest.raises(ConfigError) as e:
        resolve_run_config(raw)
    assert needle in str(e.value)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UnknownNameError) as e:
        resolve_run_config({**BASE, "method": "kdd"})
    assert "vanilla" in str(e.value) and "kd" in str(e.value)


def test_hash_is_stable_and_ignores_checkpoint_location():
    a = resolve_run_config({**BASE, "method": "kd", "teacher": {"name": "resnet20",
                                                                  "checkpoint": "a/model.pt"}})
    b = resolve_run_config({**BASE, "method": "kd", "teacher": {"name": "resnet20",
                                                                  "checkpoint": "b/model.pt"}})
    c = resolve_run_config({**BASE, "method": "kd", "seed": 1,
                            "teacher": {"name": "resnet20", "checkpoint": "a/model.pt"}})
    assert config_hash(a) == config_hash(b) != config_hash(c)
    assert len(config_hash(a)) == 64


def test_auto_switches_follow_the_mode_and_stay_out_of_the_hash():
    ref = resolve_run_config(BASE)
    fast = resolve_run_config({**BASE, "mode": "fast"})
    assert (ref["channels_last"], ref["compile"]) == ("auto", "auto")
    assert not uses_channels_last(ref) and uses_channels_last(fast)
    # fast mode on CUDA captures the step as a CUDA graph (cuda_graph: auto), which is not
    # compiled; with the graph off, compile: auto compiles it
    assert not uses_compile(ref, "cuda") and not uses_compile(fast, "cuda")
    eager = resolve_run_config({**BASE, "mode": "fast", "cuda_graph": "off"})
    assert uses_compile(eager, "cuda")
    assert not uses_compile(fast, "cpu") and not uses_compile(eager, "cpu")  # does not pay on a CPU
    off = resolve_run_config({**BASE, "mode": "fast", "channels_last": "off", "compile": "off"})
    on = resolve_run_config({**BASE, "channels_last": "on", "compile": "on"})
    assert not uses_channels_last(off) and not uses_compile(off, "cuda")
    assert uses_channels_last(on) and uses_compile(on, "cpu")
    # "auto" adds nothing to what `mode` says: configs written before the switches existed
    # keep their hash; an explicit value is part of the run's identity
    assert config_hash(ref) == config_hash({k: v for k, v in ref.items()
                                            if k not in ("channels_last", "compile")})
    assert config_hash(ref) == "be75374e16f910892790df92e43f396e5825913e92897daf6300f3af2eaedb7f"
    assert config_hash(on) != config_hash(ref)
    assert config_hash(resolve_run_config({**BASE, "mode": "fast", "channels_last": "on"})) != \
        config_hash(fast)


def test_overrides():
    raw = apply_overrides({**BASE, "method": "kd"}, ["solver.epochs=3", "method.temperature=2",
                                                     "teacher.checkpoint=x.pt"])
    assert raw["solver"] == {"epochs": 3}
    assert raw["method"] == {"name": "kd", "temperature": 2}
    assert raw["teacher"] == {"checkpoint": "x.pt"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides(BASE, ["solver.epochs"])
