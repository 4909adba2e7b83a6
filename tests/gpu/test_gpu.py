"""kdsrc.gpu: the GPU slot allocator, on simulated devices (KDSRC_FAKE_GPUS) and CPU only.

Concurrency is tested with real child processes (tests/gpu/gpu_child.py) that take flock slots
in a per-test lock directory; every wait is bounded, and holders that must overlap are kept
holding until the test releases them, so the checks do not depend on timing luck.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from kdsrc import gpu
from kdsrc.errors import ConfigError, KdsrcError
from kdsrc.gpu import acquire_device

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("gpu_child.py")
#: variables that would change which rule acquire_device applies
SCRUB = ["CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "KDSRC_FAKE_GPUS", "KDSRC_GPU_LEASE",
         "KDSRC_GPU_LOCK_DIR", *gpu.SCHEDULER_VARS]
WAIT = 20.0  # bound on any wait for child processes


def wait_until(pred, what: str, limit: float = WAIT):
    end = time.monotonic() + limit
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def clean_env(tmp_path):
    """In-process tests: a scrubbed environment with a private lock dir, restored afterwards
    (acquire_device sets CUDA_VISIBLE_DEVICES & co. in os.environ)."""
    saved = dict(os.environ)
    for key in SCRUB:
        os.environ.pop(key, None)
    os.environ["KDSRC_GPU_LOCK_DIR"] = str(tmp_path / "locks")
    yield
    os.environ.clear()
    os.environ.update(saved)


class Kids:
    """Starts gpu_child.py processes sharing tmp_path; kills leftovers at teardown."""

    def __init__(self, tmp_path: Path):
        self.dir = tmp_path / "kids"
        self.dir.mkdir()
        self.procs: dict[str, subprocess.Popen] = {}

    def env(self, **extra) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SCRUB}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
        env["KDSRC_GPU_LOCK_DIR"] = os.environ["KDSRC_GPU_LOCK_DIR"]
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start(self, name: str, *args: str, **env) -> subprocess.Popen:
        err = open(self.dir / f"stderr-{name}.txt", "w")
        proc = subprocess.Popen([sys.executable, str(CHILD), str(self.dir), name, *args],
                                env=self.env(**env), stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
        err.close()
        self.procs[name] = proc
        return proc

    def acq(self, name: str) -> dict | None:
        path = self.dir / f"acq-{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def wait_acq(self, name: str) -> dict:
        return wait_until(lambda: self.acq(name), f"{name} to acquire a slot")

    def stderr(self, name: str) -> str:
        return (self.dir / f"stderr-{name}.txt").read_text()

    def barrier(self, names) -> None:
        wait_until(lambda: all((self.dir / f"ready-{n}").exists() for n in names), "children ready")
        (self.dir / "go").touch()

    def release(self) -> None:
        (self.dir / "release").touch()

    def join(self, names=None) -> None:
        for name in names or list(self.procs):
            rc = self.procs[name].wait(timeout=WAIT)
            assert rc == 0, f"child {name} exited {rc}: {self.stderr(name)}"

    def intervals(self, names) -> list[tuple[float, float, str, int]]:
        out = []
        for n in names:
            acq = self.acq(n)
            done = json.loads((self.dir / f"done-{n}.json").read_text())
            out.append((acq["t_start"], done["t_end"], acq["physical_id"], acq["slot"]))
        return out

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=WAIT)


@pytest.fixture
def kids(tmp_path):
    k = Kids(tmp_path)
    yield k
    k.kill_all()


def max_overlap(intervals) -> int:
    events = sorted([(s, 1) for s, *_ in intervals] + [(e, -1) for _, e, *_ in intervals],
                    key=lambda ev: (ev[0], ev[1]))  # an end before a start at the same instant
    best = cur = 0
    for _, delta in events:
        cur += delta
        best = max(best, cur)
    return best


def assert_no_slot_shared(intervals) -> None:
    for i, (s1, e1, d1, k1) in enumerate(intervals):
        for s2, e2, d2, k2 in intervals[i + 1:]:
            if (d1, k1) == (d2, k2):
                assert e1 <= s2 or e2 <= s1, f"slot {d1}/{k1} held twice at once"


# ----------------------------------------------------------------------------- processes


def test_four_processes_get_four_distinct_devices(kids):
    names = [f"p{i}" for i in range(4)]
    for n in names:
        kids.start(n, "--barrier", "--until-release", KDSRC_FAKE_GPUS=4)
    kids.barrier(names)
    got = [kids.wait_acq(n) for n in names]  # all four hold at the same time here
    assert sorted(g["physical_id"] for g in got) == ["0", "1", "2", "3"]
    assert all(g["device"] == "cuda:0" and g["mode"] == "lock" and g["slot"] == 0 for g in got)
    assert all(g["cvd"] == g["physical_id"] for g in got)
    kids.release()
    kids.join()
    assert_no_slot_shared(kids.intervals(names))


def test_eight_processes_four_slots_wait_then_succeed(kids):
    names = [f"p{i}" for i in range(8)]
    for n in names:
        kids.start(n, "--barrier", "--until-release", "--hold", "1", KDSRC_FAKE_GPUS=4)
    kids.barrier(names)
    # first wave: four hold (until released), the other four must be waiting
    wait_until(lambda: sum(kids.acq(n) is not None for n in names) >= 4, "four holders")
    waiting = wait_until(lambda: [n for n in names if "GPU slots busy, waiting" in kids.stderr(n)]
                         if sum("GPU slots busy, waiting" in kids.stderr(n) for n in names) >= 4
                         else None, "four waiters")
    time.sleep(0.3)
    holders = [n for n in names if kids.acq(n) is not None]
    assert len(holders) == 4 and not set(holders) & set(waiting)
    assert sorted(kids.acq(n)["physical_id"] for n in holders) == ["0", "1", "2", "3"]
    for n in waiting:  # one log line per wait, not one per retry
        assert kids.stderr(n).count("GPU slots busy") == 1
    kids.release()
    kids.join()
    spans = kids.intervals(names)
    assert max_overlap(spans) <= 4
    assert_no_slot_shared(spans)


def test_two_jobs_per_gpu(kids):
    names = [f"p{i}" for i in range(4)]
    for n in names:
        kids.start(n, "--barrier", "--until-release", "--jobs-per-gpu", "2", KDSRC_FAKE_GPUS=2)
    kids.barrier(names)
    got = [kids.wait_acq(n) for n in names]
    per_device = {d: sorted(g["slot"] for g in got if g["physical_id"] == d) for d in ("0", "1")}
    assert per_device == {"0": [0, 1], "1": [0, 1]}
    # a fifth job finds every slot busy
    kids.start("extra", "--no-wait", "--jobs-per-gpu", "2", KDSRC_FAKE_GPUS=2)
    assert kids.procs["extra"].wait(timeout=WAIT) == 3
    kids.release()
    kids.join(names)
    assert_no_slot_shared(kids.intervals(names))


def test_spreads_over_devices_before_stacking(kids):
    """With jobs_per_gpu=2 the second job goes to the idle device, not next to the first."""
    first = kids.start("a", "--until-release", "--jobs-per-gpu", "2", KDSRC_FAKE_GPUS=2)
    a = kids.wait_acq("a")
    kids.start("b", "--until-release", "--jobs-per-gpu", "2", KDSRC_FAKE_GPUS=2)
    b = kids.wait_acq("b")
    assert a["physical_id"] != b["physical_id"]
    assert first.poll() is None
    kids.release()
    kids.join()


def test_sigkill_frees_the_slot(kids):
    holder = kids.start("holder", "--forever", KDSRC_FAKE_GPUS=1)
    kids.wait_acq("holder")
    kids.start("waiter", KDSRC_FAKE_GPUS=1)
    wait_until(lambda: "GPU slots busy, waiting" in kids.stderr("waiter"), "the waiter to wait")
    assert kids.acq("waiter") is None
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=WAIT)
    t0 = time.monotonic()
    got = wait_until(lambda: kids.acq("waiter"), "the waiter to take the freed slot", limit=10)
    assert time.monotonic() - t0 < 5
    assert got["physical_id"] == "0" and got["slot"] == 0
    kids.join(["waiter"])


def test_sigkill_frees_the_slot_for_a_new_process(kids):
    holder = kids.start("holder", "--forever", KDSRC_FAKE_GPUS=1)
    kids.wait_acq("holder")
    holder.kill()
    holder.wait(timeout=WAIT)
    os.environ["KDSRC_FAKE_GPUS"] = "1"
    t0 = time.monotonic()
    with acquire_device(wait=False, log=None) as lease:
        assert lease.physical_id == "0" and lease.slot == 0
    assert time.monotonic() - t0 < 2


# ----------------------------------------------------------------------------- pool rules


def test_cuda_visible_devices_restricts_the_pool(kids, tmp_path):
    os.environ["CUDA_VISIBLE_DEVICES"] = "3,5"
    kids.start("other", "--until-release", CUDA_VISIBLE_DEVICES="3,5")
    other = kids.wait_acq("other")
    assert other["physical_id"] in {"3", "5"} and other["cvd"] == other["physical_id"]
    lines = []
    lease = acquire_device(wait=False, log=lines.append)
    mine = {"3": "5", "5": "3"}[other["physical_id"]]
    assert (lease.device, lease.physical_id, lease.slot, lease.mode) == ("cuda:0", mine, 0, "lock")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == mine
    assert lease.lock_path.name == f"gpu-{mine}.slot-0.lock"
    assert lease.lock_path.is_relative_to(tmp_path / "locks")
    assert f"pid={os.getpid()}" in lease.lock_path.read_text()
    assert any(f"using GPU {mine}" in line for line in lines)
    lease.release()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"  # restored
    assert "KDSRC_GPU_LEASE" not in os.environ
    assert lease.lock_path.read_text() == ""
    kids.release()
    kids.join()


def test_uuid_entries_are_kept_as_strings():
    os.environ["CUDA_VISIBLE_DEVICES"] = "GPU-8f3b1c2a-0000-1111-2222-333344445555"
    with acquire_device(log=None) as lease:
        assert lease.physical_id == "GPU-8f3b1c2a-0000-1111-2222-333344445555"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == lease.physical_id


def test_slurm_single_device_is_taken_without_locks(tmp_path, kids):
    # a (non-scheduler) process holds device 2's slot lock: the SLURM job ignores locks entirely
    kids.start("other", "--until-release", CUDA_VISIBLE_DEVICES="2")
    assert kids.wait_acq("other")["mode"] == "lock"
    os.environ.update(SLURM_JOB_ID="4242", CUDA_VISIBLE_DEVICES="2")
    lines = []
    lease = acquire_device(wait=False, log=lines.append)
    assert (lease.device, lease.physical_id, lease.slot, lease.mode) == ("cuda:0", "2", None, "scheduler")
    assert lease.lock_path is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2"
    assert len(lines) == 1 and "SLURM" in lines[0] and "4242" in lines[0]
    lease.release()
    kids.release()
    kids.join()


def test_slurm_several_visible_devices_are_divided_with_locks(kids, tmp_path):
    env = {"SLURM_JOB_ID": "77", "CUDA_VISIBLE_DEVICES": "0,1"}
    os.environ.update(env)
    kids.start("other", "--until-release", **env)
    other = kids.wait_acq("other")
    lease = acquire_device(wait=False, log=None)
    assert lease.mode == "lock" and {lease.physical_id, other["physical_id"]} == {"0", "1"}
    assert lease.lock_path.parent.name.endswith(".slurm-77")  # namespace private to the job
    lease.release()
    kids.release()
    kids.join()


@pytest.mark.parametrize("env", [{"KDSRC_FAKE_GPUS": "0"}, {"CUDA_VISIBLE_DEVICES": ""},
                                 {"CUDA_VISIBLE_DEVICES": "-1"}, {"PATH": ""},
                                 {"CUDA_VISIBLE_DEVICES": "NoDevFiles", "SLURM_JOB_ID": "1"}])
def test_empty_pool_runs_on_cpu(env, tmp_path):
    os.environ.update(env)
    lines = []
    lease = acquire_device(log=lines.append)
    assert (lease.device, lease.physical_id, lease.slot, lease.mode) == ("cpu", None, None, "cpu")
    assert len(lines) == 1 and "runs on the CPU" in lines[0]
    assert not (tmp_path / "locks").exists()
    lease.release()


def test_pool_from_nvidia_smi(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-aaa)'\n"
                   "echo 'GPU 1: NVIDIA H100 (UUID: GPU-bbb)'\necho 'GPU 2: NVIDIA H100 (UUID: GPU-ccc)'\n")
    smi.chmod(0o755)
    os.environ["PATH"] = str(bin_dir)
    pool = gpu.resolve_pool()
    assert pool.entries == ["0", "1", "2"] and pool.source == "nvidia-smi"
    with acquire_device(log=None) as lease:
        assert lease.physical_id in pool.entries
        assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # ids mean what nvidia-smi says
    assert "CUDA_DEVICE_ORDER" not in os.environ


def test_nested_acquire_reuses_the_lease():
    """A second call in the same process (or a child) must not wait for its own slot."""
    os.environ["KDSRC_FAKE_GPUS"] = "1"
    with acquire_device(log=None) as outer:
        inner = acquire_device(wait=False, log=None)
        assert (inner.mode, inner.physical_id, inner.device) == ("inherited", outer.physical_id, "cuda:0")
        inner.release()  # a no-op for the lock
        assert gpu._is_held(outer.lock_path)


def test_cuda_initialised_early_uses_pool_index(monkeypatch):
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_initialized=lambda: True))
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    os.environ["CUDA_VISIBLE_DEVICES"] = "4,6"
    lines = []
    with acquire_device(log=lines.append) as lease:
        assert lease.device == f"cuda:{['4', '6'].index(lease.physical_id)}"
        assert any("initialised before" in line for line in lines)


# ----------------------------------------------------------------------------- busy / errors


def test_no_wait_raises_when_busy(kids):
    kids.start("holder", "--until-release", KDSRC_FAKE_GPUS=1)
    kids.wait_acq("holder")
    os.environ["KDSRC_FAKE_GPUS"] = "1"
    t0 = time.monotonic()
    with pytest.raises(KdsrcError, match="all 1 GPU slots busy"):
        acquire_device(wait=False, log=None)
    assert time.monotonic() - t0 < 2
    kids.release()
    kids.join()


def test_timeout_raises_after_one_log_line(kids):
    kids.start("holder", "--until-release", KDSRC_FAKE_GPUS=1)
    holder = kids.wait_acq("holder")
    os.environ["KDSRC_FAKE_GPUS"] = "1"
    lines = []
    t0 = time.monotonic()
    with pytest.raises(KdsrcError, match="timed out after 0.6s") as err:
        acquire_device(timeout=0.6, poll=0.05, log=lines.append)
    elapsed = time.monotonic() - t0
    assert 0.6 <= elapsed < 5
    assert f"pid {holder['pid']}" in str(err.value)  # names who holds the slot
    assert len(lines) == 1 and lines[0].startswith("all 1 GPU slots busy, waiting")
    kids.release()
    kids.join()


@pytest.mark.parametrize("kwargs", [{"jobs_per_gpu": 0}, {"jobs_per_gpu": -2}, {"jobs_per_gpu": 1.5},
                                    {"jobs_per_gpu": True}, {"poll": 0}, {"timeout": -1}])
def test_bad_arguments(kwargs):
    os.environ["KDSRC_FAKE_GPUS"] = "1"
    with pytest.raises(ConfigError):
        acquire_device(log=None, **kwargs)


@pytest.mark.parametrize("value", ["two", "-1"])
def test_bad_fake_gpus(value):
    os.environ["KDSRC_FAKE_GPUS"] = value
    with pytest.raises(ConfigError, match="KDSRC_FAKE_GPUS"):
        acquire_device(log=None)


def test_lock_dir_argument_wins_over_env(tmp_path):
    os.environ["KDSRC_FAKE_GPUS"] = "1"
    with acquire_device(lock_dir=tmp_path / "mine", log=None) as lease:
        assert lease.lock_path.is_relative_to(tmp_path / "mine")
        assert lease.lock_path.parent.parent == tmp_path / "mine"  # <lock_dir>/<host>/gpu-...


def test_unwritable_lock_dir_is_a_kdsrc_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    os.environ["KDSRC_FAKE_GPUS"] = "1"
    with pytest.raises(KdsrcError, match="GPU lock directory"):
        acquire_device(lock_dir=blocker / "locks", log=None)


# ----------------------------------------------------------------------------- CLI


def test_status_cli_lists_holders(kids):
    kids.start("holder", "--until-release", KDSRC_FAKE_GPUS=2)
    holder = kids.wait_acq("holder")
    out = subprocess.run([sys.executable, "-m", "kdsrc.gpu", "status"], env=kids.env(KDSRC_FAKE_GPUS=2),
                         capture_output=True, text=True, timeout=WAIT, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "pool: 2 device(s) from KDSRC_FAKE_GPUS" in out.stdout
    held = [line for line in out.stdout.splitlines() if "HELD" in line]
    assert len(held) == 1 and f"pid={holder['pid']}" in held[0]
    assert f"gpu-{holder['physical_id']}.slot-0.lock" in held[0]
    kids.release()
    kids.join()


def test_run_cli_holds_the_slot_for_the_command(kids):
    """`python -m kdsrc.gpu run -- CMD` keeps the lock across exec; a nested acquire inside CMD
    reuses it instead of deadlocking on the single slot."""
    script = ("import os; from kdsrc.gpu import acquire_device, slot_status;"
              "l = acquire_device(wait=False, log=None);"
              "print(os.environ['CUDA_VISIBLE_DEVICES'], l.mode, sum(r['held'] for r in slot_status()))")
    out = subprocess.run([sys.executable, "-m", "kdsrc.gpu", "run", "--no-wait", "--", sys.executable,
                          "-c", script], env=kids.env(KDSRC_FAKE_GPUS=1), capture_output=True, text=True,
                         timeout=WAIT, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "inherited", "1"]  # the exec'd command holds the lock
    # and the slot is free again once the command exited
    os.environ["KDSRC_FAKE_GPUS"] = "1"
    with acquire_device(wait=False, log=None) as lease:
        assert lease.physical_id == "0"
