"""A GPU-slot holder run as a separate process by test_gpu.py.

usage: gpu_child.py DIR NAME [--barrier] [--jobs-per-gpu J] [--hold S] [--until-release]
                             [--forever] [--no-wait] [--timeout T]

Acquires a device (poll 0.05 s), writes DIR/acq-NAME.json, holds it (at least --hold seconds,
and until DIR/release exists with --until-release, or ~60 s with --forever), writes
DIR/done-NAME.json and releases. Every wait is bounded so a broken test cannot hang forever.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from kdsrc.errors import KdsrcError
from kdsrc.gpu import acquire_device

LIMIT = 30.0  # seconds any wait here may last


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)  # readers never see a partial file


def wait_file(path: Path) -> None:
    end = time.monotonic() + LIMIT
    while not path.exists():
        if time.monotonic() > end:
            sys.exit(f"gave up waiting for {path}")
        time.sleep(0.01)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("dir", type=Path)
    p.add_argument("name")
    p.add_argument("--barrier", action="store_true")
    p.add_argument("--jobs-per-gpu", type=int, default=1)
    p.add_argument("--hold", type=float, default=0.0)
    p.add_argument("--until-release", action="store_true")
    p.add_argument("--forever", action="store_true")
    p.add_argument("--no-wait", action="store_true")
    p.add_argument("--timeout", type=float, default=LIMIT)
    a = p.parse_args()
    if a.barrier:
        (a.dir / f"ready-{a.name}").touch()
        wait_file(a.dir / "go")
    try:
        lease = acquire_device(jobs_per_gpu=a.jobs_per_gpu, wait=not a.no_wait,
                               timeout=a.timeout, poll=0.05)
    except KdsrcError as exc:
        write_json(a.dir / f"err-{a.name}.json", {"error": str(exc)})
        return 3
    t_start = time.monotonic()
    write_json(a.dir / f"acq-{a.name}.json", {
        "pid": os.getpid(), "device": lease.device, "physical_id": lease.physical_id,
        "slot": lease.slot, "mode": lease.mode, "t_start": t_start,
        "cvd": os.environ.get("CUDA_VISIBLE_DEVICES")})
    if a.forever:
        time.sleep(60)
    if a.until_release:
        wait_file(a.dir / "release")
    time.sleep(max(0.0, t_start + a.hold - time.monotonic()))
    write_json(a.dir / f"done-{a.name}.json", {"t_end": time.monotonic()})
    lease.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
