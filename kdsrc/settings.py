"""Declared settings: each configurable value is declared once — name, type, default, allowed
values, one line of meaning — and that declaration validates it everywhere: when a plan loads
(every run resolved before any job), in ``kdsrc train``, in the plan schema (solver and run keys)
and in ``kdsrc methods -v``.

A :class:`Setting` checks one value: its type (integers are accepted where a number is, bools
never are), finiteness (NaN and infinities are rejected everywhere), a range, a fixed set of
choices, list shapes, and extra literal values a setting allows beside its range (TeKAP's ``-1`` =
"the variant's value", Angular-KD's ``"loss"`` temperature). Errors name the key, the value and
what is allowed.

``identity_at_default``: whether the setting is part of a run's identity (``config_hash``, the
rule params Snakemake compares) while it holds its default. Every setting declared when results
were first recorded is (their hashes must not change). A setting added later is declared with
``identity_at_default=False``: at its default it stays out of the hash and the params, so
declaring it retrains nothing; set to another value it is part of the run's identity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from .errors import ConfigError

#: value types a setting may have
TYPES = ("number", "integer", "bool", "choice", "numbers", "integers", "path", "mapping")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _same(a: Any, b: Any) -> bool:
    """Equal as settings: numbers by value (-1 == -1.0), anything else by value and type."""
    if _is_number(a) and _is_number(b):
        return a == b
    return type(a) is type(b) and a == b


def _fmt(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Setting:
    """One declared setting. Bounds: ``low`` <= v, ``above`` < v, v <= ``high``
    (each optional). For list types the bounds apply to every item."""

    name: str
    default: Any
    meaning: str
    type: str = "number"
    low: float | None = None
    above: float | None = None
    high: float | None = None
    choices: tuple = ()
    #: None is allowed (a preset or the recipe decides the value)
    nullable: bool = False
    #: literal values allowed beside the type and range (e.g. -1 = "the variant's value")
    also: tuple = ()
    min_items: int = 0
    increasing: bool = False
    unique: bool = False
    identity_at_default: bool = True

    def __post_init__(self):
        if self.type not in TYPES:
            raise TypeError(f"setting {self.name}: unknown type {self.type!r}")
        if self.default is not None or not self.nullable:
            self.check(self.default)   # a declaration whose default it rejects is a bug

    # -- what is allowed, in words -------------------------------------------------------------
    def _range(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f">= {_fmt(self.low)}")
        if self.above is not None:
            parts.append(f"> {_fmt(self.above)}")
        if self.high is not None:
            parts.append(f"<= {_fmt(self.high)}")
        return " and ".join(parts)

    def allowed(self) -> str:
        """What the setting accepts, in words (error messages, ``kdsrc methods -v``)."""
        rng = self._range()
        rng = f" {rng}" if rng else ""
        text = {
            "number": f"a number{rng}",
            "integer": f"an integer{rng}",
            "bool": "true or false",
            "choice": "one of " + ", ".join(map(str, self.choices)),
            "numbers": (f"a list of {'at least ' + str(self.min_items) + ' ' if self.min_items else ''}"
                        f"{'distinct ' if self.unique else ''}numbers{rng}"),
            "integers": (f"a{'n increasing' if self.increasing else ''} list of integers{rng}"),
            "path": "a file path",
            "mapping": "a mapping",
        }[self.type]
        extras = [repr(v) for v in self.also] + (["null"] if self.nullable else [])
        return text + (f" (or {', '.join(extras)})" if extras else "")

    # -- checking ------------------------------------------------------------------------------
    def _in_range(self, v: float) -> bool:
        return ((self.low is None or v >= self.low) and (self.above is None or v > self.above)
                and (self.high is None or v <= self.high))

    def _item_ok(self, v: Any, integer: bool) -> bool:
        if integer and not _is_int(v):
            return False
        if not _is_number(v) or not math.isfinite(v):
            return False
        return self._in_range(v)

    def check(self, value: Any, prefix: str = "") -> Any:
        """``value`` checked and normalised (numbers to float, lists to lists); a bad value
        raises :class:`ConfigError` naming ``prefix + name``, the value and what is allowed."""
        if value is None and self.nullable:
            return None
        if any(_same(value, v) for v in self.also):
            return value
        t = self.type
        ok = False
        if t == "number":
            ok = self._item_ok(value, integer=False)
            value = float(value) if ok else value
        elif t == "integer":
            ok = self._item_ok(value, integer=True)
        elif t == "bool":
            ok = isinstance(value, bool)
        elif t == "choice":
            ok = isinstance(value, (str, bool, int)) and value in self.choices
        elif t in ("numbers", "integers"):
            ok = (isinstance(value, (list, tuple)) and len(value) >= self.min_items
                  and all(self._item_ok(v, integer=t == "integers") for v in value))
            if ok:
                value = [float(v) for v in value] if t == "numbers" else list(value)
                if self.increasing and value != sorted(value):
                    ok = False
                if self.unique and len(set(value)) != len(value):
                    ok = False
        elif t == "path":
            ok = isinstance(value, str) and value != ""
        elif t == "mapping":
            ok = isinstance(value, dict)
            value = dict(value) if ok else value
        if not ok:
            finite = "" if not _is_number(value) or math.isfinite(value) else " (not finite)"
            raise ConfigError(f"{prefix}{self.name}: expected {self.allowed()}, got {value!r}"
                              f"{finite} -- {self.meaning}")
        return value

    # -- JSON schema -----------------------------------------------------------------------------
    def json_schema(self) -> dict[str, Any]:
        """The same rule as a JSON-schema fragment (the plan schema's solver and run keys).
        Finiteness, ``increasing`` and ``unique`` are left to :meth:`check`, which runs on
        every resolved run when a plan loads."""
        num: dict[str, Any] = {}
        if self.low is not None:
            num["minimum"] = self.low
        if self.above is not None:
            num["exclusiveMinimum"] = self.above
        if self.high is not None:
            num["maximum"] = self.high
        t = self.type
        if t == "number":
            out = {"type": "number", **num}
        elif t == "integer":
            out = {"type": "integer", **num}
        elif t == "bool":
            out = {"type": "boolean"}
        elif t == "choice":
            out = {"enum": list(self.choices)}
        elif t in ("numbers", "integers"):
            out = {"type": "array", "items": {"type": t[:-1] if t == "integers" else "number",
                                              **num}}
            if self.min_items:
                out["minItems"] = self.min_items
        elif t == "path":
            out = {"type": "string", "minLength": 1}
        else:
            out = {"type": "object"}
        alts = [{"const": v} for v in self.also] + ([{"type": "null"}] if self.nullable else [])
        if alts:
            out = {"anyOf": [out, *alts]}
        out["description"] = self.meaning
        if self.default is not None:
            out["default"] = self.default
        return out


def defaults_of(declared: Iterable[Setting]) -> dict[str, Any]:
    return {s.name: s.default for s in declared}


def check_all(declared: Iterable[Setting], given: dict[str, Any] | None, *, prefix: str,
              unknown: str) -> dict[str, Any]:
    """Defaults updated by ``given``, every value checked; an unknown key is an error naming
    ``prefix + key``, ``unknown`` (what it is not, e.g. "setting for method 'kd'") and the
    allowed keys."""
    by_name = {s.name: s for s in declared}
    for key in given or {}:
        if key not in by_name:
            raise ConfigError(f"{prefix}{key}: unknown {unknown}; allowed: "
                              f"{', '.join(sorted(by_name)) or 'none'}")
    out = {}
    for name, s in by_name.items():
        out[name] = s.check((given or {}).get(name, s.default), prefix)
    return out


def without_new_defaults(declared: Iterable[Setting], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without the settings declared ``identity_at_default=False`` that hold their
    default (what the run's identity and the rule params leave out)."""
    drop = {s.name for s in declared if not s.identity_at_default and values.get(s.name) == s.default}
    return {k: v for k, v in values.items() if k not in drop}


# -- the common shapes, so each declaration reads as one line ----------------------------------
def weight(name: str, default: float, meaning: str) -> Setting:
    """A loss weight: a finite number >= 0."""
    return Setting(name, default, meaning, low=0.0)


def temperature(name: str, default: float, meaning: str = "softmax temperature") -> Setting:
    return Setting(name, default, meaning, above=0.0)


def warmup(name: str, default: int,
           meaning: str = "epochs of the loss ramp min(epoch/warmup, 1); 0: no ramp") -> Setting:
    return Setting(name, default, meaning, type="integer", low=0)


def choice(name: str, default: Any, choices: Iterable, meaning: str, **kw: Any) -> Setting:
    return Setting(name, default, meaning, type="choice", choices=tuple(choices), **kw)


def flag(name: str, default: bool, meaning: str) -> Setting:
    return Setting(name, default, meaning, type="bool")
