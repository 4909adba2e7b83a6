"""Distillers: one module per method, registered by name.

``build_distiller(name, student, teacher, settings, ctx)`` builds one; ``METHODS`` maps names to
classes; ``resolve_settings(name, overrides)`` merges a run config's method block with the
method's reference defaults and rejects unknown keys.
"""

from .base import DistillContext, Distiller, StepState, TeacherOutputs
from .registry import METHODS, build_distiller, get_method, register, resolve_settings
from . import vanilla, kd  # noqa: F401  (registration side effect)

__all__ = ["DistillContext", "Distiller", "StepState", "TeacherOutputs", "METHODS", "build_distiller",
           "get_method", "register", "resolve_settings"]
from . import dkd, crd, reviewkd, tekap  # noqa: F401  (registration side effect)
from . import rsd  # noqa: F401
from . import angularkd  # noqa: F401,E402  (Angular-KD wrapper; registers after its bases)
from . import mlkd, ldrld  # noqa: F401,E402  (registration side effect)
