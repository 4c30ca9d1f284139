"""Outer-loop optimizers: importing this package registers every one of them by name."""

from l2lflow.optimizers import (  # noqa: F401  (each module registers its optimizer)
    annealing,
    cgp,
    cmaes,
    cross_entropy,
    enkf,
    evolution_strategies,
    face,
    genetic,
    gradient_descent,
    grid_search,
    natural_es,
    nsga2,
    random_search,
)
from l2lflow.optimizers.base import (
    REGISTRY,
    Optimizer,
    OptimizerError,
    as_array,
    get_optimizer_class,
    register,
    replay,
)

__all__ = [
    "REGISTRY",
    "Optimizer",
    "OptimizerError",
    "as_array",
    "get_optimizer_class",
    "register",
    "replay",
]
