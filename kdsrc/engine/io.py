"""Atomic file writes: a reader (or a killed writer) never sees a half-written file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..atomicio import atomic_write, atomic_write_json, atomic_write_text

__all__ = ["atomic_torch_save", "atomic_write_json", "atomic_write_text"]


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    return atomic_write(path, lambda p: torch.save(obj, p))
