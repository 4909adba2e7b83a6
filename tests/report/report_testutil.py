"""Shared constants and helpers of the report tests (conftest.py puts this folder on sys.path).

Fixture records (``fixtures/eval``, laid out as ``results/eval``): CIFAR-100, pairs
resnet56->resnet20 and resnet32x4->resnet8x4, methods kd, crd, angularkd_crd, seeds 0 and 1,
the two students trained alone (teacher ``none``, method ``vanilla``) and teacher records for
resnet56 (published_top1 72.34) and resnet32x4 (published_top1 null). ``fixtures/
published_cifar100.csv`` is a copy of the shared reference file.

Golden files (``golden/{T}.tex|.md|.csv``) are compared byte for byte. After an intended change
of the output, regenerate them and review the diff::

    KDSRC_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/report -q
    git diff tests/report/golden
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
EVAL = FIXTURES / "eval"
PUBLISHED = FIXTURES / "published_cifar100.csv"
GOLDEN = HERE / "golden"
PAIRS = [["resnet56", "resnet20"], ["resnet32x4", "resnet8x4"]]

SPECS = {
    "T1": {"kind": "grid", "title": "Same-architecture pairs",
           "caption": "Top-1 accuracy (%) on CIFAR-100, mean ± std over seeds.",
           "label": "tab:same_arch", "pairs": PAIRS,
           "methods": ["vanilla", "kd", "crd", "angularkd_crd"], "teacher_column": True,
           "compare": "crd"},
    "T2": {"kind": "grid", "title": "Last-epoch accuracy", "caption": "RepDistiller convention.",
           "label": "tab:last", "metric": "top1_last", "pairs": PAIRS,
           "methods": ["vanilla", "kd", "dkd", "crd", "angularkd_crd"], "compare": "angularkd_crd",
           "published_names": {"angularkd_crd": "angularkd"}},
    "T3": {"kind": "plugin", "title": "Angular-KD as a plug-in", "label": "tab:plugin",
           "pairs": PAIRS, "bases": {"crd": "angularkd_crd", "kd": "angularkd_kd"}},
    "T4": {"kind": "ablation", "title": "Ablation on resnet32x4 -> resnet8x4",
           "label": "tab:ablation", "pair": ["resnet32x4", "resnet8x4"],
           "methods": ["angularkd_crd", "crd", "kd", "angularkd_crd_clean"],
           "row_labels": {"angularkd_crd": "official preset",
                          "angularkd_crd_clean": "clean (no warm-up)"}},
    "T5": {"kind": "teachers", "title": "Teachers",
           "caption": "Our evaluation of the teacher checkpoints.", "label": "tab:teachers",
           "teachers": ["resnet56", "resnet32x4", "wrn_40_2"]},
}


def updating_golden() -> bool:
    return os.environ.get("KDSRC_UPDATE_GOLDEN") == "1"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    data = text.encode("utf-8")
    if updating_golden():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return
    assert path.exists(), (f"golden file {path} is missing; generate it with "
                           "KDSRC_UPDATE_GOLDEN=1 and review it")
    want = path.read_bytes()
    if want != data:
        diff = "".join(difflib.unified_diff(want.decode("utf-8").splitlines(True),
                                            text.splitlines(True), f"golden/{name}", "rendered"))
        pytest.fail(f"{name} differs from its golden file (KDSRC_UPDATE_GOLDEN=1 regenerates "
                    f"after an intended change):\n{diff}")


def find(records: list[dict], **key) -> dict:
    hits = [r for r in records if all(r.get(k) == v for k, v in key.items())]
    assert len(hits) == 1, (key, len(hits))
    return hits[0]
