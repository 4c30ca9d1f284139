"""Cross-entropy method: sample a Gaussian, refit it on the elite fraction.

Simple, robust to noise and to the scale of the fitness (only the ranking matters). The refit
is smoothed (``smoothing`` = weight of the new estimate) and the standard deviation is floored
at ``min_sigma``: without both, CEM collapses onto the first good region it sees. The Gaussian
is diagonal unless ``full_covariance`` is set, which lets it follow correlated valleys at the
price of ``d^2`` parameters to estimate from few elites. Samples outside the unit box are
clipped by :meth:`Optimizer.ask`, and the refit uses the clipped points that were evaluated.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from l2lflow.optimizers.base import Optimizer, OptimizerError, as_array, register


@register
class CrossEntropy(Optimizer):
    """Gaussian CEM with a smoothed elite refit."""

    name = "cross_entropy"
    default_options: dict[str, Any] = {
        "elite_fraction": 0.2,
        "smoothing": 0.7,
        "mean": 0.5,  # initial mean: a number or one per dimension
        "sigma": 0.3,  # initial standard deviation (or one per parameter), unit box
        "min_sigma": 1e-3,
        "full_covariance": False,
    }

    def _setup(self) -> None:
        o = self.options
        if not 0.0 < float(o["elite_fraction"]) <= 1.0:
            raise OptimizerError("optimizer.options.elite_fraction must be in (0, 1]")
        if not 0.0 < float(o["smoothing"]) <= 1.0:
            raise OptimizerError("optimizer.options.smoothing must be in (0, 1]")
        if float(o["min_sigma"]) < 0:
            raise OptimizerError("optimizer.options.min_sigma must be >= 0")
        mean = np.broadcast_to(np.asarray(o["mean"], dtype=np.float64), (self.dimension,))
        self.mean = np.clip(mean, 0.0, 1.0).copy()
        self.cov = np.diag(self.per_dimension("sigma") ** 2)
        self.n_elite = max(1, math.ceil(float(o["elite_fraction"]) * self.population_size))

    def _ask(self) -> np.ndarray:
        z = self.rng.standard_normal((self.population_size, self.dimension))
        if self.options["full_covariance"]:
            w, v = np.linalg.eigh(self.cov)
            return self.mean + z @ (v * np.sqrt(np.maximum(w, 0.0))).T
        return self.mean + z * np.sqrt(np.diag(self.cov))

    def _tell(self, x: np.ndarray, loss: np.ndarray) -> None:
        finite = np.flatnonzero(np.isfinite(loss))
        if finite.size == 0:
            return  # nothing learnt from a generation of failures
        elite = x[finite[np.argsort(loss[finite], kind="stable")[: self.n_elite]]]
        s = float(self.options["smoothing"])
        new_mean = elite.mean(axis=0)
        if self.options["full_covariance"]:
            new_cov = (elite - new_mean).T @ (elite - new_mean) / len(elite)
        else:
            new_cov = np.diag(np.mean((elite - new_mean) ** 2, axis=0))
        self.mean = s * new_mean + (1.0 - s) * self.mean
        self.cov = s * new_cov + (1.0 - s) * self.cov
        self._floor()

    def _floor(self) -> None:
        """Keep the standard deviation >= min_sigma along every axis (every eigenvector)."""
        floor = float(self.options["min_sigma"]) ** 2
        if self.options["full_covariance"]:
            w, v = np.linalg.eigh((self.cov + self.cov.T) / 2)
            self.cov = (v * np.maximum(w, floor)) @ v.T
        else:
            self.cov = np.diag(np.maximum(np.diag(self.cov), floor))

    def _get_state(self) -> dict[str, Any]:
        return {"mean": self.mean, "cov": self.cov}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.mean = as_array(state["mean"])
        self.cov = as_array(state["cov"])
