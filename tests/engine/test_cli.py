"""Every bad input ends in one clear line and exit status 2, never a traceback."""

from __future__ import annotations

import subprocess

import pytest
import torch
import yaml
from kdsrc_testutil import KDSRC

from kdsrc.cli import main


def _run(args, capsys):
    code = main(args)
    err = capsys.readouterr().err
    return code, err


def _cfg(tmp_path, **over):
    cfg = {"dataset": "digits", "student": "resnet8", "method": "vanilla",
           "solver": {"epochs": 1}, **over}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


@pytest.mark.parametrize("over, needle", [
    ({"student": "resnet9"}, "unknown model 'resnet9'"),
    ({"method": "kdd"}, "unknown method 'kdd'"),
    ({"solver": {"epochs": "x"}}, "solver.epochs: expected an integer"),
    ({"teacher": {"name": "resnet8", "checkpoint": "missing.pt"}, "method": "kd"}, "missing.pt"),
])
def test_bad_config_one_line(tmp_path, capsys, over, needle):
    code, err = _run(["train", "--config", _cfg(tmp_path, **over), "--out", str(tmp_path / "o"),
                      "--device", "cpu", "--quiet"], capsys)
    assert code == 2
    assert err.startswith("kdsrc: error:") and needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_key(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text("dataset: digits\nmethod: vanilla\n")
    code, err = _run(["train", "--config", str(p), "--out", str(tmp_path)], capsys)
    assert code == 2 and "student: missing required key" in err


def test_missing_and_malformed_config_file(tmp_path, capsys):
    code, err = _run(["train", "--config", str(tmp_path / "nope.yaml"), "--out", "x"], capsys)
    assert code == 2 and "cannot read config file" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed\n")
    code, err = _run(["train", "--config", str(bad), "--out", "x"], capsys)
    assert code == 2 and "not valid YAML" in err


def test_unreadable_checkpoint_in_eval(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    code, err = _run(["eval", "--model", "resnet8", "--checkpoint", str(junk),
                      "--dataset", "digits"], capsys)
    assert code == 2 and "junk.pt" in err and len(err.strip().splitlines()) == 1


def test_wrong_architecture_checkpoint(tmp_path, capsys, digits_teacher):
    code, err = _run(["eval", "--model", "resnet32x4", "--checkpoint", str(digits_teacher),
                      "--dataset", "digits"], capsys)
    assert code == 2 and "key" in err and "Traceback" not in err


def test_eval_and_listing(tmp_path, capsys, digits_teacher):
    out = tmp_path / "e.json"
    assert main(["eval", "--model", "resnet8", "--checkpoint", str(digits_teacher),
                 "--dataset", "digits", "--device", "cpu", "--out", str(out)]) == 0
    assert "top1" in capsys.readouterr().out and out.exists()
    assert main(["models"]) == 0
    assert "ShuffleV2" in capsys.readouterr().out
    assert main(["methods", "-v"]) == 0
    assert "temperature" in capsys.readouterr().out


def test_console_script_help(child_env):
    out = subprocess.run(KDSRC + ["train", "--help"], capture_output=True, text=True,
                         env=child_env, check=True).stdout
    assert "--config" in out and "--out" in out and "resume" in out
