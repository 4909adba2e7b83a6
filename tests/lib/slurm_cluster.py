"""A one-node SLURM cluster on localhost for the tests (munged, slurmctld, slurmd).

Everything lives in one temporary folder: ``slurm.conf`` and ``gres.conf``, the munge key and
socket, state, spool, logs, pid files and the stand-in GPU device files. Nothing is written
outside it and no system service is touched: the daemons are started in the foreground as
children of the test process (so they are ours to stop and to reap), and the client commands
find the cluster through ``SLURM_CONF`` (``Cluster.env``).

The configuration is the smallest that SLURM 22.05 (Debian 12) and 24.11 accept on one
machine: ``proctrack/linuxproc`` and ``task/none`` (no cgroups), no accounting storage (so
``sacct`` answers that accounting is disabled, and job states are read with ``squeue``, which
keeps finished jobs for ``MinJobAge`` seconds), this host's CPUs and memory as ``slurmd -C``
reports them, one partition, and a ``gpu`` GRES on stand-in character devices (copies of
/dev/null's device number: SLURM only checks that they are devices, and with ``task/none`` it
never restricts access to them), so that ``--gpus=1`` is scheduled and sets
``CUDA_VISIBLE_DEVICES`` exactly as on a GPU node.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

#: the Debian packages that provide the binaries below (.ci/run installs them)
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol",
            "scancel", "sinfo")
PARTITION = "kdsrc"
#: stand-in GPUs on the node: two, so that two one-GPU jobs run side by side on two CPUs
GPUS = 2
#: seconds a finished job stays visible to squeue (there is no accounting database): longer
#: than any test session, so the plugin's squeue status query always finds its jobs
MIN_JOB_AGE = 3600
#: seconds between SIGTERM and SIGKILL when a job is cancelled or reaches its time limit
KILL_WAIT = 5


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_hardware() -> tuple[str, int, int]:
    """(node name, CPUs, RealMemory in MB) as ``slurmd -C`` sees this host."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=60).stdout
    fields = dict(re.findall(r"(\w+)=(\S+)", out))
    return fields["NodeName"], int(fields["CPUs"]), int(fields["RealMemory"])


def _slurm_version() -> tuple[int, int]:
    out = subprocess.run(["slurmd", "-V"], capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"(\d+)\.(\d+)", out)
    if not m:
        raise RuntimeError(f"cannot read the SLURM version from `slurmd -V`: {out!r}")
    return int(m.group(1)), int(m.group(2))


class Cluster:
    """A running one-node cluster; ``env`` is what a client (snakemake, sbatch...) needs."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.node, self.cpus, self.mem_mb = _node_hardware()
        self.version = _slurm_version()
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = self.client_env(os.environ)

    def client_env(self, base) -> dict[str, str]:
        """``base`` with what SLURM's commands need to reach this cluster."""
        # see write_config: srun inside a job must find the same slurm.conf
        return {**base, "SLURM_CONF": str(self.conf),
                "PATH": f"{self.root / 'bin'}{os.pathsep}{base.get('PATH', '')}"}

    # -- configuration -------------------------------------------------------------------------
    def write_config(self) -> None:
        r = self.root
        for sub in ("munge", "state", "spool", "log", "dev", "bin"):
            (r / sub).mkdir(mode=0o755)
        # munged refuses a socket folder that others cannot traverse, and a key others can read
        subprocess.run(["mungekey", "--create", f"--keyfile={r / 'munge/munge.key'}"],
                       check=True, capture_output=True, timeout=60)
        os.chmod(r / "munge/munge.key", 0o600)
        null = os.stat("/dev/null").st_rdev
        for i in range(GPUS):
            os.mknod(r / f"dev/nvidia{i}", 0o666 | stat.S_IFCHR, null)
        # snakemake-executor-plugin-slurm-jobstep runs each job's `srun` with every SLURM_*
        # variable removed, SLURM_CONF included; a real cluster keeps its slurm.conf where
        # srun looks by default (/etc/slurm), which a test must not write. This srun restores it.
        shim = r / "bin/srun"
        shim.write_text(f"#!/bin/sh\nSLURM_CONF={self.conf} exec {shutil.which('srun')} \"$@\"\n")
        shim.chmod(0o755)
        user = pwd.getpwuid(os.geteuid()).pw_name  # the daemons run as the test's user
        conf = f"""\
ClusterName=kdsrctest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r / 'munge/munge.socket'}
SlurmUser={user}
SlurmdUser={user}
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'slurmctld.pid'}
SlurmdPidFile={r / 'slurmd.pid'}
SlurmctldLogFile={r / 'log/slurmctld.log'}
SlurmdLogFile={r / 'log/slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MinJobAge={MIN_JOB_AGE}
# try pending jobs every 2 s (default 60 s): a job waiting for a resumed node starts at once
SchedulerParameters=sched_interval=2,bf_interval=2
KillWait={KILL_WAIT}
ReturnToService=2
GresTypes=gpu
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.mem_mb} Gres=gpu:{GPUS} State=UNKNOWN
PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        self.conf.write_text(conf)
        (r / "gres.conf").write_text("".join(
            f"NodeName={self.node} Name=gpu File={r / f'dev/nvidia{i}'}\n" for i in range(GPUS)))
        if self.version >= (24, 5):
            # newer slurmd set up cgroups unless told not to (no cgroup hierarchy is ours here)
            (r / "cgroup.conf").write_text("CgroupPlugin=disabled\n")

    # -- daemons -------------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> None:
        self.write_config()
        r = self.root
        self._spawn("munged", ["munged", "--foreground", "--force",
                               f"--socket={r / 'munge/munge.socket'}",
                               f"--key-file={r / 'munge/munge.key'}",
                               f"--pid-file={r / 'munge/munged.pid'}",
                               f"--log-file={r / 'log/munged.log'}",
                               f"--seed-file={r / 'munge/munged.seed'}"])
        self._wait(lambda: (r / "munge/munge.socket").exists(), timeout, "munged's socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
        self._wait(lambda: self.scontrol("ping", check=False).returncode == 0, timeout,
                   "slurmctld to answer")
        self._spawn("slurmd", ["slurmd", "-D", "-N", self.node])
        self._wait(lambda: self.node_state() == "IDLE", timeout, "the node to become idle")
        gres = self.scontrol("show", "node", self.node).stdout
        if f"gpu:{GPUS}" not in gres:
            raise RuntimeError(f"SLURM did not accept the stand-in GPUs (Gres in `scontrol show "
                               f"node`: {gres!r}); see {r / 'log/slurmd.log'}")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / f"log/{name}.out", "w")
        # a session of its own: a Ctrl-C in the terminal reaches pytest, not the daemons
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def _wait(self, ok, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for "
                                       f"{what}: {self.log_tail(name)}")
            if ok():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")

    def log_tail(self, name: str, n: int = 15) -> str:
        lines = []
        for f in (self.root / f"log/{name}.out", self.root / f"log/{name}.log"):
            if f.exists():
                lines += f.read_text(errors="replace").splitlines()[-n:]
        return "\n".join(lines)

    def stop(self) -> None:
        """Cancel every job, wait for their processes, stop the daemons (and reap them)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run(["scancel", "--full", f"--partition={PARTITION}"], check=False)
            end = time.monotonic() + 60
            while time.monotonic() < end and self.job_steps_alive():
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)

    def job_steps_alive(self) -> list[int]:
        """Pids of slurmstepd processes of this cluster (their command line names our spool)."""
        return [pid for pid, cmd in processes_mentioning(str(self.root)).items()
                if "slurmstepd" in cmd]

    # -- clients -------------------------------------------------------------------------------
    def run(self, cmd: list[str], *, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                                 f"{proc.stderr.strip()[-2000:]}")
        return proc

    def scontrol(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(["scontrol", *args], check=check)

    def node_state(self) -> str:
        proc = self.run(["sinfo", "-h", "-N", "-n", self.node, "-o", "%T"], check=False)
        return proc.stdout.strip().upper() if proc.returncode == 0 else ""

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still knows (MinJobAge keeps finished ones): id, state, reason,
        name and comment (the SLURM plugin writes rule_<rule>_wildcards_<values> there)."""
        out = self.run(["squeue", "--states=all", "-h", "-o", "%i|%T|%r|%j|%k"]).stdout
        keys = ("id", "state", "reason", "name", "comment")
        return [dict(zip(keys, line.split("|", 4))) for line in out.splitlines() if line.strip()]


def processes_mentioning(text: str) -> dict[int, str]:
    """{pid: command line} of every live process whose command line or environment contains
    ``text`` (zombies have neither, and hold nothing)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmd or text in environ:
            found[int(entry.name)] = cmd
    return found


def start_cluster() -> Cluster:
    """A started cluster in a fresh temporary folder (short: munge's socket path must fit in
    108 bytes). The caller must ``stop_cluster`` it."""
    root = Path(tempfile.mkdtemp(prefix="kdsrc-slurm-", dir="/tmp"))
    root.chmod(0o755)  # munged checks that everyone may traverse its socket's folders
    cluster = Cluster(root)
    try:
        cluster.start()
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    try:
        cluster.stop()
    finally:
        shutil.rmtree(cluster.root, ignore_errors=True)
