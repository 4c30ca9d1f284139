"""Optimizees: what evaluating one individual means. Importing this registers the built-ins."""

from l2lflow.optimizees import faults, functions  # noqa: F401  (registers the built-ins)
from l2lflow.optimizees.base import (
    REGISTRY,
    EvaluationContext,
    Optimizee,
    OptimizeeError,
    register_optimizee,
    resolve_optimizee,
)

try:  # NEST optimizees register themselves; nest itself is imported only when one runs
    from l2lflow.optimizees import nest  # noqa: F401
except ImportError:  # pragma: no cover - the subpackage is optional
    pass

__all__ = [
    "REGISTRY",
    "EvaluationContext",
    "Optimizee",
    "OptimizeeError",
    "register_optimizee",
    "resolve_optimizee",
]
