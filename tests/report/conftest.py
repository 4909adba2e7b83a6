"""Fixtures of the report tests; constants and helpers live in report_testutil.py."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_testutil import EVAL, SPECS  # noqa: E402


@pytest.fixture
def specs() -> dict:
    return copy.deepcopy(SPECS)


@pytest.fixture
def run_records() -> list[dict]:
    """The fixture records as dicts (a fresh copy per test, safe to edit)."""
    return [json.loads(p.read_text()) for p in sorted(EVAL.rglob("*.json"))]
