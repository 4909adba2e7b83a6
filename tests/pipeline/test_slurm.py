"""The slurm profile on a real one-node SLURM cluster (``slurm_cluster`` in tests/conftest.py).

One end-to-end test runs a small plan (tests/pipeline/plans/tiny.yaml plus one longer KD run)
through ``snakemake --profile profiles/slurm`` with the commands of the README's "Running on
SLURM", with faults on the longer run and Snakemake's retries off, so that the next invocation
is what recovers:

1. every job goes through sbatch and finishes COMPLETED (the plugin reads the states with
   squeue: there is no accounting database), except the long run, cancelled with scancel after
   its first epoch; the report rules run locally;
2. the node is drained: the next invocation's job waits (PENDING) until the node is resumed,
   then resumes the run from its last.pt (its log says so) and reaches its 1-minute time limit
   (TIMEOUT; its training process is frozen after an epoch, so that it does not end first on a
   fast CPU);
3. the profile's own in-run retry (``retries: 1``): the next invocation's job is cancelled once
   more, Snakemake resubmits it within the invocation, and it resumes and finishes.

Every run (teacher included) then has the per-epoch losses and accuracies and the top-1/top-5 of
the same plan run locally, uninterrupted, with the same thread counts (run alongside). Each GPU
rule asked SLURM for one GPU (``scontrol show job``), and kdsrc.gpu took the device SLURM
assigned without slot locks (the node's GPUs are stand-ins: KDSRC_FAKE_GPUS computes on the CPU).
"""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from repo_copy import SNAKEMAKE, copy_repo
from repo_copy import env as base_env

TINY = yaml.safe_load((Path(__file__).parent / "plans" / "tiny.yaml").read_text())
#: epochs of the long run: enough for an epoch before each of its three interruptions (an epoch
#: takes 3-6 s on 2 cores) and a few after them
LONG_EPOCHS = 10
LONG = "kd_long"
#: the README's "Running on SLURM" test settings: a partition, a small node's limits
CLUSTER_ENV = {"KDSRC_SLURM_PARTITION": "kdsrc", "KDSRC_SLURM_MAX_CPUS": "1",
               "KDSRC_SLURM_MAX_MEM_MB": "2000"}
#: the README's command, with the plugin's first status check after 1 s instead of 40 s
SLURM_RUN = SNAKEMAKE + ["--profile", "profiles/slurm", "--config", "plan=slurm",
                         "--slurm-status-command", "squeue",
                         "--slurm-init-seconds-before-status-checks", "1"]
GPU_RULES = {"pretrain_teacher", "evaluate_teacher", "distill"}
REPORT_RULES = {"collect", "render_table", "plot", "summary"}
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+)")
EPOCH = re.compile(r"^epoch (\d+)/\d+ lr ", re.MULTILINE)
RESUMED = re.compile(r"resuming from \S+last\.pt after epoch (\d+)")
TRAINER = re.compile(r"kdsrc\.jobs: lease .* pid (\d+) start ")


def slurm_plan() -> dict:
    """The tiny plan plus a longer KD run (its own method entry and table)."""
    plan = copy.deepcopy(TINY)
    plan["description"] = "SLURM test plan: the tiny plan and a longer KD run to interrupt"
    plan["methods"][LONG] = {"method": {"name": "kd"}, "solver": {"epochs": LONG_EPOCHS}}
    plan["runs"].append({"pairs": ["same"], "methods": [LONG]})
    plan["tables"]["T2"] = {"kind": "grid", "pairs": ["same"], "methods": [LONG]}
    return plan


def _env(cluster, extra: dict[str, str]) -> dict[str, str]:
    env = base_env() if cluster is None else cluster.client_env(base_env())
    env.pop("KDSRC_GPU_LOCK_DIR", None)
    # the node's GPUs are stand-in device files: the jobs take the device SLURM assigns, and
    # compute on the CPU (kdsrc.jobs)
    env["KDSRC_FAKE_GPUS"] = "2"
    return {**env, **extra}


class Invocation:
    """One snakemake process in the background, its output in a file."""

    running: list["Invocation"] = []

    def __init__(self, cmd, cwd: Path, env: dict[str, str], name: str):
        Invocation.running.append(self)
        self.out_path = cwd.parent / f"{name}.out"
        self.cmd = cmd
        with open(self.out_path, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait(self, timeout: float = 600) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{' '.join(self.cmd)} ran over {timeout}s:\n"
                                 f"{self.output[-4000:]}") from None

    def submitted(self) -> list[str]:
        return SUBMITTED.findall(self.output)


def wait_for(what: str, check, inv: Invocation, timeout: float = 300, poll: float = 0.5):
    """Poll ``check()`` until it returns a truthy value, while ``inv`` runs."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        if inv.proc.poll() is not None:
            raise AssertionError(f"snakemake ended ({inv.proc.returncode}) while waiting for "
                                 f"{what}:\n{inv.output[-4000:]}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n{inv.output[-4000:]}")


def rule_of(job: dict[str, str]) -> str:
    """The rule of a job submitted by the plugin (its comment: rule_<rule>_wildcards_<values>)."""
    return job["comment"].removeprefix("rule_").split("_wildcards_")[0]


def long_jobs(cluster) -> list[dict[str, str]]:
    return [j for j in cluster.jobs() if j["comment"].endswith(f"_{LONG}_0")]


def read(log: Path) -> str:
    """A job's log so far ("" before the job starts: Snakemake removes the previous one)."""
    try:
        return log.read_text()
    except FileNotFoundError:
        return ""


def epochs_in(log: Path) -> list[int]:
    return [int(e) for e in EPOCH.findall(read(log))]


def saved_epoch(run_dir: Path) -> int:
    """The last epoch in a run's resume file (0 before there is one). Faults are triggered on
    it rather than on the log, which shows an epoch just before its resume file is written."""
    try:
        return torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)["epoch"]
    except FileNotFoundError:
        return 0


#: what differs between two trainings of the same run: timings and the repository's commit
NOT_COMPARED = {"wall_s", "samples_per_s", "git_rev"}


def results(repo: Path) -> dict[str, object]:
    """Every eval record (teachers' included) and every per-epoch log, without timings."""
    out: dict[str, object] = {}
    for path in sorted((repo / "results/eval").rglob("*")):
        rel = str(path.relative_to(repo))
        if path.suffix == ".json":
            rec = json.loads(path.read_text())
            out[rel] = {k: v for k, v in rec.items() if k not in NOT_COMPARED}
        elif path.suffix == ".csv":
            rows = list(csv.DictReader(path.open()))
            out[rel] = [{k: v for k, v in row.items() if not k.endswith("_s")} for row in rows]
    return out


def dry_run_resources(repo: Path, extra_env: dict[str, str],
                      config: tuple[str, ...] = ("plan=tiny",)) -> tuple[int, str, dict]:
    """``snakemake -n --profile profiles/slurm --config CONFIG``: exit status, output and
    {rule: {resource: value}} as Snakemake resolved them from the profile."""
    proc = subprocess.run(SNAKEMAKE + ["-n", "--profile", "profiles/slurm", "--config",
                                       *config], cwd=repo, capture_output=True, text=True,
                          env={**_env(None, {}), **extra_env}, timeout=600)
    out = proc.stdout + proc.stderr
    resources: dict[str, dict[str, str]] = {}
    rule = None
    for line in out.splitlines():
        m = re.match(r"(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
        elif line.strip().startswith("resources:") and rule:
            resources[rule] = dict(item.split("=", 1) for item in
                                   line.split(":", 1)[1].strip().split(", "))
    return proc.returncode, out, resources


def test_profile_limits_lower_the_requests(tmp_path):
    """KDSRC_SLURM_MAX_{CPUS,MEM_MB,RUNTIME} lower every larger request of the profile (a small
    node, a short partition), leave the GPU requests alone, and a bad value is one line."""
    repo = copy_repo(tmp_path / "repo", git=False)
    (repo / "config/plans/tiny.yaml").write_text(yaml.safe_dump(TINY))
    keys = ("gpu", "cpus_per_gpu", "cpus_per_task", "mem_mb", "runtime")
    rc, out, full = dry_run_resources(repo, {})
    assert rc == 0, out[-3000:]
    assert {k: full["distill"].get(k) for k in keys} == {
        "gpu": "1", "cpus_per_gpu": "4", "cpus_per_task": None, "mem_mb": "16000",
        "runtime": "1440"}, full["distill"]
    assert full["evaluate_teacher"]["cpus_per_gpu"] == "2"
    limits = {"KDSRC_SLURM_MAX_CPUS": "1", "KDSRC_SLURM_MAX_MEM_MB": "3000",
              "KDSRC_SLURM_MAX_RUNTIME": "45"}
    rc, out, small = dry_run_resources(repo, limits)
    assert rc == 0, out[-3000:]
    for rule in ("distill", "pretrain_teacher", "evaluate_teacher"):
        assert {k: small[rule].get(k) for k in keys} == {
            "gpu": "1", "cpus_per_gpu": "1", "cpus_per_task": None, "mem_mb": "3000",
            "runtime": "30" if rule == "evaluate_teacher" else "45"}, (rule, small[rule])
    # a group of runs (runs_per_gpu) asks for what distill asks for, limits included
    (repo / "config/plans/tiny_seeds.yaml").write_text(yaml.safe_dump({**TINY, "seeds": [0, 1]}))
    rc, out, grouped = dry_run_resources(repo, limits, ("plan=tiny_seeds", "runs_per_gpu=2"))
    assert rc == 0, out[-3000:]
    groups = [rule for rule in grouped if rule.startswith("distill_group_")]
    assert groups, out[-3000:]
    for rule in groups:
        assert {k: grouped[rule].get(k) for k in keys} == {
            k: small["distill"].get(k) for k in keys}, (rule, grouped[rule])
    rc, out, _ = dry_run_resources(repo, {**limits, "KDSRC_SLURM_MAX_MEM_MB": "16G"})
    assert rc != 0
    assert "KDSRC_SLURM_MAX_MEM_MB='16G': expected a whole number >= 1" in out.splitlines()[-1]


@pytest.fixture
def invocations():
    """Ends the snakemake processes a failed test leaves running (the cluster's teardown then
    cancels their jobs)."""
    yield
    for inv in Invocation.running:
        if inv.proc.poll() is None:
            inv.proc.kill()
            inv.proc.wait()
    Invocation.running.clear()


@pytest.mark.slow
def test_slurm_profile_end_to_end_with_faults(slurm_cluster, invocations, tmp_path):
    cluster = slurm_cluster
    plan = yaml.safe_dump(slurm_plan(), sort_keys=False)
    local = copy_repo(tmp_path / "local")
    (local / "config/plans/slurm.yaml").write_text(plan)
    # the reference: the same plan, locally, uninterrupted, with the same thread counts
    reference = Invocation(SNAKEMAKE + ["--cores", "2", "--config", "plan=slurm"], local,
                           _env(None, {"KDSRC_GPU_LOCK_DIR": str(tmp_path / "locks")}), "local")

    repo = copy_repo(tmp_path / "slurm")
    (repo / "config/plans/slurm.yaml").write_text(plan)
    long_log = repo / f"logs/distill/digits/resnet8/resnet8/{LONG}/seed0.log"
    long_dir = repo / f"results/runs/digits/resnet8/resnet8/{LONG}/seed0"

    # 1. every job through sbatch, Snakemake's retries off; the long run is cancelled mid-run
    first = Invocation(SLURM_RUN + ["--retries", "0"], repo, _env(cluster, CLUSTER_ENV), "first")
    job = wait_for("the long run to start", lambda: [j for j in long_jobs(cluster)
                                                     if j["state"] == "RUNNING"], first)[0]
    wait_for("its first epoch", lambda: saved_epoch(long_dir), first)
    cluster.run(["scancel", job["id"]])
    rc = first.wait()
    out = first.output
    jobs = {j["id"]: j for j in cluster.jobs()}
    ids = first.submitted()
    assert rc != 0, out[-3000:]
    assert sorted(rule_of(jobs[i]) for i in ids) == sorted(
        ["pretrain_teacher", "evaluate_teacher", "distill", "distill", "distill"]), jobs
    states = {jobs[i]["comment"]: jobs[i]["state"] for i in ids}
    assert states.pop(f"rule_distill_wildcards_digits_resnet8_resnet8_{LONG}_0") == "CANCELLED"
    assert set(states.values()) == {"COMPLETED"}, states
    assert "SLURM status is: 'CANCELLED'" in out, out[-3000:]
    # the report rules ran here, never through sbatch
    assert not REPORT_RULES & {rule_of(j) for j in jobs.values()}
    for rule in ("collect", "render_table", "plot"):
        assert f"localrule {rule}:" in out, out[-3000:]
    cancelled_at = saved_epoch(long_dir)
    assert 1 <= cancelled_at < LONG_EPOCHS

    # 5. GPUs: every GPU rule asked SLURM for one GPU, and took the device SLURM assigned
    for i in ids:
        assert rule_of(jobs[i]) in GPU_RULES
        shown = cluster.scontrol("show", "job", i).stdout
        assert re.search(r"TresPerJob=gres[:/]gpu:1\b", shown), shown
    for log in [repo / "logs/pretrain_teacher/digits/resnet8.log",
                repo / "logs/evaluate_teacher/digits/resnet8.log",
                *(repo / "logs/distill").rglob("*.log")]:
        text = log.read_text()
        m = re.search(r"using GPU (\d) assigned by SLURM \(job (\d+)\) -> cuda:0; no slot lock",
                      text)
        assert m and m.group(2) in ids, f"{log}:\n{text[:2000]}"
    assert not (repo / ".gpu_locks").exists()

    # 2. a drained node: the job waits until the node is resumed; then it resumes the run from
    # its last.pt and reaches its (1-minute) time limit
    cluster.scontrol("update", f"NodeName={cluster.node}", "State=DRAIN", "Reason=kdsrc-test")
    second = Invocation(SLURM_RUN + ["--retries", "0"], repo,
                        _env(cluster, {**CLUSTER_ENV, "KDSRC_SLURM_MAX_RUNTIME": "1"}), "second")
    job = wait_for("the long run to be submitted",
                   lambda: [j for j in long_jobs(cluster) if j["id"] not in ids], second)[0]
    time.sleep(5)
    waiting = {j["id"]: j for j in cluster.jobs()}[job["id"]]
    assert waiting["state"] == "PENDING" and cluster.node_state().startswith("DRAIN"), waiting
    cluster.scontrol("update", f"NodeName={cluster.node}", "State=RESUME")
    resumed = wait_for("the run to resume", lambda: RESUMED.search(read(long_log)), second)
    assert int(resumed.group(1)) == cancelled_at
    wait_for("an epoch after the resume", lambda: saved_epoch(long_dir) > cancelled_at, second)
    # the training process is frozen, so that it reaches its time limit (60-90 s after the job
    # started: SLURM checks every 30 s) before it ends, however fast this CPU trains; SLURM
    # then ends it as at any time limit (SIGTERM, SIGKILL)
    os.kill(int(TRAINER.search(read(long_log)).group(1)), signal.SIGSTOP)
    assert second.wait() != 0
    out = second.output
    timed_out = {j["id"]: j for j in cluster.jobs()}[job["id"]]
    assert timed_out["state"] == "TIMEOUT", (
        f"the long run ({LONG_EPOCHS} epochs) should outlast its 1-minute time limit: "
        f"{timed_out}\n{out[-3000:]}")
    assert "SLURM status is: 'TIMEOUT'" in out, out[-3000:]
    timed_out_at = saved_epoch(long_dir)
    assert cancelled_at < timed_out_at < LONG_EPOCHS

    # 3. the profile's retries (1): cancelled once more, resubmitted within the invocation,
    # resumed again, finished
    before = {j["id"] for j in cluster.jobs()}
    third = Invocation(SLURM_RUN, repo, _env(cluster, CLUSTER_ENV), "third")
    job = wait_for("the long run to be submitted again",
                   lambda: [j for j in long_jobs(cluster) if j["id"] not in before], third)[0]
    wait_for("an epoch after the resume", lambda: saved_epoch(long_dir) > timed_out_at, third)
    assert int(RESUMED.search(read(long_log)).group(1)) == timed_out_at
    cluster.run(["scancel", job["id"]])
    # (the retry resumes from what last.pt holds when the job has ended: checked below)
    retried_from = saved_epoch(long_dir)
    assert third.wait() == 0, third.output[-4000:]
    out = third.output
    assert "Trying to restart job" in out, out[-3000:]
    last = {j["id"]: j for j in long_jobs(cluster)}[third.submitted()[-1]]
    assert last["state"] == "COMPLETED", last
    assert int(RESUMED.search(read(long_log)).group(1)) >= retried_from
    assert max(epochs_in(long_log)) == LONG_EPOCHS

    # the same numbers as the uninterrupted local run
    assert reference.wait() == 0, reference.output[-4000:]
    got, want = results(repo), results(local)
    assert set(got) == set(want) and len(want) == 8, (sorted(got), sorted(want))
    for key in want:
        assert got[key] == want[key], key
