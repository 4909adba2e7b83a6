"""The generic layers name no method: the engine, the plan and plan-cost ask a method's class
(hooks of kdsrc.distillers.Distiller) instead of testing its name. Docstrings and comments may
mention methods; code (string constants other than docstrings, identifiers) may not."""

from __future__ import annotations

import ast
from pathlib import Path

from kdsrc.distillers import METHODS

REPO = Path(__file__).resolve().parents[2]
GENERIC = [*sorted((REPO / "kdsrc" / "engine").glob("*.py")), REPO / "kdsrc" / "plan.py",
           REPO / "kdsrc" / "plancost.py"]
#: the two method names the generic layers may hold, as data rather than a branch: the plan's
#: method entry "vanilla" (the student alone, teacher "none") and plan-cost's published anchor
#: figure (a KD run of the official code)
ALLOWED = {("plan.py", "vanilla"), ("plancost.py", "kd")}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                and node.body and isinstance(node.body[0], ast.Expr) \
                and isinstance(node.body[0].value, ast.Constant):
            out.add(id(node.body[0].value))
    return out


def method_mentions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            value = node.value.lower()
            if value in METHODS or "angular" in value:
                found.append(value)
        elif isinstance(node, (ast.Name, ast.Attribute)):
            ident = node.id if isinstance(node, ast.Name) else node.attr
            if "angular" in ident.lower():
                found.append(ident)
    return [f"{path.name}: {v}" for v in found if (path.name, v) not in ALLOWED]


def test_engine_plan_and_plan_cost_name_no_method():
    offenders = [m for f in GENERIC for m in method_mentions(f)]
    assert not offenders, offenders


def test_the_check_finds_a_method_name(tmp_path):
    bad = tmp_path / "loop.py"
    bad.write_text('"""Docstring: angularkd is fine here."""\n'
                   'def f(cfg):\n    return cfg["method"]["name"] == "angularkd"\n')
    assert method_mentions(bad) == ["loop.py: angularkd"]
