"""Method registry and settings resolution."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, unknown_name
from .base import Distiller, facts_of

METHODS: dict[str, type[Distiller]] = {}


def register(cls: type[Distiller]) -> type[Distiller]:
    """Class decorator: make a distiller available under ``cls.name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    if cls.name in METHODS:
        raise TypeError(f"method {cls.name!r} registered twice")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Distiller]:
    try:
        return METHODS[name]
    except KeyError:
        raise unknown_name("method", name, METHODS) from None


def resolve_settings(name: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The method's settings: its declared defaults updated by ``overrides``, every value
    checked (unknown keys, types, ranges, choices, non-finite numbers are errors naming the
    key)."""
    return get_method(name).finalize_settings(overrides)


def build_distiller(name, student, teacher, settings, ctx) -> Distiller:
    cls = get_method(name)
    if cls.needs_teacher and teacher is None:
        raise ConfigError(f"method {name!r} needs a teacher, but the run config has teacher: none")
    settings = resolve_settings(name, settings)
    cls.check_dataset(settings, facts_of(ctx))
    return cls(student, teacher, settings, ctx)
