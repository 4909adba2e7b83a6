"""Plan cost from measured per-method speed, and the pipeline's mode override."""

from __future__ import annotations

import json
import subprocess

import pytest
from kdsrc_testutil import KDSRC
from repo_copy import SNAKEMAKE, copy_repo, run

from kdsrc.errors import ConfigError
from kdsrc.plan import load_plan
from kdsrc.plancost import ANCHOR_PAIR, estimate, measured_step_s, sample_cost

PAIR = list(ANCHOR_PAIR)


def _speeds(pair=PAIR, **per_method):
    return {m: {mode: {"ms_per_step": ms, "gpu_busy_ms_per_step": busy, "pair": list(pair)}
                for mode, (ms, busy) in modes.items()} for m, modes in per_method.items()}


@pytest.fixture(scope="module")
def paper():
    return load_plan("paper")


def test_a_host_bound_step_keeps_its_time_a_compute_bound_one_scales(paper):
    kd = paper.run("resnet32x4", "resnet8x4", "kd", 0)
    # speeds measured on a smaller pair: resnet32x4 -> resnet8x4 is R times its compute
    small = ("resnet56", "resnet20")
    ratio = sample_cost(*ANCHOR_PAIR, "kd") / sample_cost(*small, "kd")
    assert ratio > 2
    # host-bound: 10 ms per step with the GPU busy 2.3 ms of it -> still 10 ms
    host = _speeds(small, kd={"fast": (10.0, 2.3)})
    got, how = measured_step_s(kd, host, "fast")
    assert how == "measured" and got == pytest.approx(max(0.010, 0.0023 * ratio))
    # compute-bound: the GPU busy for most of the step, so the bigger pair takes longer
    compute = _speeds(small, kd={"fast": (2.0, 1.9)})
    assert measured_step_s(kd, compute, "fast")[0] == pytest.approx(0.0019 * ratio)
    # measured on the run's own pair: its step time
    assert measured_step_s(kd, _speeds(kd={"fast": (2.0, 1.9)}), "fast")[0] == \
        pytest.approx(0.002)
    # no GPU-busy figure (a CPU measurement): the step time itself scales
    cpu = _speeds(small, kd={"fast": (2.0, None)})
    assert measured_step_s(kd, cpu, "fast") == (pytest.approx(0.002 * ratio), "MAC-scaled")
    # not measured in that mode, or not at all: None (the anchor path)
    assert measured_step_s(kd, host, "reference") is None
    assert measured_step_s(paper.run("resnet32x4", "resnet8x4", "dkd", 0), host, "fast") is None


def test_estimate_says_how_each_run_was_costed_and_takes_the_mode(paper):
    plain = estimate(paper)
    assert plain["distill_costed"] == {"MAC-scaled anchor": 528}
    speeds = _speeds(kd={"reference": (10.0, 2.3), "fast": (5.0, 2.3)})
    ref = estimate(paper, speeds=speeds)                     # the paper plan runs in reference
    fast = estimate(paper, speeds=speeds, mode="fast")
    n_kd = sum(r.method == "kd" for r in paper.runs)
    assert ref["distill_costed"]["measured"] == fast["distill_costed"]["measured"] == n_kd
    assert fast["device_hours"]["distill"] < ref["device_hours"]["distill"]
    assert fast["mode"] == "fast" and ref["mode"] == "as planned"


def test_cli_plan_cost_with_measured_speeds_and_mode(tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({
        "anchor": {"teacher": PAIR[0], "student": PAIR[1], "method": "kd",
                   "samples_per_s": 6750.0, "device": "test GPU", "mode": "reference"},
        "speeds": _speeds(kd={"fast": (1.2, 1.0)}, angularkd_crd={"fast": (5.0, 5.0)})}))
    out = subprocess.run(KDSRC + ["plan-cost", "paper", "--measured", str(bench), "--mode",
                                  "fast"], capture_output=True, text=True, check=True).stdout
    assert "distill runs costed (mode: fast):" in out and " measured" in out
    assert "MAC-scaled anchor" in out


def test_mode_override_sets_every_run_and_changes_identity(tmp_path):
    quick = load_plan("quick")                               # the quick plan runs in fast mode
    ref = load_plan("quick", mode="reference")
    assert {r.config["mode"] for r in quick.runs} == {"fast"}
    assert {r.config["mode"] for r in ref.runs} == {"reference"}
    assert ref.teacher_config("resnet20")["mode"] == "reference"
    assert all(a.config_hash != b.config_hash for a, b in zip(quick.runs, ref.runs))
    assert [r.key for r in load_plan("quick", mode="plan").runs] == [r.key for r in quick.runs]
    # part of the plan-cache key: the overridden plan is not served from the plain one's entry
    cache = tmp_path / "cache"
    load_plan("quick", cache_dir=cache)
    again = load_plan("quick", cache_dir=cache, mode="reference")
    assert {r.config["mode"] for r in again.runs} == {"reference"}
    with pytest.raises(ConfigError, match="mode: expected one of plan, reference, fast"):
        load_plan("quick", mode="turbo")


def test_snakemake_mode_override_reaches_the_run_configs(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    base = SNAKEMAKE + ["runs", "-n", "--cores", "1", "--config", "plan=quick"]
    out = run(base + ["mode=reference"], repo)
    assert "distill" in out.stdout + out.stderr
    (entry,) = (repo / ".snakemake" / "kdsrc-plans").glob("quick-*.json")
    modes = {r["config"]["mode"] for r in json.loads(entry.read_text())["runs"]}
    assert modes == {"reference"}
    bad = run(base + ["mode=turbo"], repo, check=False)
    assert bad.returncode != 0 and "turbo" in bad.stdout + bad.stderr
    assert not (repo / "results").exists() and not (repo / "logs").exists()
