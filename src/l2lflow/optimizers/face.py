"""FACE: fully adaptive cross-entropy (Rubinstein & Kroese 2004; L2L's FACEOptimizer).

Cross-entropy with an adaptive sample size: after a generation that improves on the elite of
the last update (best value or elite threshold), the Gaussian is refit on the elite at once and
the sample shrinks back to one generation; otherwise the distribution stays as it is and the
next generation, drawn from the same distribution, is pooled with the previous one, so the
sample grows by ``population_size`` (L2L's ``n_expand``) up to ``max_pool_generations x
population_size`` (L2L's ``max_pop_size``; ``min_pop_size`` is ``population_size``), where it
is refit regardless. The population per generation is fixed by the config, so the adaptive
sample size is a number of whole generations drawn from one distribution. The elite is
``elite_fraction`` of the pool (at least ``min_elite``), the refit is smoothed and the standard
deviation floored as in ``cross_entropy``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from l2lflow.optimizers.base import Optimizer, OptimizerError, as_array, register


@register
class FACE(Optimizer):
    """Diagonal-Gaussian cross-entropy whose sample pools generations until the elite improves."""

    name = "face"
    default_options: dict[str, Any] = {
        "elite_fraction": 0.2,
        "min_elite": 2,
        "max_pool_generations": 4,
        "smoothing": 0.7,
        "mean": 0.5,  # initial mean: a number or one per dimension
        "sigma": 0.3,  # initial standard deviation (or one per parameter), unit box
        "min_sigma": 1e-3,
    }

    def _setup(self) -> None:
        o = self.options
        if not 0.0 < float(o["elite_fraction"]) <= 1.0:
            raise OptimizerError("optimizer.options.elite_fraction must be in (0, 1]")
        if int(o["min_elite"]) < 1:
            raise OptimizerError("optimizer.options.min_elite must be >= 1")
        if int(o["max_pool_generations"]) < 1:
            raise OptimizerError("optimizer.options.max_pool_generations must be >= 1")
        if not 0.0 < float(o["smoothing"]) <= 1.0:
            raise OptimizerError("optimizer.options.smoothing must be in (0, 1]")
        if float(o["min_sigma"]) < 0:
            raise OptimizerError("optimizer.options.min_sigma must be >= 0")
        mean = np.broadcast_to(np.asarray(o["mean"], dtype=np.float64), (self.dimension,))
        self.mean = np.clip(mean, 0.0, 1.0).copy()
        self.sigma = self.per_dimension("sigma")
        self.pool_x = np.empty((0, self.dimension))
        self.pool_loss = np.empty(0)
        self.best_loss = math.inf  # best elite value at the last refit
        self.threshold = math.inf  # worst elite value at the last refit

    @property
    def sample_size(self) -> int:
        """Individuals pooled for the next refit (after the next generation is told)."""
        return len(self.pool_loss) + self.population_size

    def _ask(self) -> np.ndarray:
        z = self.rng.standard_normal((self.population_size, self.dimension))
        return self.mean + z * self.sigma

    def _tell(self, x: np.ndarray, loss: np.ndarray) -> None:
        self.pool_x = np.vstack([self.pool_x, x])
        self.pool_loss = np.concatenate([self.pool_loss, loss])
        finite = np.flatnonzero(np.isfinite(self.pool_loss))
        full = (
            len(self.pool_loss) >= int(self.options["max_pool_generations"]) * self.population_size
        )
        if finite.size == 0:
            if full:
                self._reset_pool()
            return
        n_elite = max(
            int(self.options["min_elite"]),
            math.ceil(float(self.options["elite_fraction"]) * len(self.pool_loss)),
        )
        order = finite[np.argsort(self.pool_loss[finite], kind="stable")[:n_elite]]
        best, threshold = self.pool_loss[order[0]], self.pool_loss[order[-1]]
        if not (best < self.best_loss or threshold < self.threshold or full):
            return  # no improvement: keep the distribution, sample more from it
        elite = self.pool_x[order]
        s = float(self.options["smoothing"])
        self.mean = s * elite.mean(axis=0) + (1.0 - s) * self.mean
        new_sigma = elite.std(axis=0)
        self.sigma = np.sqrt(s * new_sigma**2 + (1.0 - s) * self.sigma**2)
        self.sigma = np.maximum(self.sigma, float(self.options["min_sigma"]))
        self.best_loss = min(self.best_loss, float(best))
        self.threshold = float(threshold)
        self._reset_pool()

    def _reset_pool(self) -> None:
        self.pool_x = np.empty((0, self.dimension))
        self.pool_loss = np.empty(0)

    def _get_state(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "sigma": self.sigma,
            "pool_x": self.pool_x,
            "pool_loss": self.pool_loss,
            "best_loss": self.best_loss,
            "threshold": self.threshold,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self.mean = as_array(state["mean"])
        self.sigma = as_array(state["sigma"])
        self.pool_x = as_array(state["pool_x"]).reshape(-1, self.dimension)
        self.pool_loss = as_array(state["pool_loss"]).reshape(-1)
        self.best_loss = float(as_array(state["best_loss"]))
        self.threshold = float(as_array(state["threshold"]))
