"""CMA-ES through the ``cma`` package (Hansen's pycma), bounded to the unit box.

The reference implementation, rather than our own, because its step-size and covariance
adaptation carry many carefully tuned details. Three settings make it fit the contract:

* ``randn`` draws cma's normals from the optimizer's seeded generator and ``seed`` is NaN
  (cma's "do nothing"), so cma neither reseeds nor reads numpy's global random state, and the
  run is reproducible from our seed alone;
* ``bounds=[0, 1]`` with cma's default ``BoundTransform``, so every asked point is already in
  the box (no repair needed, and :meth:`Optimizer.ask`'s clipping is a no-op);
* no output at all: ``verbose=-9``, no log files, no console display, no signals file.

cma's state (covariance, evolution paths, its archive of asked solutions) is not plain data,
so :meth:`_get_state` returns ``None`` and an experiment restores it by replay.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from l2lflow.optimizers.base import Optimizer, OptimizerError, register


@register
class CMAES(Optimizer):
    """``cma.CMAEvolutionStrategy`` with ``popsize = population_size``."""

    name = "cmaes"
    default_options: dict[str, Any] = {
        "x0": 0.5,  # initial mean: a number or one per dimension
        "sigma0": 0.3,  # initial step size, in unit-box coordinates (or one per parameter)
    }

    def _setup(self) -> None:
        # imported here, not at the top: `import cma` pulls in scipy.stats and matplotlib.pyplot
        # (~1 s), which every Snakemake start would pay through the config validation
        import cma

        if self.population_size < 2:
            raise OptimizerError("cmaes needs population_size >= 2 (cma needs >= 2 weights)")
        stds = self.per_dimension("sigma0")
        sigma0 = float(stds.max())  # cma: overall step sigma0, per-coordinate factors CMA_stds
        x0 = np.broadcast_to(np.asarray(self.options["x0"], dtype=np.float64), (self.dimension,))
        opts = {
            "popsize": self.population_size,
            "bounds": [0.0, 1.0],
            "randn": lambda *shape: self.rng.standard_normal(shape),
            "seed": np.nan,
            "verbose": -9,
            "verb_log": 0,
            "verb_disp": 0,
            "signals_filename": "",
        }
        if np.any(stds != sigma0):
            opts["CMA_stds"] = (stds / sigma0).tolist()
        if self.dimension == 1:
            # cma 4.5's std limit (maxstd = bound range / 3) crashes in 1-D
            # (DiagonalDecoding.set_i: "not yet initialized"); an infinite maxstd turns it off
            opts["maxstd"] = np.inf
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.es = cma.CMAEvolutionStrategy(np.clip(x0, 0.0, 1.0).tolist(), sigma0, opts)
        self._asked: list[np.ndarray] | None = None

    def _ask(self) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._asked = self.es.ask()
        return np.asarray(self._asked)

    def _tell(self, x: np.ndarray, loss: np.ndarray) -> None:
        # cma wants finite values: failures become worse than the worst success
        finite = np.isfinite(loss)
        if finite.any():
            lo, hi = loss[finite].min(), loss[finite].max()
            worst = hi + max(1.0, hi - lo)
            loss = np.where(finite, loss, worst if np.isfinite(worst) else hi)
        else:
            loss = np.zeros_like(loss)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # tell cma its own arrays, so it finds them in its archive of asked solutions
            self.es.tell(self._asked, loss.tolist())
        self._asked = None

    def _get_state(self) -> None:
        return None

    def search_state(self) -> dict[str, Any]:
        """CMA-ES's mean, step size σ and per-parameter standard deviations (σ × √diag C)."""
        return {
            "mean": np.asarray(self.es.mean, dtype=np.float64).tolist(),
            "sigma": float(self.es.sigma),
            "std": np.asarray(self.es.stds, dtype=np.float64).tolist(),
        }
