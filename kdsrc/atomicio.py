"""Atomic file writes (no torch import, so the report layer stays light).

A reader, or a writer killed half-way, never sees a partial table or figure: the content goes to a
temporary file in the target's folder, is fsynced, then renamed over the target.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[Path], None], *, suffix: str = ".tmp"
                 ) -> Path:
    """``write(tmp)`` fills a temporary file beside ``path`` (it may also verify it and raise:
    then nothing is left); the file is fsynced and renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(text: str, path: str | Path) -> Path:
    """Write ``text`` as UTF-8 with ``\\n`` line ends (byte-stable across platforms)."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_json(obj, path: str | Path) -> Path:
    import json

    return atomic_write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)
