"""Optimizees: what evaluating one individual means. Importing this registers the built-ins."""

# torch_lsnn and genn import torch / pygenn only when an evaluation runs, so the registry works
# without them
from l2lflow.optimizees import (  # noqa: F401  (registers the built-ins)
    faults,
    functions,
    genn,
    genn_reservoir,
    plasticity,
    probe,
    torch_lsnn,
)
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
