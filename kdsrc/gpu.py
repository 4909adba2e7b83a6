"""GPU slot allocator: which device does this job use?

Snakemake only *counts* ``--resources gpu=N`` (it never picks a device and never sets
``CUDA_VISIBLE_DEVICES``), so every GPU job calls :func:`acquire_device` once, **before CUDA is
initialised**, and trains on the returned ``lease.device``::

    from kdsrc.gpu import acquire_device
    lease = acquire_device(jobs_per_gpu=cfg_jobs_per_gpu)   # keep it for the job's life
    model.to(lease.device)                                  # "cuda:0" or "cpu"

How the device is chosen (first rule that applies wins):

1. **Inherited lease.** The process (or an ancestor, e.g. ``python -m kdsrc.gpu run -- CMD``)
   already holds a lease and ``CUDA_VISIBLE_DEVICES`` still names that device: use it, no new slot.
   So a nested call never deadlocks on its own slot.
2. **Scheduler-assigned.** A cluster scheduler job (``SLURM_JOB_ID``, ``PBS_JOBID`` or
   ``LSB_JOBID`` set) whose ``CUDA_VISIBLE_DEVICES`` names exactly **one** device: take it without
   locking; the scheduler gives that device to this job alone. When the scheduler made *several*
   devices visible (e.g. Snakemake running local jobs inside one ``salloc --gres=gpu:4``), they
   are a pool shared by this allocation's processes, divided with slot locks (rule 3) in a lock
   namespace private to that scheduler job; taking "the first one" would stack every job on it.
3. **Slot locks.** The pool is ``CUDA_VISIBLE_DEVICES`` when set (ids or UUIDs, kept as strings),
   else ``KDSRC_FAKE_GPUS=N`` (N simulated devices "0".."N-1", for tests and dry runs; CUDA is
   never touched), else the GPUs ``nvidia-smi -L`` lists (none when it is missing). Each device
   has ``jobs_per_gpu`` slots, one lock file each; the job takes a non-blocking exclusive
   ``flock`` on a free slot (least-loaded device first, random among equals) and keeps the file
   descriptor open for the rest of the process's life. The kernel drops the lock when the process
   ends in any way (SIGKILL included), so crashed jobs never leave stale locks. Then
   ``CUDA_VISIBLE_DEVICES`` is set to the single chosen entry and the device is ``"cuda:0"``.
   When every slot is busy the job logs one line and waits (jittered back-off, optional timeout),
   or raises at once with ``wait=False``; it never uses a device it was not given.
4. **No GPU** (empty pool): device ``"cpu"``, with one log line saying so.

Lock files: ``<lock_dir>/<host>[.<scheduler>-<jobid>]/gpu-<id>.slot-<k>.lock``; ``lock_dir`` is
the ``lock_dir`` argument, else ``$KDSRC_GPU_LOCK_DIR``, else ``./.gpu_locks`` (git-ignored). The
per-host folder keeps hosts apart when the directory is shared, but ``flock`` over NFS/Lustre is
slow or unreliable: on a network filesystem point ``KDSRC_GPU_LOCK_DIR`` at a node-local
directory (``/tmp/kdsrc_gpu_locks``, ``$TMPDIR``). A held file contains the holder's pid, host,
device, slot and start time (for humans; ``python -m kdsrc.gpu status`` lists them); whether a
slot is taken is decided by the lock alone, never by the file's content.

All jobs sharing a lock directory must use the same ``jobs_per_gpu`` and the same way of naming
devices (indices vs UUIDs); indices from ``nvidia-smi`` are made to mean the same devices to CUDA
by defaulting ``CUDA_DEVICE_ORDER`` to ``PCI_BUS_ID``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fcntl
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

from .errors import ConfigError, KdsrcError

__all__ = ["DeviceLease", "Pool", "acquire_device", "resolve_pool", "slot_status", "main"]

#: environment variables read or written here
ENV_FAKE = "KDSRC_FAKE_GPUS"
ENV_LOCK_DIR = "KDSRC_GPU_LOCK_DIR"
ENV_LEASE = "KDSRC_GPU_LEASE"  # "<entry>|<owner pid>", set while a lease is held (for descendants)
ENV_CVD = "CUDA_VISIBLE_DEVICES"
ENV_ORDER = "CUDA_DEVICE_ORDER"
#: scheduler job-id variables -> short name used in messages and the lock namespace
SCHEDULER_VARS = {"SLURM_JOB_ID": "slurm", "PBS_JOBID": "pbs", "LSB_JOBID": "lsf"}
DEFAULT_LOCK_DIR = ".gpu_locks"

Log = Callable[[str], None]


def _stderr_log(msg: str) -> None:
    print(f"kdsrc.gpu: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the pool


class Pool(NamedTuple):
    """The devices a job may choose from, and where that list came from."""

    entries: list[str]  # device ids / UUIDs as CUDA_VISIBLE_DEVICES would name them
    source: str  # "CUDA_VISIBLE_DEVICES", "KDSRC_FAKE_GPUS" or "nvidia-smi"
    note: str  # human explanation, used when the pool is empty


_VALID_ENTRY = re.compile(r"^(\d+|(GPU|MIG)-[A-Za-z0-9/_.:-]+)$")


def _parse_visible(value: str) -> tuple[list[str], str]:
    """Entries of a CUDA_VISIBLE_DEVICES value, as CUDA reads it: it stops at the first invalid
    entry ("-1", "NoDevFiles", ...), so "" and "-1" mean "no device"."""
    entries: list[str] = []
    for raw in value.split(","):
        item = raw.strip()
        if not _VALID_ENTRY.match(item):
            break
        entries.append(item)
    note = "" if entries else f"CUDA_VISIBLE_DEVICES={value!r} names no device"
    return entries, note


def _nvidia_smi_gpus() -> tuple[list[str], str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return [], "no nvidia-smi on PATH"
    try:
        proc = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return [], f"nvidia-smi -L failed ({exc})"
    if proc.returncode != 0:
        first = (proc.stderr or proc.stdout).strip().splitlines()[:1]
        return [], f"nvidia-smi -L failed (exit {proc.returncode}{': ' + first[0] if first else ''})"
    ids = [m.group(1) for m in re.finditer(r"^GPU (\d+):", proc.stdout, re.MULTILINE)]
    return ids, "" if ids else "nvidia-smi lists no GPU"


def resolve_pool() -> Pool:
    """The device pool of this process (see the module docstring); never initialises CUDA."""
    cvd = os.environ.get(ENV_CVD)
    if cvd is not None:
        entries, note = _parse_visible(cvd)
        return Pool(entries, ENV_CVD, note)
    fake = os.environ.get(ENV_FAKE)
    if fake is not None and fake.strip() != "":
        try:
            n = int(fake)
        except ValueError:
            n = -1
        if n < 0:
            raise ConfigError(f"{ENV_FAKE}={fake!r}: expected a number of simulated GPUs >= 0")
        return Pool([str(i) for i in range(n)], ENV_FAKE, f"{ENV_FAKE}=0" if n == 0 else "")
    entries, note = _nvidia_smi_gpus()
    return Pool(entries, "nvidia-smi", note)


def _scheduler_job() -> tuple[str, str] | None:
    for var, name in SCHEDULER_VARS.items():
        job = os.environ.get(var, "").strip()
        if job:
            return name, job
    return None


# ----------------------------------------------------------------------------- lock files


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text) or "_"


def _host() -> str:
    return socket.gethostname() or "localhost"


def default_lock_dir() -> Path:
    """``$KDSRC_GPU_LOCK_DIR`` if set, else ``./.gpu_locks`` in the current (repo) directory."""
    env = os.environ.get(ENV_LOCK_DIR, "").strip()
    return Path(env) if env else Path.cwd() / DEFAULT_LOCK_DIR


def slot_path(namespace_dir: Path, entry: str, slot: int) -> Path:
    """Lock file of slot ``slot`` of device ``entry``."""
    return namespace_dir / f"gpu-{_safe(entry)}.slot-{slot}.lock"


def _open_lock(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # another user's file: flock works on a read-only descriptor too
        return os.open(path, os.O_RDONLY)


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None when someone else holds it."""
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_held(path: Path) -> bool:
    """Whether another open file holds ``path`` (a shared probe, released at once)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return True
    finally:
        os.close(fd)  # closing drops the probe lock
    return False


def _read_info(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


# ----------------------------------------------------------------------------- the lease


class DeviceLease:
    """The device a job uses. Keep it alive for the job's life; ``release()`` (or leaving a
    ``with`` block) frees the slot early, process exit frees it in any case.

    Attributes: ``device`` ("cuda:0" or "cpu", for torch), ``physical_id`` (the chosen entry of the
    original pool, e.g. "3" or a UUID; None on CPU), ``slot`` (slot index on that device, None
    without a lock), ``mode`` ("lock", "scheduler", "inherited" or "cpu"), ``lock_path``.
    """

    def __init__(self, device: str, physical_id: str | None, slot: int | None, mode: str, *,
                 lock_path: Path | None = None, fd: int | None = None,
                 env_restore: dict[str, str | None] | None = None,
                 env_set: dict[str, str] | None = None) -> None:
        self.device = device
        self.physical_id = physical_id
        self.slot = slot
        self.mode = mode
        self.lock_path = lock_path
        self._fd = fd
        self._env_restore = env_restore or {}
        self._env_set = env_set or {}
        self.released = False

    @property
    def is_cuda(self) -> bool:
        return self.device != "cpu"

    def as_dict(self) -> dict:
        """JSON-ready description, for the run's metadata."""
        return {"device": self.device, "physical_id": self.physical_id, "slot": self.slot,
                "mode": self.mode, "lock_path": str(self.lock_path) if self.lock_path else None,
                "host": _host()}

    def release(self) -> None:
        """Free the slot and restore the environment variables this lease changed (idempotent).
        CUDA keeps the device it read at initialisation; one lease per process is the norm."""
        if self.released:
            return
        self.released = True
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        for key, old in self._env_restore.items():
            if os.environ.get(key) != self._env_set.get(key):
                continue  # changed by someone else since: leave it
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old

    def __enter__(self) -> "DeviceLease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        extra = f", slot={self.slot}" if self.slot is not None else ""
        return (f"DeviceLease(device={self.device!r}, physical_id={self.physical_id!r}{extra}, "
                f"mode={self.mode!r}{', released' if self.released else ''})")


def _parent_pid(pid: int) -> int | None:
    if pid == os.getpid():
        return os.getppid()
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _is_self_or_ancestor(pid: int) -> bool:
    current: int | None = os.getpid()
    for _ in range(256):
        if current is None or current <= 0:
            return False
        if current == pid:
            return True
        if current == 1:
            return False
        current = _parent_pid(current)
    return False


def _inherited(cvd_entries: list[str]) -> tuple[str, int] | None:
    marker = os.environ.get(ENV_LEASE, "")
    entry, _, pid_text = marker.rpartition("|")
    if not entry or not pid_text.isdigit() or cvd_entries != [entry]:
        return None
    pid = int(pid_text)
    return (entry, pid) if _is_self_or_ancestor(pid) else None


def _cuda_already_initialised() -> bool:
    torch = sys.modules.get("torch")
    try:
        return bool(torch is not None and torch.cuda.is_initialized())
    except Exception:  # a partial or odd torch import: assume not
        return False


def _pin(entry: str, pool: Pool, mode: str, slot: int | None, log: Log, *, lock_path=None,
         fd=None, order: str | None = None) -> DeviceLease:
    """Point CUDA at ``entry`` alone and build the lease."""
    device = "cuda:0"
    if _cuda_already_initialised():
        # CUDA read CUDA_VISIBLE_DEVICES already; the pool (if it came from there) is its numbering
        device = f"cuda:{pool.entries.index(entry)}"
        log(f"warning: CUDA was initialised before acquire_device(); setting {ENV_CVD} has no "
            f"effect in this process, using {device} (call acquire_device before touching CUDA)")
    env_set = {ENV_CVD: entry, ENV_LEASE: f"{entry}|{os.getpid()}"}
    if order is not None and ENV_ORDER not in os.environ:
        env_set[ENV_ORDER] = order
    restore = {key: os.environ.get(key) for key in env_set}
    os.environ.update(env_set)
    return DeviceLease(device, entry, slot, mode, lock_path=lock_path, fd=fd,
                       env_restore=restore, env_set=env_set)


# ----------------------------------------------------------------------------- acquisition


def _namespace_dir(lock_dir: Path, scheduler: tuple[str, str] | None) -> Path:
    name = _safe(_host())
    if scheduler is not None:
        name += f".{scheduler[0]}-{_safe(scheduler[1])}"
    return lock_dir / name


def _candidates(ns: Path, entries: list[str], jobs_per_gpu: int, rng: random.Random):
    """(entry, slot, path) in the order to try: spread over devices before stacking on one."""
    order = list(entries)
    rng.shuffle(order)
    keyed = []
    for pos, entry in enumerate(order):
        paths = [slot_path(ns, entry, k) for k in range(jobs_per_gpu)]
        if jobs_per_gpu == 1:
            keyed.append((0, pos, entry, 0, paths[0]))
            continue
        busy = [_is_held(p) for p in paths]
        load = sum(busy)
        free = [k for k in range(jobs_per_gpu) if not busy[k]]
        # the i-th free slot of a device with `load` holders would make it hold load+i+1 jobs
        for i, k in enumerate(free):
            keyed.append((load + i, pos, entry, k, paths[k]))
        # slots seen busy are still tried last, in case they were freed meanwhile
        for k in range(jobs_per_gpu):
            if busy[k]:
                keyed.append((jobs_per_gpu + 1, pos, entry, k, paths[k]))
    keyed.sort(key=lambda t: (t[0], t[1]))
    return [(entry, k, path) for _, _, entry, k, path in keyed]


def _holders(ns: Path, entries: list[str], jobs_per_gpu: int) -> str:
    found = []
    for entry in entries:
        for k in range(jobs_per_gpu):
            info = _read_info(slot_path(ns, entry, k))
            pid = re.search(r"\bpid=(\d+)", info)
            if pid:
                found.append(f"gpu {entry} slot {k}: pid {pid.group(1)}")
    return "; ".join(found) if found else "holders unknown"


def acquire_device(*, jobs_per_gpu: int = 1, lock_dir: str | Path | None = None, wait: bool = True,
                   timeout: float | None = None, poll: float = 1.0,
                   log: Log | None = _stderr_log) -> DeviceLease:
    """Choose this process's device and return its :class:`DeviceLease` (see the module doc).

    ``jobs_per_gpu``: how many jobs may share one device (>= 1). ``lock_dir``: where slot lock
    files live (default ``$KDSRC_GPU_LOCK_DIR`` or ``./.gpu_locks``). ``wait``: when every slot is
    busy, wait (logging one line) instead of raising :class:`KdsrcError` at once. ``timeout``:
    seconds to wait at most (None: forever), then :class:`KdsrcError`. ``poll``: base retry
    interval in seconds (jittered, growing to 4x). ``log``: one-line messages (stderr by default;
    None for silence). Call it before CUDA is initialised.
    """
    if isinstance(jobs_per_gpu, bool) or not isinstance(jobs_per_gpu, int) or jobs_per_gpu < 1:
        raise ConfigError(f"jobs_per_gpu must be an integer >= 1, got {jobs_per_gpu!r}")
    if not isinstance(poll, (int, float)) or not poll > 0:
        raise ConfigError(f"poll must be a number of seconds > 0, got {poll!r}")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
        raise ConfigError(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")
    log = log or (lambda _msg: None)

    pool = resolve_pool()
    if pool.source == ENV_CVD:
        inherited = _inherited(pool.entries)
        if inherited is not None:
            entry, owner = inherited
            who = "this process" if owner == os.getpid() else f"parent process {owner}"
            log(f"using GPU {entry} already leased by {who} -> cuda:0")
            return DeviceLease("cuda:0", entry, None, "inherited")
    scheduler = _scheduler_job() if pool.source == ENV_CVD else None
    if scheduler is not None and len(pool.entries) == 1:
        entry = pool.entries[0]
        lease = _pin(entry, pool, "scheduler", None, log)
        log(f"using GPU {entry} assigned by {scheduler[0].upper()} (job {scheduler[1]}) -> "
            f"{lease.device}; no slot lock (the scheduler gives it to this job alone)")
        return lease
    if not pool.entries:
        log(f"no GPU available ({pool.note}): this job runs on the CPU")
        return DeviceLease("cpu", None, None, "cpu")

    root = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    ns = _namespace_dir(root, scheduler)
    try:
        ns.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KdsrcError(f"cannot create the GPU lock directory {ns}: {exc}; set {ENV_LOCK_DIR} "
                         "to a writable, node-local directory") from exc
    n_slots = len(pool.entries) * jobs_per_gpu
    rng = random.Random(int.from_bytes(os.urandom(8), "little") ^ os.getpid())
    deadline = None if timeout is None else time.monotonic() + timeout
    attempt = 0
    while True:
        try:
            for entry, k, path in _candidates(ns, pool.entries, jobs_per_gpu, rng):
                fd = _try_lock(path)
                if fd is not None:
                    break
            else:
                fd = None
        except OSError as exc:
            raise KdsrcError(f"cannot use GPU lock files in {ns}: {exc}; set {ENV_LOCK_DIR} to a "
                             "writable, node-local directory") from exc
        if fd is not None:
            break
        where = (f"{len(pool.entries)} device(s) x {jobs_per_gpu} job(s) per GPU from "
                 f"{pool.source}; {_holders(ns, pool.entries, jobs_per_gpu)}; locks in {ns}")
        if not wait:
            raise KdsrcError(f"all {n_slots} GPU slots busy ({where}) and waiting is disabled")
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise KdsrcError(f"timed out after {timeout:g}s waiting for a GPU slot: all {n_slots} "
                             f"slots busy ({where})")
        if attempt == 0:
            limit = "no timeout" if timeout is None else f"timeout {timeout:g}s"
            log(f"all {n_slots} GPU slots busy, waiting... ({where}; {limit})")
        delay = min(poll * 1.5 ** attempt, 4 * poll) * rng.uniform(0.5, 1.5)
        if deadline is not None:
            delay = min(delay, max(deadline - now, 0.0))
        time.sleep(delay)
        attempt += 1

    started = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    info = (f"pid={os.getpid()} host={_host()} device={entry} slot={k} jobs_per_gpu={jobs_per_gpu} "
            f"since={started} cmd={' '.join(sys.argv)[:300]}\n")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
    except OSError:
        pass  # read-only descriptor (another user's file): the lock is what counts
    order = "PCI_BUS_ID" if pool.source == "nvidia-smi" else None
    lease = _pin(entry, pool, "lock", k, log, lock_path=path, fd=fd, order=order)
    log(f"using GPU {entry}, slot {k} ({jobs_per_gpu} job(s) per GPU, {n_slots} slots in all, pool "
        f"from {pool.source}) -> {lease.device}, {ENV_CVD}={entry}")
    return lease


# ----------------------------------------------------------------------------- status & CLI


def slot_status(lock_dir: str | Path | None = None) -> list[dict]:
    """Every slot lock file under ``lock_dir``: namespace, file, held (by a live process on this
    host's kernel), and the holder info written into it."""
    root = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    rows = []
    for path in sorted(root.glob("*/gpu-*.slot-*.lock")):
        held = _is_held(path)
        rows.append({"namespace": path.parent.name, "file": path.name, "path": str(path),
                     "held": held, "info": _read_info(path) if held else ""})
    return rows


def _cmd_status(args) -> int:
    root = Path(args.lock_dir) if args.lock_dir else default_lock_dir()
    try:
        pool = resolve_pool()
        print(f"pool: {len(pool.entries)} device(s) from {pool.source}"
              + (f" ({', '.join(pool.entries)})" if pool.entries else f" ({pool.note})"))
    except KdsrcError as exc:
        print(f"pool: {exc}")
    rows = slot_status(root)
    print(f"lock dir: {root}" + ("" if rows else " (no slot files)"))
    for row in rows:
        state = f"HELD  {row['info']}" if row["held"] else "free"
        print(f"  {row['namespace']}/{row['file']}: {state}")
    return 0


def _cmd_run(args) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise ConfigError("run: give a command after --")
    lease = acquire_device(jobs_per_gpu=args.jobs_per_gpu, lock_dir=args.lock_dir,
                           wait=not args.no_wait, timeout=args.timeout)
    if lease._fd is not None:
        os.set_inheritable(lease._fd, True)  # the exec'd command keeps the lock for its life
    try:
        os.execvp(cmd[0], cmd)
    except OSError as exc:
        raise KdsrcError(f"run: cannot execute {cmd[0]!r}: {exc}") from exc
    return 127  # not reached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdsrc.gpu", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="list GPU slot lock files and who holds them")
    st.add_argument("--lock-dir", default=None, help=f"default: ${ENV_LOCK_DIR} or ./{DEFAULT_LOCK_DIR}")
    st.set_defaults(func=_cmd_status)
    rn = sub.add_parser("run", help="acquire a GPU slot, then exec CMD holding it (CMD sees "
                                    f"{ENV_CVD} set to the chosen device)")
    rn.add_argument("--lock-dir", default=None)
    rn.add_argument("--jobs-per-gpu", type=int, default=1)
    rn.add_argument("--timeout", type=float, default=None)
    rn.add_argument("--no-wait", action="store_true")
    rn.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    rn.set_defaults(func=_cmd_run)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KdsrcError as exc:
        print(f"kdsrc.gpu: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
