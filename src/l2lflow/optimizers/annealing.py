"""Simulated annealing (parallel chains) and parallel tempering, as in L2L.

Every individual is one Markov chain. Generation 0 evaluates the chains' random starting
points; every later generation evaluates one Gaussian proposal per chain
(``current + noisy_step * N(0, I)``, clipped to the box), and each chain moves to its proposal
with the Metropolis rule: always if it is better, else with probability
``exp(-(new - old) / T)``. The temperature follows one of L2L's cooling schedules (below),
so it is in units of the fitness: scale ``initial_temperature`` to the fitness differences you
expect. A failed proposal (NaN/inf) is never accepted; a chain whose current point failed
accepts any proposal.

Parallel tempering runs the chains at a ladder of temperatures (geometric from
``max_temperature`` down to ``min_temperature``); after each generation neighbouring chains
swap their points with probability ``min(1, exp((L_i - L_j) (1/T_i - 1/T_j)))``, alternating
even and odd pairs, so good points sink to the cold chains while hot chains keep exploring.
The whole ladder may cool with any schedule (default ``none``: a fixed ladder).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from l2lflow.optimizers.base import Optimizer, OptimizerError, as_array, register

#: L2L's AvailableCoolingSchedules, lower-cased; ``none`` keeps the temperature fixed
COOLING_SCHEDULES = (
    "default",
    "logarithmic",
    "exponential",
    "linear_multiplicative",
    "quadratic_multiplicative",
    "linear_additive",
    "quadratic_additive",
    "exponential_additive",
    "trigonometric_additive",
    "none",
)


def temperature(schedule: str, k: int, t0: float, t_final: float, n: int, decay: float) -> float:
    """Temperature after ``k`` coolings (L2L's formulas; ``n`` = iterations of the additive ones).

    ``default`` multiplies by ``decay`` every step (L2L's DEFAULT); ``exponential`` is
    ``t0 * decay**k`` (the same curve, computed in closed form); the multiplicative ones divide
    ``t0`` by ``1 + decay * (log(1 + k) | k | k^2)``; the additive ones move from ``t0`` to
    ``t_final`` over ``n`` steps along a line, a parabola, a logistic or a cosine.
    """
    if schedule == "none":
        return t0
    if schedule in ("default", "exponential"):
        return t0 * decay**k
    if schedule == "logarithmic":
        return t0 / (1.0 + decay * math.log1p(k))
    if schedule == "linear_multiplicative":
        return t0 / (1.0 + decay * k)
    if schedule == "quadratic_multiplicative":
        return t0 / (1.0 + decay * k * k)
    frac = max(0.0, (n - k) / n)
    span = t0 - t_final
    if schedule == "linear_additive":
        return t_final + span * frac
    if schedule == "quadratic_additive":
        return t_final + span * frac * frac
    if schedule == "exponential_additive":
        if k >= n:
            return t_final
        arg = 2.0 * math.log(max(span, 1e-300)) / n * (k - n / 2.0)
        return t_final + span / (1.0 + math.exp(min(arg, 700.0)))
    if schedule == "trigonometric_additive":
        return t_final + 0.5 * span * (1.0 + math.cos(min(k, n) * math.pi / n))
    raise AssertionError(schedule)  # validated in _setup


def _metropolis(rng: np.random.Generator, old: np.ndarray, new: np.ndarray, t: np.ndarray):
    """Which chains accept their proposal (one uniform draw per chain, always drawn)."""
    u = rng.random(old.shape[0])
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        p = np.exp(-(new - old) / np.maximum(t, 1e-300))
    better = new <= old
    return np.isfinite(new) & (better | ~np.isfinite(old) | (u < p))


class _Chains(Optimizer):
    """Shared part: chains, proposals, Metropolis moves, JSON state."""

    def _check_common(self) -> None:
        o = self.options
        if float(o["noisy_step"]) <= 0:
            raise OptimizerError("optimizer.options.noisy_step must be > 0")
        if o["cooling_schedule"] not in COOLING_SCHEDULES:
            raise OptimizerError(
                f"optimizer.options.cooling_schedule: unknown schedule "
                f"{o['cooling_schedule']!r} (allowed: {', '.join(COOLING_SCHEDULES)})"
            )
        if int(o["n_iterations"]) < 1:
            raise OptimizerError("optimizer.options.n_iterations must be >= 1")
        if float(o["temp_decay"]) <= 0:
            raise OptimizerError("optimizer.options.temp_decay must be > 0")
        self.current = self.rng.random((self.population_size, self.dimension))
        self.current_loss = np.full(self.population_size, np.inf)
        self.started = False  # generation 0 evaluates the starting points themselves
        self.steps = 0  # coolings so far

    def _ask(self) -> np.ndarray:
        if not self.started:
            return self.current
        step = float(self.options["noisy_step"])
        return self.current + step * self.rng.standard_normal(self.current.shape)

    def _temperatures(self) -> np.ndarray:
        raise NotImplementedError

    def _tell(self, x: np.ndarray, loss: np.ndarray) -> None:
        if not self.started:
            self.current, self.current_loss = x.copy(), loss.copy()
            self.started = True
            return
        accept = _metropolis(self.rng, self.current_loss, loss, self._temperatures())
        self.current[accept] = x[accept]
        self.current_loss[accept] = loss[accept]
        self.steps += 1

    def _get_state(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "current_loss": self.current_loss,
            "started": self.started,
            "steps": self.steps,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self.current = as_array(state["current"]).reshape(self.population_size, self.dimension)
        self.current_loss = as_array(state["current_loss"])
        self.started = bool(state["started"])
        self.steps = int(state["steps"])

    @property
    def best(self) -> tuple[np.ndarray, float] | None:
        if not self.started:
            return None
        i = int(np.argmin(self.current_loss))
        return self.current[i].copy(), float(self.current_loss[i])


@register
class SimulatedAnnealing(_Chains):
    """L2L's SimulatedAnnealingOptimizer: ``population_size`` independent chains."""

    name = "simulated_annealing"
    default_options: dict[str, Any] = {
        "noisy_step": 0.05,  # proposal standard deviation, unit-box coordinates
        "initial_temperature": 1.0,
        "final_temperature": 1e-3,  # the additive schedules end here
        "cooling_schedule": "default",
        "temp_decay": 0.95,  # factor of default/exponential, coefficient of *_multiplicative
        "n_iterations": 100,  # length of the additive schedules, in generations
    }

    def _setup(self) -> None:
        self._check_common()
        if float(self.options["initial_temperature"]) <= 0:
            raise OptimizerError("optimizer.options.initial_temperature must be > 0")
        if (
            not 0
            <= float(self.options["final_temperature"])
            <= float(self.options["initial_temperature"])
        ):
            raise OptimizerError(
                "optimizer.options.final_temperature must be in [0, initial_temperature]"
            )

    def _temperatures(self) -> np.ndarray:
        o = self.options
        t = temperature(
            o["cooling_schedule"],
            self.steps,
            float(o["initial_temperature"]),
            float(o["final_temperature"]),
            int(o["n_iterations"]),
            float(o["temp_decay"]),
        )
        return np.full(self.population_size, t)


@register
class ParallelTempering(_Chains):
    """L2L's ParallelTemperingOptimizer: chains on a temperature ladder that swap points."""

    name = "parallel_tempering"
    default_options: dict[str, Any] = {
        "noisy_step": 0.05,
        "max_temperature": 10.0,  # the hottest chain
        "min_temperature": 0.01,  # the coldest chain
        "cooling_schedule": "none",  # cools the whole ladder; 'none' keeps it fixed
        "final_ratio": 0.01,  # additive schedules end at final_ratio * each chain's start
        "temp_decay": 0.99,
        "n_iterations": 100,
    }

    def _setup(self) -> None:
        if self.population_size < 2:
            raise OptimizerError("parallel_tempering needs population_size >= 2 (chains to swap)")
        self._check_common()
        hi, lo = float(self.options["max_temperature"]), float(self.options["min_temperature"])
        if not 0 < lo <= hi:
            raise OptimizerError(
                "optimizer.options.min_temperature and max_temperature need "
                "0 < min_temperature <= max_temperature"
            )
        if not 0 <= float(self.options["final_ratio"]) <= 1:
            raise OptimizerError("optimizer.options.final_ratio must be in [0, 1]")
        # chain 0 is the hottest, the last one the coldest
        self.ladder = np.geomspace(hi, lo, self.population_size)

    def _temperatures(self) -> np.ndarray:
        o = self.options
        return np.array(
            [
                temperature(
                    o["cooling_schedule"],
                    self.steps,
                    t0,
                    t0 * float(o["final_ratio"]),
                    int(o["n_iterations"]),
                    float(o["temp_decay"]),
                )
                for t0 in self.ladder
            ]
        )

    def _tell(self, x: np.ndarray, loss: np.ndarray) -> None:
        super()._tell(x, loss)
        t = self._temperatures()
        u = self.rng.random(self.population_size)
        for i in range(self.steps % 2, self.population_size - 1, 2):
            j = i + 1
            li, lj = self.current_loss[i], self.current_loss[j]
            if not np.isfinite(li) and not np.isfinite(lj):
                continue
            if not np.isfinite(li) or not np.isfinite(lj):
                swap = not np.isfinite(lj)  # a failed point goes to the hotter chain (i)
            else:
                arg = (li - lj) * (1.0 / t[i] - 1.0 / t[j])
                swap = arg >= 0 or u[i] < math.exp(arg)
            if swap:
                self.current[[i, j]] = self.current[[j, i]]
                self.current_loss[[i, j]] = self.current_loss[[j, i]]
