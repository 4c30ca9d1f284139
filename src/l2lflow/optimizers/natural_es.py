"""Separable natural evolution strategies (sNES; Wierstra et al. 2014, Schaul et al. 2011).

A diagonal Gaussian ``N(mean, diag(sigma^2))`` follows the natural gradient of the expected
fitness: with standard-normal draws ``s_k`` and utilities ``u_k`` (rank-based fitness shaping,
summing to 0), ``mean += eta_mu * sigma * sum u_k s_k`` and
``sigma *= exp(eta_sigma / 2 * sum u_k (s_k^2 - 1))``. Unlike the plain ES the step size adapts
per dimension, which L2L's NaturalEvolutionStrategiesOptimizer also does. Mirrored sampling
(``mean +- sigma s``) is on by default, as in L2L; with an odd population the last individual is
the mean. Without fitness shaping the utilities are the standardised losses (failures count as
the worst finite loss). Gradients use the drawn ``s``, not the points after clipping to the box.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from l2lflow.optimizers.base import Optimizer, OptimizerError, as_array, register


def nes_utilities(loss: np.ndarray) -> np.ndarray:
    """sNES utilities: ``max(0, log(n/2 + 1) - log(rank))`` normalised, minus ``1/n``."""
    n = loss.size
    ranks = np.empty(n)
    ranks[np.argsort(loss, kind="stable")] = np.arange(1, n + 1)
    raw = np.maximum(0.0, math.log(n / 2.0 + 1.0) - np.log(ranks))
    return raw / raw.sum() - 1.0 / n


@register
class SeparableNES(Optimizer):
    """sNES with mirrored sampling and rank-based fitness shaping."""

    name = "snes"
    default_options: dict[str, Any] = {
        "learning_rate_mu": 1.0,
        "learning_rate_sigma": None,  # None: (3 + ln d) / (5 sqrt d), the sNES default
        "mean": 0.5,  # initial mean: a number or one per dimension
        "sigma": 0.3,  # initial standard deviation, unit-box coordinates (or one per parameter)
        "mirrored_sampling": True,
        "fitness_shaping": True,
    }

    def _setup(self) -> None:
        o = self.options
        if self.population_size < 2:
            raise OptimizerError("snes needs population_size >= 2 to estimate a gradient")
        if o["learning_rate_sigma"] is None:
            self.eta_sigma = (3.0 + math.log(self.dimension)) / (5.0 * math.sqrt(self.dimension))
        else:
            self.eta_sigma = float(o["learning_rate_sigma"])
        if float(o["learning_rate_mu"]) <= 0 or self.eta_sigma <= 0:
            raise OptimizerError(
                "optimizer.options.learning_rate_mu and learning_rate_sigma must be > 0"
            )
        mean = np.broadcast_to(np.asarray(o["mean"], dtype=np.float64), (self.dimension,))
        self.mean = np.clip(mean, 0.0, 1.0).copy()
        self.sigma = self.per_dimension("sigma")
        self.s: np.ndarray | None = None  # the pending generation's standard-normal draws

    def _ask(self) -> np.ndarray:
        n = self.population_size
        if self.options["mirrored_sampling"]:
            half = self.rng.standard_normal((n // 2, self.dimension))
            rows = [half, -half]
            if n % 2:
                rows.append(np.zeros((1, self.dimension)))
            self.s = np.vstack(rows)
        else:
            self.s = self.rng.standard_normal((n, self.dimension))
        return self.mean + self.sigma * self.s

    def _tell(self, x: np.ndarray, loss: np.ndarray) -> None:
        assert self.s is not None  # base.tell guarantees a preceding ask
        finite = np.isfinite(loss)
        if self.options["fitness_shaping"]:
            u = nes_utilities(loss)
        elif finite.any():
            worst = loss[finite].max()
            filled = np.where(finite, loss, worst)
            std = filled.std()
            u = -(filled - filled.mean()) / std if std > 0 else np.zeros_like(filled)
            u /= len(u)
        else:
            u = np.zeros_like(loss)
        grad_mu = u @ self.s
        grad_sigma = u @ (self.s**2 - 1.0)
        self.mean = np.clip(
            self.mean + float(self.options["learning_rate_mu"]) * self.sigma * grad_mu, 0.0, 1.0
        )
        self.sigma = np.clip(self.sigma * np.exp(0.5 * self.eta_sigma * grad_sigma), 1e-12, 10.0)
        self.s = None

    def _get_state(self) -> dict[str, Any]:
        return {"mean": self.mean, "sigma": self.sigma, "s": self.s}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.mean = as_array(state["mean"])
        self.sigma = as_array(state["sigma"])
        s = state.get("s")
        self.s = None if s is None else as_array(s).reshape(-1, self.dimension)
