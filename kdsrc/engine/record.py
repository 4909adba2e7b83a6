"""The eval record (README "Run configs") and the facts it carries about the environment."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

import kdsrc

RECORD_FIELDS = (
    "dataset", "teacher", "student", "method", "seed", "config_hash",
    "top1_best", "top1_last", "top5_best", "top5_last", "epoch_best", "epochs",
    "wall_s", "samples_per_s", "device", "mode", "precision", "extra_params", "switches",
    "versions", "git_rev",
)


def versions() -> dict[str, str]:
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "kdsrc": kdsrc.__version__}


def git_rev(cwd: str | Path | None = None) -> str:
    """The commit of the working tree (``+dirty`` if it has changes), or ``unknown``."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}"
