"""Method registry and settings resolution."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, unknown_name
from .base import Distiller

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


def _check_type(key: str, value: Any, default: Any) -> Any:
    """Coerce ``value`` to the type of its default, or fail naming the key."""
    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return list(value)
    elif isinstance(default, dict):
        if isinstance(value, dict):
            return value
    else:
        return value
    raise ConfigError(f"method.{key}: expected {type(default).__name__}, got "
                      f"{type(value).__name__} ({value!r})")


def resolve_settings(name: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The method's defaults updated by ``overrides``; unknown keys and wrong types are errors."""
    cls = get_method(name)
    settings = dict(cls.defaults)
    for key, value in (overrides or {}).items():
        if key not in cls.defaults:
            allowed = ", ".join(sorted(cls.defaults)) or "none"
            raise ConfigError(f"method.{key}: unknown setting for method {name!r}; "
                              f"allowed: {allowed}")
        settings[key] = _check_type(key, value, cls.defaults[key])
    # methods with presets (Angular-KD) fill in what a preset implies, so the run config and
    # the eval record hold concrete values
    finalize = getattr(cls, "finalize_settings", None)
    return finalize(settings) if callable(finalize) else settings


def build_distiller(name, student, teacher, settings, ctx) -> Distiller:
    cls = get_method(name)
    if cls.needs_teacher and teacher is None:
        raise ConfigError(f"method {name!r} needs a teacher, but the run config has teacher: none")
    return cls(student, teacher, resolve_settings(name, settings), ctx)
