"""Finite-difference gradient descent with L2L's update rules (classic, stochastic, Adam,
AdaMax, RMSProp).

Each generation evaluates the current point (individual 0) and ``population_size - 1`` random
neighbours ``current + exploration_step_size * N(0, I)`` (L2L's ``n_random_steps``), and
estimates the gradient by least squares on the finite differences ``f(neighbour) - f(current)``
(L2L does the same). Failed neighbours are left out; if the current point failed or fewer
than one neighbour succeeded, the step is skipped and new neighbours are drawn. The update
rule is ``update``:

* ``classic``: ``x -= learning_rate * g``
* ``stochastic``: ``g`` plus Gaussian noise of std ``stochastic_deviation``, which decays by
  ``stochastic_decay`` every step (L2L's StochasticGD)
* ``adam``: bias-corrected first/second moments (``first_order_decay``, ``second_order_decay``)
* ``adamax``: Adam with the infinity norm of past gradients instead of the second moment
* ``rmsprop``: ``x -= learning_rate * g / sqrt(v)``, ``v`` decaying with ``momentum_decay``

Everything is in unit-box coordinates and the point is kept inside the box. The gradient's
scale is the fitness's, so ``classic``/``stochastic`` need a ``learning_rate`` matched to it;
the adaptive rules take steps of about ``learning_rate`` whatever the scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from l2lflow.optimizers.base import Optimizer, OptimizerError, as_array, register

UPDATES = ("classic", "stochastic", "adam", "adamax", "rmsprop")
_EPS = 1e-8


@register
class GradientDescent(Optimizer):
    """L2L's GradientDescentOptimizer: one name, the update rule as the ``update`` option."""

    name = "gradient_descent"
    default_options: dict[str, Any] = {
        "update": "adam",
        "learning_rate": 0.01,
        "exploration_step_size": 0.01,  # neighbour distance, unit-box coordinates
        "start": 0.5,  # initial point: a number or one per dimension
        "stochastic_deviation": 1.0,  # stochastic
        "stochastic_decay": 0.99,  # stochastic
        "first_order_decay": 0.8,  # adam, adamax (L2L's default)
        "second_order_decay": 0.8,  # adam, adamax
        "momentum_decay": 0.5,  # rmsprop (L2L's default)
    }

    def _setup(self) -> None:
        o = self.options
        if self.population_size < 2:
            raise OptimizerError(
                "gradient_descent needs population_size >= 2 (the point and one neighbour)"
            )
        if o["update"] not in UPDATES:
            raise OptimizerError(
                f"optimizer.options.update: unknown update {o['update']!r} "
                f"(allowed: {', '.join(UPDATES)})"
            )
        if float(o["learning_rate"]) <= 0 or float(o["exploration_step_size"]) <= 0:
            raise OptimizerError(
                "optimizer.options.learning_rate and exploration_step_size must be > 0"
            )
        for key in ("first_order_decay", "second_order_decay", "momentum_decay"):
            if not 0.0 <= float(o[key]) < 1.0:
                raise OptimizerError(f"optimizer.options.{key} must be in [0, 1)")
        if float(o["stochastic_deviation"]) < 0 or not 0 < float(o["stochastic_decay"]) <= 1:
            raise OptimizerError(
                "optimizer.options.stochastic_deviation must be >= 0 and stochastic_decay in (0, 1]"
            )
        start = np.broadcast_to(np.asarray(o["start"], dtype=np.float64), (self.dimension,))
        self.x = np.clip(start, 0.0, 1.0).copy()
        self.m = np.zeros(self.dimension)  # first moment (adam, adamax)
        self.v = np.zeros(self.dimension)  # second moment / inf-norm (adam, adamax, rmsprop)
        self.steps = 0
        self.deviation = float(o["stochastic_deviation"])
        self.best_x, self.best_loss = self.x.copy(), np.inf

    def _ask(self) -> np.ndarray:
        step = float(self.options["exploration_step_size"])
        noise = self.rng.standard_normal((self.population_size - 1, self.dimension))
        return np.vstack([self.x[None, :], self.x + step * noise])

    def _tell(self, x: np.ndarray, loss: np.ndarray) -> None:
        i = int(np.argmin(loss))
        if loss[i] < self.best_loss:
            self.best_x, self.best_loss = x[i].copy(), float(loss[i])
        ok = np.isfinite(loss[1:])
        if not np.isfinite(loss[0]) or not ok.any():
            return  # no gradient from this generation
        dx = x[1:][ok] - x[0]
        df = loss[1:][ok] - loss[0]
        g = np.linalg.lstsq(dx, df, rcond=None)[0]
        self.x = np.clip(self.x - self._step(g), 0.0, 1.0)

    def _step(self, g: np.ndarray) -> np.ndarray:
        o = self.options
        lr = float(o["learning_rate"])
        update = o["update"]
        self.steps += 1
        t = self.steps
        if update == "classic":
            return lr * g
        if update == "stochastic":
            g = g + self.rng.normal(0.0, self.deviation, self.dimension)
            self.deviation *= float(o["stochastic_decay"])
            return lr * g
        if update == "rmsprop":
            rho = float(o["momentum_decay"])
            self.v = rho * self.v + (1.0 - rho) * g * g
            return lr * g / (np.sqrt(self.v) + _EPS)
        b1, b2 = float(o["first_order_decay"]), float(o["second_order_decay"])
        self.m = b1 * self.m + (1.0 - b1) * g
        if update == "adam":
            self.v = b2 * self.v + (1.0 - b2) * g * g
            m_hat = self.m / (1.0 - b1**t)
            v_hat = self.v / (1.0 - b2**t)
            return lr * m_hat / (np.sqrt(v_hat) + _EPS)
        # adamax (Kingma & Ba 2015, section 7.1)
        self.v = np.maximum(b2 * self.v, np.abs(g))
        return lr / (1.0 - b1**t) * self.m / (self.v + _EPS)

    def _get_state(self) -> dict[str, Any]:
        return {
            "x": self.x,
            "m": self.m,
            "v": self.v,
            "steps": self.steps,
            "deviation": self.deviation,
            "best_x": self.best_x,
            "best_loss": self.best_loss,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self.x = as_array(state["x"])
        self.m = as_array(state["m"])
        self.v = as_array(state["v"])
        self.steps = int(state["steps"])
        self.deviation = float(state["deviation"])
        self.best_x = as_array(state["best_x"])
        self.best_loss = float(as_array(state["best_loss"]))

    @property
    def best(self) -> tuple[np.ndarray, float] | None:
        if not np.isfinite(self.best_loss):
            return None
        return self.best_x.copy(), self.best_loss
