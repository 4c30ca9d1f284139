"""An example of a user's own optimizer, used as ``optimizer.name: user_optimizer:LocalSearch``.

Put this folder on ``PYTHONPATH`` where the experiment runs (the engine imports it). What a run
relies on, and ``l2lflow.testing.check_optimizer(LocalSearch)`` checks:

* every random number comes from ``self.rng``, which the base class seeds from the experiment
  seed: the same seed proposes the same individuals, on a rerun and after any interruption;
* ``_ask`` returns ``(population_size, dimension)`` points of the unit box (the base class clips
  them and the parameter space maps them to your bounds); ``_tell`` gets the loss, lower is
  better, ``inf`` for a failed evaluation;
* ``_get_state``/``_set_state``: the whole state as plain data, checkpointed as JSON in the
  results store after every generation (return ``None`` to be restored by replaying the
  stored generations instead).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from l2lflow.optimizers import Optimizer


class LocalSearch(Optimizer):
    """Gaussian steps of ``step`` (unit box) around the best point so far."""

    name = "user.local_search"
    default_options = {"step": 0.05}

    def _setup(self) -> None:
        self.center, self.best_loss = np.full(self.dimension, 0.5), np.inf

    def _ask(self) -> np.ndarray:
        noise = self.rng.normal(size=(self.population_size, self.dimension))
        return self.center + self.options["step"] * noise

    def _tell(self, x: np.ndarray, loss: np.ndarray) -> None:
        i = int(np.argmin(loss))
        if loss[i] < self.best_loss:
            self.center, self.best_loss = x[i], float(loss[i])

    def _get_state(self) -> dict[str, Any]:
        return {"center": self.center, "best_loss": self.best_loss}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.center = np.asarray(state["center"], dtype=np.float64)
        self.best_loss = float(state["best_loss"])
