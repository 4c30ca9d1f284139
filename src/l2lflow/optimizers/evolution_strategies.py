"""OpenAI-style evolution strategy (Salimans et al., 2017): a search-gradient on the mean.

Each generation samples mirrored pairs ``mean +- noise_std * eps`` (antithetic sampling halves
the variance of the gradient estimate), shapes the losses into centred ranks in
``[-0.5, 0.5]`` (invariant to the fitness scale, robust to outliers and to failures, which are
+inf) and takes a plain SGD step ``mean -= learning_rate * grad``. With an odd population the
last individual is the mean itself: it costs one evaluation, adds no gradient information but
shows how good the current mean is. Perturbations are those drawn, not the clipped points, so
near the box boundary the estimate is slightly biased; the mean is kept inside the box.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from l2lflow.optimizers.base import Optimizer, OptimizerError, as_array, register


def centered_ranks(loss: np.ndarray) -> np.ndarray:
    """Ranks mapped to ``[-0.5, 0.5]`` (lowest loss -> -0.5); ties share their average rank."""
    n = loss.size
    if n < 2:
        return np.zeros(n)
    ranks = np.empty(n)
    ranks[np.argsort(loss, kind="stable")] = np.arange(n)
    _, inverse = np.unique(loss, return_inverse=True)
    ranks = (np.bincount(inverse, weights=ranks) / np.bincount(inverse))[inverse]
    return ranks / (n - 1) - 0.5


@register
class EvolutionStrategy(Optimizer):
    """Mirrored-sampling ES with centred-rank fitness shaping and plain SGD."""

    name = "es"
    default_options: dict[str, Any] = {
        "learning_rate": 0.02,
        "noise_std": 0.05,  # in unit-box coordinates (or one per parameter)
        "mean": 0.5,  # initial mean: a number or one per dimension
    }

    def _setup(self) -> None:
        if self.population_size < 2:
            raise OptimizerError(
                "es needs population_size >= 2 (at least one mirrored pair to estimate a gradient)"
            )
        o = self.options
        if float(o["learning_rate"]) <= 0:
            raise OptimizerError("optimizer.options.learning_rate must be > 0")
        self.noise_std = self.per_dimension("noise_std")
        mean = np.broadcast_to(np.asarray(o["mean"], dtype=np.float64), (self.dimension,))
        self.mean = np.clip(mean, 0.0, 1.0).copy()
        self.eps: np.ndarray | None = None  # the pending generation's perturbations

    def _ask(self) -> np.ndarray:
        pairs = self.population_size // 2
        self.eps = self.rng.standard_normal((pairs, self.dimension))
        step = self.noise_std * self.eps
        rows = [self.mean + step, self.mean - step]
        if self.population_size % 2:
            rows.append(self.mean[None, :])
        return np.vstack(rows)

    def _tell(self, x: np.ndarray, loss: np.ndarray) -> None:
        assert self.eps is not None  # base.tell guarantees a preceding ask
        pairs = len(self.eps)
        u = centered_ranks(loss[: 2 * pairs])
        grad = (u[:pairs] - u[pairs:]) @ self.eps / (2 * pairs * self.noise_std)
        self.mean = np.clip(self.mean - float(self.options["learning_rate"]) * grad, 0.0, 1.0)
        self.eps = None

    def _get_state(self) -> dict[str, Any]:
        return {"mean": self.mean, "eps": self.eps}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.mean = as_array(state["mean"])
        eps = state.get("eps")
        self.eps = None if eps is None else as_array(eps).reshape(-1, self.dimension)
